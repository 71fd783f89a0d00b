//! The providers in order of preference. A search goes to the first that may be asked (not out of
//! today's budget or quota, its breaker not open) and moves on, transparently, when one is
//! throttled, out of quota, failing or finds nothing. Identical searches within the cache window
//! share one answer and cost nothing.
//!
//! The breaker is ours, not `failsafe`'s as for Tushare: its window comes from each failure (a
//! throttle's `Retry-After`, a spent quota until Beijing midnight), and its half-open state lets
//! exactly one probe through while concurrent searches skip the provider.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;
use moka::future::Cache;
use serde::Serialize;
use twilight_core::upstream::{record_call, CallOutcome};

use crate::{clean, Hit, Provider, ProviderError, SearchError, SearchRequest};

#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// How long an answer serves identical searches.
    pub cache_ttl: Duration,
    /// How long a failing provider is left alone when its failure does not say.
    pub breaker_window: Duration,
}

/// What one provider may spend per day (Beijing time) and what a call costs.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ProviderSettings {
    /// Calls per day before the provider is passed over; 0 = no limit.
    pub daily_budget: u32,
    /// Calls per day that cost nothing (Google's free 100).
    pub free_per_day: u32,
    /// Upstream points one answered call costs beyond the free ones.
    pub cost_pts: i32,
}

/// What a search found, as cached: the provider that served it and every call it took.
#[derive(Debug, Clone)]
pub struct Found {
    /// The provider that answered: `dashscope`, `google_cse`, `bocha`.
    pub provider: &'static str,
    /// What cites name: the provider, or `sandbox:<provider>` when a simulator answered.
    pub source: String,
    pub hits: Vec<Hit>,
    pub fetched_at: DateTime<Utc>,
    /// Upstream points the calls behind this answer cost.
    pub cost_pts: i32,
    /// Each provider asked, in order, with what happened (`answered`, `empty`, `throttled`, …).
    pub attempts: Vec<(&'static str, String)>,
}

/// One search's answer: what was found and whether the cache served it (then it cost nothing).
#[derive(Debug, Clone)]
pub struct Served {
    pub found: Arc<Found>,
    pub cached: bool,
}

impl Served {
    /// Upstream points this answer cost the caller.
    pub fn cost_pts(&self) -> i32 {
        if self.cached {
            0
        } else {
            self.found.cost_pts
        }
    }
}

pub struct Searcher {
    slots: Vec<Slot>,
    /// Providers left out (no credentials), with why: `/healthz` lists them.
    skipped: Vec<(&'static str, String)>,
    cache: Cache<String, Arc<Found>>,
    config: SearchConfig,
}

struct Slot {
    provider: Arc<dyn Provider>,
    settings: ProviderSettings,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    day: Option<NaiveDate>,
    calls: u32,
    answered: u32,
    cost_pts: i64,
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
    exhausted: bool,
    last_success: Option<DateTime<Utc>>,
    last_error: Option<(DateTime<Utc>, String)>,
}

/// One provider as `/healthz` and `GET /admin/search` show it.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ProviderStatus {
    pub name: &'static str,
    /// `ready`, `open` (breaker), `probing`, `exhausted` (quota), `over_budget`, or `not_configured`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<NaiveDate>,
    pub calls_today: u32,
    pub answered_today: u32,
    pub cost_pts_today: i64,
    pub failures_today: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<ProviderSettings>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_message: Option<String>,
}

/// Why a provider is passed over for now, and for how long.
struct Passed {
    state: &'static str,
    retry_after: Duration,
}

impl Searcher {
    /// `providers` in order of preference; `skipped` names those left out and why.
    pub fn new(config: SearchConfig, providers: Vec<(Arc<dyn Provider>, ProviderSettings)>, skipped: Vec<(&'static str, String)>) -> Self {
        let slots = providers.into_iter().map(|(provider, settings)| Slot { provider, settings, state: Mutex::default() }).collect();
        let cache = Cache::builder().max_capacity(10_000).time_to_live(config.cache_ttl.max(Duration::from_millis(1))).build();
        Searcher { slots, skipped, cache, config }
    }

    pub async fn search(&self, request: &SearchRequest) -> Result<Served, SearchError> {
        let entry = self
            .cache
            .entry(request.cache_key())
            .or_try_insert_with(async { self.ask(request).await.map(Arc::new) })
            .await
            .map_err(|e| (*e).clone())?;
        Ok(Served { cached: !entry.is_fresh(), found: entry.into_value() })
    }

    /// Every provider, configured or not, as it stands now.
    pub fn status(&self) -> Vec<ProviderStatus> {
        let now = Utc::now();
        let configured = self.slots.iter().map(|slot| slot.status(now));
        let skipped = self.skipped.iter().map(|(name, reason)| ProviderStatus {
            name,
            state: "not_configured",
            reason: Some(reason.clone()),
            ..ProviderStatus::default()
        });
        configured.chain(skipped).collect()
    }

    async fn ask(&self, request: &SearchRequest) -> Result<Found, SearchError> {
        let mut attempts = Vec::new();
        let mut cost_pts = 0;
        let mut empty: Option<Found> = None;
        let mut soonest: Option<Duration> = None;
        for slot in &self.slots {
            let name = slot.provider.name();
            let permit = match slot.admit(Utc::now()) {
                Ok(permit) => permit,
                Err(passed) => {
                    record_call(name, CallOutcome::Refused, None);
                    soonest = Some(soonest.map_or(passed.retry_after, |s| s.min(passed.retry_after)));
                    attempts.push((name, format!("skipped: {}", passed.state)));
                    continue;
                }
            };
            let started = Instant::now();
            let answer = slot.provider.search(request).await;
            record_call(name, if answer.is_ok() { CallOutcome::Ok } else { CallOutcome::Error }, Some(started.elapsed()));
            match answer {
                Ok(page) => {
                    cost_pts += permit.answered();
                    let hits = clean::hits(page.hits, request);
                    let source = if page.sandbox { format!("sandbox:{name}") } else { name.to_string() };
                    let outcome = if hits.is_empty() { "empty" } else { "answered" };
                    attempts.push((name, outcome.to_string()));
                    let found = Found { provider: name, source, hits, fetched_at: Utc::now(), cost_pts, attempts: attempts.clone() };
                    if !found.hits.is_empty() {
                        return Ok(found);
                    }
                    empty.get_or_insert(found);
                }
                Err(error) => {
                    tracing::warn!(provider = name, %error, "search provider failed; trying the next");
                    let retry_after = permit.failed(&error, &self.config);
                    soonest = Some(soonest.map_or(retry_after, |s| s.min(retry_after)));
                    attempts.push((name, error.to_string()));
                }
            }
        }
        // Nothing anywhere is an answer too, if someone could look; its cost is all the calls made.
        if let Some(mut found) = empty {
            found.cost_pts = cost_pts;
            found.attempts = attempts;
            return Ok(found);
        }
        let detail = if attempts.is_empty() {
            "no search provider is configured".to_string()
        } else {
            attempts.iter().map(|(name, outcome)| format!("{name}: {outcome}")).collect::<Vec<_>>().join("; ")
        };
        let retry_after_secs = soonest.unwrap_or(self.config.breaker_window).as_secs().max(1);
        Err(SearchError::Unavailable { detail, retry_after_secs })
    }
}

/// Time from `now` until the next midnight in Beijing, when daily quotas and budgets reset.
fn until_beijing_midnight(now: DateTime<Utc>) -> Duration {
    let tomorrow = twilight_core::china_today(now).succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0));
    let midnight = tomorrow.and_then(|t| Shanghai.from_local_datetime(&t).single());
    midnight.and_then(|m| (m.with_timezone(&Utc) - now).to_std().ok()).unwrap_or(Duration::from_secs(24 * 3600))
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The day's counters, reset when Beijing's date has changed.
    fn today(&self, now: DateTime<Utc>) -> MutexGuard<'_, SlotState> {
        let mut state = self.state();
        let today = twilight_core::china_today(now);
        if state.day != Some(today) {
            let kept = SlotState {
                open_until: state.open_until,
                last_success: state.last_success,
                last_error: state.last_error.take(),
                ..Default::default()
            };
            *state = SlotState { day: Some(today), ..kept };
        }
        state
    }

    /// Why this provider may not be asked now, if it may not.
    fn passed(&self, state: &SlotState, now: DateTime<Utc>) -> Option<Passed> {
        let midnight = || until_beijing_midnight(now);
        if state.exhausted {
            return Some(Passed { state: "exhausted", retry_after: midnight() });
        }
        if self.settings.daily_budget > 0 && state.calls >= self.settings.daily_budget {
            return Some(Passed { state: "over_budget", retry_after: midnight() });
        }
        match state.open_until {
            Some(until) if Instant::now() < until => Some(Passed { state: "open", retry_after: until - Instant::now() }),
            Some(_) if state.probing => Some(Passed { state: "probing", retry_after: Duration::from_secs(1) }),
            _ => None,
        }
    }

    fn admit(&self, now: DateTime<Utc>) -> Result<Permit<'_>, Passed> {
        let mut state = self.today(now);
        if let Some(passed) = self.passed(&state, now) {
            return Err(passed);
        }
        let probe = state.open_until.is_some();
        state.probing |= probe;
        state.calls += 1;
        Ok(Permit { slot: self, probe, settled: false })
    }

    fn status(&self, now: DateTime<Utc>) -> ProviderStatus {
        let state = self.today(now);
        let passed = self.passed(&state, now);
        ProviderStatus {
            name: self.provider.name(),
            state: passed.as_ref().map_or("ready", |p| p.state),
            reason: None,
            retry_after_secs: passed.map(|p| p.retry_after.as_secs().max(1)),
            day: state.day,
            calls_today: state.calls,
            answered_today: state.answered,
            cost_pts_today: state.cost_pts,
            failures_today: state.failures,
            settings: Some(self.settings),
            last_success: state.last_success,
            last_error: state.last_error.as_ref().map(|(at, _)| *at),
            last_error_message: state.last_error.as_ref().map(|(_, message)| message.clone()),
        }
    }
}

/// Leave to call a provider once; a probe that is dropped unsettled (its search cancelled) frees
/// the half-open state for the next one.
struct Permit<'a> {
    slot: &'a Slot,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    /// The call was answered: the breaker closes; returns the points it cost.
    fn answered(mut self) -> i32 {
        self.settled = true;
        let mut state = self.slot.state();
        let cost = if state.answered < self.slot.settings.free_per_day { 0 } else { self.slot.settings.cost_pts };
        state.answered += 1;
        state.cost_pts += i64::from(cost);
        state.open_until = None;
        state.probing = false;
        state.last_success = Some(Utc::now());
        cost
    }

    /// The call failed: the breaker opens for as long as the failure says; returns that wait.
    fn failed(mut self, error: &ProviderError, config: &SearchConfig) -> Duration {
        self.settled = true;
        let mut state = self.slot.state();
        state.failures += 1;
        state.probing = false;
        state.last_error = Some((Utc::now(), error.to_string()));
        let wait = match error {
            ProviderError::Quota { .. } => {
                state.exhausted = true;
                until_beijing_midnight(Utc::now())
            }
            ProviderError::Throttled { retry_after: Some(wait), .. } => *wait,
            _ => config.breaker_window,
        };
        state.open_until = Some(Instant::now() + wait);
        wait
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.slot.state().probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::{Page, RawHit};

    /// A provider whose answers a test scripts: a result, nothing, or a failure.
    struct Scripted {
        name: &'static str,
        outcome: Mutex<Result<usize, ProviderError>>,
        calls: AtomicU32,
    }

    impl Scripted {
        fn new(name: &'static str, outcome: Result<usize, ProviderError>) -> Arc<Self> {
            Arc::new(Scripted { name, outcome: Mutex::new(outcome), calls: AtomicU32::new(0) })
        }

        fn set(&self, outcome: Result<usize, ProviderError>) {
            *self.outcome.lock().unwrap() = outcome;
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &'static str {
            self.name
        }

        async fn search(&self, _: &SearchRequest) -> Result<Page, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let hits = self.outcome.lock().unwrap().clone()?;
            let hit = |i| RawHit {
                title: format!("{} {i}", self.name),
                url: format!("https://example.com/{}/{i}", self.name),
                ..Default::default()
            };
            Ok(Page { hits: (0..hits).map(hit).collect(), sandbox: false })
        }
    }

    fn settings(daily_budget: u32, free_per_day: u32, cost_pts: i32) -> ProviderSettings {
        ProviderSettings { daily_budget, free_per_day, cost_pts }
    }

    fn searcher(providers: &[(Arc<Scripted>, ProviderSettings)], cache_ttl: Duration) -> Searcher {
        let config = SearchConfig { cache_ttl, breaker_window: Duration::from_secs(60) };
        Searcher::new(
            config,
            providers.iter().map(|(p, s)| (p.clone() as Arc<dyn Provider>, *s)).collect(),
            vec![("bocha", "no key".into())],
        )
    }

    fn request(query: &str) -> SearchRequest {
        SearchRequest::parse(Some(query), None, None, NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()).unwrap()
    }

    const NO_CACHE: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn falls_back_in_order_and_leaves_a_throttled_provider_alone() {
        let throttled = ProviderError::Throttled { retry_after: Some(Duration::from_secs(30)), message: "qps".into() };
        let first = Scripted::new("first", Err(throttled));
        let second = Scripted::new("second", Ok(0));
        let third = Scripted::new("third", Ok(3));
        let search = searcher(
            &[(first.clone(), settings(0, 0, 1)), (second.clone(), settings(0, 0, 2)), (third.clone(), settings(0, 0, 3))],
            NO_CACHE,
        );
        let served = search.search(&request("a")).await.unwrap();
        assert_eq!((served.found.provider, served.found.hits.len(), served.cost_pts()), ("third", 3, 2 + 3));
        let outcomes: Vec<&str> = served.found.attempts.iter().map(|(_, o)| o.as_str()).collect();
        assert_eq!(outcomes[1..], ["empty", "answered"]);
        // The throttled provider is skipped, not asked, until its window passes.
        search.search(&request("b")).await.unwrap();
        assert_eq!((first.calls(), second.calls(), third.calls()), (1, 2, 2));
        let status = search.status();
        assert_eq!((status[0].state, status[3].state), ("open", "not_configured"));
        assert!(status[0].retry_after_secs.unwrap() <= 30);
    }

    #[tokio::test]
    async fn budgets_free_calls_and_quota() {
        let first = Scripted::new("first", Ok(1));
        let second = Scripted::new("second", Ok(1));
        let search = searcher(&[(first.clone(), settings(2, 1, 5)), (second.clone(), settings(0, 0, 1))], NO_CACHE);
        let costs: Vec<(&str, i32)> = {
            let mut costs = Vec::new();
            for query in ["a", "b", "c"] {
                let served = search.search(&request(query)).await.unwrap();
                costs.push((served.found.provider, served.cost_pts()));
            }
            costs
        };
        assert_eq!(costs, [("first", 0), ("first", 5), ("second", 1)], "one free call, one paid, then over budget");
        assert_eq!(first.calls(), 2, "the exhausted budget is never called");
        assert_eq!(search.status()[0].state, "over_budget");

        second.set(Err(ProviderError::Quota { message: "dailyLimitExceeded".into() }));
        let error = search.search(&request("d")).await.unwrap_err();
        let SearchError::Unavailable { detail, retry_after_secs } = error else { panic!("{error:?}") };
        assert!(detail.contains("over_budget") && detail.contains("quota"), "{detail}");
        assert!(retry_after_secs > 0 && retry_after_secs <= 24 * 3600);
        search.search(&request("e")).await.unwrap_err();
        assert_eq!(second.calls(), 2, "a spent quota is not asked again today");
    }

    #[tokio::test]
    async fn a_half_open_breaker_lets_one_probe_through() {
        let only = Scripted::new("only", Err(ProviderError::Unavailable { message: "503".into() }));
        let config = SearchConfig { cache_ttl: NO_CACHE, breaker_window: Duration::from_millis(50) };
        let search = Searcher::new(config, vec![(only.clone() as Arc<dyn Provider>, settings(0, 0, 1))], Vec::new());
        let SearchError::Unavailable { retry_after_secs, .. } = search.search(&request("a")).await.unwrap_err() else { unreachable!() };
        assert_eq!(retry_after_secs, 1);
        search.search(&request("b")).await.unwrap_err();
        assert_eq!(only.calls(), 1, "open: not asked");
        tokio::time::sleep(Duration::from_millis(80)).await;
        only.set(Ok(2));
        assert_eq!(search.search(&request("c")).await.unwrap().found.hits.len(), 2);
        assert_eq!((only.calls(), search.status()[0].state), (2, "ready"));
    }

    #[tokio::test]
    async fn identical_searches_come_from_the_cache_for_nothing() {
        let only = Scripted::new("only", Ok(2));
        let search = searcher(&[(only.clone(), settings(0, 0, 4))], Duration::from_secs(60));
        let first = search.search(&request("茅台 业绩")).await.unwrap();
        let again = search.search(&request("  茅台   业绩 ")).await.unwrap();
        assert_eq!((first.cached, first.cost_pts(), again.cached, again.cost_pts()), (false, 4, true, 0));
        assert_eq!(only.calls(), 1);
    }

    #[test]
    fn quotas_reset_at_beijing_midnight() {
        let now = "2026-12-03T15:30:00Z".parse().unwrap();
        assert_eq!(until_beijing_midnight(now), Duration::from_secs(30 * 60));
    }
}
