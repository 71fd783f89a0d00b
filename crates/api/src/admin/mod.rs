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
use axum::Json;
use serde::Serialize;
use twilight_search::ProviderStatus;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::AdminErrors;
use crate::{ApiContext, ApiError};

pub fn router(ctx: ApiContext) -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::show))
        .routes(routes!(tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(users::revoke_keys))
        .routes(routes!(users::usage))
        .routes(routes!(orders::refund))
        .routes(routes!(citations::trace))
        .routes(routes!(provision::provision))
        .routes(routes!(search_providers))
        .routes(routes!(warehouse_snapshot))
        .routes(routes!(crate::observe::render))
        .route_layer(middleware::from_fn_with_state(ctx, require_admin))
}

#[derive(Serialize, ToSchema)]
pub struct SearchProviders {
    providers: Vec<ProviderStatus>,
}

/// Each search provider's state and today's calls, answers, cost and failures against its budget
/// (Beijing day; counted by this process since it started).
#[utoipa::path(get, path = "/admin/search", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, description = "Every provider, in the order they are asked", body = SearchProviders),
    AdminErrors,
))]
async fn search_providers(State(ctx): State<ApiContext>) -> Json<SearchProviders> {
    Json(SearchProviders { providers: ctx.search.status() })
}

#[derive(Serialize, ToSchema)]
pub struct Snapshot {
    /// Where the copy is, on the serving host.
    #[schema(value_type = String)]
    path: std::path::PathBuf,
    bytes: u64,
}

/// A consistent copy of the warehouse taken while it serves (only this process may open the
/// file), in `snapshots/` beside it. `twilight backup` asks for one when `serve` runs, then moves
/// it away.
#[utoipa::path(post, path = "/admin/warehouse/snapshot", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, description = "The snapshot taken", body = Snapshot),
    (status = 500, description = "The copy failed (a full disk); logged", body = crate::error::ErrorBody),
    AdminErrors,
))]
async fn warehouse_snapshot(State(ctx): State<ApiContext>) -> Result<Json<Snapshot>, ApiError> {
    let (path, bytes) = ctx.market.snapshot().await?;
    Ok(Json(Snapshot { path, bytes }))
}

async fn require_admin(State(ctx): State<ApiContext>, request: Request, next: Next) -> Result<Response, ApiError> {
    ctx.auth.admin(request.headers(), ctx.client_of(&request)).await?;
    Ok(next.run(request).await)
}
