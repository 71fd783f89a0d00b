//! The admin API, opened only by admin-class tokens.

mod citations;
mod orders;
mod provision;
mod tokens;
mod users;

pub use provision::provision_user;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::{ApiContext, ApiError};

pub fn router(ctx: ApiContext) -> Router<ApiContext> {
    Router::new()
        .route("/admin/users", post(users::create).get(users::list))
        .route("/admin/users/{user_id}", get(users::show))
        .route("/admin/tokens", get(tokens::list))
        .route("/admin/tokens/{token_hash}/revoke", post(tokens::revoke))
        .route("/admin/users/{user_id}/keys/revoke", post(users::revoke_keys))
        .route("/admin/users/{user_id}/usage", get(users::usage))
        .route("/admin/orders/{order_id}/refund", post(orders::refund))
        .route("/admin/citations/{tool_call_id}", get(citations::trace))
        .route("/admin/provision/{user_id}", post(provision::provision))
        .route("/admin/search", get(search_providers))
        .route("/admin/warehouse/snapshot", post(warehouse_snapshot))
        .route("/metrics", get(crate::observe::render))
        .route_layer(middleware::from_fn_with_state(ctx, require_admin))
}

/// `GET /admin/search` — each search provider's state and today's calls, answers, cost and
/// failures against its budget (Beijing day; counted by this process since it started).
async fn search_providers(State(ctx): State<ApiContext>) -> Json<Value> {
    Json(json!({ "providers": ctx.search.status() }))
}

/// `POST /admin/warehouse/snapshot` — a consistent copy of the warehouse taken while it serves
/// (only this process may open the file), in `snapshots/` beside it: `{path, bytes}`. `twilight
/// backup` asks for one when `serve` runs, then moves it away.
async fn warehouse_snapshot(State(ctx): State<ApiContext>) -> Result<Json<Value>, ApiError> {
    let (path, bytes) = ctx.market.snapshot().await?;
    Ok(Json(json!({ "path": path, "bytes": bytes })))
}

async fn require_admin(State(ctx): State<ApiContext>, request: Request, next: Next) -> Result<Response, ApiError> {
    ctx.auth.admin(request.headers(), ctx.client_of(&request)).await?;
    Ok(next.run(request).await)
}
