use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use twilight_accounts::{Accounts, AccountsError, ProvisioningJob};
use twilight_core::RawToken;
use uuid::Uuid;

use crate::extract::ApiPath;
use crate::{onboarding, ApiContext, ApiResult};

/// `POST /admin/provision/{user_id}` — starts provisioning the user (or resumes their unfinished
/// job) and answers the onboarding link to hand them; a link given out earlier stops working.
pub async fn provision(State(ctx): State<ApiContext>, ApiPath(user_id): ApiPath<Uuid>) -> ApiResult<(StatusCode, Json<Value>)> {
    let (job, onboarding_url) = provision_user(&*ctx.accounts, user_id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job.job_id, "state": job.state, "onboarding_url": onboarding_url }))))
}

/// Starts or resumes provisioning `user_id` behind a fresh onboarding link, returned (its only
/// appearance) with the job; the admin API and `twilight admin provision` both come here.
pub async fn provision_user(accounts: &dyn Accounts, user_id: Uuid) -> Result<(ProvisioningJob, String), AccountsError> {
    let token = RawToken::generate();
    let job = accounts.enqueue_provisioning(user_id, &token.hash()).await?;
    Ok((job, onboarding::url(&token)))
}
