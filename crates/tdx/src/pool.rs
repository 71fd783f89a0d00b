//! Several quote servers behind one client: connections kept for reuse, a polite limit of
//! concurrent connections per server, and the healthiest server asked first. A server that fails
//! (refused, timed out, spoke garbage) is left alone for a backoff that doubles per consecutive
//! failure, and the call moves on to the next server.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio::sync::Semaphore;
use twilight_core::upstream::{record_call, CallOutcome};

use crate::connection::Connection;
use crate::error::TdxError;
use crate::wire::{self, cmd, Bar, BarsQuery, Market, Period, Security, XdxrEvent, MAX_BARS_PER_REQUEST};

/// How the pool talks to its servers.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// host:port of each quote server.
    pub servers: Vec<String>,
    /// Per connect and per request.
    pub timeout: Duration,
    /// Concurrent connections per server: public servers drop clients that open many.
    pub connections_per_server: usize,
    /// Servers tried per call before giving up.
    pub attempts: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { servers: Vec::new(), timeout: Duration::from_secs(5), connections_per_server: 2, attempts: 3 }
    }
}

/// The longest a failed server is left alone.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A server's record, which decides the order servers are asked in.
#[derive(Debug, Clone, Default)]
pub struct ServerHealth {
    pub addr: String,
    pub calls: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
    /// Smoothed round-trip time of successful calls.
    pub latency: Option<Duration>,
    pub last_error: Option<String>,
    /// Skipped until then.
    pub resting_until: Option<Instant>,
}

struct Server {
    addr: String,
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
    health: Mutex<ServerHealth>,
}

/// Clones share connections and health.
#[derive(Clone)]
pub struct TdxPool {
    servers: Arc<[Server]>,
    config: Arc<PoolConfig>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TdxPool {
    pub fn new(config: PoolConfig) -> TdxPool {
        let servers = config
            .servers
            .iter()
            .map(|addr| Server {
                addr: addr.clone(),
                permits: Semaphore::new(config.connections_per_server.max(1)),
                idle: Mutex::new(Vec::new()),
                health: Mutex::new(ServerHealth { addr: addr.clone(), ..ServerHealth::default() }),
            })
            .collect();
        TdxPool { servers, config: Arc::new(config) }
    }

    /// Each server's record, in configuration order.
    pub fn health(&self) -> Vec<ServerHealth> {
        self.servers.iter().map(|s| lock(&s.health).clone()).collect()
    }

    /// Servers to ask, best first: not resting, fewest consecutive failures, then fastest (an
    /// untried server counts as fast, so each gets measured).
    fn ranked(&self, now: Instant) -> Result<Vec<&Server>, TdxError> {
        let mut ready: Vec<(&Server, u32, Duration)> = Vec::new();
        let mut soonest: Option<Instant> = None;
        for server in self.servers.iter() {
            let health = lock(&server.health);
            match health.resting_until {
                Some(until) if until > now => soonest = Some(soonest.map_or(until, |s| s.min(until))),
                _ => ready.push((server, health.consecutive_failures, health.latency.unwrap_or_default())),
            }
        }
        if ready.is_empty() {
            let retry_after = soonest.map_or(Duration::ZERO, |s| s - now);
            return Err(TdxError::Unavailable { retry_after });
        }
        ready.sort_by_key(|(_, failures, latency)| (*failures, *latency));
        Ok(ready.into_iter().map(|(s, _, _)| s).collect())
    }

    /// One request, answered by the first server that can, its answer parsed by `parse` (an answer
    /// that does not parse is that server's failure too).
    async fn call<T>(&self, command: u16, body: &[u8], parse: impl Fn(&[u8]) -> Result<T, TdxError>) -> Result<T, TdxError> {
        let mut last_error = None;
        let ranked = self.ranked(Instant::now()).inspect_err(|_| record_call("tdx", CallOutcome::Refused, None))?;
        for server in ranked.into_iter().take(self.config.attempts.max(1)) {
            let _permit = server.permits.acquire().await.expect("the semaphore is never closed");
            let started = Instant::now();
            let idle = lock(&server.idle).pop();
            let outcome = async {
                let mut connection = match idle {
                    Some(connection) => connection,
                    None => Connection::open(&server.addr, self.config.timeout).await?,
                };
                let answer = parse(&connection.call(command, body).await?)?;
                Ok::<_, TdxError>((connection, answer))
            }
            .await;
            record_call("tdx", if outcome.is_ok() { CallOutcome::Ok } else { CallOutcome::Error }, Some(started.elapsed()));
            match outcome {
                Ok((connection, answer)) => {
                    server.succeeded(started.elapsed());
                    lock(&server.idle).push(connection);
                    return Ok(answer);
                }
                Err(error) => {
                    server.failed(&error);
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(TdxError::Unavailable { retry_after: Duration::ZERO }))
    }

    pub async fn security_count(&self, market: Market) -> Result<u16, TdxError> {
        self.call(cmd::SECURITY_COUNT, &wire::security_count_request(market), wire::parse_security_count).await
    }

    /// One page of up to 1000 securities from `start`.
    pub async fn security_list(&self, market: Market, start: u16) -> Result<Vec<Security>, TdxError> {
        self.call(cmd::SECURITY_LIST, &wire::security_list_request(market, start), wire::parse_security_list).await
    }

    /// Every security of `market`, page by page.
    pub async fn securities(&self, market: Market) -> Result<Vec<Security>, TdxError> {
        let mut all = Vec::new();
        loop {
            let start = u16::try_from(all.len()).map_err(|_| TdxError::protocol("more securities than a page offset can reach"))?;
            let page = self.security_list(market, start).await?;
            let full = page.len() == usize::from(wire::SECURITIES_PER_PAGE);
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// One page of bars (at most 800), oldest first.
    pub async fn bars(&self, query: &BarsQuery) -> Result<Vec<Bar>, TdxError> {
        let period = query.period;
        self.call(cmd::BARS, &wire::bars_request(query), |body| wire::parse_bars(period, body)).await
    }

    /// Daily bars of one code from `since` (or its whole history) to the newest, oldest first,
    /// paged back 800 at a time until a page reaches `since` or the listing.
    pub async fn daily_bars(&self, market: Market, code: &str, since: Option<NaiveDate>) -> Result<Vec<Bar>, TdxError> {
        let mut pages: Vec<Vec<Bar>> = Vec::new();
        let mut start: u16 = 0;
        loop {
            let query = BarsQuery { market, code: code.to_string(), period: Period::Day, start, count: MAX_BARS_PER_REQUEST };
            let page = self.bars(&query).await?;
            let reached_since = since.is_some_and(|since| page.first().is_some_and(|b| b.time.date() <= since));
            let last_page = page.len() < usize::from(MAX_BARS_PER_REQUEST) || reached_since;
            pages.push(page);
            match start.checked_add(MAX_BARS_PER_REQUEST) {
                Some(next) if !last_page => start = next,
                _ => break,
            }
        }
        Ok(pages.into_iter().rev().flatten().filter(|b| since.is_none_or(|since| b.time.date() >= since)).collect())
    }

    pub async fn xdxr(&self, market: Market, code: &str) -> Result<Vec<XdxrEvent>, TdxError> {
        self.call(cmd::XDXR, &wire::xdxr_request(market, code), wire::parse_xdxr).await
    }
}

impl Server {
    fn succeeded(&self, elapsed: Duration) {
        let mut health = lock(&self.health);
        health.calls += 1;
        health.consecutive_failures = 0;
        health.resting_until = None;
        health.latency = Some(health.latency.map_or(elapsed, |l| (l * 7 + elapsed) / 8));
    }

    fn failed(&self, error: &TdxError) {
        let mut health = lock(&self.health);
        health.calls += 1;
        health.failures += 1;
        health.consecutive_failures += 1;
        let backoff = Duration::from_millis(500).saturating_mul(1 << health.consecutive_failures.min(10)).min(MAX_BACKOFF);
        health.resting_until = Some(Instant::now() + backoff);
        health.last_error = Some(error.to_string());
        tracing::warn!(server = %self.addr, %error, backoff_ms = backoff.as_millis() as u64, "TDX server failed");
        // Connections opened before the failure may be broken the same way.
        lock(&self.idle).clear();
    }
}
