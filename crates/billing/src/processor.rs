//! What the product needs from a payment processor, in terms that fit any of them: a checkout to
//! show, a status to reconcile, a refund, and verified events from its webhook. WeChat Pay
//! implements it; another processor (Stripe) can be added beside it without touching callers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use crate::client::WechatPayClient;
use crate::error::{ErrorCode, WechatPayError};
use crate::model::{Order, Refund, RefundRequest, RefundStatus, TradeState, Transaction};
use crate::notify::{Event, NotifyError};

/// The `processor` name recorded with payments made through WeChat Pay.
pub const WECHATPAY: &str = "wechatpay";

/// An amount in the currency's minor unit (fen for CNY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

/// What to show the payer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// What the payer opens: for WeChat Pay the `weixin://` URL to render as a QR code.
    pub code_url: String,
    pub processor: &'static str,
    /// After this the checkout can no longer be paid.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A completed payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paid {
    pub out_trade_no: String,
    /// The processor's id of the payment (WeChat Pay's `transaction_id`).
    pub transaction_id: String,
    pub paid_at: DateTime<Utc>,
    /// What the order charged; check it equals what we asked for.
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Not paid (yet): the payer may still pay until the order expires or is closed.
    Pending,
    Paid(Paid),
    /// Closed or revoked: it can no longer be paid.
    Closed,
    /// Paid, then (partly) refunded.
    Refunded,
    Failed,
}

/// A completed refund, as its event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refunded {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub amount: Money,
}

/// A refund request the processor accepted; it completes later (see [`EventKind::Refunded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReceipt {
    pub refund_id: String,
    pub out_refund_no: String,
    pub status: RefundStatus,
}

/// A webhook event that was verified as coming from the processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvent {
    /// The processor's event id: the same across its retries, so handling can be idempotent.
    pub id: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Paid(Paid),
    Refunded(Refunded),
    /// Verified, but nothing the product acts on; the processor's event type.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the order is already paid")]
    AlreadyPaid,
    #[error("the order is closed")]
    AlreadyClosed,
    #[error("the order number was already used for a different order")]
    DuplicateOrder,
    #[error("the processor has no such order")]
    NotFound,
    #[error("the processor refused the request: {0}")]
    Rejected(String),
    /// Worth retrying later with the same request.
    #[error("the processor is unavailable: {0}")]
    Unavailable(String),
    /// The answer could not be verified as the processor's; it was not used.
    #[error("untrusted answer: {0}")]
    Untrusted(String),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// Answer the webhook with a 4xx so a genuine event is sent again.
    #[error("invalid notification: {0}")]
    InvalidNotification(String),
}

impl PaymentError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PaymentError::Unavailable(_))
    }
}

/// The operations the product needs from a processor. Object safe: callers hold
/// `Arc<dyn PaymentProcessor>`.
#[async_trait]
pub trait PaymentProcessor: Send + Sync {
    /// The name stored as the payment's `processor`.
    fn name(&self) -> &'static str;

    /// Starts a payment for `order`; placing the same order again gives the same checkout.
    async fn create_checkout(&self, order: &Order) -> Result<Checkout, PaymentError>;

    /// Where the order stands at the processor: what reconciliation trusts when a notification is
    /// missing.
    async fn query(&self, out_trade_no: &str) -> Result<PaymentStatus, PaymentError>;

    /// Makes an unpaid order unpayable (on expiry, or before retrying with a new order number).
    async fn close(&self, out_trade_no: &str) -> Result<(), PaymentError>;

    async fn refund(&self, request: &RefundRequest) -> Result<RefundReceipt, PaymentError>;

    /// Verifies a webhook delivery (`body` raw, as received) against `now` and extracts its event.
    fn verify_notification(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<VerifiedEvent, PaymentError>;
}

#[async_trait]
impl PaymentProcessor for WechatPayClient {
    fn name(&self) -> &'static str {
        WECHATPAY
    }

    async fn create_checkout(&self, order: &Order) -> Result<Checkout, PaymentError> {
        let code_url = self.create_native_order(order).await?;
        Ok(Checkout { code_url, processor: WECHATPAY, expires_at: order.time_expire })
    }

    async fn query(&self, out_trade_no: &str) -> Result<PaymentStatus, PaymentError> {
        let transaction = self.query_order(out_trade_no).await?;
        Ok(match transaction.trade_state {
            TradeState::Success => PaymentStatus::Paid(paid(&transaction).map_err(PaymentError::Unexpected)?),
            TradeState::Refund => PaymentStatus::Refunded,
            TradeState::Notpay | TradeState::Userpaying | TradeState::Unknown => PaymentStatus::Pending,
            TradeState::Closed | TradeState::Revoked => PaymentStatus::Closed,
            TradeState::Payerror => PaymentStatus::Failed,
        })
    }

    async fn close(&self, out_trade_no: &str) -> Result<(), PaymentError> {
        Ok(self.close_order(out_trade_no).await?)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundReceipt, PaymentError> {
        let refund = WechatPayClient::refund(self, request).await?;
        Ok(RefundReceipt { refund_id: refund.refund_id, out_refund_no: refund.out_refund_no, status: refund.refund_status })
    }

    fn verify_notification(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<VerifiedEvent, PaymentError> {
        let notification = self.parse_notification(headers, body, now)?;
        let kind = match &notification.event {
            Event::TransactionSuccess(transaction) => EventKind::Paid(paid(transaction).map_err(PaymentError::InvalidNotification)?),
            Event::RefundSuccess(refund) => EventKind::Refunded(refunded(refund)),
            Event::Other(event_type) => EventKind::Other(event_type.clone()),
        };
        Ok(VerifiedEvent { id: notification.id, kind })
    }
}

/// A `SUCCESS` transaction as a payment; WeChat Pay always fills these fields once paid.
fn paid(transaction: &Transaction) -> Result<Paid, String> {
    let missing = |field: &str| format!("paid order {} has no {field}", transaction.out_trade_no);
    Ok(Paid {
        out_trade_no: transaction.out_trade_no.clone(),
        transaction_id: transaction.transaction_id.clone().ok_or_else(|| missing("transaction_id"))?,
        paid_at: transaction.success_time.ok_or_else(|| missing("success_time"))?.with_timezone(&Utc),
        amount: Money { amount: transaction.amount.total, currency: cny_unless(transaction.amount.currency.as_deref()) },
    })
}

fn refunded(refund: &Refund) -> Refunded {
    Refunded {
        out_trade_no: refund.out_trade_no.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        refund_id: refund.refund_id.clone(),
        amount: Money { amount: refund.amount.refund, currency: cny_unless(refund.amount.currency.as_deref()) },
    }
}

/// WeChat Pay leaves the currency out in places; mainland merchants are always paid in CNY.
fn cny_unless(currency: Option<&str>) -> String {
    currency.unwrap_or("CNY").to_string()
}

impl From<WechatPayError> for PaymentError {
    fn from(error: WechatPayError) -> Self {
        match &error {
            WechatPayError::Api { code: ErrorCode::OrderPaid, .. } => PaymentError::AlreadyPaid,
            WechatPayError::Api { code: ErrorCode::OrderClosed, .. } => PaymentError::AlreadyClosed,
            WechatPayError::Api { code: ErrorCode::OutTradeNoUsed, .. } => PaymentError::DuplicateOrder,
            WechatPayError::Api { code: ErrorCode::OrderNotExist, .. } => PaymentError::NotFound,
            WechatPayError::Api { code: ErrorCode::SystemError, .. } | WechatPayError::Transport(_) => {
                PaymentError::Unavailable(error.to_string())
            }
            WechatPayError::Api { status, .. } | WechatPayError::UnexpectedResponse { status, .. } if *status >= 500 => {
                PaymentError::Unavailable(error.to_string())
            }
            WechatPayError::Api { .. } | WechatPayError::InvalidRequest(_) => PaymentError::Rejected(error.to_string()),
            WechatPayError::Unverified { .. } => PaymentError::Untrusted(error.to_string()),
            WechatPayError::UnexpectedResponse { .. } => PaymentError::Unexpected(error.to_string()),
        }
    }
}

impl From<NotifyError> for PaymentError {
    fn from(error: NotifyError) -> Self {
        PaymentError::InvalidNotification(error.to_string())
    }
}
