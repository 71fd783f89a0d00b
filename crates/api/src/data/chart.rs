use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use twilight_chart::{Chart, ChartRequest};
use twilight_core::{compact, Cite};
use twilight_market::Fact;
use utoipa::IntoParams;

use super::{citation, cited_value, meter, row_key, tool_call_id};
use crate::extract::ApiQuery;
use crate::{ApiContext, ApiResult};

/// The inputs of `/chart` and the MCP `chart` tool; as with `/price`, every field is optional to
/// serde so that our validation names a missing or malformed one.
#[derive(Deserialize, JsonSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChartParams {
    /// Stock code, as `price` takes it: `600519.SH`, `000001.SZ`, a bare `600519`; also `AAPL`,
    /// `0700.HK`.
    #[schemars(required, with = "String")]
    #[param(required = true, value_type = String, example = "600519.SH")]
    code: Option<String>,
    /// What to draw; default `close` (收盘价). Also `pct_chg` (日涨跌幅), `pe_ttm` (市盈率), `pb`
    /// (市净率), `total_mv` (总市值).
    #[schemars(schema_with = "metric_schema")]
    #[param(schema_with = metric_param)]
    metric: Option<String>,
    /// How far back from the last session; default `1y`.
    #[schemars(schema_with = "range_schema")]
    #[param(schema_with = range_param)]
    range: Option<String>,
    /// Up to 3 codes to compare with, comma-separated (`000858.SZ,600809.SH`); every line is then
    /// drawn as % change from its first day.
    compare: Option<String>,
}

fn metric_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<_> = twilight_chart::METRICS.iter().map(|m| m.name()).collect();
    schemars::json_schema!({ "type": "string", "enum": names, "default": "close" })
}

fn metric_param() -> utoipa::openapi::Object {
    crate::openapi::one_of_names(twilight_chart::METRICS.iter().map(|m| m.name()), "close")
}

fn range_param() -> utoipa::openapi::Object {
    crate::openapi::one_of_names(twilight_chart::Span::names(), "1y")
}

fn range_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "enum": twilight_chart::Span::names().collect::<Vec<_>>(), "default": "1y" })
}

/// The request as understood, as its citation records it.
#[derive(Serialize)]
struct ChartQuestion {
    code: String,
    metric: &'static str,
    range: &'static str,
    compare: Vec<String>,
}

/// What a chart shows, for the reader: each line's last value and where it all came from.
#[derive(Serialize)]
pub struct ChartCite {
    code: String,
    name: String,
    metric: &'static str,
    range: &'static str,
    from: String,
    through: String,
    lines: Vec<ChartLine>,
    notes: Vec<String>,
    cite: Cite,
}

#[derive(Serialize)]
struct ChartLine {
    code: String,
    name: String,
    last: Option<f64>,
    unit: String,
    as_of: Option<String>,
    source: String,
}

/// A drawn chart and its cite.
pub(crate) struct Charted {
    pub png: Vec<u8>,
    pub cite: ChartCite,
}

/// A chart of one stock's metric over a range, with up to 3 others to compare: a PNG, its cite in
/// `X-Cite`.
#[utoipa::path(get, path = "/chart", tag = "data", params(ChartParams), security(("user_key" = [])), responses(
    (status = 200, description = "The chart, 1080×720", content_type = "image/png", body = crate::openapi::Png, headers(
        ("X-Cite" = String, description = "The cite, as JSON"),
        ("X-Chart-Range" = String, description = "The sessions drawn, `YYYYMMDD..YYYYMMDD`"),
        ("X-Chart-Notes" = String, description = "Lines that start late or miss sessions, when some do"),
    )),
    crate::openapi::DataErrors,
))]
pub async fn get(State(ctx): State<ApiContext>, ApiQuery(params): ApiQuery<ChartParams>) -> ApiResult<Response> {
    let (charted, cost_pts, citation) = chart(&ctx, params).await?;
    let cite = serde_json::to_string(&charted.cite.cite).unwrap_or_default();
    let mut response = ([(header::CONTENT_TYPE, "image/png")], charted.png).into_response();
    let headers = response.headers_mut();
    for (name, value) in [("x-cite", cite), ("x-chart-range", format!("{}..{}", charted.cite.from, charted.cite.through))] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    if let Ok(notes) = HeaderValue::from_str(&charted.cite.notes.join("; ")) {
        if !charted.cite.notes.is_empty() {
            headers.insert(HeaderName::from_static("x-chart-notes"), notes);
        }
    }
    Ok(meter(response, cost_pts, citation))
}

/// One chart, drawn from the warehouse: the operation behind `/chart` and the MCP `chart` tool.
pub(crate) async fn chart(ctx: &ApiContext, params: ChartParams) -> ApiResult<(Charted, i32, twilight_accounts::Citation)> {
    let request =
        ChartRequest::parse(params.code.as_deref(), params.metric.as_deref(), params.range.as_deref(), params.compare.as_deref())?;
    let chart = twilight_chart::draw(&ctx.market, &ctx.chart_fonts, &request).await?;
    let Chart { png, series, from, through, notes } = &chart;
    let main = &series[0];
    let id = tool_call_id();
    let now = Utc::now();
    let cite_of = |source: &str, table, fetched_at: Option<_>| {
        Cite::tool(source, table, fetched_at.unwrap_or(now), now, id.clone()).stale_if(series.iter().any(|h| h.stale))
    };
    let cite = cite_of(&main.source, main.table, chart.fetched_at());
    let metric = request.metric;
    let lines: Vec<ChartLine> = series
        .iter()
        .map(|h| ChartLine {
            code: h.code.clone(),
            name: h.name.clone(),
            last: h.points.last().map(|p| p.1),
            unit: h.unit.clone(),
            as_of: h.points.last().map(|p| compact(p.0)),
            source: h.source.clone(),
        })
        .collect();
    // The citation keeps each line's last value with the row it was read from.
    let keys: Vec<_> = series.iter().map(|h| h.points.last().map(|p| row_key(h.table, &h.code, p.0))).collect();
    let cites: Vec<Cite> = series.iter().map(|h| cite_of(&h.source, h.table, h.fetched_at)).collect();
    let values: Vec<_> = series
        .iter()
        .zip(&keys)
        .zip(&cites)
        .filter_map(|((h, key), cite)| {
            Some(cited_value(metric.name(), h.points.last().map(|p| Fact::Number(p.1)), &h.unit, key.as_ref()?, cite))
        })
        .collect();
    let question = ChartQuestion {
        code: main.code.clone(),
        metric: metric.name(),
        range: request.span.name(),
        compare: series[1..].iter().map(|h| h.code.clone()).collect(),
    };
    let citation = citation(id.clone(), &question, &values)?;
    let cite = ChartCite {
        code: main.code.clone(),
        name: main.name.clone(),
        metric: metric.name(),
        range: request.span.name(),
        from: compact(*from),
        through: compact(*through),
        lines,
        notes: notes.clone(),
        cite,
    };
    Ok((Charted { png: png.clone(), cite }, chart.cost_pts(), citation))
}
