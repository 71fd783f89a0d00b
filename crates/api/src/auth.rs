//! Bearer authentication for both token classes (user API keys and admin tokens), cached in memory.
//!
//! A lookup is cached by the token's sha256; a revocation made here empties the cache at once, and one
//! made by another process (the CLI) is noticed by polling the accounts DB's `auth_epoch`. The
//! cached entry carries the user's status and `paid_until`, so an expired subscription is refused
//! (402) without a query, at the moment its grace ends.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use chrono::{DateTime, Utc};
use twilight_accounts::{Accounts, UserStatus};
use twilight_core::token;
use uuid::Uuid;

use crate::edge::ClientIp;
use crate::error::ApiError;
use crate::limit::IpLimits;

/// An authenticated user key, as the data plane needs it on every request.
#[derive(Debug, Clone)]
pub struct UserKey {
    pub user_id: Uuid,
    pub key_hash: Arc<str>,
    pub digest: [u8; 32],
    pub rate_limit_per_min: u32,
    status: UserStatus,
    /// The end of the paid period; `None` for users who do not pay by period (operator-made).
    paid_until: Option<DateTime<Utc>>,
    renewal_code: Arc<str>,
}

/// How the subscription of a key's user is judged and where its renewal is.
#[derive(Debug, Clone)]
pub struct SubscriptionPolicy {
    /// How long after `paid_until` service goes on.
    pub grace: chrono::Duration,
    /// The public base URL of our pages, for the renewal link (`{public_url}/renew/{code}`).
    pub public_url: String,
}

impl SubscriptionPolicy {
    pub fn renew_url(&self, renewal_code: &str) -> String {
        twilight_accounts::renew_url(&self.public_url, renewal_code)
    }
}

#[derive(Debug, Clone)]
enum Principal {
    User(Arc<UserKey>),
    RevokedUser,
    Admin { token_hash: Arc<str> },
    RevokedAdmin,
}

pub struct Authenticator {
    accounts: Arc<dyn Accounts>,
    policy: SubscriptionPolicy,
    /// Unknown tokens are not cached; these make a guessing client pay instead of the database.
    ip_limits: Arc<IpLimits>,
    cache: moka::sync::Cache<[u8; 32], Principal>,
    /// Bumped on every invalidation; a lookup that raced one does not cache its (maybe stale) answer.
    generation: AtomicU64,
    seen_epoch: AtomicI64,
}

impl Authenticator {
    pub fn new(accounts: Arc<dyn Accounts>, policy: SubscriptionPolicy, ip_limits: Arc<IpLimits>) -> Self {
        Authenticator {
            accounts,
            policy,
            ip_limits,
            cache: moka::sync::Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(600)).build(),
            generation: AtomicU64::new(0),
            seen_epoch: AtomicI64::new(i64::MIN),
        }
    }

    /// A live user key of a paying user from the `Authorization` header; admin tokens are refused here.
    pub async fn user(&self, headers: &HeaderMap, client: ClientIp) -> Result<Arc<UserKey>, ApiError> {
        let (principal, digest) = self.principal(headers, client).await?;
        match principal {
            Principal::User(key) if token::matches(&key.key_hash, &digest) => {
                tracing::Span::current().record("user_id", tracing::field::display(key.user_id));
                self.paying(key)
            }
            Principal::RevokedUser => Err(ApiError::Revoked),
            Principal::Admin { .. } | Principal::RevokedAdmin => Err(ApiError::Forbidden("admin tokens cannot read data as a user")),
            Principal::User(_) => Err(ApiError::UnknownToken),
        }
    }

    /// The key if its user's subscription runs (its grace included); 402 with the renewal link if
    /// it ran out, 403 if the user's service was ended otherwise (refunded, suspended, cancelled).
    fn paying(&self, key: Arc<UserKey>) -> Result<Arc<UserKey>, ApiError> {
        let lapsed = key.paid_until.is_some_and(|until| until + self.policy.grace < Utc::now());
        match key.status {
            UserStatus::Active if !lapsed => Ok(key),
            UserStatus::Active | UserStatus::Expired => {
                Err(ApiError::SubscriptionExpired { renew_url: self.policy.renew_url(&key.renewal_code) })
            }
            UserStatus::Refunded | UserStatus::Suspended | UserStatus::Cancelled => Err(ApiError::Revoked),
        }
    }

    /// A live admin token from the `Authorization` header; user keys are refused here.
    pub async fn admin(&self, headers: &HeaderMap, client: ClientIp) -> Result<(), ApiError> {
        let (principal, digest) = self.principal(headers, client).await?;
        match principal {
            Principal::Admin { token_hash } if token::matches(&token_hash, &digest) => Ok(()),
            Principal::RevokedAdmin => Err(ApiError::Revoked),
            Principal::User(_) | Principal::RevokedUser => Err(ApiError::Forbidden("user API keys cannot use admin endpoints")),
            Principal::Admin { .. } => Err(ApiError::UnknownToken),
        }
    }

    async fn principal(&self, headers: &HeaderMap, client: ClientIp) -> Result<(Principal, [u8; 32]), ApiError> {
        let raw = bearer(headers).ok_or(ApiError::MissingToken)?;
        let digest = token::digest(raw);
        if let Some(principal) = self.cache.get(&digest) {
            return Ok((principal, digest));
        }
        self.ip_limits.admit_lookup(client)?;
        match self.lookup(digest).await {
            Err(ApiError::UnknownToken) => {
                self.ip_limits.lookup_failed(client);
                Err(ApiError::UnknownToken)
            }
            looked_up => Ok((looked_up?, digest)),
        }
    }

    async fn lookup(&self, digest: [u8; 32]) -> Result<Principal, ApiError> {
        let generation = self.generation.load(Ordering::Acquire);
        let hash = hex::encode(digest);
        let principal = if let Some(key) = self.accounts.api_key(&hash).await? {
            let user = match key.revoked_at {
                Some(_) => None,
                None => self.accounts.user(key.user_id).await?,
            };
            match user {
                None => Principal::RevokedUser,
                Some(user) => Principal::User(Arc::new(UserKey {
                    user_id: key.user_id,
                    key_hash: key.key_hash.into(),
                    digest,
                    rate_limit_per_min: u32::try_from(key.rate_limit_per_min).unwrap_or(1).max(1),
                    status: user.status,
                    paid_until: user.paid_until,
                    renewal_code: user.renewal_code.into(),
                })),
            }
        } else if let Some(admin) = self.accounts.admin_token(&hash).await? {
            if admin.revoked_at.is_some() {
                Principal::RevokedAdmin
            } else {
                Principal::Admin { token_hash: admin.token_hash.into() }
            }
        } else {
            // Unknown tokens are not cached: a key created a moment later must work at once.
            return Err(ApiError::UnknownToken);
        };
        if self.generation.load(Ordering::Acquire) == generation {
            self.cache.insert(digest, principal.clone());
        }
        Ok(principal)
    }

    /// Forgets every cached lookup; called after any revocation.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    /// Polls the accounts DB's revocation epoch and invalidates when another process revoked something.
    pub async fn watch_revocations(self: Arc<Self>, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.accounts.auth_epoch().await {
                Ok(epoch) => {
                    let previous = self.seen_epoch.swap(epoch, Ordering::AcqRel);
                    // The first poll also clears: a revocation may have landed between a lookup and it.
                    if previous != epoch {
                        tracing::debug!(epoch, "revocation epoch changed; key cache cleared");
                        self.invalidate();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the revocation epoch"),
            }
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
