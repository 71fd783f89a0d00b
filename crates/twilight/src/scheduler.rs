//! Recurring jobs: reconciliation of pending payments, and the subscriptions' lifecycle (expiry
//! and retirement). `twilight scheduler` runs them as a service of their own; the embedded default
//! runs them inside `serve`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use twilight_accounts::Accounts;
use twilight_api::payments::Payments;

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

/// Runs `pass` at once and then every `interval` (a late pass delays the next, never doubles it)
/// until `shutdown`; counts each pass of `job` by outcome (`pass` says whether it worked) and keeps
/// the time of its last success, for `/metrics`.
pub(crate) async fn every<F, Fut>(job: &'static str, interval: Duration, shutdown: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let worked = pass().await;
        metrics::counter!("twilight_scheduler_runs_total", "job" => job, "outcome" => if worked { "ok" } else { "error" }).increment(1);
        if worked {
            metrics::gauge!("twilight_scheduler_last_success_timestamp_seconds", "job" => job).set(Utc::now().timestamp() as f64);
        }
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
