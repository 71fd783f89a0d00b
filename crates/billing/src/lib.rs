#![forbid(unsafe_code)]
//! Taking payments: the WeChat Pay API v3 merchant client for Native (QR) payments, following
//! `shared/protocols/wechatpay-v3.md`, behind a processor-neutral [`PaymentProcessor`] trait.
//!
//! Requests are signed with the merchant key ([`RequestSigner`]); answers and notifications are
//! accepted only when signed by a trusted WeChat Pay key ([`PlatformKeys`]) within five minutes of
//! our clock; notification resources are decrypted with the APIv3 key ([`EncryptedResource`]).
//! Secrets live in types that redact themselves in `Debug` and are wiped on drop.

mod client;
mod config;
mod credentials;
mod error;
mod model;
mod notify;
mod platform;
mod processor;
mod resource;
mod service;
mod signature;
mod verify;

pub use client::WechatPayClient;
pub use config::{WechatPayConfig, DEFAULT_BASE_URL, DEFAULT_TIMEOUT};
pub use credentials::{public_key_from_pem, ApiV3Key, KeyError, MerchantKey};
pub use error::{ErrorCode, WechatPayError};
pub use model::{Order, Payer, Refund, RefundAmount, RefundRequest, RefundStatus, TradeState, Transaction, TransactionAmount};
pub use notify::{Event, Notification, NotifyError, REFUND_SUCCESS, TRANSACTION_SUCCESS};
pub use platform::{KeyRing, PlatformKeys, StaticPublicKey};
pub use processor::{
    Checkout, EventKind, Money, Paid, PaymentError, PaymentProcessor, PaymentStatus, RefundReceipt, Refunded, VerifiedEvent, WECHATPAY,
};
pub use resource::{decrypt, DecryptError, EncryptedResource, ALGORITHM};
pub use service::{
    Billing, BillingConfig, BillingError, Handled, Offer, OrderStage, OrderView, PlacedOrder, Reconciled, Rejection, OFFERS,
};
pub use signature::{nonce, request_message, response_message, RequestSigner, SCHEME};
pub use verify::{
    verify, SignatureError, HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE, HEADER_SIGNATURE_TYPE, HEADER_TIMESTAMP, MAX_SKEW_SECS,
    SIGNTEST_PREFIX,
};

/// The RSA key types the key constructors take, so callers need not depend on `rsa` themselves.
pub use rsa::{RsaPrivateKey, RsaPublicKey};
