//! Recurring jobs: today, reconciliation of pending payments. `twilight scheduler` runs them as a
//! service of their own; the embedded default runs them inside `serve`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use twilight_api::payments::Payments;

/// Every `interval` until `shutdown`: asks the processor about pending orders, settling the paid
/// ones whose notification never came and closing the expired ones.
pub async fn reconcile_payments(payments: Arc<Payments>, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match payments.billing.reconcile(Utc::now()).await {
            Ok(report) if report.checked > 0 => tracing::info!(
                checked = report.checked,
                settled = report.settled,
                closed = report.closed,
                failed = report.failed,
                "reconciled pending payments"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reconciling pending payments failed"),
        }
    }
}
