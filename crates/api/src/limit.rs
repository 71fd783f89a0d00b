//! Per-key token buckets (GCRA via `governor`), sized by each key's `rate_limit_per_min`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::auth::UserKey;
use crate::error::ApiError;

pub struct RateLimits {
    /// An idle bucket refills within a minute, so forgetting one after two idle minutes loses nothing.
    buckets: moka::sync::Cache<[u8; 32], Arc<(u32, DefaultDirectRateLimiter)>>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { buckets: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(120)).build() }
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
        let mut bucket = self.buckets.get_with(key.digest, || Arc::new(new_bucket(per_min)));
        if bucket.0 != per_min {
            bucket = Arc::new(new_bucket(per_min));
            self.buckets.insert(key.digest, bucket.clone());
        }
        bucket.1.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited { retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }
        })
    }
}

fn new_bucket(per_min: u32) -> (u32, DefaultDirectRateLimiter) {
    let n = NonZeroU32::new(per_min).unwrap_or(NonZeroU32::MIN);
    (per_min, RateLimiter::direct(Quota::per_minute(n)))
}
