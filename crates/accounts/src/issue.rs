//! The accounts' domain operations shared by the admin API, the CLI and the provisioner: issuing
//! users and their keys (a raw key is made here, handed back once, and only its hash is stored), and
//! an operator's overview of a user.

use twilight_core::RawToken;
use uuid::Uuid;

use crate::{Accounts, HermesProfile, NewApiKey, NewUser, Payment, ProvisioningJob, Result, User};

/// Requests per minute of a key when nobody says otherwise (what a paid user's bot gets).
pub const DEFAULT_RATE_LIMIT_PER_MIN: i32 = 60;
/// What a user's key may do: read the data plane (and use the LLM relay).
pub const DATA_SCOPE: &str = "data:read";

impl NewApiKey {
    /// The data key of `user_id` whose raw form is `raw`, stored by its hash.
    pub fn data_key(user_id: Uuid, raw: &RawToken, rate_limit_per_min: i32) -> NewApiKey {
        NewApiKey { key_hash: raw.hash(), user_id, scope: DATA_SCOPE.into(), rate_limit_per_min }
    }
}

/// Creates a user and one live data key; the raw key is returned to the caller only.
pub async fn create_user_with_key(accounts: &dyn Accounts, new_user: NewUser, rate_limit_per_min: i32) -> Result<(User, RawToken)> {
    let user = accounts.create_user(new_user).await?;
    let key = RawToken::generate();
    accounts.insert_api_key(NewApiKey::data_key(user.user_id, &key, rate_limit_per_min)).await?;
    Ok((user, key))
}

/// The renewal page of the user whose renewal code is `renewal_code`, under our public URL: what
/// the 402 answers and the bot's reminders show.
pub fn renew_url(public_url: &str, renewal_code: &str) -> String {
    format!("{}/renew/{renewal_code}", public_url.trim_end_matches('/'))
}

/// What an operator needs to know about one customer at a glance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UserOverview {
    pub user: User,
    /// Their bot; its status says whether its gateway should be running.
    pub profile: Option<HermesProfile>,
    /// Jobs not finished yet, oldest first.
    pub open_jobs: Vec<ProvisioningJob>,
    pub last_payment: Option<Payment>,
}

/// The [`UserOverview`] of `user_id`; `None` for an unknown user.
pub async fn user_overview(accounts: &dyn Accounts, user_id: Uuid) -> Result<Option<UserOverview>> {
    let Some(user) = accounts.user(user_id).await? else { return Ok(None) };
    Ok(Some(UserOverview {
        user,
        profile: accounts.profile_for_user(user_id).await?,
        open_jobs: accounts.jobs_for_user(user_id).await?.into_iter().filter(|job| !job.is_finished()).collect(),
        last_payment: accounts.payments_for_user(user_id, 1).await?.into_iter().next(),
    }))
}
