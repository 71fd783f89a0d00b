//! The data plane the agent's skill calls: authenticated by user keys, rate limited, metered.

pub(crate) mod fundamentals;
mod health;
pub(crate) mod price;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use twilight_core::TsCode;

use crate::{ApiContext, ApiError, ApiResult};

pub fn router(ctx: ApiContext) -> Router<ApiContext> {
    let metered = Router::new()
        .route("/price", get(price::get))
        .route("/fundamentals", get(fundamentals::get))
        .route("/reports/search", get(reports_search))
        .route_layer(middleware::from_fn_with_state(ctx, gate));
    Router::new().route("/healthz", get(health::healthz)).merge(metered)
}

/// Auth → rate limit → handler → one usage row, for every data request that got past the limiter.
async fn gate(State(ctx): State<ApiContext>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let key = ctx.auth.user(request.headers(), ctx.client_of(&request)).await?;
    ctx.limits.check(&key)?;
    let endpoint = request.extensions().get::<MatchedPath>().map_or_else(|| request.uri().path().to_string(), |p| p.as_str().to_string());
    request.extensions_mut().insert(key.clone());
    let response = next.run(request).await;
    let cost = response.extensions().get::<UpstreamCost>().map_or(0, |c| c.0);
    ctx.usage.record_call(&key, endpoint, response.status().as_u16(), cost);
    Ok(response)
}

/// Upstream points a handler spent, read by the metering gate.
#[derive(Debug, Clone, Copy)]
struct UpstreamCost(i32);

/// A JSON answer that carries its upstream cost to the metering gate.
pub(crate) struct Answer<T> {
    pub body: T,
    pub cost_pts: i32,
}

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.body).into_response();
        response.extensions_mut().insert(UpstreamCost(self.cost_pts));
        response
    }
}

fn required_code(code: Option<&str>) -> ApiResult<TsCode> {
    let code = code.ok_or_else(|| ApiError::invalid("code", "missing required parameter 'code', like code=600519.SH"))?;
    code.parse().map_err(|e: twilight_core::CodeError| ApiError::invalid("code", e.to_string()))
}

fn optional_date(field: &'static str, value: Option<&str>) -> ApiResult<Option<chrono::NaiveDate>> {
    value.map(|v| twilight_core::parse_date(v).map_err(|e| ApiError::invalid(field, e.to_string()))).transpose()
}

fn tool_call_id() -> String {
    format!("tc_{:016x}", rand::random::<u64>())
}

async fn reports_search() -> ApiError {
    ApiError::NotImplemented("research report search is not available yet")
}
