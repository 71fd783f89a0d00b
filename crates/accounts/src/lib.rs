//! The accounts database of Twilight Drive: users, API keys, admin tokens and usage metering
//! (plus the `payments` and `hermes_profiles` schema).
//!
//! Callers hold an `Arc<dyn Accounts>`. The one implementation, [`SqlAccounts`], serves
//! PostgreSQL (production) and SQLite (the embedded default), chosen by the URL scheme; both pass
//! the same contract tests (`tests/contract.rs`).
#![forbid(unsafe_code)]

mod error;
mod model;
mod sql;
pub mod testing;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use error::{AccountsError, Result};
pub use model::{
    AdminToken, ApiKey, NewApiKey, NewUser, Plan, UnknownValue, UsageDay, UsageRecord,
    User, UserStatus,
};
pub use sql::SqlAccounts;

/// Storage of accounts, keys and usage. Every timestamp is set by the caller's clock (never the
/// database's), so all backends and processes agree on it.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// `"postgres"` or `"sqlite"`, for logs and health output.
    fn backend(&self) -> &'static str;

    /// Round-trips a trivial query; for health checks.
    async fn ping(&self) -> Result<()>;

    /// Applies the embedded migrations of this backend; already applied ones are skipped, so
    /// every process may call it at startup.
    async fn migrate(&self) -> Result<()>;

    /// Creates an active user with a fresh v4 id.
    async fn create_user(&self, new: NewUser) -> Result<User>;

    async fn user(&self, user_id: Uuid) -> Result<Option<User>>;

    /// Stores a key. `Conflict` if the hash exists, `NotFound("user")` if the user does not.
    async fn insert_api_key(&self, new: NewApiKey) -> Result<ApiKey>;

    /// Looks a key up by hash, revoked or not (callers check [`ApiKey::is_revoked`]).
    async fn api_key(&self, key_hash: &str) -> Result<Option<ApiKey>>;

    /// Revokes every live key of the user and bumps the auth epoch in the same transaction.
    /// Returns how many keys were revoked (0 if none were live); `NotFound("user")` for an
    /// unknown user.
    async fn revoke_user_keys(&self, user_id: Uuid) -> Result<u64>;

    /// Revokes one key and bumps the auth epoch; `false` if it was unknown or already revoked.
    async fn revoke_api_key(&self, key_hash: &str) -> Result<bool>;

    /// Stores an admin token. `Conflict` if the hash exists.
    async fn insert_admin_token(&self, token_hash: &str, label: &str) -> Result<AdminToken>;

    async fn admin_token(&self, token_hash: &str) -> Result<Option<AdminToken>>;

    /// Revokes an admin token and bumps the auth epoch; `false` if unknown or already revoked.
    async fn revoke_admin_token(&self, token_hash: &str) -> Result<bool>;

    /// A counter that grows with every revocation. Processes caching key lookups poll it and
    /// drop their cache when it changes, so a revocation takes effect everywhere within one poll.
    async fn auth_epoch(&self) -> Result<i64>;

    /// Writes a buffered batch of usage rows atomically (all or none) and advances each key's
    /// `last_used_at` to its latest use in the batch, never backwards. A status that does not
    /// fit the `smallint` column fails the whole batch before anything is written.
    async fn record_usage(&self, records: &[UsageRecord]) -> Result<()>;

    /// Requests and upstream cost per UTC day and endpoint since `since` (inclusive), newest day
    /// first, then by endpoint.
    async fn usage_by_day(&self, user_id: Uuid, since: DateTime<Utc>) -> Result<Vec<UsageDay>>;

    /// Number of usage rows of the user, ever.
    async fn usage_count(&self, user_id: Uuid) -> Result<i64>;
}
