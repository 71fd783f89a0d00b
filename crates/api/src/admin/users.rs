use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use twilight_accounts::{
    create_user_with_key, user_overview, NewUser, Plan, UsageDay, User, UserOverview, UserStatus, DEFAULT_RATE_LIMIT_PER_MIN,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::AdminErrors;
use crate::{ApiContext, ApiError, ApiResult};

const MAX_RATE_LIMIT_PER_MIN: i32 = 1_000_000;
/// Users per page of `GET /admin/users`, unless `limit` says otherwise (at most [`MAX_PAGE`]).
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// `alpha` (default), `pro` or `lite`.
    #[serde(default)]
    #[schema(value_type = Option<Plan>)]
    plan: Option<String>,
    #[schema(max_length = 254)]
    email: Option<String>,
    /// At most 64 printable characters.
    #[schema(max_length = 64)]
    display_name: Option<String>,
    /// Default 60.
    #[schema(minimum = 1, maximum = 1_000_000)]
    rate_limit_per_min: Option<i32>,
    paid_until: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    user: User,
    /// The user's API key, shown this once: only its sha256 is stored.
    api_key: String,
    api_key_note: &'static str,
    rate_limit_per_min: i32,
}

/// The manual alpha path: creates a user and returns its raw key exactly once.
#[utoipa::path(post, path = "/admin/users", tag = "admin", security(("admin_token" = [])), request_body = CreateUser, responses(
    (status = 201, description = "Created, with its key", body = CreatedUser),
    AdminErrors,
))]
pub async fn create(State(ctx): State<ApiContext>, ApiJson(body): ApiJson<CreateUser>) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    let plan: Plan = match body.plan.as_deref() {
        None => Plan::Alpha,
        Some(p) => p.parse().map_err(|_| ApiError::invalid("plan", format!("unknown plan '{p}'; one of: alpha, pro, lite")))?,
    };
    if let Some(email) = body.email.as_deref().filter(|e| e.len() > 254 || !e.contains('@')) {
        return Err(ApiError::invalid("email", format!("'{email}' is not an email address")));
    }
    if body.display_name.as_deref().is_some_and(|n| n.chars().count() > 64 || n.chars().any(char::is_control)) {
        return Err(ApiError::invalid("display_name", "display_name must be at most 64 printable characters"));
    }
    let rate_limit_per_min = body.rate_limit_per_min.unwrap_or(DEFAULT_RATE_LIMIT_PER_MIN);
    if !(1..=MAX_RATE_LIMIT_PER_MIN).contains(&rate_limit_per_min) {
        return Err(ApiError::invalid("rate_limit_per_min", format!("rate_limit_per_min must be between 1 and {MAX_RATE_LIMIT_PER_MIN}")));
    }
    let (user, key) = create_user_with_key(
        &*ctx.accounts,
        NewUser { email: body.email, display_name: body.display_name, plan, paid_until: body.paid_until },
        rate_limit_per_min,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user,
            api_key: key.expose().to_string(),
            api_key_note: "shown once; only its sha256 is stored",
            rate_limit_per_min,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only users in this status.
    #[param(value_type = Option<UserStatus>)]
    status: Option<String>,
    /// Users per page, 1–500; default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    #[param(minimum = 0)]
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    users: Vec<User>,
    limit: i64,
    offset: i64,
}

/// Users newest first, a page at a time.
#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("admin_token" = [])), params(ListParams), responses(
    (status = 200, description = "A page of users", body = UserPage),
    AdminErrors,
))]
pub async fn list(State(ctx): State<ApiContext>, ApiQuery(params): ApiQuery<ListParams>) -> ApiResult<Json<UserPage>> {
    let status = match params.status.as_deref() {
        None => None,
        Some(raw) => Some(raw.parse::<UserStatus>().map_err(|_| {
            ApiError::invalid("status", format!("unknown status '{raw}'; one of: active, expired, suspended, refunded, cancelled"))
        })?),
    };
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let offset = params.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid("offset", "offset must not be negative"));
    }
    let users = ctx.accounts.list_users(status, limit, offset).await?;
    Ok(Json(UserPage { users, limit, offset }))
}

/// What an operator needs about one customer: plan, status and `paid_until`, their bot's profile
/// (its status says whether the gateway should run), the jobs not finished yet, and their last
/// payment.
#[utoipa::path(get, path = "/admin/users/{user_id}", tag = "admin", security(("admin_token" = [])), params(("user_id" = Uuid, Path)), responses(
    (status = 200, description = "The user's overview", body = UserOverview),
    AdminErrors,
))]
pub async fn show(State(ctx): State<ApiContext>, Path(raw_id): Path<String>) -> ApiResult<Json<UserOverview>> {
    let id = user_id(&raw_id)?;
    Ok(Json(user_overview(&*ctx.accounts, id).await?.ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?))
}

fn user_id(raw: &str) -> ApiResult<Uuid> {
    raw.parse().map_err(|_| ApiError::invalid("user_id", format!("'{raw}' is not a user id (a UUID)")))
}

#[derive(Serialize, ToSchema)]
pub struct KeysRevoked {
    /// Live keys revoked (0 when none was).
    revoked: u64,
}

/// Revokes every live key of the user, effective at once.
#[utoipa::path(post, path = "/admin/users/{user_id}/keys/revoke", tag = "admin", security(("admin_token" = [])), params(("user_id" = Uuid, Path)), responses(
    (status = 200, description = "Revoked", body = KeysRevoked),
    AdminErrors,
))]
pub async fn revoke_keys(State(ctx): State<ApiContext>, Path(raw_id): Path<String>) -> ApiResult<Json<KeysRevoked>> {
    let revoked = ctx.accounts.revoke_user_keys(user_id(&raw_id)?).await?;
    ctx.auth.invalidate();
    Ok(Json(KeysRevoked { revoked }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Days back from now, 1–366; default 30.
    #[param(minimum = 1, maximum = 366)]
    days: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Usage {
    user_id: Uuid,
    since: DateTime<Utc>,
    /// Per UTC day and endpoint.
    days: Vec<UsageDay>,
    totals: UsageTotals,
}

#[derive(Serialize, ToSchema)]
struct UsageTotals {
    requests: i64,
    upstream_cost_pts: i64,
}

/// Requests and upstream points by endpoint by day.
#[utoipa::path(get, path = "/admin/users/{user_id}/usage", tag = "admin", security(("admin_token" = [])),
    params(("user_id" = Uuid, Path), UsageParams),
    responses((status = 200, description = "The user's usage", body = Usage), AdminErrors),
)]
pub async fn usage(
    State(ctx): State<ApiContext>,
    Path(raw_id): Path<String>,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> ApiResult<Json<Usage>> {
    let id = user_id(&raw_id)?;
    let days = params.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid("days", "days must be between 1 and 366"));
    }
    if ctx.accounts.user(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no user {id}")));
    }
    let since = Utc::now() - chrono::Duration::days(days);
    let rows = ctx.accounts.usage_by_day(id, since).await?;
    let requests: i64 = rows.iter().map(|r| r.requests).sum();
    let points: i64 = rows.iter().map(|r| r.upstream_cost_pts).sum();
    Ok(Json(Usage { user_id: id, since, days: rows, totals: UsageTotals { requests, upstream_cost_pts: points } }))
}
