use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use twilight_accounts::{Accounts, AccountsError, JobState, ProvisioningJob};
use twilight_core::RawToken;
use uuid::Uuid;

use crate::extract::ApiPath;
use crate::{onboarding, ApiContext, ApiResult};

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProvisionStarted {
    job_id: Uuid,
    state: JobState,
    /// The link to hand the user; shown this once.
    onboarding_url: String,
}

/// Starts provisioning the user (or resumes their unfinished job) and answers the onboarding link
/// to hand them; a link given out earlier stops working.
#[utoipa::path(post, path = "/admin/provision/{user_id}", tag = "admin", security(("admin_token" = [])),
    params(("user_id" = Uuid, Path)),
    responses((status = 202, description = "Enqueued", body = ProvisionStarted), crate::openapi::AdminErrors),
)]
pub async fn provision(State(ctx): State<ApiContext>, ApiPath(user_id): ApiPath<Uuid>) -> ApiResult<(StatusCode, Json<ProvisionStarted>)> {
    let (job, onboarding_url) = provision_user(&*ctx.accounts, user_id).await?;
    Ok((StatusCode::ACCEPTED, Json(ProvisionStarted { job_id: job.job_id, state: job.state, onboarding_url })))
}

/// Starts or resumes provisioning `user_id` behind a fresh onboarding link, returned (its only
/// appearance) with the job; the admin API and `twilight admin provision` both come here.
pub async fn provision_user(accounts: &dyn Accounts, user_id: Uuid) -> Result<(ProvisioningJob, String), AccountsError> {
    let token = RawToken::generate();
    let job = accounts.enqueue_provisioning(user_id, &token.hash()).await?;
    Ok((job, onboarding::url(&token)))
}
