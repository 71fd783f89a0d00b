//! The accounts database of Twilight Drive: users, API keys, admin tokens, usage metering, orders
//! and their payments, and the provisioning jobs a payment enqueues (plus the `hermes_profiles`
//! schema).
//!
//! Callers hold an `Arc<dyn Accounts>`. The one implementation, [`SqlAccounts`], serves
//! PostgreSQL (production) and SQLite (the embedded default), chosen by the URL scheme; both pass
//! the same contract tests (`tests/contract.rs`).
#![forbid(unsafe_code)]

pub mod backup;
mod error;
mod issue;
mod model;
mod sql;
pub mod testing;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use error::{AccountsError, Result};
pub use issue::{create_user_with_key, renew_url, user_overview, UserOverview, DATA_SCOPE, DEFAULT_RATE_LIMIT_PER_MIN};
pub use model::{
    row_id_of, tool_call_id, AdminToken, ApiKey, Citation, CitationRecord, GatewayCensus, HermesProfile, JobKind, JobRun, JobState,
    JobUpdate, NewApiKey, NewOrder, NewUser, Payment, PaymentState, Plan, ProfileStatus, ProvisioningJob, Pruned, RefundNotice,
    RefundRecorded, ScheduledJob, SettleOutcome, Settled, Settlement, Tallies, UnknownValue, UsageDay, UsageRecord, User, UserStatus,
};
pub use sql::SqlAccounts;

/// Storage of accounts, keys and usage. Every timestamp is set by the caller's clock (never the
/// database's), so all backends and processes agree on it.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// `"postgres"` or `"sqlite"`, for logs and health output.
    fn backend(&self) -> &'static str;

    /// Round-trips a trivial query; for health checks.
    async fn ping(&self) -> Result<()>;

    /// Applies the embedded migrations of this backend; already applied ones are skipped, so
    /// every process may call it at startup.
    async fn migrate(&self) -> Result<()>;

    /// Creates an active user with a fresh v4 id.
    async fn create_user(&self, new: NewUser) -> Result<User>;

    async fn user(&self, user_id: Uuid) -> Result<Option<User>>;

    /// Users newest first, only those in `status` if given; `limit` from `offset`.
    async fn list_users(&self, status: Option<UserStatus>, limit: i64, offset: i64) -> Result<Vec<User>>;

    /// The user a renewal link (`/renew/{code}`) names.
    async fn user_by_renewal_code(&self, code: &str) -> Result<Option<User>>;

    /// Ends the service of every `active` user whose `paid_until` is before `paid_before` (the
    /// caller's now minus the grace): in one transaction they become `expired`, the auth epoch is
    /// bumped (cached keys are looked up again and answer 402), and each gets a `suspend` job
    /// (stop the gateway, keep the profile). Returns them; none a second time.
    async fn expire_users(&self, paid_before: DateTime<Utc>) -> Result<Vec<User>>;

    /// Active users with a running bot on `host` whose paid period ends by `ends_by` and who were
    /// not yet reminded of that end.
    async fn reminders_due(&self, host: &str, ends_by: DateTime<Utc>) -> Result<Vec<User>>;

    /// Records that the user is reminded of the period ending `paid_until`; `false` (nothing
    /// written) if they already were or the period moved meanwhile. Claimed before sending, so no
    /// restart reminds twice; a renewal's new period gets its own reminder.
    async fn claim_reminder(&self, user_id: Uuid, paid_until: DateTime<Utc>) -> Result<bool>;

    /// Forgets a claimed reminder that could not be sent.
    async fn release_reminder(&self, user_id: Uuid, paid_until: DateTime<Utc>) -> Result<()>;

    /// Enqueues a `deprovision` job for every `expired` user whose `paid_until` is before
    /// `paid_before` (now minus grace and retention) and who still has a profile that is not
    /// deprovisioned, unless one is already open. Returns the jobs enqueued.
    async fn retire_expired(&self, paid_before: DateTime<Utc>) -> Result<Vec<ProvisioningJob>>;

    /// Stores a key. `Conflict` if the hash exists, `NotFound("user")` if the user does not.
    async fn insert_api_key(&self, new: NewApiKey) -> Result<ApiKey>;

    /// Looks a key up by hash, revoked or not (callers check [`ApiKey::is_revoked`]).
    async fn api_key(&self, key_hash: &str) -> Result<Option<ApiKey>>;

    /// Revokes every live key of the user and bumps the auth epoch in the same transaction.
    /// Returns how many keys were revoked (0 if none were live); `NotFound("user")` for an
    /// unknown user.
    async fn revoke_user_keys(&self, user_id: Uuid) -> Result<u64>;

    /// Revokes one key and bumps the auth epoch; `false` if it was unknown or already revoked.
    async fn revoke_api_key(&self, key_hash: &str) -> Result<bool>;

    /// Stores an admin token. `Conflict` if the hash exists.
    async fn insert_admin_token(&self, token_hash: &str, label: &str) -> Result<AdminToken>;

    async fn admin_token(&self, token_hash: &str) -> Result<Option<AdminToken>>;

    /// Every admin token, revoked or not, oldest first.
    async fn admin_tokens(&self) -> Result<Vec<AdminToken>>;

    /// Revokes an admin token and bumps the auth epoch; `false` if unknown or already revoked.
    async fn revoke_admin_token(&self, token_hash: &str) -> Result<bool>;

    /// A counter that grows with every revocation. Processes caching key lookups poll it and
    /// drop their cache when it changes, so a revocation takes effect everywhere within one poll.
    async fn auth_epoch(&self) -> Result<i64>;

    /// Writes a buffered batch of usage rows atomically (all or none) and advances each key's
    /// `last_used_at` to its latest use in the batch, never backwards. A status that does not
    /// fit the `smallint` column fails the whole batch before anything is written.
    async fn record_usage(&self, records: &[UsageRecord]) -> Result<()>;

    /// Requests and upstream cost per UTC day and endpoint since `since` (inclusive), newest day
    /// first, then by endpoint.
    async fn usage_by_day(&self, user_id: Uuid, since: DateTime<Utc>) -> Result<Vec<UsageDay>>;

    /// Number of usage rows of the user, ever.
    async fn usage_count(&self, user_id: Uuid) -> Result<i64>;

    /// What the answer with `tool_call_id` cited, and for whom.
    async fn citation(&self, tool_call_id: &str) -> Result<Option<CitationRecord>>;

    /// Deletes usage rows and citations of answers served before `before`, in one transaction (a
    /// citation by the time its `tc_<UUIDv7>` id was minted).
    async fn prune_usage(&self, before: DateTime<Utc>) -> Result<Pruned>;

    /// Stores a pending order. `Conflict` if its `out_trade_no` or onboarding token exists,
    /// `NotFound("user")` if it renews an unknown user.
    async fn create_order(&self, new: NewOrder) -> Result<Payment>;

    async fn payment(&self, payment_id: Uuid) -> Result<Option<Payment>>;

    async fn payment_by_out_trade_no(&self, out_trade_no: &str) -> Result<Option<Payment>>;

    /// The user's orders, newest first, at most `limit`.
    async fn payments_for_user(&self, user_id: Uuid, limit: i64) -> Result<Vec<Payment>>;

    async fn payment_by_onboarding_token(&self, token_hash: &str) -> Result<Option<Payment>>;

    /// Pending orders, oldest first, at most `limit`, after the order `after` names (its
    /// `created_at` and id; `None` from the start): what reconciliation pages through to ask the
    /// processor about.
    async fn pending_payments(&self, after: Option<(DateTime<Utc>, Uuid)>, limit: i64) -> Result<Vec<Payment>>;

    /// Deletes closed orders never paid, placed before `placed_before`, that nothing refers to;
    /// how many went.
    async fn prune_closed_payments(&self, placed_before: DateTime<Utc>) -> Result<u64>;

    /// Records a confirmed payment in one transaction: the order becomes `paid`; a first purchase
    /// creates the user (`paid_until` one month after payment) and enqueues a `provision` job. A
    /// renewal extends the user's `paid_until` by a month from whichever is later, then or now
    /// paid, makes an expired user active again, and enqueues only what the user's bot needs: a
    /// `resume` job for a suspended one, a `provision` job if there is none (never provisioned,
    /// failed or deprovisioned), nothing for a bot that is running or still being set up. Idempotent: settling the same `processor_ref` again changes nothing and
    /// answers [`SettleOutcome::AlreadyPaid`], however many deliveries race.
    ///
    /// `NotFound("order")` for an unknown `out_trade_no`; `Rejected` when the amount or currency
    /// differs from the order's or the order was paid by another transaction. Nothing is written
    /// on any error.
    async fn settle_payment(&self, settlement: &Settlement) -> Result<Settled>;

    /// Records a refund of a paid order in one transaction. A partial refund (the refunds so far
    /// add up to less than the payment) is recorded and changes nothing else. Once the whole
    /// payment is refunded the order becomes `refunded`, its user `refunded` with every key revoked
    /// (bumping the auth epoch), every unfinished `provision`/`resume` job of the user `cancelled`,
    /// and a `deprovision` job enqueued. Idempotent per `out_refund_no`. `NotFound("order")` if
    /// unknown, `Rejected` if it was never paid or the refunds would exceed the payment.
    async fn refund_payment(&self, refund: &RefundNotice) -> Result<RefundRecorded>;

    /// Keeps the processor's payment link of a pending order, for its payment page to show again
    /// as a QR code. `Rejected` if the order is not pending.
    async fn record_code_url(&self, out_trade_no: &str, code_url: &str) -> Result<()>;

    /// Marks a pending order `closed`; `false` if it was not pending.
    async fn close_payment(&self, out_trade_no: &str) -> Result<bool>;

    /// Every provisioning job of the user, oldest first.
    async fn jobs_for_user(&self, user_id: Uuid) -> Result<Vec<ProvisioningJob>>;

    async fn job(&self, job_id: Uuid) -> Result<Option<ProvisioningJob>>;

    /// The job an onboarding link (by its token's hash) follows.
    async fn job_by_onboarding_token(&self, token_hash: &str) -> Result<Option<ProvisioningJob>>;

    /// Leases the most overdue runnable job to `worker` on `host` until `lease_until`: one not
    /// finished, due by `now`, and not leased to anyone (or whose lease ran out, e.g. its worker
    /// crashed), whose user has no other job leased — so a refund's `deprovision` waits for a step
    /// in flight to end. Two workers never hold the same job (Postgres: `FOR UPDATE SKIP LOCKED`;
    /// SQLite: one writer).
    ///
    /// Hosts: a job belongs to the host recorded on it, else to the host of its user's bot; those
    /// are worked there only. A job of a user without a bot (a new user) goes to the live host
    /// (recorded within [`GatewayCensus::SILENT_AFTER`]) with the most free gateway slots — its
    /// slots less its bots and the new users it is setting up — or, while no host is live, to
    /// whoever asks; the claim records the host on the job.
    async fn claim_job(&self, worker: &str, host: &str, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Option<ProvisioningJob>>;

    /// Records the progress of a job `worker` holds and extends its lease to `lease_until`, or
    /// releases it when `None`. `false`, with nothing written, when `worker` no longer holds it or
    /// the job was finished meanwhile (cancelled by a refund).
    async fn update_job(&self, job_id: Uuid, worker: &str, update: &JobUpdate, lease_until: Option<DateTime<Utc>>) -> Result<bool>;

    /// Gives up `worker`'s lease on a job whatever its state (after [`Accounts::update_job`] was
    /// refused because the job was cancelled), so the user's next job can run at once.
    async fn release_job(&self, job_id: Uuid, worker: &str) -> Result<()>;

    /// Posts the pairing QR (`None` clears it) and status for the onboarding page.
    async fn set_pairing(&self, job_id: Uuid, qr: Option<&str>, status: &str) -> Result<()>;

    /// The user's 6-digit verify code for the provisioner (`None` once used). `Rejected` for
    /// anything but six digits.
    async fn set_verify_code(&self, job_id: Uuid, code: Option<&str>) -> Result<()>;

    /// The bot name the user chose; the provisioner validates it before use.
    async fn set_bot_name(&self, job_id: Uuid, name: &str) -> Result<()>;

    /// Starts or resumes provisioning `user_id` outside any payment (the admin's manual path),
    /// followed by the onboarding link whose token hashes to `onboarding_token_hash`: an
    /// unfinished `provision` job of the user gets that link (the old one stops working) and is
    /// woken; otherwise a new job is enqueued. `NotFound("user")` for an unknown user.
    async fn enqueue_provisioning(&self, user_id: Uuid, onboarding_token_hash: &str) -> Result<ProvisioningJob>;

    /// Makes an unfinished job due now (the user acted: typed a code, named the bot, asked for a
    /// new QR code); `false` if it is finished or unknown.
    async fn wake_job(&self, job_id: Uuid) -> Result<bool>;

    /// Creates or replaces the user's profile row (one per user).
    async fn upsert_profile(&self, profile: &HermesProfile) -> Result<()>;

    async fn profile_for_user(&self, user_id: Uuid) -> Result<Option<HermesProfile>>;

    /// Records the host: its census of its gateways and its slots (the hosts table).
    async fn record_gateway_census(&self, census: &GatewayCensus) -> Result<()>;

    /// Every host's latest record, by host.
    async fn gateway_census(&self) -> Result<Vec<GatewayCensus>>;

    /// How many provisioning jobs are in each state and orders in each status, for `/metrics`.
    async fn tallies(&self) -> Result<Tallies>;

    /// Records that the user's bot greets them now; `false` (nothing written) if it already did or
    /// there is no profile. Claimed before sending, so no restart ever greets twice.
    async fn claim_welcome(&self, user_id: Uuid, at: DateTime<Utc>) -> Result<bool>;

    /// Forgets a claimed greeting that could not be sent.
    async fn release_welcome(&self, user_id: Uuid) -> Result<()>;

    /// Every profile on `host` in `status`, for a provisioner starting up to bring their gateways back.
    async fn profiles_on_host(&self, host: &str, status: ProfileStatus) -> Result<Vec<HermesProfile>>;

    /// Leases the scheduled job `job` to `holder` until `lease_until`, when nobody else holds it at
    /// `now` (never held, released, or its holder's lease ran out); `false` when another holds it.
    /// Two processes asking at once never both get it.
    async fn lease_scheduled_job(&self, job: &str, holder: &str, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<bool>;

    /// Records how `holder`'s run of `job` ended and releases the lease; `false`, with nothing
    /// written, when `holder` no longer held it (its lease ran out and another took it).
    async fn finish_scheduled_job(&self, job: &str, holder: &str, run: &JobRun) -> Result<bool>;

    /// Every scheduled job that ever ran, by name.
    async fn scheduled_jobs(&self) -> Result<Vec<ScheduledJob>>;
}
