use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::{ApiContext, ApiError, ApiResult};

/// `GET /admin/tokens` — every admin token by its hash (never the token), label and revocation.
pub async fn list(State(ctx): State<ApiContext>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "tokens": ctx.accounts.admin_tokens().await? })))
}

/// `POST /admin/tokens/{token_hash}/revoke` — revokes an admin token, effective at once (here) and
/// within a poll (elsewhere). 404 for a hash that names no live token.
pub async fn revoke(State(ctx): State<ApiContext>, Path(token_hash): Path<String>) -> ApiResult<Json<Value>> {
    if token_hash.len() != 64 || !token_hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ApiError::invalid("token_hash", "a token hash is 64 lowercase hex characters, as GET /admin/tokens lists it"));
    }
    if !ctx.accounts.revoke_admin_token(&token_hash).await? {
        return Err(ApiError::NotFound("no live admin token with this hash".into()));
    }
    ctx.auth.invalidate();
    Ok(Json(json!({ "revoked": true })))
}
