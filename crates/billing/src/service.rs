//! Selling the product: checkout places an order with the processor and records it pending; a
//! verified notification (or reconciliation, when one never came) settles it into a user and a
//! provisioning job in one accounts transaction; a refund ends the service.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use reqwest::header::HeaderMap;
use twilight_accounts::{
    Accounts, AccountsError, JobState, NewOrder, Payment, PaymentState, Plan, ProvisioningJob, RefundNotice, Settled, Settlement,
};
use twilight_core::token::{hash_hex, RawToken};
use uuid::Uuid;

use crate::model::{Order, RefundRequest};
use crate::processor::{EventKind, Paid, PaymentError, PaymentProcessor, PaymentStatus, RefundReceipt};

/// What a plan costs per month, and whether it can be bought yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub plan: Plan,
    /// In the currency's minor unit (fen, cents).
    pub amount: i64,
    pub currency: &'static str,
    /// What the payer sees in the payment app.
    pub description: &'static str,
    pub available: bool,
}

/// The price list. Lite is shown on the landing page but cannot be bought yet.
pub const OFFERS: [Offer; 2] = [
    Offer {
        plan: Plan::Pro, amount: 19_800, currency: "CNY", description: "Twilight Drive Pro 股票研究助理 1个月", available: true
    },
    Offer { plan: Plan::Lite, amount: 4_900, currency: "USD", description: "Twilight Drive Lite 1 month", available: false },
];

/// Why checkout or an order lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("plan `{0}` is not available yet")]
    PlanUnavailable(Plan),
    #[error("plan `{0}` is not sold")]
    PlanNotSold(Plan),
    /// A renewal named an onboarding link that belongs to no paid order.
    #[error("the renewal link is not valid")]
    UnknownRenewal,
    #[error("the payment processor: {0}")]
    Processor(#[from] PaymentError),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
}

/// Why a notification was refused; the webhook answers `status` with `{"code":"FAIL",…}` and
/// nothing was written, so the processor retries a genuine one later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub status: u16,
    pub message: String,
}

/// What an accepted notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Settled(Box<Settled>),
    /// `full` once the refunds add up to the whole payment, which ends the user's service; a
    /// partial refund changes nothing else.
    Refunded {
        out_trade_no: String,
        newly: bool,
        full: bool,
    },
    /// Verified, but an event the product does not act on.
    Ignored(String),
}

/// A placed order and the onboarding link's token, which only the payer receives (once).
#[derive(Debug)]
pub struct PlacedOrder {
    pub payment: Payment,
    /// Render as a QR code for the payer to scan.
    pub code_url: String,
    pub onboarding_token: RawToken,
}

/// Where an order stands, as the payer's page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStage {
    /// Waiting for the payer.
    Pending,
    /// The checkout ran out unpaid (it will be closed).
    Expired,
    Closed,
    /// Paid; provisioning has not started.
    Paid,
    Provisioning,
    /// The bot is set up.
    Ready,
    /// Provisioning failed for good; an operator has been told.
    Failed,
    Refunded,
}

/// An order as its payer may see it: no user id, no token, no processor reference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub out_trade_no: String,
    pub plan: Plan,
    pub amount: i64,
    pub currency: String,
    pub stage: OrderStage,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
}

/// What one reconciliation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Pending orders looked at.
    pub checked: usize,
    /// Found paid at the processor and settled here.
    pub settled: usize,
    /// Closed (expired, or closed at the processor).
    pub closed: usize,
    /// Could not be checked this time (processor unavailable…); tried again next pass.
    pub failed: usize,
    /// Closed unpaid orders deleted, their retention over.
    pub pruned: u64,
}

#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// How long a checkout can be paid.
    pub order_ttl: Duration,
    /// Orders younger than this are left to their notification by reconciliation.
    pub reconcile_grace: Duration,
    /// Pending orders read per page; a pass pages through all of them, oldest first.
    pub reconcile_batch: i64,
    /// How long a closed, never-paid order is kept (for the payer's page and for support).
    pub closed_retention: Duration,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            order_ttl: Duration::from_secs(30 * 60),
            reconcile_grace: Duration::from_secs(60),
            reconcile_batch: 200,
            closed_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Checkout, notifications and reconciliation over one processor and the accounts DB.
pub struct Billing {
    accounts: Arc<dyn Accounts>,
    processor: Arc<dyn PaymentProcessor>,
    config: BillingConfig,
}

impl Billing {
    pub fn new(accounts: Arc<dyn Accounts>, processor: Arc<dyn PaymentProcessor>, config: BillingConfig) -> Self {
        Billing { accounts, processor, config }
    }

    pub fn offer(plan: Plan) -> Result<Offer, BillingError> {
        let offer = OFFERS.iter().find(|offer| offer.plan == plan).ok_or(BillingError::PlanNotSold(plan))?;
        if !offer.available {
            return Err(BillingError::PlanUnavailable(plan));
        }
        Ok(*offer)
    }

    /// Places an order for `plan`, renewing the user behind `renewal_token` if given: the user's
    /// renewal code (from their renewal link) or an onboarding link's token from an earlier order. The order is recorded before the processor is asked, so a crash in between
    /// leaves a pending order that reconciliation closes, never a payment we do not know of.
    pub async fn checkout(&self, plan: Plan, renewal_token: Option<&str>, now: DateTime<Utc>) -> Result<PlacedOrder, BillingError> {
        let offer = Self::offer(plan)?;
        let renews = match renewal_token {
            None => None,
            Some(token) => {
                let user = match self.accounts.user_by_renewal_code(token).await? {
                    Some(user) => Some(user.user_id),
                    None => self.accounts.payment_by_onboarding_token(&hash_hex(token)).await?.and_then(|payment| payment.user_id),
                };
                Some(user.ok_or(BillingError::UnknownRenewal)?)
            }
        };
        let onboarding_token = RawToken::generate();
        let expires_at = now + self.config.order_ttl;
        let payment = self
            .accounts
            .create_order(NewOrder {
                out_trade_no: new_out_trade_no(now),
                plan,
                amount_cents: offer.amount,
                currency: offer.currency.into(),
                processor: self.processor.name().into(),
                expires_at,
                renews,
                onboarding_token_hash: onboarding_token.hash(),
            })
            .await?;
        let order = Order {
            out_trade_no: payment.out_trade_no.clone(),
            description: offer.description.into(),
            amount_fen: offer.amount,
            currency: offer.currency.into(),
            time_expire: Some(expires_at),
            attach: None,
        };
        match self.processor.create_checkout(&order).await {
            Ok(checkout) => {
                self.accounts.record_code_url(&payment.out_trade_no, &checkout.code_url).await?;
                Ok(PlacedOrder { payment, code_url: checkout.code_url, onboarding_token })
            }
            Err(error) => {
                // The processor has no payable order, so nobody can pay this one.
                self.accounts.close_payment(&payment.out_trade_no).await?;
                Err(error.into())
            }
        }
    }

    /// Asks the processor to refund a paid order in full. Idempotent (the refund number derives
    /// from the order number); the refund is recorded when the processor's `REFUND.SUCCESS`
    /// notification arrives, which also ends the user's service.
    pub async fn refund(&self, order_id: Uuid, reason: Option<String>) -> Result<RefundReceipt, BillingError> {
        let payment = self.accounts.payment(order_id).await?.ok_or(AccountsError::NotFound("order"))?;
        if !matches!(payment.status, PaymentState::Paid | PaymentState::Refunded) {
            return Err(AccountsError::Rejected(format!("order {} is {}, not paid", payment.out_trade_no, payment.status)).into());
        }
        let request = RefundRequest {
            out_refund_no: format!("R{}", payment.out_trade_no),
            out_trade_no: payment.out_trade_no,
            reason,
            refund_fen: payment.amount_cents,
            total_fen: payment.amount_cents,
            currency: payment.currency,
        };
        Ok(self.processor.refund(&request).await?)
    }

    /// The order `order_id` as its payer may see it.
    pub async fn order(&self, order_id: Uuid, now: DateTime<Utc>) -> Result<Option<OrderView>, BillingError> {
        match self.accounts.payment(order_id).await? {
            Some(payment) => Ok(Some(self.view(payment, now).await?)),
            None => Ok(None),
        }
    }

    /// The order behind an onboarding link's token.
    pub async fn order_by_onboarding_token(&self, token: &str, now: DateTime<Utc>) -> Result<Option<OrderView>, BillingError> {
        match self.accounts.payment_by_onboarding_token(&hash_hex(token)).await? {
            Some(payment) => Ok(Some(self.view(payment, now).await?)),
            None => Ok(None),
        }
    }

    async fn view(&self, payment: Payment, now: DateTime<Utc>) -> Result<OrderView, BillingError> {
        let job = match payment.user_id {
            Some(user_id) if payment.status == PaymentState::Paid => {
                self.accounts.jobs_for_user(user_id).await?.into_iter().find(|job| job.payment_id == Some(payment.payment_id))
            }
            _ => None,
        };
        Ok(OrderView {
            order_id: payment.payment_id,
            stage: stage(&payment, job.as_ref(), now),
            out_trade_no: payment.out_trade_no,
            plan: payment.plan,
            amount: payment.amount_cents,
            currency: payment.currency,
            created_at: payment.created_at,
            expires_at: payment.expires_at,
            paid_at: payment.paid_at,
        })
    }

    /// Verifies a webhook delivery (`body` as received) and records what it reports. Every
    /// rejection leaves the database untouched.
    pub async fn handle_notification(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<Handled, Rejection> {
        let event = self.processor.verify_notification(headers, body, now).map_err(|error| {
            let status = match error {
                PaymentError::InvalidNotification(_) => 400,
                _ => 500,
            };
            Rejection { status, message: error.to_string() }
        })?;
        match event.kind {
            EventKind::Paid(paid) => Ok(Handled::Settled(Box::new(self.settle(&paid).await.map_err(rejection)?))),
            EventKind::Refunded(refund) => {
                let notice = RefundNotice {
                    out_trade_no: refund.out_trade_no.clone(),
                    out_refund_no: refund.out_refund_no.clone(),
                    amount_cents: refund.amount.amount,
                    refunded_at: now,
                };
                let recorded = self.accounts.refund_payment(&notice).await.map_err(rejection)?;
                let full = recorded.payment.status == PaymentState::Refunded;
                tracing::info!(out_trade_no = %refund.out_trade_no, newly = recorded.newly_recorded, refunded_cents = recorded.refunded_cents, full, "refund recorded");
                Ok(Handled::Refunded { out_trade_no: refund.out_trade_no, newly: recorded.newly_recorded, full })
            }
            EventKind::Other(event_type) => {
                tracing::info!(%event_type, id = %event.id, "notification ignored");
                Ok(Handled::Ignored(event_type))
            }
        }
    }

    async fn settle(&self, paid: &Paid) -> Result<Settled, AccountsError> {
        let settled = self
            .accounts
            .settle_payment(&Settlement {
                out_trade_no: paid.out_trade_no.clone(),
                processor_ref: paid.transaction_id.clone(),
                amount_cents: paid.amount.amount,
                currency: paid.amount.currency.clone(),
                paid_at: paid.paid_at,
            })
            .await?;
        tracing::info!(
            out_trade_no = %paid.out_trade_no,
            user_id = %settled.user.user_id,
            outcome = ?settled.outcome,
            "payment settled"
        );
        Ok(settled)
    }

    /// Asks the processor about every pending order older than the grace period, a page at a
    /// time: paid ones are settled exactly as their notification would have; expired or closed
    /// ones are closed. Then deletes closed unpaid orders past their retention.
    pub async fn reconcile(&self, now: DateTime<Utc>) -> Result<Reconciled, BillingError> {
        let mut report = Reconciled::default();
        let grace = chrono::Duration::from_std(self.config.reconcile_grace).unwrap_or_default();
        let mut after = None;
        'pages: loop {
            let page = self.accounts.pending_payments(after, self.config.reconcile_batch).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.payment_id));
            let full = page.len() as i64 >= self.config.reconcile_batch;
            for payment in page {
                // Oldest first: from here on every order is still within its grace.
                if payment.created_at + grace > now {
                    break 'pages;
                }
                self.reconcile_counted(&payment, now, &mut report).await;
            }
            if !full {
                break;
            }
        }
        let retention = chrono::Duration::from_std(self.config.closed_retention).ok();
        if let Some(placed_before) = retention.and_then(|retention| now.checked_sub_signed(retention)) {
            report.pruned = self.accounts.prune_closed_payments(placed_before).await?;
        }
        Ok(report)
    }

    async fn reconcile_counted(&self, payment: &Payment, now: DateTime<Utc>, report: &mut Reconciled) {
        report.checked += 1;
        match self.reconcile_one(payment, now).await {
            Ok(Some(Reconciliation::Settled)) => report.settled += 1,
            Ok(Some(Reconciliation::Closed)) => report.closed += 1,
            Ok(None) => {}
            Err(error) => {
                report.failed += 1;
                tracing::warn!(out_trade_no = %payment.out_trade_no, %error, "reconciliation failed for an order");
            }
        }
    }

    async fn reconcile_one(&self, payment: &Payment, now: DateTime<Utc>) -> Result<Option<Reconciliation>, BillingError> {
        let no = &payment.out_trade_no;
        let expired = payment.expires_at.is_some_and(|at| at <= now);
        match self.processor.query(no).await {
            Ok(PaymentStatus::Paid(paid)) => {
                self.settle(&paid).await?;
                Ok(Some(Reconciliation::Settled))
            }
            Ok(PaymentStatus::Closed) => self.close_here(no).await,
            Ok(PaymentStatus::Pending | PaymentStatus::Failed) if expired => match self.processor.close(no).await {
                Ok(()) | Err(PaymentError::AlreadyClosed) => self.close_here(no).await,
                // Paid in the meantime: the next pass settles it.
                Err(PaymentError::AlreadyPaid) => Ok(None),
                Err(error) => Err(error.into()),
            },
            Ok(PaymentStatus::Pending | PaymentStatus::Failed) => Ok(None),
            Ok(PaymentStatus::Refunded) => {
                tracing::error!(out_trade_no = %no, "order refunded at the processor but never recorded paid here; needs an operator");
                Ok(None)
            }
            // Checkout failed before the processor recorded the order.
            Err(PaymentError::NotFound) if expired => self.close_here(no).await,
            Err(error) => Err(error.into()),
        }
    }

    async fn close_here(&self, out_trade_no: &str) -> Result<Option<Reconciliation>, BillingError> {
        let closed = self.accounts.close_payment(out_trade_no).await?;
        Ok(closed.then_some(Reconciliation::Closed))
    }
}

enum Reconciliation {
    Settled,
    Closed,
}

fn stage(payment: &Payment, job: Option<&ProvisioningJob>, now: DateTime<Utc>) -> OrderStage {
    match payment.status {
        PaymentState::Pending if payment.expires_at.is_some_and(|at| at <= now) => OrderStage::Expired,
        PaymentState::Pending => OrderStage::Pending,
        PaymentState::Closed => OrderStage::Closed,
        PaymentState::Refunded => OrderStage::Refunded,
        PaymentState::Paid => match job.map(|job| job.state) {
            // A renewal of a running bot: nothing to set up.
            None => OrderStage::Ready,
            Some(JobState::Created) => OrderStage::Paid,
            Some(JobState::Active | JobState::Done) => OrderStage::Ready,
            Some(JobState::Failed | JobState::Cancelled) => OrderStage::Failed,
            Some(_) => OrderStage::Provisioning,
        },
    }
}

/// The webhook status for a notification the accounts DB refused: unknown orders and mismatches
/// are the sender's problem (4xx), a database failure ours (5xx); the processor retries either.
fn rejection(error: AccountsError) -> Rejection {
    let status = match &error {
        AccountsError::NotFound(_) => 404,
        AccountsError::Rejected(_) | AccountsError::Conflict(_) => 409,
        _ => 500,
    };
    if status == 500 {
        tracing::error!(%error, "recording a notification failed");
        return Rejection { status, message: "internal error; retry later".into() };
    }
    Rejection { status, message: error.to_string() }
}

/// `TD` + the UTC second + 12 random letters and digits: 28 characters, sortable by time, and
/// unguessable enough that order numbers reveal nothing about each other.
fn new_out_trade_no(now: DateTime<Utc>) -> String {
    let random: String = rand::thread_rng().sample_iter(&Alphanumeric).take(12).map(char::from).collect();
    format!("TD{}{random}", now.format("%Y%m%d%H%M%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_fit_wechat_pay_and_differ() {
        let now = Utc::now();
        let a = new_out_trade_no(now);
        assert_eq!(a.len(), 28);
        crate::model::validate::out_trade_no(&a).unwrap();
        assert_ne!(a, new_out_trade_no(now));
    }

    #[test]
    fn only_pro_can_be_bought() {
        assert_eq!(Billing::offer(Plan::Pro).unwrap().amount, 19_800);
        assert!(matches!(Billing::offer(Plan::Lite), Err(BillingError::PlanUnavailable(Plan::Lite))));
        assert!(matches!(Billing::offer(Plan::Alpha), Err(BillingError::PlanNotSold(Plan::Alpha))));
    }
}
