//! Recurring jobs: reconciliation of pending payments, and the subscriptions' lifecycle (expiry
//! and retirement), which `twilight scheduler` runs as a service of its own (the embedded default
//! inside `serve`); and the warehouse fills, which run where the warehouse is held: in `serve`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use twilight_accounts::{Accounts, JobRun};
use twilight_api::payments::Payments;
use twilight_market::{FillReport, FillSchedule, Market};

/// When a subscription ends after its paid period, and how long an expired user's profile is kept.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    pub grace: chrono::Duration,
    pub retention: chrono::Duration,
}

/// What one lifecycle pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LifecycleReport {
    /// Users whose grace ran out: now `expired`, their gateways being stopped.
    pub expired: usize,
    /// Expired users whose retention ran out: their profiles being deprovisioned.
    pub retired: usize,
}

impl Lifecycle {
    /// Expires the users whose paid period and grace ended before `now`, and enqueues the
    /// deprovisioning of those expired for longer than the retention. The provisioner does the rest.
    pub async fn run_once(&self, accounts: &dyn Accounts, now: DateTime<Utc>) -> twilight_accounts::Result<LifecycleReport> {
        let expired = accounts.expire_users(now - self.grace).await?;
        for user in &expired {
            tracing::info!(user_id = %user.user_id, paid_until = ?user.paid_until, "subscription expired; gateway to be stopped");
        }
        let retired = accounts.retire_expired(now - self.grace - self.retention).await?;
        for job in &retired {
            tracing::info!(user_id = %job.user_id, "expired beyond retention; profile to be deprovisioned");
        }
        Ok(LifecycleReport { expired: expired.len(), retired: retired.len() })
    }

    /// [`Lifecycle::run_once`] every `interval` until `shutdown`.
    pub async fn run(self, accounts: Arc<dyn Accounts>, interval: Duration, shutdown: CancellationToken) {
        every("subscription_lifecycle", interval, shutdown, || async {
            let outcome = self.run_once(&*accounts, Utc::now()).await;
            if let Err(error) = &outcome {
                tracing::warn!(%error, "the subscription lifecycle pass failed");
            }
            outcome.is_ok()
        })
        .await
    }
}

/// How one pass of a recurring job ended, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Worked,
    Failed,
    /// Not this process's turn (another holds the job, or its backoff runs).
    Skipped,
}

impl From<bool> for Pass {
    fn from(worked: bool) -> Pass {
        if worked {
            Pass::Worked
        } else {
            Pass::Failed
        }
    }
}

/// Runs `pass` at once and then every `interval` (a late pass delays the next, never doubles it)
/// until `shutdown`; counts each pass of `job` by outcome and keeps the time of its last success,
/// for `/metrics`.
pub(crate) async fn every<F, Fut>(job: &'static str, interval: Duration, shutdown: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
    Fut::Output: Into<Pass>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let outcome = match pass().await.into() {
            Pass::Worked => "ok",
            Pass::Failed => "error",
            Pass::Skipped => "skipped",
        };
        metrics::counter!("twilight_scheduler_runs_total", "job" => job, "outcome" => outcome).increment(1);
        if outcome == "ok" {
            metrics::gauge!("twilight_scheduler_last_success_timestamp_seconds", "job" => job).set(Utc::now().timestamp() as f64);
        }
    }
}

/// How long a failed job waits before its next attempt: `first`, doubling with each failure in a
/// row, at most `most`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub most: Duration,
}

impl Backoff {
    fn after(&self, failures: i32) -> Duration {
        let doublings = u32::try_from(failures.saturating_sub(1)).unwrap_or(0).min(20);
        self.first.saturating_mul(1 << doublings).min(self.most)
    }
}

/// What one look at a leased job came to.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Another process holds the job now.
    HeldElsewhere,
    /// The last run failed, and the next may start at `until`.
    BackingOff {
        until: DateTime<Utc>,
    },
    Ran(Result<T, String>),
}

impl<T> From<Attempt<T>> for Pass {
    fn from(attempt: Attempt<T>) -> Pass {
        match attempt {
            Attempt::Ran(outcome) => outcome.is_ok().into(),
            Attempt::HeldElsewhere | Attempt::BackingOff { .. } => Pass::Skipped,
        }
    }
}

/// Runs `work` as `job` unless another process holds the job or its backoff after failures has
/// not passed, under a lease of `lease` in the accounts DB (a holder that dies frees the job when
/// its lease runs out); records how it ended. Times are the caller's `now`.
async fn leased<T, E: std::fmt::Display>(
    accounts: &dyn Accounts,
    job: &str,
    holder: &str,
    now: DateTime<Utc>,
    lease: Duration,
    backoff: Backoff,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> twilight_accounts::Result<Attempt<T>> {
    let state = accounts.scheduled_jobs().await?.into_iter().find(|state| state.job == job);
    if let Some(state) = state.filter(|state| state.failures > 0) {
        let until = state.last_failure_at.unwrap_or(now) + backoff.after(state.failures);
        if now < until {
            return Ok(Attempt::BackingOff { until });
        }
    }
    if !accounts.lease_scheduled_job(job, holder, now, now + lease).await? {
        return Ok(Attempt::HeldElsewhere);
    }
    let outcome = work.await.map_err(|error| error.to_string());
    let run = match &outcome {
        Ok(_) => JobRun::Succeeded { at: now },
        Err(error) => JobRun::Failed { at: now, error: error.clone() },
    };
    if !accounts.finish_scheduled_job(job, holder, &run).await? {
        tracing::warn!(job, holder, "a run outlasted its lease; another process may have run the job too");
    }
    Ok(Attempt::Ran(outcome))
}

const FILL_JOB: &str = "warehouse_fill";
/// The longest a fill may take before another process may take the job over.
const FILL_LEASE: Duration = Duration::from_secs(3600);

/// The scheduled warehouse fills (`twilight_market::Market::fill`): when to look, what to fill,
/// and how to back off after a failure.
#[derive(Debug, Clone)]
pub struct WarehouseFills {
    pub schedule: FillSchedule,
    pub check_every: Duration,
    pub backoff: Backoff,
}

impl WarehouseFills {
    /// One look at `now` as `holder`: fills what is due unless another process is filling or the
    /// last failure's backoff runs.
    pub async fn run_once(
        &self,
        market: &Market,
        accounts: &dyn Accounts,
        holder: &str,
        now: DateTime<Utc>,
    ) -> twilight_accounts::Result<Attempt<FillReport>> {
        leased(accounts, FILL_JOB, holder, now, FILL_LEASE, self.backoff, market.fill(now, &self.schedule)).await
    }

    /// [`WarehouseFills::run_once`] every `check_every` until `shutdown`.
    pub async fn run(self, market: Arc<Market>, accounts: Arc<dyn Accounts>, shutdown: CancellationToken) {
        let holder = format!("{}-{}-{:08x}", crate::provisioning::hostname(), std::process::id(), rand::random::<u32>());
        every(FILL_JOB, self.check_every, shutdown, || async {
            let attempt = self.run_once(&market, &*accounts, &holder, Utc::now()).await;
            match attempt {
                Ok(Attempt::Ran(Ok(report))) if !report.sessions.is_empty() || report.calendar_fetched => {
                    tracing::info!(sessions = ?report.sessions, rows = report.rows, skipped = report.skipped, "warehouse filled");
                    Pass::Worked
                }
                Ok(Attempt::Ran(Err(error))) => {
                    tracing::warn!(%error, "the warehouse fill failed; it is tried again after its backoff");
                    Pass::Failed
                }
                Ok(attempt) => attempt.into(),
                Err(error) => {
                    tracing::warn!(%error, "the warehouse fill's lease could not be read or taken");
                    Pass::Failed
                }
            }
        })
        .await
    }
}

/// Every `interval` until `shutdown`: asks the processor about pending orders, settling the paid
/// ones whose notification never came and closing the expired ones; deletes old closed ones.
pub async fn reconcile_payments(payments: Arc<Payments>, interval: Duration, shutdown: CancellationToken) {
    every("reconcile_payments", interval, shutdown, || async {
        match payments.billing.reconcile(Utc::now()).await {
            Ok(report) => {
                if report.checked > 0 || report.pruned > 0 {
                    tracing::info!(
                        checked = report.checked,
                        settled = report.settled,
                        closed = report.closed,
                        failed = report.failed,
                        pruned = report.pruned,
                        "reconciled pending payments"
                    );
                }
                true
            }
            Err(error) => {
                tracing::warn!(%error, "reconciling pending payments failed");
                false
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_most() {
        let backoff = Backoff { first: Duration::from_secs(60), most: Duration::from_secs(600) };
        let waits: Vec<u64> = (1..=6).map(|failures| backoff.after(failures).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 600, 600]);
        assert_eq!(backoff.after(i32::MAX), Duration::from_secs(600));
    }
}
