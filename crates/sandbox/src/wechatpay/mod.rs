//! A WeChat Pay API v3 simulator speaking the wire protocol of `protocols/wechatpay-v3.md` for one
//! merchant: Native orders, query, close and refund under `/v3`, each request's `Authorization`
//! verified with the merchant's public key and each answer signed with the simulator's platform
//! key (public-key mode, `PUB_KEY_ID_…`). A payer pays through [`WechatPaySim::pay`] or the page
//! `GET /sandbox/pay/{out_trade_no}`; the `TRANSACTION.SUCCESS` / `REFUND.SUCCESS` notifications
//! are encrypted with the APIv3 key, signed, and delivered with WeChat Pay's retry schedule and
//! switchable faults ([`NotifyFault`]).

mod api;
mod crypto;
mod keys;
mod ledger;
mod notify;
mod payer;
mod webhook;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use chrono::Utc;
use rsa::pkcs1v15::SigningKey;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

use crate::common::{self, Switchboard};
use crate::seed;
pub use keys::SandboxKeys;
pub use ledger::PayError;
pub use notify::{NotifyAttempt, NotifyFault};
pub use webhook::{Delivery, RecordingWebhook};

/// Who the simulator serves and the keys on both sides.
pub struct WechatPaySimConfig {
    pub mchid: String,
    pub appid: String,
    /// Serial of the merchant API certificate; requests must name it in `serial_no`.
    pub merchant_serial: String,
    /// Verifies the merchant's request signatures.
    pub merchant_public_key: RsaPublicKey,
    /// Signs every answer and notification, as WeChat Pay's platform key does.
    pub platform_key: RsaPrivateKey,
    /// Sent as `Wechatpay-Serial`: `PUB_KEY_ID_…` in public-key mode.
    pub platform_key_id: String,
    /// Encrypts notification resources.
    pub api_v3_key: [u8; 32],
}

impl fmt::Debug for WechatPaySimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatPaySimConfig")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("merchant_serial", &self.merchant_serial)
            .field("platform_key_id", &self.platform_key_id)
            .field("platform_key", &"[redacted]")
            .field("api_v3_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The simulator; clones share state.
#[derive(Clone)]
pub struct WechatPaySim {
    inner: Arc<Inner>,
}

struct Inner {
    mchid: String,
    appid: String,
    merchant_serial: String,
    merchant_key: RsaPublicKey,
    platform_signer: SigningKey<Sha256>,
    platform_public_key: RsaPublicKey,
    platform_key_id: String,
    api_v3_key: zeroize::Zeroizing<[u8; 32]>,
    /// Makes ids differ between simulators and processes.
    id_prefix: u64,
    next_id: AtomicU64,
    /// Delivers notifications.
    http: reqwest::Client,
    state: Mutex<SimState>,
    /// Woken whenever a delivery attempt is recorded.
    attempted: tokio::sync::Notify,
    switchboard: Switchboard,
}

struct SimState {
    ledger: ledger::Ledger,
    fault: NotifyFault,
    /// Multiplies WeChat Pay's retry delays (1.0 = real time).
    retry_scale: f64,
    attempts: Vec<NotifyAttempt>,
    /// Notifications held back by [`NotifyFault::OutOfOrder`], oldest first.
    held: Vec<Arc<notify::Outgoing>>,
}

impl WechatPaySim {
    pub fn new(config: WechatPaySimConfig) -> Self {
        static SIMS: AtomicU64 = AtomicU64::new(0);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        let id_prefix = seed::mix(&[nanos, u64::from(std::process::id()), SIMS.fetch_add(1, Ordering::Relaxed)]);
        let http = reqwest::Client::builder().timeout(notify::DELIVERY_TIMEOUT).build().expect("a plain HTTP client builds");
        let state = SimState {
            ledger: ledger::Ledger::default(),
            fault: NotifyFault::None,
            retry_scale: 1.0,
            attempts: Vec::new(),
            held: Vec::new(),
        };
        WechatPaySim {
            inner: Arc::new(Inner {
                mchid: config.mchid,
                appid: config.appid,
                merchant_serial: config.merchant_serial,
                merchant_key: config.merchant_public_key,
                platform_public_key: config.platform_key.to_public_key(),
                platform_signer: SigningKey::new(config.platform_key),
                platform_key_id: config.platform_key_id,
                api_v3_key: zeroize::Zeroizing::new(config.api_v3_key),
                id_prefix,
                next_id: AtomicU64::new(0),
                http,
                state: Mutex::new(state),
                attempted: tokio::sync::Notify::new(),
                switchboard: Switchboard::default(),
            }),
        }
    }

    /// The merchant API under `/v3`, the payer's page under `/sandbox/pay/{out_trade_no}` and the
    /// call counters at `GET /_sandbox/calls`.
    pub fn router(&self) -> Router {
        let routes = self.inner.switchboard.instrument(api::router(self).merge(payer::router()));
        common::label(routes, "wechatpay").with_state(self.clone())
    }

    /// What a merchant configures as the WeChat Pay public key, with [`Self::platform_key_id`].
    pub fn platform_public_key(&self) -> &RsaPublicKey {
        &self.inner.platform_public_key
    }

    pub fn platform_key_id(&self) -> &str {
        &self.inner.platform_key_id
    }

    /// Requests received on `route`, written `METHOD /path/{param}` as routed, e.g.
    /// `POST /v3/pay/transactions/native` or `GET /v3/pay/transactions/out-trade-no/{out_trade_no}`.
    pub fn calls(&self, route: &str) -> u64 {
        self.inner.switchboard.calls(route)
    }

    /// How notifications are delivered from now on.
    pub fn set_fault(&self, fault: NotifyFault) {
        self.state().fault = fault;
    }

    /// Scales the retry schedule (15 s, 15 s, 30 s, 3 min, …): `0.001` turns it into milliseconds.
    pub fn set_retry_scale(&self, scale: f64) {
        self.state().retry_scale = scale;
    }

    /// Every delivery attempt so far, in the order they finished.
    pub fn notify_attempts(&self) -> Vec<NotifyAttempt> {
        self.state().attempts.clone()
    }

    /// Waits until at least `n` delivery attempts are recorded or `within` passes, then returns all
    /// of them.
    pub async fn wait_for_attempts(&self, n: usize, within: Duration) -> Vec<NotifyAttempt> {
        let _ = tokio::time::timeout(within, async {
            loop {
                let attempted = self.inner.attempted.notified();
                tokio::pin!(attempted);
                attempted.as_mut().enable();
                if self.state().attempts.len() >= n {
                    return;
                }
                attempted.await;
            }
        })
        .await;
        self.notify_attempts()
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh number for an id: distinct per simulator, increasing within one.
    fn next_id(&self) -> (u64, u64) {
        (self.inner.id_prefix, self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }
}
