//! The data plane the agent's skill calls: authenticated by user keys, rate limited, metered.

pub(crate) mod chart;
pub(crate) mod fundamentals;
pub(crate) mod health;
pub(crate) mod price;
pub(crate) mod search;

use std::collections::BTreeMap;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use twilight_accounts::Citation;
use twilight_core::Cite;
use twilight_market::Fact;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiContext, ApiError, ApiResult};

pub fn router(ctx: ApiContext) -> OpenApiRouter<ApiContext> {
    let metered = OpenApiRouter::new()
        .routes(routes!(price::get))
        .routes(routes!(chart::get))
        .routes(routes!(fundamentals::get))
        .routes(routes!(reports_search))
        .routes(routes!(search::get))
        .route_layer(middleware::from_fn_with_state(ctx, gate));
    OpenApiRouter::new().routes(routes!(health::healthz)).merge(metered)
}

/// Auth → rate limit → handler → one usage row, for every data request that got past the limiter.
async fn gate(State(ctx): State<ApiContext>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let key = ctx.auth.user(request.headers(), ctx.client_of(&request)).await?;
    ctx.limits.check(&key)?;
    let endpoint = request.extensions().get::<MatchedPath>().map_or_else(|| request.uri().path().to_string(), |p| p.as_str().to_string());
    request.extensions_mut().insert(key.clone());
    let mut response = next.run(request).await;
    let metered = response.extensions_mut().remove::<Metered>().unwrap_or_default();
    ctx.usage.record_call(&key, endpoint, response.status().as_u16(), metered.cost_pts, metered.citation);
    Ok(response)
}

/// What a handler tells the metering gate: the upstream points it spent and what it cited.
#[derive(Debug, Clone, Default)]
struct Metered {
    cost_pts: i32,
    citation: Option<Citation>,
}

/// A JSON answer with its upstream cost and its citation, for the metering gate.
pub(crate) struct Answer<T> {
    pub body: T,
    pub cost_pts: i32,
    pub citation: Citation,
}

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        meter(Json(self.body).into_response(), self.cost_pts, self.citation)
    }
}

/// `response` with what the metering gate records for it.
pub(crate) fn meter(mut response: Response, cost_pts: i32, citation: Citation) -> Response {
    response.extensions_mut().insert(Metered { cost_pts, citation: Some(citation) });
    response
}

/// The key of the row of `table` a value of `code` for `date` was read from, by column name
/// (`{"ts_code":"600519.SH","trade_date":"20260430"}`).
pub(crate) fn row_key(table: &str, code: impl std::fmt::Display, date: chrono::NaiveDate) -> BTreeMap<&'static str, String> {
    let columns = twilight_market::warehouse::table(table).into_iter().flat_map(|spec| spec.key_columns());
    columns.zip([code.to_string(), twilight_core::compact(date)]).collect()
}

/// One cited value of an answer, as the citation records it: the value with its provenance and
/// the key of the upstream row it was read from.
#[derive(Serialize)]
pub(crate) struct CitedValue<'a> {
    metric: &'a str,
    value: Option<Fact>,
    unit: &'a str,
    source: &'a str,
    table: &'a str,
    key: &'a BTreeMap<&'static str, String>,
    fetched_at: chrono::DateTime<chrono::Utc>,
    cache_age_seconds: i64,
    stale: bool,
}

pub(crate) fn cited_value<'a>(
    metric: &'a str,
    value: Option<Fact>,
    unit: &'a str,
    key: &'a BTreeMap<&'static str, String>,
    cite: &'a Cite,
) -> CitedValue<'a> {
    CitedValue {
        metric,
        value,
        unit,
        source: &cite.source,
        table: cite.table,
        key,
        fetched_at: cite.fetched_at,
        cache_age_seconds: cite.cache_age_seconds,
        stale: cite.stale,
    }
}

/// The citation of an answer whose parts cannot fail to serialise (strings, numbers, dates).
pub(crate) fn citation(tool_call_id: String, request: &impl Serialize, values: &impl Serialize) -> ApiResult<Citation> {
    Citation::new(tool_call_id, request, values).map_err(|e| ApiError::Internal(format!("serialising a citation: {e}")))
}

fn required_code<T: std::str::FromStr<Err = twilight_core::CodeError>>(code: Option<&str>) -> ApiResult<T> {
    let code = code.ok_or_else(|| ApiError::invalid("code", "missing required parameter 'code', like code=600519.SH"))?;
    code.parse().map_err(|e: twilight_core::CodeError| ApiError::invalid("code", e.to_string()))
}

fn optional_date(field: &'static str, value: Option<&str>) -> ApiResult<Option<chrono::NaiveDate>> {
    value.map(|v| twilight_core::parse_date(v).map_err(|e| ApiError::invalid(field, e.to_string()))).transpose()
}

/// `tc_` and a UUIDv7: sortable by time, so a trace is found quickly, and nothing else in it. It
/// is also the id of the usage row the answer's citation is stored in.
fn tool_call_id() -> String {
    twilight_accounts::tool_call_id(crate::time_ordered_id())
}

/// Research reports: not served yet.
#[utoipa::path(get, path = "/reports/search", tag = "data", security(("user_key" = [])), responses(
    (status = 501, description = "Not available yet", body = crate::error::ErrorBody),
    crate::openapi::DataErrors,
))]
async fn reports_search() -> ApiError {
    ApiError::NotImplemented("research report search is not available yet")
}
