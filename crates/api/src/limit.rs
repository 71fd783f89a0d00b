//! Token buckets (GCRA via `governor`): per user key, sized by each key's `rate_limit_per_min`, and
//! per client IP on the unauthenticated routes that write rows or call out (orders, onboarding
//! answers) and on failed authentication.

use std::hash::Hash;
use std::net::IpAddr;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::auth::UserKey;
use crate::edge::ClientIp;
use crate::error::ApiError;

/// A bucket per key, made on first use and forgotten once idle.
pub struct Buckets<K> {
    buckets: moka::sync::Cache<K, Arc<(Quota, DefaultDirectRateLimiter)>>,
}

impl<K: Hash + Eq + Send + Sync + 'static> Buckets<K> {
    /// `idle` must be at least the time an emptied bucket takes to refill: forgetting a bucket
    /// gives it back full.
    pub fn new(idle: Duration) -> Self {
        Buckets { buckets: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_idle(idle).build() }
    }

    /// Takes one token from `key`'s bucket of `quota`, or says how long until one is free (whole
    /// seconds, rounded up, as `Retry-After` wants them).
    pub fn take(&self, key: K, quota: Quota) -> Result<(), ApiError> {
        let bucket = match self.buckets.get(&key).filter(|bucket| bucket.0 == quota) {
            Some(bucket) => bucket,
            None => {
                let fresh = Arc::new((quota, RateLimiter::direct(quota)));
                self.buckets.insert(key, fresh.clone());
                fresh
            }
        };
        bucket.1.check().map_err(|not_until| rate_limited(not_until.wait_time_from(DefaultClock::default().now())))
    }
}

fn rate_limited(wait: Duration) -> ApiError {
    ApiError::RateLimited { retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }
}

/// `n` per minute (at least one), as a bucket that holds a minute's worth.
pub fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// `n` per hour (at least one), as a bucket that holds an hour's worth.
pub fn per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// The data plane's buckets, one per user key.
pub struct RateLimits {
    /// An idle bucket refills within a minute, so forgetting one after two idle minutes loses nothing.
    buckets: Buckets<[u8; 32]>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { buckets: Buckets::new(Duration::from_secs(120)) }
    }
}

impl RateLimits {
    /// Takes one token from the key's bucket, or says how long until one is free.
    pub fn check(&self, key: &UserKey) -> Result<(), ApiError> {
        self.check_per_min(key, key.rate_limit_per_min)
    }

    /// Like [`Self::check`] with a bucket of `per_min` instead of the key's own limit (the LLM relay
    /// keeps its buckets in a `RateLimits` of its own).
    pub fn check_per_min(&self, key: &UserKey, per_min: u32) -> Result<(), ApiError> {
        self.buckets.take(key.digest, per_minute(per_min))
    }
}

/// How much one client IP may do on the routes anyone can call.
#[derive(Debug, Clone)]
pub struct IpQuotas {
    /// Orders placed (`/buy`, `/checkout`, renewals): each writes a row and makes a signed
    /// WeChat Pay call.
    pub orders_per_hour: u32,
    /// Answers posted on onboarding pages (verify code, bot name, new QR code).
    pub onboarding_posts_per_min: u32,
    /// Unknown bearer tokens, onboarding and renewal links; the failure that finds the bucket
    /// empty blocks the IP, whose lookups are then refused without touching the database until
    /// the bucket refills.
    pub failed_lookups_per_min: u32,
}

impl Default for IpQuotas {
    fn default() -> Self {
        IpQuotas { orders_per_hour: 10, onboarding_posts_per_min: 30, failed_lookups_per_min: 20 }
    }
}

/// The per-IP buckets.
pub struct IpLimits {
    quotas: IpQuotas,
    orders: Buckets<IpAddr>,
    onboarding_posts: Buckets<IpAddr>,
    failures: Buckets<IpAddr>,
    /// IPs whose failure bucket is empty, until when: checked before a lookup, so a guessing loop
    /// costs no query.
    blocked: moka::sync::Cache<IpAddr, Instant>,
}

impl IpLimits {
    pub fn new(quotas: IpQuotas) -> Self {
        IpLimits {
            quotas,
            orders: Buckets::new(Duration::from_secs(3_700)),
            onboarding_posts: Buckets::new(Duration::from_secs(120)),
            failures: Buckets::new(Duration::from_secs(120)),
            blocked: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_live(Duration::from_secs(60)).build(),
        }
    }

    pub fn order(&self, client: ClientIp) -> Result<(), ApiError> {
        self.orders.take(client.bucket(), per_hour(self.quotas.orders_per_hour))
    }

    pub fn onboarding_post(&self, client: ClientIp) -> Result<(), ApiError> {
        self.onboarding_posts.take(client.bucket(), per_minute(self.quotas.onboarding_posts_per_min))
    }

    /// Whether `client` may make a lookup that could fail (an uncached token, an onboarding link).
    pub fn admit_lookup(&self, client: ClientIp) -> Result<(), ApiError> {
        match self.blocked.get(&client.bucket()).map(|until| until.saturating_duration_since(Instant::now())) {
            Some(wait) if !wait.is_zero() => Err(rate_limited(wait)),
            _ => Ok(()),
        }
    }

    /// A lookup from `client` found nothing: spend a token, and block the IP once none is left.
    pub fn lookup_failed(&self, client: ClientIp) {
        let ip = client.bucket();
        if let Err(ApiError::RateLimited { retry_after_secs }) = self.failures.take(ip, per_minute(self.quotas.failed_lookups_per_min)) {
            tracing::warn!(client_ip = %ip, retry_after_secs, "too many failed lookups; the client is refused for a while");
            self.blocked.insert(ip, Instant::now() + Duration::from_secs(retry_after_secs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_gets_its_quota_then_waits() {
        let limits = IpLimits::new(IpQuotas { orders_per_hour: 3, onboarding_posts_per_min: 1, failed_lookups_per_min: 2 });
        let (a, b) = (ClientIp("192.0.2.1".parse().unwrap()), ClientIp("192.0.2.2".parse().unwrap()));
        for _ in 0..3 {
            limits.order(a).unwrap();
        }
        let Err(ApiError::RateLimited { retry_after_secs }) = limits.order(a) else { panic!("the fourth order of an hour went through") };
        assert!((1..=1200).contains(&retry_after_secs), "one order's worth of an hour: {retry_after_secs}");
        limits.order(b).unwrap();
        limits.onboarding_post(a).unwrap();
        assert!(limits.onboarding_post(a).is_err());
    }

    #[test]
    fn failed_lookups_block_the_ip_before_the_next_lookup() {
        let limits = IpLimits::new(IpQuotas { failed_lookups_per_min: 2, ..IpQuotas::default() });
        let (a, b) = (ClientIp("2001:db8::1".parse().unwrap()), ClientIp("2001:db8:0:1::2".parse().unwrap()));
        for _ in 0..2 {
            limits.admit_lookup(a).unwrap();
            limits.lookup_failed(a);
        }
        limits.admit_lookup(a).unwrap();
        limits.lookup_failed(a);
        assert!(matches!(limits.admit_lookup(a), Err(ApiError::RateLimited { retry_after_secs: 1..=60 })));
        limits.admit_lookup(b).unwrap();
    }
}
