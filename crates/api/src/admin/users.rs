use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use twilight_accounts::{create_user_with_key, user_overview, NewUser, Plan, UserStatus, DEFAULT_RATE_LIMIT_PER_MIN};
use uuid::Uuid;

use crate::extract::{ApiJson, ApiQuery};
use crate::{ApiContext, ApiError, ApiResult};

const MAX_RATE_LIMIT_PER_MIN: i32 = 1_000_000;
/// Users per page of `GET /admin/users`, unless `limit` says otherwise (at most [`MAX_PAGE`]).
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[serde(default)]
    plan: Option<String>,
    email: Option<String>,
    display_name: Option<String>,
    rate_limit_per_min: Option<i32>,
    paid_until: Option<DateTime<Utc>>,
}

/// `POST /admin/users` — the manual alpha path: creates a user and returns its raw key exactly once.
pub async fn create(State(ctx): State<ApiContext>, ApiJson(body): ApiJson<CreateUser>) -> ApiResult<(StatusCode, Json<Value>)> {
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
        Json(json!({
            "user": user,
            "api_key": key.expose(),
            "api_key_note": "shown once; only its sha256 is stored",
            "rate_limit_per_min": rate_limit_per_min,
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /admin/users[?status=expired&limit=50&offset=0]` — users newest first, a page at a time.
pub async fn list(State(ctx): State<ApiContext>, ApiQuery(params): ApiQuery<ListParams>) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({ "users": users, "limit": limit, "offset": offset })))
}

/// `GET /admin/users/{user_id}` — what an operator needs about one customer: plan, status and
/// `paid_until`, their bot's profile (its status says whether the gateway should run), the jobs not
/// finished yet, and their last payment.
pub async fn show(State(ctx): State<ApiContext>, Path(raw_id): Path<String>) -> ApiResult<Json<Value>> {
    let id = user_id(&raw_id)?;
    let overview = user_overview(&*ctx.accounts, id).await?.ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?;
    Ok(Json(serde_json::to_value(overview).map_err(|error| ApiError::Internal(error.to_string()))?))
}

fn user_id(raw: &str) -> ApiResult<Uuid> {
    raw.parse().map_err(|_| ApiError::invalid("user_id", format!("'{raw}' is not a user id (a UUID)")))
}

/// `POST /admin/users/{user_id}/keys/revoke` — revokes every live key of the user, effective at once.
pub async fn revoke_keys(State(ctx): State<ApiContext>, Path(raw_id): Path<String>) -> ApiResult<Json<Value>> {
    let revoked = ctx.accounts.revoke_user_keys(user_id(&raw_id)?).await?;
    ctx.auth.invalidate();
    Ok(Json(json!({ "revoked": revoked })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    days: Option<i64>,
}

/// `GET /admin/users/{user_id}/usage[?days=30]` — requests and upstream points by endpoint by day.
pub async fn usage(
    State(ctx): State<ApiContext>,
    Path(raw_id): Path<String>,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({
        "user_id": id,
        "since": since,
        "days": rows,
        "totals": { "requests": requests, "upstream_cost_pts": points },
    })))
}
