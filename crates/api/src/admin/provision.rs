use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use twilight_core::RawToken;
use uuid::Uuid;

use crate::extract::ApiPath;
use crate::{ApiContext, ApiResult};

/// `POST /admin/provision/{user_id}` — starts provisioning the user (or resumes their unfinished
/// job) and answers the onboarding link to hand them; a link given out earlier stops working.
pub async fn provision(State(ctx): State<ApiContext>, ApiPath(user_id): ApiPath<Uuid>) -> ApiResult<(StatusCode, Json<Value>)> {
    let token = RawToken::generate();
    let job = ctx.accounts.enqueue_provisioning(user_id, &token.hash()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job.job_id, "state": job.state, "onboarding_url": format!("/onboard/{}", token.expose()) })),
    ))
}
