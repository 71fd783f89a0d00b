//! Rows and inputs of the accounts database, shared by every backend.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A text column held a value this build does not know (e.g. a plan added by a newer release).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownValue {
    kind: &'static str,
    value: String,
}

/// Declares an enum stored as lowercase text, with `as_str`, `FromStr`, `Display`, serde, and
/// `TryFrom<String>` (which `#[sqlx(try_from = "String")]` uses to decode it on every backend).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The text stored in the database and shown by the API.
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownValue { kind: stringify!($name), value: s.to_owned() }),
                }
            }
        }

        // By hand: utoipa's derive does not see a `serde(rename)` whose text comes from a macro.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl TryFrom<String> for $name {
            type Error = UnknownValue;

            fn try_from(s: String) -> Result<Self, UnknownValue> {
                s.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// What a user paid for; decides limits and features elsewhere.
    Plan { Pro = "pro", Lite = "lite", Alpha = "alpha" }
}

text_enum! {
    /// Whether a user's keys may be used at all; anything but `Active` means no service.
    UserStatus {
        Active = "active",
        /// The paid period and its grace ran out: keys answer 402, the gateway is stopped, the
        /// profile is kept for a while in case they renew.
        Expired = "expired",
        Suspended = "suspended",
        Refunded = "refunded",
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// Where an order stands: `Pending` from checkout, `Paid` once the processor confirmed it,
    /// `Refunded` after a refund, `Closed` when it expired or was cancelled unpaid.
    PaymentState { Pending = "pending", Paid = "paid", Refunded = "refunded", Closed = "closed" }
}

text_enum! {
    /// What a provisioning job does for its user: set the bot up (and pair it), take everything
    /// down, or stop and start its gateway around an expiry and a renewal.
    JobKind { Provision = "provision", Deprovision = "deprovision", Suspend = "suspend", Resume = "resume" }
}

text_enum! {
    /// Where a job stands. A `provision` job walks
    /// `created → profile_created → secrets_planted → awaiting_scan → paired → bot_named →
    /// gateway_running → active`; the other kinds go from `created` straight to `done`. `failed`
    /// (compensated after too many failures) and `cancelled` (a refund or expiry overtook it) end
    /// any kind.
    JobState {
        Created = "created",
        ProfileCreated = "profile_created",
        SecretsPlanted = "secrets_planted",
        AwaitingScan = "awaiting_scan",
        /// Pairing gave up for now (its QR codes ran out unscanned, or WeChat refused): parked
        /// until the user asks the onboarding page for a new QR code.
        AwaitingUser = "awaiting_user",
        Paired = "paired",
        BotNamed = "bot_named",
        GatewayRunning = "gateway_running",
        Active = "active",
        Done = "done",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobState {
    /// States in which a job has nothing left to do.
    pub const FINAL: [JobState; 4] = [JobState::Active, JobState::Done, JobState::Failed, JobState::Cancelled];

    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }
}

text_enum! {
    /// Where a user's hermes profile stands.
    ProfileStatus {
        Provisioning = "provisioning",
        Active = "active",
        /// Its user expired: the gateway is stopped, everything else kept.
        Suspended = "suspended",
        Error = "error",
        Deprovisioned = "deprovisioned",
    }
}

/// A paying (or trial) customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub weixin_openid: Option<String>,
    pub display_name: Option<String>,
    #[sqlx(try_from = "String")]
    pub plan: Plan,
    #[sqlx(try_from = "String")]
    pub status: UserStatus,
    pub created_at: DateTime<Utc>,
    pub paid_until: Option<DateTime<Utc>>,
    /// Names the user in their renewal link (`/renew/{code}`); it only lets its holder pay the
    /// user's renewal.
    pub renewal_code: String,
    /// The `paid_until` the renewal reminder was sent for, if it was.
    pub reminded_for: Option<DateTime<Utc>>,
}

/// Input of [`crate::Accounts::create_user`]; the id, status (`Active`) and `created_at` are
/// assigned by the store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewUser {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub plan: Plan,
    pub paid_until: Option<DateTime<Utc>>,
}

/// A user's API key, known only by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub key_hash: String,
    pub user_id: Uuid,
    pub scope: String,
    pub rate_limit_per_min: i32,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// A revoked key must be refused even if its user is still active.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// Input of [`crate::Accounts::insert_api_key`]; `key_hash` is `twilight_core::token::hash_hex` of the raw key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub key_hash: String,
    pub user_id: Uuid,
    pub scope: String,
    pub rate_limit_per_min: i32,
}

/// An operator credential for `/admin/*`; a separate class from user keys so neither can act as
/// the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AdminToken {
    pub token_hash: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl AdminToken {
    /// A revoked token must be refused.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// One served request, as buffered by the metering layer and written by
/// [`crate::Accounts::record_usage`]. `key_hash` only advances the key's `last_used_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Given when the request is answered; a row whose id is already stored is skipped. A cited
    /// answer's row is stored under its citation's id instead ([`UsageRecord::stored_id`]).
    pub row_id: Uuid,
    pub user_id: Uuid,
    pub key_hash: String,
    pub endpoint: String,
    pub occurred_at: DateTime<Utc>,
    pub upstream_cost_pts: i32,
    /// HTTP status served.
    pub status: u16,
    /// What a data answer cited, kept in the same row so its `tool_call_id` can be traced later.
    #[serde(default)]
    pub citation: Option<Citation>,
}

impl UsageRecord {
    /// The id the row is stored under: the one its citation's `tool_call_id` carries, so that id
    /// alone finds the row, else `row_id`.
    pub fn stored_id(&self) -> Uuid {
        self.citation.as_ref().and_then(|citation| row_id_of(&citation.tool_call_id)).unwrap_or(self.row_id)
    }
}

/// The `tool_call_id` of the answer stored in usage row `row_id`: `tc_` and its 32 hex digits.
pub fn tool_call_id(row_id: Uuid) -> String {
    format!("tc_{}", row_id.simple())
}

/// The usage row id a [`tool_call_id`] names.
pub fn row_id_of(tool_call_id: &str) -> Option<Uuid> {
    let hex = tool_call_id.strip_prefix("tc_").filter(|hex| hex.len() == 32)?;
    Uuid::try_parse(hex).ok()
}

/// A data answer's cited values, recorded with its usage row. Both parts are JSON written once,
/// by the answering handler from typed values: neither the request path nor the metering writer
/// builds or serialises a `serde_json::Value` for them (that was ~6 % of the benchmark's CPU).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Citation {
    /// The id every cite of the answer carries (`tc_` + a UUIDv7: time-ordered, nothing else in it).
    pub tool_call_id: String,
    /// The request as understood (normalised code, dates, metric).
    pub request: Box<serde_json::value::RawValue>,
    /// Each value answered with its provenance: metric, value, unit, source, table, the upstream
    /// row's key, fetched_at, cache_age_seconds, stale.
    pub values: Box<serde_json::value::RawValue>,
}

impl Citation {
    pub fn new(tool_call_id: String, request: &impl Serialize, values: &impl Serialize) -> serde_json::Result<Citation> {
        Ok(Citation { tool_call_id, request: serde_json::value::to_raw_value(request)?, values: serde_json::value::to_raw_value(values)? })
    }
}

impl PartialEq for Citation {
    fn eq(&self, other: &Citation) -> bool {
        (self.tool_call_id.as_str(), self.request.get(), self.values.get())
            == (other.tool_call_id.as_str(), other.request.get(), other.values.get())
    }
}

impl Eq for Citation {}

/// What [`crate::Accounts::prune_usage`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub usage_rows: u64,
    pub citations: u64,
}

/// A recorded citation with who asked and when, as [`crate::Accounts::citation`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CitationRecord {
    pub tool_call_id: String,
    pub user_id: Uuid,
    pub endpoint: String,
    pub served_at: DateTime<Utc>,
    pub request: serde_json::Value,
    pub values: serde_json::Value,
}

/// An order and, once paid, its payment. `user_id` is set at checkout for a renewal, and at
/// settlement for a first purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Payment {
    pub payment_id: Uuid,
    pub user_id: Option<Uuid>,
    /// Our order number, as the processor knows it.
    pub out_trade_no: String,
    #[sqlx(try_from = "String")]
    pub plan: Plan,
    /// In the currency's minor unit (fen for CNY).
    pub amount_cents: i64,
    pub currency: String,
    pub processor: String,
    /// The processor's id of the payment (WeChat Pay's `transaction_id`), once paid.
    pub processor_ref: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: PaymentState,
    pub created_at: DateTime<Utc>,
    /// After this the checkout can no longer be paid.
    pub expires_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
    /// Never serialised: it identifies the payer's onboarding link.
    #[serde(skip)]
    pub onboarding_token_hash: Option<String>,
    /// What the payment QR code encodes (WeChat Pay's `weixin://wxpay/bizpayurl?pr=…`) while the
    /// order is pending; only the payer's page shows it.
    #[serde(skip)]
    pub code_url: Option<String>,
}

/// Input of [`crate::Accounts::create_order`]: a pending payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub out_trade_no: String,
    pub plan: Plan,
    pub amount_cents: i64,
    pub currency: String,
    pub processor: String,
    pub expires_at: DateTime<Utc>,
    /// The existing user this order renews; `None` for a first purchase.
    pub renews: Option<Uuid>,
    /// SHA-256 hex of the onboarding link's token handed to the payer.
    pub onboarding_token_hash: String,
}

/// What the processor says was paid, as [`crate::Accounts::settle_payment`] takes it. The amount
/// and currency must equal the order's, or nothing is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub out_trade_no: String,
    pub processor_ref: String,
    pub amount_cents: i64,
    pub currency: String,
    pub paid_at: DateTime<Utc>,
}

/// How [`crate::Accounts::settle_payment`] changed things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// A first purchase: a new user and a provisioning job.
    NewUser,
    /// A renewal: the user's `paid_until` moved on by one period (a job only if the user has no
    /// bot to keep, or an expired one to start again).
    Renewed,
    /// Already settled earlier (a repeated notification): nothing changed.
    AlreadyPaid,
}

/// The result of settling or refunding a payment: the rows as they now stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub outcome: SettleOutcome,
    pub payment: Payment,
    pub user: User,
    /// The job enqueued with the payment, if it has one: `provision` for a user without a bot,
    /// `resume` for an expired one; none for a renewal of a running bot.
    pub job: Option<ProvisioningJob>,
}

/// A refund the processor completed, as [`crate::Accounts::refund_payment`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotice {
    pub out_trade_no: String,
    /// The refund's own number: the same refund notified twice counts once.
    pub out_refund_no: String,
    /// In the currency's minor unit; at most what is left of the payment.
    pub amount_cents: i64,
    pub refunded_at: DateTime<Utc>,
}

/// The result of [`crate::Accounts::refund_payment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecorded {
    /// `false` when this refund was recorded before (a repeated notification).
    pub newly_recorded: bool,
    /// Refunded so far, this refund included.
    pub refunded_cents: i64,
    pub payment: Payment,
    /// The deprovisioning job, once the whole payment is refunded; `None` after a partial refund,
    /// which ends nothing.
    pub job: Option<ProvisioningJob>,
}

/// A unit of provisioner work, persisted so it survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ProvisioningJob {
    pub job_id: Uuid,
    pub user_id: Uuid,
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    pub payment_id: Option<Uuid>,
    /// The step reached; `Created` until a provisioner picks it up.
    #[sqlx(try_from = "String")]
    pub state: JobState,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    /// The host it is worked on, from its first claim (see [`crate::Accounts::claim_job`]).
    pub host: Option<String>,
    /// The provisioner working on it, until `locked_until`.
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    /// What the provisioner shows the user to scan (iLink's `qrcode_img_content`), while pairing.
    pub pairing_qr: Option<String>,
    /// The pairing state the user's page shows (`wait`, `scaned`, `need_verifycode`, …).
    pub pairing_status: Option<String>,
    /// The 6-digit code the user typed into the onboarding page, until the provisioner used it.
    #[serde(skip)]
    pub verify_code: Option<String>,
    /// The name the user chose for their bot.
    pub bot_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProvisioningJob {
    /// Whether the job has nothing left to do.
    pub fn is_finished(&self) -> bool {
        self.state.is_final()
    }
}

/// A job's progress, as the provisioner holding it records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUpdate {
    pub state: JobState,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
}

/// A user's hermes profile on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HermesProfile {
    pub profile_name: String,
    pub user_id: Uuid,
    pub host: String,
    /// The paired bot (`…@im.bot`), once the user scanned the QR.
    pub weixin_bot_id: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: ProfileStatus,
    pub created_at: DateTime<Utc>,
    /// When the bot greeted its owner in WeChat, once.
    pub welcomed_at: Option<DateTime<Utc>>,
}

/// Rows per state of the tables whose states operators watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies {
    /// Provisioning jobs per state (states without jobs left out).
    pub jobs: Vec<(JobState, i64)>,
    /// Orders per payment state (likewise).
    pub payments: Vec<(PaymentState, i64)>,
}

/// A host that runs users' gateways, as its provisioner last recorded it (every minute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct GatewayCensus {
    pub host: String,
    /// Active profiles on the host: gateways that should run.
    pub expected: i32,
    /// Gateways running when it looked.
    pub running: i32,
    /// How many gateways the host can hold (its memory for gateways over what one takes).
    pub gateway_slots: i32,
    pub observed_at: DateTime<Utc>,
}

impl GatewayCensus {
    /// A host not heard from for this long is taken for down: it gets no new users, and
    /// `/healthz` calls its census stale (its provisioner records one every minute).
    pub const SILENT_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(3);
}

/// A recurring job of the scheduler: who holds it now, and how its runs ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ScheduledJob {
    pub job: String,
    /// The process running it now, while `lease_until` is ahead.
    pub holder: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Failed runs since the last success, which the next attempt's backoff grows with.
    pub failures: i32,
}

/// How a run of a scheduled job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRun {
    Succeeded { at: DateTime<Utc> },
    Failed { at: DateTime<Utc>, error: String },
}

/// Requests and upstream cost of one user on one endpoint during one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub endpoint: String,
    pub requests: i64,
    pub upstream_cost_pts: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_enums_round_trip_and_reject_junk() {
        for plan in [Plan::Pro, Plan::Lite, Plan::Alpha] {
            assert_eq!(plan.as_str().parse::<Plan>(), Ok(plan));
        }
        assert_eq!("suspended".parse::<UserStatus>(), Ok(UserStatus::Suspended));
        let err = "gold".parse::<Plan>().unwrap_err();
        assert_eq!(err.to_string(), "unknown Plan `gold`");
        assert_eq!(UserStatus::Cancelled.to_string(), "cancelled");
    }
}
