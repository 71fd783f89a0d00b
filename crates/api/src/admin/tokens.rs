use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use twilight_accounts::AdminToken;
use utoipa::ToSchema;

use crate::openapi::AdminErrors;
use crate::{ApiContext, ApiError, ApiResult};

#[derive(Serialize, ToSchema)]
pub struct AdminTokens {
    tokens: Vec<AdminToken>,
}

/// Every admin token by its hash (never the token), label and revocation.
#[utoipa::path(get, path = "/admin/tokens", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, description = "Every admin token, revoked ones included", body = AdminTokens),
    AdminErrors,
))]
pub async fn list(State(ctx): State<ApiContext>) -> ApiResult<Json<AdminTokens>> {
    Ok(Json(AdminTokens { tokens: ctx.accounts.admin_tokens().await? }))
}

#[derive(Serialize, ToSchema)]
pub struct TokenRevoked {
    revoked: bool,
}

/// Revokes an admin token, effective at once (here) and within a poll (elsewhere).
#[utoipa::path(post, path = "/admin/tokens/{token_hash}/revoke", tag = "admin", security(("admin_token" = [])),
    params(("token_hash" = String, Path, pattern = "^[0-9a-f]{64}$", description = "The token's sha256, as `GET /admin/tokens` lists it")),
    responses(
        (status = 200, description = "Revoked", body = TokenRevoked),
        AdminErrors,
    ),
)]
pub async fn revoke(State(ctx): State<ApiContext>, Path(token_hash): Path<String>) -> ApiResult<Json<TokenRevoked>> {
    if token_hash.len() != 64 || !token_hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ApiError::invalid("token_hash", "a token hash is 64 lowercase hex characters, as GET /admin/tokens lists it"));
    }
    if !ctx.accounts.revoke_admin_token(&token_hash).await? {
        return Err(ApiError::NotFound("no live admin token with this hash".into()));
    }
    ctx.auth.invalidate();
    Ok(Json(TokenRevoked { revoked: true }))
}
