use axum::extract::State;
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use twilight_core::{compact, Cite, Symbol};
use twilight_market::{Fact, Metric, PriceAnswer};
use utoipa::{IntoParams, ToSchema};

use super::{citation, cited_value, optional_date, required_code, row_key, tool_call_id, Answer};
use crate::extract::ApiQuery;
use crate::{ApiContext, ApiError, ApiResult};

/// The inputs of `/price` and the MCP `price` tool. Every field is optional to serde so that a
/// missing or malformed one is reported by our own validation, naming the field; the schema says
/// what is required. Doc comments are the descriptions the model reads.
#[derive(Deserialize, JsonSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PriceParams {
    /// Stock code: `600519.SH` (Shanghai), `000001.SZ` (Shenzhen), `830799.BJ` (Beijing); a bare
    /// `600519` or `sh600519` is accepted too. Also US tickers (`AAPL`), Hong Kong (`0700.HK`) and FX
    /// (`USDCNY=X`), priced by Yahoo Finance.
    #[schemars(required, with = "String")]
    #[param(required = true, value_type = String, example = "600519.SH")]
    code: Option<String>,
    /// Trading day as `YYYYMMDD` (e.g. `20260430`). Leave it out for the latest trading day with data.
    #[schemars(pattern(r"^(\d{8}|\d{4}-\d{2}-\d{2})$"))]
    #[param(pattern = r"^(\d{8}|\d{4}-\d{2}-\d{2})$")]
    trade_date: Option<String>,
    /// What to read; default `close`. P/E → `pe_ttm` (static `pe` only when asked), P/B → `pb`,
    /// market cap (市值) → `total_mv`, daily change (涨跌幅) → `pct_chg`.
    #[serde(default)]
    #[schemars(schema_with = "metric_schema")]
    #[param(schema_with = metric_param)]
    metric: Option<String>,
}

fn metric_param() -> utoipa::openapi::Object {
    crate::openapi::one_of_names(Metric::names(), "close")
}

fn metric_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "enum": Metric::names().collect::<Vec<_>>(), "default": "close" })
}

/// The request as understood, as its citation records it.
#[derive(Serialize)]
struct PriceRequest {
    code: String,
    trade_date: Option<String>,
    metric: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct PriceBody {
    code: String,
    name: String,
    metric: &'static str,
    value: Option<f64>,
    /// The metric's unit; for a price of a symbol Yahoo lists, its currency.
    unit: String,
    as_of: String,
    cite: Cite,
}

/// One number of one stock on one trading day, with its cite.
#[utoipa::path(get, path = "/price", tag = "data", params(PriceParams), security(("user_key" = [])), responses(
    (status = 200, description = "The value, its unit, the day it is of, and its cite", body = PriceBody),
    crate::openapi::DataErrors,
))]
pub async fn get(State(ctx): State<ApiContext>, ApiQuery(params): ApiQuery<PriceParams>) -> ApiResult<Answer<PriceBody>> {
    price(&ctx, params).await
}

/// One number of one stock on one trading day, with its cite: the operation behind `/price` and
/// the MCP `price` tool. A-shares come from Tushare (TDX beside it or standing in), symbols only
/// Yahoo lists (`AAPL`, `0700.HK`, `USDCNY=X`) from Yahoo.
pub async fn price(ctx: &ApiContext, params: PriceParams) -> ApiResult<Answer<PriceBody>> {
    let symbol: Symbol = required_code(params.code.as_deref())?;
    let trade_date = optional_date("trade_date", params.trade_date.as_deref())?;
    let metric = match params.metric.as_deref() {
        Some(m) => m.parse::<Metric>().map_err(|e| ApiError::invalid("metric", e))?,
        None => Metric::Close,
    };
    let request = PriceRequest { code: symbol.to_string(), trade_date: trade_date.map(compact), metric: metric.name() };
    let PriceAnswer { code, name, unit, reading, stale, agreement, fallback_from } = ctx.market.price(&symbol, trade_date, metric).await?;
    let cite = Cite::tool(&reading.source, reading.table, reading.fetched_at, Utc::now(), tool_call_id())
        .stale_if(stale)
        .agreeing(agreement)
        .falling_back_from(fallback_from);
    let key = row_key(reading.table, &code, reading.as_of);
    let citation =
        citation(cite.tool_call_id.clone(), &request, &[cited_value(metric.name(), reading.value.map(Fact::Number), &unit, &key, &cite)])?;
    let body = PriceBody { code, name, metric: metric.name(), value: reading.value, unit, as_of: compact(reading.as_of), cite };
    Ok(Answer { body, cost_pts: reading.cost_pts, citation })
}
