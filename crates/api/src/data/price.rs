use axum::extract::State;
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use twilight_core::{compact, Cite, TsCode};
use twilight_market::Metric;

use super::{citation, cited_value, optional_date, required_code, row_key, tool_call_id, Answer};
use crate::extract::ApiQuery;
use crate::{ApiContext, ApiError, ApiResult};

/// The inputs of `/price` and the MCP `price` tool. Every field is optional to serde so that a
/// missing or malformed one is reported by our own validation, naming the field; the schema says
/// what is required. Doc comments are the descriptions the model reads.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceParams {
    /// Stock code: `600519.SH` (Shanghai), `000001.SZ` (Shenzhen), `830799.BJ` (Beijing); a bare
    /// `600519` or `sh600519` is accepted too.
    #[schemars(required, with = "String")]
    code: Option<String>,
    /// Trading day as `YYYYMMDD` (e.g. `20260430`). Leave it out for the latest trading day with data.
    #[schemars(pattern(r"^(\d{8}|\d{4}-\d{2}-\d{2})$"))]
    trade_date: Option<String>,
    /// What to read; default `close`. P/E → `pe_ttm` (static `pe` only when asked), P/B → `pb`,
    /// market cap (市值) → `total_mv`, daily change (涨跌幅) → `pct_chg`.
    #[serde(default)]
    #[schemars(schema_with = "metric_schema")]
    metric: Option<String>,
}

fn metric_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "enum": Metric::names().collect::<Vec<_>>(), "default": "close" })
}

/// The request as understood, as its citation records it.
#[derive(Serialize)]
struct PriceRequest {
    code: TsCode,
    trade_date: Option<String>,
    metric: &'static str,
}

#[derive(Serialize)]
pub struct PriceBody {
    code: TsCode,
    name: String,
    metric: &'static str,
    value: Option<f64>,
    unit: &'static str,
    as_of: String,
    cite: Cite,
}

/// `GET /price?code=600519.SH[&trade_date=YYYYMMDD][&metric=close]`
pub async fn get(State(ctx): State<ApiContext>, ApiQuery(params): ApiQuery<PriceParams>) -> ApiResult<Answer<PriceBody>> {
    price(&ctx, params).await
}

/// One number of one stock on one trading day, with its cite: the operation behind `/price` and
/// the MCP `price` tool.
pub async fn price(ctx: &ApiContext, params: PriceParams) -> ApiResult<Answer<PriceBody>> {
    let code = required_code(params.code.as_deref())?;
    let trade_date = optional_date("trade_date", params.trade_date.as_deref())?;
    let metric = match params.metric.as_deref() {
        Some(m) => m.parse::<Metric>().map_err(|e| ApiError::invalid("metric", e))?,
        None => Metric::Close,
    };
    let answer = ctx.market.price(code, trade_date, metric).await?;
    let cite = Cite::tool(&answer.source, answer.table, answer.fetched_at, Utc::now(), tool_call_id())
        .stale_if(answer.stale)
        .agreeing(answer.agreement)
        .falling_back_from(answer.fallback_from);
    let key = row_key(answer.table, answer.stock.code, answer.as_of);
    let request = PriceRequest { code, trade_date: trade_date.map(compact), metric: metric.name() };
    let citation = citation(cite.tool_call_id.clone(), &request, &[cited_value(metric.name(), answer.value, metric.unit(), &key, &cite)])?;
    Ok(Answer {
        body: PriceBody {
            code: answer.stock.code,
            name: answer.stock.name,
            metric: metric.name(),
            value: answer.value,
            unit: metric.unit(),
            as_of: compact(answer.as_of),
            cite,
        },
        cost_pts: answer.cost_pts,
        citation,
    })
}
