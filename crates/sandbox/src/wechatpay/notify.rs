//! Notifications to the merchant's `notify_url`: the event JSON with its resource encrypted under
//! the APIv3 key, signed afresh for every attempt (a retry hours later carries a current
//! timestamp), retried on anything but a 2xx on WeChat Pay's schedule, every attempt recorded.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::crypto::SCHEME;
use super::ledger::wire_time;
use super::WechatPaySim;
use crate::seed;

/// How long one delivery may take before it counts as failed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// WeChat Pay's waits after each failed delivery: 15 s, 15 s, 30 s, 3 min, 10 min, 20 min, 30 min,
/// 30 min, 30 min, 60 min, 3 h, 3 h, 3 h, 6 h, 6 h — about a day in all, then it gives up.
const RETRY_DELAYS_SECS: [u64; 15] = [15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600];
/// What a signing probe's `Wechatpay-Signature` starts with; a merchant must refuse it.
const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// How notifications are delivered. Each is a realistic condition a webhook must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyFault {
    /// Delivered at once, retried until a 2xx.
    #[default]
    None,
    /// `n` copies of the same notification (same id and body) delivered concurrently, each
    /// retried on its own.
    DuplicateDelivery(u32),
    /// Held back until [`WechatPaySim::release_held`], then delivered newest first, each completed
    /// (retries included) before the next: a refund's `REFUND.SUCCESS` arrives before the
    /// `TRANSACTION.SUCCESS` of the payment it refunds, and a later order's payment before an
    /// earlier one's.
    OutOfOrder,
    /// Delivered after this pause.
    Delayed(Duration),
    /// Never delivered: only a query finds the payment (what reconciliation is for).
    NeverDeliver,
    /// A signing probe (a `WECHATPAY/SIGNTEST/…` signature) first, then the genuine notification.
    SignTestProbe,
}

/// One POST to a `notify_url`, as the simulator saw it end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyAttempt {
    /// The notification's `id`: shared by its retries and duplicates.
    pub notify_id: String,
    pub event_type: String,
    pub out_trade_no: String,
    /// 1 for the first try of a copy, counting up through its retries; a probe is its own try 1.
    pub attempt: u32,
    /// Whether this was a signing probe rather than the genuine notification.
    pub probe: bool,
    /// The merchant's HTTP status, or why there was none (refused connection, timeout).
    pub outcome: Result<u16, String>,
}

impl NotifyAttempt {
    /// Whether the merchant took it: any 2xx.
    pub fn accepted(&self) -> bool {
        matches!(self.outcome, Ok(status) if (200..300).contains(&status))
    }
}

/// The events the simulator sends.
#[derive(Debug, Clone, Copy)]
pub(super) enum Event {
    TransactionSuccess,
    RefundSuccess,
}

impl Event {
    /// `(event_type, summary, original_type)`; `original_type` is also the AAD.
    fn wire(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Event::TransactionSuccess => ("TRANSACTION.SUCCESS", "支付成功", "transaction"),
            Event::RefundSuccess => ("REFUND.SUCCESS", "退款成功", "refund"),
        }
    }
}

/// A notification ready to send.
pub(super) struct Outgoing {
    id: String,
    event_type: &'static str,
    out_trade_no: String,
    url: String,
    body: String,
}

/// The waits before each retry, scaled.
fn retry_delays(scale: f64) -> impl Iterator<Item = Duration> {
    RETRY_DELAYS_SECS.into_iter().map(move |secs| Duration::from_secs_f64(secs as f64 * scale))
}

impl WechatPaySim {
    /// Builds the notification of `event` about `resource` and hands it to the current fault mode.
    pub(super) fn notify(&self, event: Event, url: String, out_trade_no: String, resource: &Value) {
        let (event_type, summary, original_type) = event.wire();
        let (prefix, n) = self.next_id();
        let (hi, lo) = (seed::mix(&[prefix, n, 1]), seed::mix(&[prefix, n, 2]));
        let id =
            format!("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xffff, hi & 0xffff, lo >> 48, lo & 0xffff_ffff_ffff);
        let body = json!({
            "id": id,
            "create_time": wire_time(Utc::now()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": self.encrypt_resource(original_type, original_type, resource.to_string().as_bytes()),
        });
        self.dispatch(Arc::new(Outgoing { id, event_type, out_trade_no, url, body: body.to_string() }));
    }

    /// Test hook: a notification of `event_type` about `resource` (encrypted with the APIv3 key,
    /// AAD = `original_type`), signed with the platform key as of `at` — exactly what a delivery
    /// would post, for a test to alter and post to a webhook itself.
    pub fn signed_notification(
        &self,
        event_type: &str,
        original_type: &str,
        resource: &Value,
        at: DateTime<Utc>,
    ) -> (axum::http::HeaderMap, String) {
        let body = json!({
            "id": format!("sandbox-{}", crate::common::random_alphanumeric(16)),
            "create_time": wire_time(at),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "sandbox",
            "resource": self.encrypt_resource(original_type, original_type, resource.to_string().as_bytes()),
        })
        .to_string();
        (self.signed_headers(body.as_bytes(), at), body)
    }

    /// Test hook: headers that make `body` verifiable as the platform's, signed as of `at`.
    pub fn signed_headers(&self, body: &[u8], at: DateTime<Utc>) -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        self.sign_body_at(body, at).apply(&mut headers);
        headers.insert("content-type", axum::http::HeaderValue::from_static("application/json"));
        headers
    }

    /// Test hook: the order as the query API reports it (the resource of its `TRANSACTION.SUCCESS`).
    pub fn transaction_json(&self, out_trade_no: &str) -> Option<Value> {
        let state = self.state();
        state.ledger.order(out_trade_no).ok().map(|order| order.transaction_json(&self.inner.appid, &self.inner.mchid))
    }

    /// Delivers what [`NotifyFault::OutOfOrder`] held back, newest first, on the current Tokio
    /// runtime.
    pub fn release_held(&self) {
        let held = std::mem::take(&mut self.state().held);
        let sim = self.clone();
        tokio::spawn(async move {
            for outgoing in held.into_iter().rev() {
                sim.clone().deliver(outgoing).await;
            }
        });
    }

    fn dispatch(&self, outgoing: Arc<Outgoing>) {
        let fault = self.state().fault;
        let sim = self.clone();
        match fault {
            NotifyFault::None => {
                tokio::spawn(sim.deliver(outgoing));
            }
            NotifyFault::DuplicateDelivery(n) => {
                for _ in 0..n {
                    tokio::spawn(sim.clone().deliver(outgoing.clone()));
                }
            }
            NotifyFault::OutOfOrder => self.state().held.push(outgoing),
            NotifyFault::Delayed(pause) => {
                tokio::spawn(async move {
                    tokio::time::sleep(pause).await;
                    sim.deliver(outgoing).await;
                });
            }
            NotifyFault::NeverDeliver => {}
            NotifyFault::SignTestProbe => {
                tokio::spawn(async move {
                    sim.attempt(&outgoing, 1, true).await;
                    sim.deliver(outgoing).await;
                });
            }
        }
    }

    /// Tries now, then after each scheduled wait, until the merchant answers a 2xx or the schedule
    /// runs out.
    async fn deliver(self, outgoing: Arc<Outgoing>) {
        let scale = self.state().retry_scale;
        for (n, wait) in std::iter::once(Duration::ZERO).chain(retry_delays(scale)).enumerate() {
            tokio::time::sleep(wait).await;
            if self.attempt(&outgoing, n as u32 + 1, false).await {
                return;
            }
        }
    }

    /// One signed POST (or a probe with a deliberately invalid signature), recorded; whether the
    /// merchant accepted it.
    async fn attempt(&self, outgoing: &Outgoing, attempt: u32, probe: bool) -> bool {
        let mut headers = axum::http::HeaderMap::new();
        let mut signed = self.sign_body(outgoing.body.as_bytes());
        if probe {
            signed.signature = format!("{SIGNTEST_PREFIX}{}", BASE64.encode(crate::common::random_alphanumeric(48)));
        }
        signed.apply(&mut headers);
        let outcome = self
            .inner
            .http
            .post(&outgoing.url)
            .headers(headers)
            .header("content-type", "application/json")
            .header("wechatpay-signature-type", SCHEME)
            .body(outgoing.body.clone())
            .send()
            .await
            .map(|response| response.status().as_u16())
            .map_err(|e| e.to_string());
        let record = NotifyAttempt {
            notify_id: outgoing.id.clone(),
            event_type: outgoing.event_type.to_string(),
            out_trade_no: outgoing.out_trade_no.clone(),
            attempt,
            probe,
            outcome,
        };
        let accepted = record.accepted();
        self.state().attempts.push(record);
        self.inner.attempted.notify_waiters();
        accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_wechat_pays_scaled() {
        let real: Vec<Duration> = retry_delays(1.0).take(4).collect();
        assert_eq!(real, [15, 15, 30, 180].map(Duration::from_secs));
        let total: Duration = retry_delays(1.0).sum();
        assert_eq!(total, Duration::from_secs(24 * 3600 + 4 * 60));
        assert_eq!(retry_delays(0.001).next(), Some(Duration::from_millis(15)));
    }
}
