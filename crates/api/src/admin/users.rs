use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use twilight_accounts::{Accounts, AccountsError, NewApiKey, NewUser, Plan, User};
use twilight_core::RawToken;
use uuid::Uuid;

use crate::extract::{ApiJson, ApiQuery};
use crate::{ApiContext, ApiError, ApiResult};

pub const DEFAULT_RATE_LIMIT_PER_MIN: i32 = 60;
const MAX_RATE_LIMIT_PER_MIN: i32 = 1_000_000;

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

/// Creates a user and one live `data:read` key; the raw key is returned to the caller only.
pub async fn create_user_with_key(accounts: &dyn Accounts, new_user: NewUser, rate_limit_per_min: i32) -> Result<(User, RawToken), AccountsError> {
    let user = accounts.create_user(new_user).await?;
    let key = RawToken::generate();
    accounts
        .insert_api_key(NewApiKey { key_hash: key.hash(), user_id: user.user_id, scope: "data:read".into(), rate_limit_per_min })
        .await?;
    Ok((user, key))
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
pub async fn usage(State(ctx): State<ApiContext>, Path(raw_id): Path<String>, ApiQuery(params): ApiQuery<UsageParams>) -> ApiResult<Json<Value>> {
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
