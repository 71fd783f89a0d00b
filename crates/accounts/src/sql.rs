//! [`SqlAccounts`]: the one implementation of [`Accounts`], for PostgreSQL and SQLite.
//!
//! Each query is written once with `$N` placeholders (which sqlx-sqlite accepts too) and run on
//! whichever pool is connected by [`on_pool!`]. The only backend-specific SQL besides the
//! migrations is [`SqlAccounts::utc_day`].

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Months, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Encode, Postgres, QueryBuilder, Sqlite, Type};
use uuid::Uuid;

use crate::error::classify;
use crate::{
    row_id_of, Accounts, AccountsError, AdminToken, ApiKey, CitationRecord, GatewayCensus, HermesProfile, JobKind, JobRun, JobState,
    JobUpdate, NewApiKey, NewOrder, NewUser, Payment, PaymentState, ProfileStatus, ProvisioningJob, Pruned, RefundNotice, RefundRecorded,
    Result, ScheduledJob, SettleOutcome, Settled, Settlement, Tallies, UsageDay, UsageRecord, User, UserStatus,
};

/// Rows per multi-row INSERT (and keys per `last_used_at` UPDATE). A statement may carry at most
/// 32,766 bind parameters in SQLite and 65,535 in Postgres; at eight per usage row this stays well
/// below both. 100 rather than 1,000: the benchmark's cached `/price` served 10–15 % more requests
/// per second with the server on one core (measured, two runs each; why is not established).
const ROWS_PER_STATEMENT: usize = 100;
const _: () = assert!(ROWS_PER_STATEMENT * 8 <= 32_766);

const BUMP_AUTH_EPOCH: &str = "UPDATE auth_epoch SET version = version + 1 WHERE id = 1";

const USER_COLUMNS: &str = "user_id, email, weixin_openid, display_name, plan, status, created_at, paid_until, renewal_code, reminded_for";
const INSERT_USER: &str = "INSERT INTO users (user_id, email, weixin_openid, display_name, plan, \
    status, created_at, paid_until, renewal_code) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const PAYMENT_COLUMNS: &str = "payment_id, user_id, out_trade_no, plan, amount_cents, currency, \
    processor, processor_ref, status, created_at, expires_at, paid_at, refunded_at, \
    onboarding_token_hash, code_url";

/// The SQL condition "this job is not finished", from [`JobState::FINAL`].
fn unfinished_job() -> String {
    unfinished_job_of("")
}

/// [`unfinished_job`] for the job table named `alias` in a query that holds several.
fn unfinished_job_of(alias: &str) -> String {
    let finished = JobState::FINAL.map(|state| format!("'{state}'")).join(", ");
    let column = if alias.is_empty() { "state".to_string() } else { format!("{alias}.state") };
    format!("{column} NOT IN ({finished})")
}

/// Enqueues a `created` job due now (`$1` id, `$2` user, `$3` kind, `$4` payment, `$5` now, `$6`
/// onboarding token hash) unless the user already has an unfinished job of that kind, or the
/// payment one of that kind (a repeated notification); `rows_affected` says whether it did.
fn enqueue_job() -> String {
    let unfinished = unfinished_job();
    format!(
        "INSERT INTO provisioning_jobs (job_id, user_id, kind, payment_id, state, next_attempt_at, \
         onboarding_token_hash, created_at, updated_at) \
         SELECT $1, $2, $3, $4, '{created}', $5, $6, $5, $5 \
         WHERE NOT EXISTS (SELECT 1 FROM provisioning_jobs WHERE user_id = $2 AND kind = $3 AND {unfinished}) \
         ON CONFLICT (payment_id, kind) DO NOTHING",
        created = JobState::Created
    )
}

const JOB_COLUMNS: &str = "job_id, user_id, kind, payment_id, state, attempts, last_error, \
    next_attempt_at, host, locked_by, locked_until, pairing_qr, pairing_status, verify_code, bot_name, \
    created_at, updated_at";
const PROFILE_COLUMNS: &str = "profile_name, user_id, host, weixin_bot_id, status, created_at, welcomed_at";

/// The connected database. Debug output shows pool sizes only, never connect options.
#[derive(Debug)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the concrete pool. The body is compiled once per backend,
/// so the same query text gets each backend's encoders and decoders.
macro_rules! on_pool {
    ($self:ident, |$pool:ident| $body:expr) => {
        match &$self.pool {
            Pool::Postgres($pool) => $body,
            Pool::Sqlite($pool) => $body,
        }
    };
}

/// Accounts in PostgreSQL or SQLite, chosen by [`SqlAccounts::connect`]. Cheap to share as
/// `Arc<dyn Accounts>`; it holds a connection pool.
#[derive(Debug)]
pub struct SqlAccounts {
    pool: Pool,
}

impl SqlAccounts {
    /// Connects by URL scheme: `postgres://` or `postgresql://`, or `sqlite:` (file created if
    /// missing; WAL, 5 s busy timeout, foreign keys enforced). Does not migrate: call
    /// [`Accounts::migrate`] at startup.
    pub async fn connect(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        let pool = match scheme {
            "postgres" | "postgresql" => {
                let options = PgConnectOptions::from_str(url).map_err(invalid_url)?;
                Pool::Postgres(PgPoolOptions::new().connect_with(options).await?)
            }
            "sqlite" => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(invalid_url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                Pool::Sqlite(SqlitePoolOptions::new().connect_with(options).await?)
            }
            _ => {
                return Err(AccountsError::InvalidUrl(format!(
                    "unsupported scheme `{scheme}`; expected postgres://, postgresql:// or sqlite:"
                )))
            }
        };
        Ok(Self { pool })
    }

    /// SQL for the UTC day (`YYYY-MM-DD`) of `occurred_at`. SQLite holds sqlx's RFC 3339 text in
    /// UTC (`2026-04-30T11:00:00.5+00:00`), whose first ten characters are that day.
    fn utc_day(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            Pool::Sqlite(_) => "substr(occurred_at, 1, 10)",
        }
    }

    /// Runs a revoking `update` (binding `$1 = id`, `$2 = now`) and, if it changed any row, bumps
    /// the auth epoch in the same transaction. Returns the rows revoked.
    async fn revoke<'a, T>(&self, update: &'static str, id: T) -> Result<u64>
    where
        T: Encode<'a, Postgres> + Type<Postgres> + Encode<'a, Sqlite> + Type<Sqlite> + Send + 'a,
    {
        let revoked_at = now();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let revoked = sqlx::query(update).bind(id).bind(revoked_at).execute(&mut *tx).await?.rows_affected();
            if revoked > 0 {
                sqlx::query(BUMP_AUTH_EPOCH).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(revoked)
        })
    }
}

/// A new active user with a fresh v4 id, as [`Accounts::create_user`] and a first purchase make it.
fn new_user(new: NewUser) -> User {
    User {
        user_id: Uuid::new_v4(),
        email: new.email,
        weixin_openid: None,
        display_name: new.display_name,
        plan: new.plan,
        status: UserStatus::Active,
        created_at: now(),
        paid_until: new.paid_until,
        renewal_code: Uuid::new_v4().simple().to_string(),
        reminded_for: None,
    }
}

/// Binds `user` to [`INSERT_USER`].
fn bind_user<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    user: &'q User,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    Uuid: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
{
    query
        .bind(user.user_id)
        .bind(user.email.clone())
        .bind(user.weixin_openid.clone())
        .bind(user.display_name.clone())
        .bind(user.plan.as_str())
        .bind(user.status.as_str())
        .bind(user.created_at)
        .bind(user.paid_until)
        .bind(user.renewal_code.clone())
}

/// One subscription period after `from`: the same day of the next month (or its last day).
fn one_period_after(from: DateTime<Utc>) -> DateTime<Utc> {
    from.checked_add_months(Months::new(1)).expect("a month after a payment is within chrono's range")
}

/// What a renewal enqueues, given the user's profile: nothing for a bot that runs (or is being
/// set up: the guard in [`enqueue_job`] sees its open job), its gateway started again if it was
/// suspended, and a new bot only where there is none.
fn renewal_job(profile: Option<ProfileStatus>) -> Option<JobKind> {
    match profile {
        Some(ProfileStatus::Active) => None,
        Some(ProfileStatus::Suspended) => Some(JobKind::Resume),
        Some(ProfileStatus::Provisioning | ProfileStatus::Error | ProfileStatus::Deprovisioned) | None => Some(JobKind::Provision),
    }
}

/// A job for [`enqueue_job`].
struct NewJob {
    job_id: Uuid,
    user_id: Uuid,
    kind: JobKind,
    payment_id: Option<Uuid>,
    at: DateTime<Utc>,
    onboarding_token_hash: Option<String>,
}

impl NewJob {
    fn due_now(user_id: Uuid, kind: JobKind, payment_id: Option<Uuid>, onboarding_token_hash: Option<String>) -> NewJob {
        NewJob { job_id: Uuid::new_v4(), user_id, kind, payment_id, at: now(), onboarding_token_hash }
    }

    fn bind<'q, DB>(
        self,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        DB: sqlx::Database,
        Uuid: Encode<'q, DB> + Type<DB>,
        Option<Uuid>: Encode<'q, DB> + Type<DB>,
        &'q str: Encode<'q, DB> + Type<DB>,
        DateTime<Utc>: Encode<'q, DB> + Type<DB>,
        Option<String>: Encode<'q, DB> + Type<DB>,
    {
        query
            .bind(self.job_id)
            .bind(self.user_id)
            .bind(self.kind.as_str())
            .bind(self.payment_id)
            .bind(self.at)
            .bind(self.onboarding_token_hash)
    }
}

/// Why a settlement claimed no pending order, given the order as stored: a repeat of the
/// settlement that paid it (answered with the order), or an error.
fn repeated_settlement(existing: Option<Payment>, settlement: &Settlement) -> Result<Payment> {
    let payment = existing.ok_or(AccountsError::NotFound("order"))?;
    if (payment.amount_cents, payment.currency.as_str()) != (settlement.amount_cents, settlement.currency.as_str()) {
        return Err(AccountsError::Rejected(format!(
            "paid {} {} but order {} charges {} {}",
            settlement.amount_cents, settlement.currency, payment.out_trade_no, payment.amount_cents, payment.currency
        )));
    }
    if payment.processor_ref.as_deref() != Some(settlement.processor_ref.as_str()) {
        return Err(AccountsError::Rejected(format!("order {} is {} under another transaction", payment.out_trade_no, payment.status)));
    }
    Ok(payment)
}

impl SqlAccounts {
    /// The job matching `condition` on `$1`.
    async fn job_where<T>(&self, condition: &str, value: T) -> Result<Option<ProvisioningJob>>
    where
        T: for<'q> Encode<'q, Postgres> + Type<Postgres> + for<'q> Encode<'q, Sqlite> + Type<Sqlite> + Send,
    {
        let sql = format!("SELECT {JOB_COLUMNS} FROM provisioning_jobs WHERE {condition}");
        Ok(on_pool!(self, |pool| { sqlx::query_as::<_, ProvisioningJob>(&sql).bind(value).fetch_optional(pool).await })?)
    }

    /// Runs a one-row `UPDATE provisioning_jobs … WHERE job_id = $1` binding `$2` (and `$3 = now`);
    /// `NotFound("job")` when no such job exists.
    async fn set_job_field<T>(&self, update: &str, job_id: Uuid, value: T) -> Result<()>
    where
        T: for<'q> Encode<'q, Postgres> + Type<Postgres> + for<'q> Encode<'q, Sqlite> + Type<Sqlite> + Send,
    {
        let changed = on_pool!(self, |pool| {
            sqlx::query(update).bind(job_id).bind(value).bind(now()).execute(pool).await.map(|done| done.rows_affected())
        })?;
        if changed == 0 {
            return Err(AccountsError::NotFound("job"));
        }
        Ok(())
    }

    /// The payment matching `condition` on `$1`.
    async fn payment_where<T>(&self, condition: &str, value: T) -> Result<Option<Payment>>
    where
        T: for<'q> Encode<'q, Postgres> + Type<Postgres> + for<'q> Encode<'q, Sqlite> + Type<Sqlite> + Send,
    {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE {condition}");
        Ok(on_pool!(self, |pool| { sqlx::query_as::<_, Payment>(&sql).bind(value).fetch_optional(pool).await })?)
    }
}

fn invalid_url(err: sqlx::Error) -> AccountsError {
    AccountsError::InvalidUrl(err.to_string())
}

/// The current time at the precision Postgres keeps (microseconds), so what a call returns equals
/// what a later read returns, on both backends.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[async_trait]
impl Accounts for SqlAccounts {
    fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
            Pool::Sqlite(pool) => {
                // Rebuilding a table others reference (SQLite's only way to change a CHECK) needs
                // foreign keys off, a pragma that only takes effect outside a transaction: so on one
                // connection, around the migrator's transactions, then every key is checked.
                let mut conn = pool.acquire().await?;
                sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await?;
                let migrated = sqlx::migrate!("./migrations/sqlite").run_direct(&mut *conn).await;
                let dangling = sqlx::query("PRAGMA foreign_key_check").fetch_all(&mut *conn).await;
                sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                migrated?;
                if !dangling?.is_empty() {
                    return Err(sqlx::Error::Protocol("a migration left rows whose foreign keys point nowhere".into()).into());
                }
            }
        }
        Ok(())
    }

    async fn create_user(&self, new: NewUser) -> Result<User> {
        let user = new_user(new);
        on_pool!(self, |pool| bind_user(sqlx::query(INSERT_USER), &user).execute(pool).await.map(drop))?;
        Ok(user)
    }

    async fn user(&self, user_id: Uuid) -> Result<Option<User>> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1"))
                .bind(user_id)
                .fetch_optional(pool)
                .await
        })?)
    }

    async fn list_users(&self, status: Option<UserStatus>, limit: i64, offset: i64) -> Result<Vec<User>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE ($1 IS NULL OR status = $1) \
             ORDER BY created_at DESC, user_id LIMIT $2 OFFSET $3"
        );
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, User>(&sql).bind(status.map(UserStatus::as_str)).bind(limit).bind(offset).fetch_all(pool).await
        })?)
    }

    async fn user_by_renewal_code(&self, code: &str) -> Result<Option<User>> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE renewal_code = $1"))
                .bind(code)
                .fetch_optional(pool)
                .await
        })?)
    }

    async fn expire_users(&self, paid_before: DateTime<Utc>) -> Result<Vec<User>> {
        let expire = format!(
            "UPDATE users SET status = '{expired}' WHERE status = '{active}' AND paid_until < $1 RETURNING {USER_COLUMNS}",
            expired = UserStatus::Expired,
            active = UserStatus::Active
        );
        let enqueue = enqueue_job();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let expired = sqlx::query_as::<_, User>(&expire).bind(paid_before.trunc_subsecs(6)).fetch_all(&mut *tx).await?;
            for user in &expired {
                NewJob::due_now(user.user_id, JobKind::Suspend, None, None).bind(sqlx::query(&enqueue)).execute(&mut *tx).await?;
            }
            if !expired.is_empty() {
                sqlx::query(BUMP_AUTH_EPOCH).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(expired)
        })
    }

    async fn reminders_due(&self, host: &str, ends_by: DateTime<Utc>) -> Result<Vec<User>> {
        let columns = USER_COLUMNS.split(", ").map(|column| format!("users.{column}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {columns} FROM users JOIN hermes_profiles ON hermes_profiles.user_id = users.user_id \
             WHERE users.status = '{active}' AND users.paid_until <= $2 \
             AND (users.reminded_for IS NULL OR users.reminded_for <> users.paid_until) \
             AND hermes_profiles.host = $1 AND hermes_profiles.status = '{running}' ORDER BY users.paid_until",
            active = UserStatus::Active,
            running = ProfileStatus::Active
        );
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, User>(&sql).bind(host).bind(ends_by.trunc_subsecs(6)).fetch_all(pool).await)?)
    }

    async fn claim_reminder(&self, user_id: Uuid, paid_until: DateTime<Utc>) -> Result<bool> {
        let claimed = on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE users SET reminded_for = $2 WHERE user_id = $1 AND paid_until = $2 \
                 AND (reminded_for IS NULL OR reminded_for <> $2)",
            )
            .bind(user_id)
            .bind(paid_until.trunc_subsecs(6))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(claimed > 0)
    }

    async fn release_reminder(&self, user_id: Uuid, paid_until: DateTime<Utc>) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("UPDATE users SET reminded_for = NULL WHERE user_id = $1 AND reminded_for = $2")
                .bind(user_id)
                .bind(paid_until.trunc_subsecs(6))
                .execute(pool)
                .await
                .map(drop)
        })?;
        Ok(())
    }

    async fn retire_expired(&self, paid_before: DateTime<Utc>) -> Result<Vec<ProvisioningJob>> {
        let due = format!(
            "SELECT users.user_id FROM users JOIN hermes_profiles ON hermes_profiles.user_id = users.user_id \
             WHERE users.status = '{expired}' AND users.paid_until < $1 AND hermes_profiles.status <> '{deprovisioned}'",
            expired = UserStatus::Expired,
            deprovisioned = ProfileStatus::Deprovisioned
        );
        let enqueue = enqueue_job();
        let select_job = format!("SELECT {JOB_COLUMNS} FROM provisioning_jobs WHERE job_id = $1");
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let users: Vec<Uuid> = sqlx::query_scalar(&due).bind(paid_before.trunc_subsecs(6)).fetch_all(&mut *tx).await?;
            let mut enqueued = Vec::new();
            for user_id in users {
                let job = NewJob::due_now(user_id, JobKind::Deprovision, None, None);
                let job_id = job.job_id;
                if job.bind(sqlx::query(&enqueue)).execute(&mut *tx).await?.rows_affected() > 0 {
                    enqueued.push(sqlx::query_as::<_, ProvisioningJob>(&select_job).bind(job_id).fetch_one(&mut *tx).await?);
                }
            }
            tx.commit().await?;
            Ok(enqueued)
        })
    }

    async fn insert_api_key(&self, new: NewApiKey) -> Result<ApiKey> {
        let key = ApiKey {
            key_hash: new.key_hash,
            user_id: new.user_id,
            scope: new.scope,
            rate_limit_per_min: new.rate_limit_per_min,
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO api_keys (key_hash, user_id, scope, rate_limit_per_min, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&key.key_hash)
            .bind(key.user_id)
            .bind(&key.scope)
            .bind(key.rate_limit_per_min)
            .bind(key.created_at)
            .execute(pool)
            .await
            .map(drop)
        })
        .map_err(|err| classify(err, "api key"))?;
        Ok(key)
    }

    async fn api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, ApiKey>(
                "SELECT key_hash, user_id, scope, rate_limit_per_min, created_at, last_used_at, \
                 revoked_at FROM api_keys WHERE key_hash = $1",
            )
            .bind(key_hash)
            .fetch_optional(pool)
            .await
        })?)
    }

    async fn revoke_user_keys(&self, user_id: Uuid) -> Result<u64> {
        let revoked = self.revoke("UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL", user_id).await?;
        if revoked == 0 && self.user(user_id).await?.is_none() {
            return Err(AccountsError::NotFound("user"));
        }
        Ok(revoked)
    }

    async fn revoke_api_key(&self, key_hash: &str) -> Result<bool> {
        let update = "UPDATE api_keys SET revoked_at = $2 WHERE key_hash = $1 AND revoked_at IS NULL";
        Ok(self.revoke(update, key_hash).await? > 0)
    }

    async fn insert_admin_token(&self, token_hash: &str, label: &str) -> Result<AdminToken> {
        let token = AdminToken { token_hash: token_hash.to_owned(), label: label.to_owned(), created_at: now(), revoked_at: None };
        on_pool!(self, |pool| {
            sqlx::query("INSERT INTO admin_tokens (token_hash, label, created_at) VALUES ($1, $2, $3)")
                .bind(&token.token_hash)
                .bind(&token.label)
                .bind(token.created_at)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(|err| classify(err, "admin token"))?;
        Ok(token)
    }

    async fn admin_token(&self, token_hash: &str) -> Result<Option<AdminToken>> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, AdminToken>(
                "SELECT token_hash, label, created_at, revoked_at FROM admin_tokens \
                 WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await
        })?)
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, AdminToken>(
                "SELECT token_hash, label, created_at, revoked_at FROM admin_tokens ORDER BY created_at, token_hash",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    async fn revoke_admin_token(&self, token_hash: &str) -> Result<bool> {
        let update = "UPDATE admin_tokens SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL";
        Ok(self.revoke(update, token_hash).await? > 0)
    }

    async fn auth_epoch(&self) -> Result<i64> {
        Ok(on_pool!(self, |pool| { sqlx::query_scalar::<_, i64>("SELECT version FROM auth_epoch WHERE id = 1").fetch_one(pool).await })?)
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(records.len());
        let mut last_used = BTreeMap::<&str, DateTime<Utc>>::new();
        for record in records {
            let status = i16::try_from(record.status)
                .map_err(|_| sqlx::Error::Encode(format!("HTTP status {} out of range", record.status).into()))?;
            rows.push((record, status));
            let latest = last_used.entry(&record.key_hash).or_insert(record.occurred_at);
            *latest = (*latest).max(record.occurred_at);
        }
        let last_used: Vec<_> = last_used.into_iter().collect();

        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO usage_log (row_id, user_id, endpoint, occurred_at, upstream_cost_pts, status, request, cited) ",
                );
                insert.push_values(chunk, |mut row, &(record, status)| {
                    let citation = record.citation.as_ref();
                    row.push_bind(record.stored_id())
                        .push_bind(record.user_id)
                        .push_bind(&record.endpoint)
                        .push_bind(record.occurred_at)
                        .push_bind(record.upstream_cost_pts)
                        .push_bind(status)
                        .push_bind(citation.map(|c| c.request.get()))
                        .push_bind(citation.map(|c| c.values.get()));
                });
                insert.push(" ON CONFLICT (row_id) DO NOTHING");
                insert.build().execute(&mut *tx).await?;
            }
            for chunk in last_used.chunks(ROWS_PER_STATEMENT) {
                let mut touch = QueryBuilder::new("WITH batch (key_hash, used_at) AS (");
                touch.push_values(chunk, |mut row, (key_hash, used_at)| {
                    row.push_bind(*key_hash).push_bind(*used_at);
                });
                touch.push(
                    ") UPDATE api_keys SET last_used_at = batch.used_at FROM batch \
                     WHERE api_keys.key_hash = batch.key_hash \
                     AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < batch.used_at)",
                );
                touch.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn usage_by_day(&self, user_id: Uuid, since: DateTime<Utc>) -> Result<Vec<UsageDay>> {
        let sql = format!(
            "SELECT {day} AS day, endpoint, count(*) AS requests, \
             sum(upstream_cost_pts) AS upstream_cost_pts \
             FROM usage_log WHERE user_id = $1 AND occurred_at >= $2 \
             GROUP BY 1, 2 ORDER BY 1 DESC, 2",
            day = self.utc_day()
        );
        Ok(on_pool!(self, |pool| { sqlx::query_as::<_, UsageDay>(&sql).bind(user_id).bind(since).fetch_all(pool).await })?)
    }

    async fn citation(&self, tool_call_id: &str) -> Result<Option<CitationRecord>> {
        type Row = (Uuid, String, DateTime<Utc>, String, String);
        let Some(row_id) = row_id_of(tool_call_id) else { return Ok(None) };
        let row: Option<Row> = on_pool!(self, |pool| {
            let in_usage = sqlx::query_as(
                "SELECT user_id, endpoint, occurred_at, request, cited FROM usage_log WHERE row_id = $1 AND cited IS NOT NULL",
            )
            .bind(row_id)
            .fetch_optional(pool)
            .await?;
            match in_usage {
                Some(row) => Ok(Some(row)),
                // Written before citations moved into usage rows (migration 0008).
                None => {
                    sqlx::query_as("SELECT user_id, endpoint, served_at, request, cited FROM citations WHERE tool_call_id = $1")
                        .bind(tool_call_id)
                        .fetch_optional(pool)
                        .await
                }
            }
        })?;
        let json = |text: &str| serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)));
        Ok(match row {
            Some((user_id, endpoint, served_at, request, cited)) => Some(CitationRecord {
                tool_call_id: tool_call_id.to_string(),
                user_id,
                endpoint,
                served_at,
                request: json(&request)?,
                values: json(&cited)?,
            }),
            None => None,
        })
    }

    async fn prune_usage(&self, before: DateTime<Utc>) -> Result<Pruned> {
        // A tool_call_id is `tc_` and a UUIDv7, whose first 48 bits are the milliseconds it was
        // minted: every id minted from `before` on sorts at or after this one.
        let first_id = format!("tc_{:012x}{}", before.timestamp_millis().max(0), "0".repeat(20));
        Ok(on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let cited_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_log WHERE occurred_at < $1 AND cited IS NOT NULL")
                .bind(before)
                .fetch_one(&mut *tx)
                .await?;
            let usage_rows =
                sqlx::query("DELETE FROM usage_log WHERE occurred_at < $1").bind(before).execute(&mut *tx).await?.rows_affected();
            let earlier_citations =
                sqlx::query("DELETE FROM citations WHERE tool_call_id < $1").bind(&first_id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Pruned { usage_rows, citations: cited_rows as u64 + earlier_citations })
        })?)
    }

    async fn usage_count(&self, user_id: Uuid) -> Result<i64> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM usage_log WHERE user_id = $1").bind(user_id).fetch_one(pool).await
        })?)
    }

    async fn create_order(&self, new: NewOrder) -> Result<Payment> {
        let payment = Payment {
            payment_id: Uuid::new_v4(),
            user_id: new.renews,
            out_trade_no: new.out_trade_no,
            plan: new.plan,
            amount_cents: new.amount_cents,
            currency: new.currency,
            processor: new.processor,
            processor_ref: None,
            status: PaymentState::Pending,
            created_at: now(),
            expires_at: Some(new.expires_at.trunc_subsecs(6)),
            paid_at: None,
            refunded_at: None,
            onboarding_token_hash: Some(new.onboarding_token_hash),
            code_url: None,
        };
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO payments (payment_id, user_id, out_trade_no, plan, amount_cents, \
                 currency, processor, status, created_at, expires_at, onboarding_token_hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(payment.payment_id)
            .bind(payment.user_id)
            .bind(&payment.out_trade_no)
            .bind(payment.plan.as_str())
            .bind(payment.amount_cents)
            .bind(&payment.currency)
            .bind(&payment.processor)
            .bind(payment.status.as_str())
            .bind(payment.created_at)
            .bind(payment.expires_at)
            .bind(&payment.onboarding_token_hash)
            .execute(pool)
            .await
            .map(drop)
        })
        .map_err(|err| classify(err, "order"))?;
        Ok(payment)
    }

    async fn payment(&self, payment_id: Uuid) -> Result<Option<Payment>> {
        self.payment_where("payment_id = $1", payment_id).await
    }

    async fn payment_by_out_trade_no(&self, out_trade_no: &str) -> Result<Option<Payment>> {
        self.payment_where("out_trade_no = $1", out_trade_no.to_owned()).await
    }

    async fn payments_for_user(&self, user_id: Uuid, limit: i64) -> Result<Vec<Payment>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE user_id = $1 ORDER BY created_at DESC, payment_id LIMIT $2");
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, Payment>(&sql).bind(user_id).bind(limit).fetch_all(pool).await)?)
    }

    async fn payment_by_onboarding_token(&self, token_hash: &str) -> Result<Option<Payment>> {
        self.payment_where("onboarding_token_hash = $1", token_hash.to_owned()).await
    }

    async fn pending_payments(&self, after: Option<(DateTime<Utc>, Uuid)>, limit: i64) -> Result<Vec<Payment>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'pending' \
             AND (created_at > $1 OR (created_at = $1 AND payment_id > $2)) \
             ORDER BY created_at, payment_id LIMIT $3"
        );
        let (created_at, payment_id) = after.unwrap_or((DateTime::UNIX_EPOCH, Uuid::nil()));
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, Payment>(&sql).bind(created_at).bind(payment_id).bind(limit).fetch_all(pool).await
        })?)
    }

    async fn prune_closed_payments(&self, placed_before: DateTime<Utc>) -> Result<u64> {
        let sql = "DELETE FROM payments WHERE status = 'closed' AND paid_at IS NULL AND created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM provisioning_jobs j WHERE j.payment_id = payments.payment_id) \
             AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = payments.payment_id)";
        Ok(on_pool!(self, |pool| { sqlx::query(sql).bind(placed_before).execute(pool).await.map(|done| done.rows_affected()) })?)
    }

    async fn settle_payment(&self, settlement: &Settlement) -> Result<Settled> {
        let paid_at = settlement.paid_at.trunc_subsecs(6);
        let claim = format!(
            "UPDATE payments SET status = 'paid', processor_ref = $2, paid_at = $3 \
             WHERE out_trade_no = $1 AND status IN ('pending', 'closed') \
             AND amount_cents = $4 AND currency = $5 RETURNING {PAYMENT_COLUMNS}"
        );
        let select_payment = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE out_trade_no = $1");
        let select_user = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1");
        let select_profile = format!("SELECT {PROFILE_COLUMNS} FROM hermes_profiles WHERE user_id = $1");
        let select_job = format!(
            "SELECT {JOB_COLUMNS} FROM provisioning_jobs WHERE payment_id = $1 AND kind IN ('{}', '{}')",
            JobKind::Provision,
            JobKind::Resume
        );
        let enqueue = enqueue_job();
        on_pool!(self, |pool| {
            // Claiming the order is the transaction's first statement and a write, so concurrent
            // deliveries queue on the row (Postgres) or the write lock (SQLite) and every one but
            // the first finds the order already paid.
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query_as::<_, Payment>(&claim)
                .bind(&settlement.out_trade_no)
                .bind(&settlement.processor_ref)
                .bind(paid_at)
                .bind(settlement.amount_cents)
                .bind(&settlement.currency)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|err| classify(err, "payment with this processor reference"))?;
            let (outcome, payment) = match claimed {
                Some(payment) => (None, payment),
                None => {
                    let existing =
                        sqlx::query_as::<_, Payment>(&select_payment).bind(&settlement.out_trade_no).fetch_optional(&mut *tx).await?;
                    (Some(SettleOutcome::AlreadyPaid), repeated_settlement(existing, settlement)?)
                }
            };
            let (outcome, mut payment, user) = match (outcome, payment.user_id) {
                (Some(outcome), Some(user_id)) => {
                    let user = sqlx::query_as::<_, User>(&select_user).bind(user_id).fetch_one(&mut *tx).await?;
                    (outcome, payment, user)
                }
                (Some(_), None) => unreachable!("a paid order always has its user"),
                (None, None) => {
                    let user = new_user(NewUser {
                        email: None,
                        display_name: None,
                        plan: payment.plan,
                        paid_until: Some(one_period_after(paid_at)),
                    });
                    bind_user(sqlx::query(INSERT_USER), &user).execute(&mut *tx).await?;
                    (SettleOutcome::NewUser, payment, user)
                }
                (None, Some(user_id)) => {
                    let mut user = sqlx::query_as::<_, User>(&select_user).bind(user_id).fetch_one(&mut *tx).await?;
                    let from = user.paid_until.map_or(paid_at, |until| until.max(paid_at));
                    user.paid_until = Some(one_period_after(from));
                    user.status = UserStatus::Active;
                    user.plan = payment.plan;
                    sqlx::query("UPDATE users SET paid_until = $2, status = $3, plan = $4 WHERE user_id = $1")
                        .bind(user.user_id)
                        .bind(user.paid_until)
                        .bind(user.status.as_str())
                        .bind(user.plan.as_str())
                        .execute(&mut *tx)
                        .await?;
                    // Cached keys carry the old status and `paid_until`: have them looked up again.
                    sqlx::query(BUMP_AUTH_EPOCH).execute(&mut *tx).await?;
                    (SettleOutcome::Renewed, payment, user)
                }
            };
            if outcome == SettleOutcome::NewUser {
                sqlx::query("UPDATE payments SET user_id = $2 WHERE payment_id = $1")
                    .bind(payment.payment_id)
                    .bind(user.user_id)
                    .execute(&mut *tx)
                    .await?;
                payment.user_id = Some(user.user_id);
            }
            let kind = match outcome {
                SettleOutcome::AlreadyPaid => None,
                SettleOutcome::NewUser => Some(JobKind::Provision),
                SettleOutcome::Renewed => {
                    let profile = sqlx::query_as::<_, HermesProfile>(&select_profile).bind(user.user_id).fetch_optional(&mut *tx).await?;
                    renewal_job(profile.map(|profile| profile.status))
                }
            };
            if let Some(kind) = kind {
                let job = NewJob::due_now(user.user_id, kind, Some(payment.payment_id), payment.onboarding_token_hash.clone());
                job.bind(sqlx::query(&enqueue)).execute(&mut *tx).await?;
            }
            let job = sqlx::query_as::<_, ProvisioningJob>(&select_job).bind(payment.payment_id).fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            Ok(Settled { outcome, payment, user, job })
        })
    }

    async fn refund_payment(&self, refund: &RefundNotice) -> Result<RefundRecorded> {
        let refunded_at = refund.refunded_at.trunc_subsecs(6);
        // A write that changes nothing, first, so concurrent refunds of one order queue on its row.
        let lock = format!("UPDATE payments SET status = status WHERE out_trade_no = $1 RETURNING {PAYMENT_COLUMNS}");
        let finish = format!(
            "UPDATE payments SET status = 'refunded', refunded_at = $2 WHERE payment_id = $1 AND status = 'paid' \
             RETURNING {PAYMENT_COLUMNS}"
        );
        let cancel = format!(
            "UPDATE provisioning_jobs SET state = '{cancelled}', last_error = 'cancelled by a refund', updated_at = $2 \
             WHERE user_id = $1 AND kind IN ('{provision}', '{resume}') AND {unfinished}",
            cancelled = JobState::Cancelled,
            provision = JobKind::Provision,
            resume = JobKind::Resume,
            unfinished = unfinished_job(),
        );
        let select_job = format!("SELECT {JOB_COLUMNS} FROM provisioning_jobs WHERE payment_id = $1 AND kind = 'deprovision'");
        let enqueue = enqueue_job();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut payment = sqlx::query_as::<_, Payment>(&lock)
                .bind(&refund.out_trade_no)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(AccountsError::NotFound("order"))?;
            if !matches!(payment.status, PaymentState::Paid | PaymentState::Refunded) {
                return Err(AccountsError::Rejected(format!("order {} is {}, not paid", payment.out_trade_no, payment.status)));
            }
            let newly_recorded = sqlx::query(
                "INSERT INTO refunds (out_refund_no, payment_id, amount_cents, refunded_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (out_refund_no) DO NOTHING",
            )
            .bind(&refund.out_refund_no)
            .bind(payment.payment_id)
            .bind(refund.amount_cents)
            .bind(refunded_at)
            .execute(&mut *tx)
            .await
            .map_err(|err| match &err {
                sqlx::Error::Database(db) if db.is_check_violation() => AccountsError::Rejected("a refund amount must be positive".into()),
                _ => err.into(),
            })?
            .rows_affected()
                > 0;
            let refunded_cents: i64 =
                sqlx::query_scalar("SELECT CAST(coalesce(sum(amount_cents), 0) AS BIGINT) FROM refunds WHERE payment_id = $1")
                    .bind(payment.payment_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if refunded_cents > payment.amount_cents {
                return Err(AccountsError::Rejected(format!(
                    "refunds of order {} would add up to {refunded_cents}, more than its {}",
                    payment.out_trade_no, payment.amount_cents
                )));
            }
            let user_id = payment.user_id.expect("a paid order always has its user");
            if refunded_cents == payment.amount_cents {
                if let Some(finished) =
                    sqlx::query_as::<_, Payment>(&finish).bind(payment.payment_id).bind(refunded_at).fetch_optional(&mut *tx).await?
                {
                    payment = finished;
                    sqlx::query("UPDATE users SET status = $2 WHERE user_id = $1")
                        .bind(user_id)
                        .bind(UserStatus::Refunded.as_str())
                        .execute(&mut *tx)
                        .await?;
                    let revoked = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                        .bind(user_id)
                        .bind(refunded_at)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if revoked > 0 {
                        sqlx::query(BUMP_AUTH_EPOCH).execute(&mut *tx).await?;
                    }
                    sqlx::query(&cancel).bind(user_id).bind(now()).execute(&mut *tx).await?;
                    let job = NewJob::due_now(user_id, JobKind::Deprovision, Some(payment.payment_id), None);
                    job.bind(sqlx::query(&enqueue)).execute(&mut *tx).await?;
                }
            }
            let job = sqlx::query_as::<_, ProvisioningJob>(&select_job).bind(payment.payment_id).fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            Ok(RefundRecorded { newly_recorded, refunded_cents, payment, job })
        })
    }

    async fn record_code_url(&self, out_trade_no: &str, code_url: &str) -> Result<()> {
        let updated = on_pool!(self, |pool| {
            sqlx::query("UPDATE payments SET code_url = $2 WHERE out_trade_no = $1 AND status = 'pending'")
                .bind(out_trade_no)
                .bind(code_url)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        if updated == 0 {
            return Err(AccountsError::Rejected(format!("order {out_trade_no} is not pending")));
        }
        Ok(())
    }

    async fn close_payment(&self, out_trade_no: &str) -> Result<bool> {
        let closed = on_pool!(self, |pool| {
            sqlx::query("UPDATE payments SET status = 'closed' WHERE out_trade_no = $1 AND status = 'pending'")
                .bind(out_trade_no)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(closed > 0)
    }

    async fn jobs_for_user(&self, user_id: Uuid) -> Result<Vec<ProvisioningJob>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM provisioning_jobs WHERE user_id = $1 ORDER BY created_at, kind");
        Ok(on_pool!(self, |pool| { sqlx::query_as::<_, ProvisioningJob>(&sql).bind(user_id).fetch_all(pool).await })?)
    }

    async fn job(&self, job_id: Uuid) -> Result<Option<ProvisioningJob>> {
        self.job_where("job_id = $1", job_id).await
    }

    async fn job_by_onboarding_token(&self, token_hash: &str) -> Result<Option<ProvisioningJob>> {
        self.job_where("onboarding_token_hash = $1", token_hash.to_owned()).await
    }

    async fn claim_job(&self, worker: &str, host: &str, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Option<ProvisioningJob>> {
        let skip_locked = match self.pool {
            Pool::Postgres(_) => "FOR UPDATE SKIP LOCKED",
            Pool::Sqlite(_) => "",
        };
        let (unfinished, unfinished_setup) = (unfinished_job(), unfinished_job_of("setup"));
        // Where the job must run: the host on it, else its user's bot's (a bot deprovisioned is
        // nowhere any more).
        let owner = "COALESCE(job.host, (SELECT bot.host FROM hermes_profiles AS bot \
             WHERE bot.user_id = job.user_id AND bot.status <> 'deprovisioned'))";
        // A host's load: its bots that run or are being set up, and the new users it is setting up
        // whose bot has no row yet.
        let load = format!(
            "((SELECT count(*) FROM hermes_profiles AS bot WHERE bot.host = live.host \
                 AND bot.status IN ('provisioning', 'active')) \
             + (SELECT count(*) FROM provisioning_jobs AS setup WHERE setup.host = live.host \
                 AND setup.kind = 'provision' AND {unfinished_setup} \
                 AND NOT EXISTS (SELECT 1 FROM hermes_profiles AS bot WHERE bot.user_id = setup.user_id)))"
        );
        let roomiest = format!(
            "(SELECT live.host FROM hosts AS live WHERE live.observed_at >= $5 \
             ORDER BY live.gateway_slots - {load} DESC, live.host LIMIT 1)"
        );
        let sql = format!(
            "UPDATE provisioning_jobs SET locked_by = $1, locked_until = $3, updated_at = $2, host = $4 \
             WHERE job_id = (SELECT job_id FROM provisioning_jobs AS job \
             WHERE {unfinished} AND next_attempt_at <= $2 \
             AND (locked_until IS NULL OR locked_until < $2) \
             AND NOT EXISTS (SELECT 1 FROM provisioning_jobs AS other WHERE other.user_id = job.user_id \
                 AND other.job_id <> job.job_id AND other.locked_by IS NOT NULL AND other.locked_until >= $2) \
             AND ({owner} = $4 OR ({owner} IS NULL AND COALESCE({roomiest}, $4) = $4)) \
             ORDER BY next_attempt_at LIMIT 1 {skip_locked}) \
             RETURNING {JOB_COLUMNS}"
        );
        let (now, lease_until) = (now.trunc_subsecs(6), lease_until.trunc_subsecs(6));
        let live_since = now - GatewayCensus::SILENT_AFTER;
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, ProvisioningJob>(&sql)
                .bind(worker)
                .bind(now)
                .bind(lease_until)
                .bind(host)
                .bind(live_since)
                .fetch_optional(pool)
                .await
        })?)
    }

    async fn update_job(&self, job_id: Uuid, worker: &str, update: &JobUpdate, lease_until: Option<DateTime<Utc>>) -> Result<bool> {
        let sql = format!(
            "UPDATE provisioning_jobs SET state = $3, attempts = $4, last_error = $5, \
             next_attempt_at = $6, locked_until = $7, \
             locked_by = CASE WHEN $7 IS NULL THEN NULL ELSE locked_by END, updated_at = $8 \
             WHERE job_id = $1 AND locked_by = $2 AND {}",
            unfinished_job()
        );
        let changed = on_pool!(self, |pool| {
            sqlx::query(&sql)
                .bind(job_id)
                .bind(worker)
                .bind(update.state.as_str())
                .bind(update.attempts)
                .bind(&update.last_error)
                .bind(update.next_attempt_at.trunc_subsecs(6))
                .bind(lease_until.map(|at| at.trunc_subsecs(6)))
                .bind(now())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(changed > 0)
    }

    async fn release_job(&self, job_id: Uuid, worker: &str) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("UPDATE provisioning_jobs SET locked_by = NULL, locked_until = NULL WHERE job_id = $1 AND locked_by = $2")
                .bind(job_id)
                .bind(worker)
                .execute(pool)
                .await
                .map(drop)
        })?;
        Ok(())
    }

    async fn set_pairing(&self, job_id: Uuid, qr: Option<&str>, status: &str) -> Result<()> {
        let changed = on_pool!(self, |pool| {
            sqlx::query("UPDATE provisioning_jobs SET pairing_qr = $2, pairing_status = $3, updated_at = $4 WHERE job_id = $1")
                .bind(job_id)
                .bind(qr)
                .bind(status)
                .bind(now())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        if changed == 0 {
            return Err(AccountsError::NotFound("job"));
        }
        Ok(())
    }

    async fn set_verify_code(&self, job_id: Uuid, code: Option<&str>) -> Result<()> {
        if code.is_some_and(|code| code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit())) {
            return Err(AccountsError::Rejected("a verify code is six digits".into()));
        }
        let update = "UPDATE provisioning_jobs SET verify_code = $2, updated_at = $3 WHERE job_id = $1";
        self.set_job_field(update, job_id, code.map(str::to_owned)).await
    }

    async fn set_bot_name(&self, job_id: Uuid, name: &str) -> Result<()> {
        let update = "UPDATE provisioning_jobs SET bot_name = $2, updated_at = $3 WHERE job_id = $1";
        self.set_job_field(update, job_id, name.to_owned()).await
    }

    async fn enqueue_provisioning(&self, user_id: Uuid, onboarding_token_hash: &str) -> Result<ProvisioningJob> {
        let unfinished = unfinished_job();
        let resume = format!(
            "UPDATE provisioning_jobs SET onboarding_token_hash = $3, next_attempt_at = $4, updated_at = $4 \
             WHERE user_id = $1 AND kind = $2 AND {unfinished} RETURNING {JOB_COLUMNS}"
        );
        let resumed = on_pool!(self, |pool| {
            sqlx::query_as::<_, ProvisioningJob>(&resume)
                .bind(user_id)
                .bind(JobKind::Provision.as_str())
                .bind(onboarding_token_hash)
                .bind(now())
                .fetch_optional(pool)
                .await
        })
        .map_err(|err| classify(err, "onboarding link"))?;
        if let Some(job) = resumed {
            return Ok(job);
        }
        let job = NewJob::due_now(user_id, JobKind::Provision, None, Some(onboarding_token_hash.to_owned()));
        let job_id = job.job_id;
        let enqueue = enqueue_job();
        on_pool!(self, |pool| job.bind(sqlx::query(&enqueue)).execute(pool).await.map(drop))
            .map_err(|err| classify(err, "onboarding link"))?;
        self.job(job_id).await?.ok_or(AccountsError::NotFound("job"))
    }

    async fn wake_job(&self, job_id: Uuid) -> Result<bool> {
        let unfinished = unfinished_job();
        let sql = format!("UPDATE provisioning_jobs SET next_attempt_at = $2 WHERE job_id = $1 AND {unfinished}");
        let woken =
            on_pool!(self, |pool| { sqlx::query(&sql).bind(job_id).bind(now()).execute(pool).await.map(|done| done.rows_affected()) })?;
        Ok(woken > 0)
    }

    async fn upsert_profile(&self, profile: &HermesProfile) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO hermes_profiles (profile_name, user_id, host, weixin_bot_id, status, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (profile_name) DO UPDATE SET \
                 host = excluded.host, weixin_bot_id = excluded.weixin_bot_id, status = excluded.status",
            )
            .bind(&profile.profile_name)
            .bind(profile.user_id)
            .bind(&profile.host)
            .bind(&profile.weixin_bot_id)
            .bind(profile.status.as_str())
            .bind(profile.created_at.trunc_subsecs(6))
            .execute(pool)
            .await
            .map(drop)
        })
        .map_err(|err| classify(err, "profile for this user"))
    }

    async fn profile_for_user(&self, user_id: Uuid) -> Result<Option<HermesProfile>> {
        let sql = format!("SELECT {PROFILE_COLUMNS} FROM hermes_profiles WHERE user_id = $1");
        Ok(on_pool!(self, |pool| { sqlx::query_as::<_, HermesProfile>(&sql).bind(user_id).fetch_optional(pool).await })?)
    }

    async fn record_gateway_census(&self, census: &GatewayCensus) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO hosts (host, expected, running, gateway_slots, observed_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (host) DO UPDATE SET expected = excluded.expected, running = excluded.running, \
                 gateway_slots = excluded.gateway_slots, observed_at = excluded.observed_at",
            )
            .bind(&census.host)
            .bind(census.expected)
            .bind(census.running)
            .bind(census.gateway_slots)
            .bind(census.observed_at.trunc_subsecs(6))
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    async fn gateway_census(&self) -> Result<Vec<GatewayCensus>> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, GatewayCensus>("SELECT host, expected, running, gateway_slots, observed_at FROM hosts ORDER BY host")
                .fetch_all(pool)
                .await
        })?)
    }

    async fn tallies(&self) -> Result<Tallies> {
        let (jobs, payments): (Vec<(String, i64)>, Vec<(String, i64)>) = on_pool!(self, |pool| {
            let jobs =
                sqlx::query_as("SELECT state, count(*) FROM provisioning_jobs GROUP BY state ORDER BY state").fetch_all(pool).await?;
            let payments = sqlx::query_as("SELECT status, count(*) FROM payments GROUP BY status ORDER BY status").fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((jobs, payments))
        })?;
        // A state this build does not know (written by a newer release) is left out, not an error.
        fn known<T: std::str::FromStr>(rows: Vec<(String, i64)>) -> Vec<(T, i64)> {
            rows.into_iter().filter_map(|(state, n)| Some((state.parse().ok()?, n))).collect()
        }
        Ok(Tallies { jobs: known(jobs), payments: known(payments) })
    }

    async fn claim_welcome(&self, user_id: Uuid, at: DateTime<Utc>) -> Result<bool> {
        let claimed = on_pool!(self, |pool| {
            sqlx::query("UPDATE hermes_profiles SET welcomed_at = $2 WHERE user_id = $1 AND welcomed_at IS NULL")
                .bind(user_id)
                .bind(at.trunc_subsecs(6))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(claimed > 0)
    }

    async fn release_welcome(&self, user_id: Uuid) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("UPDATE hermes_profiles SET welcomed_at = NULL WHERE user_id = $1").bind(user_id).execute(pool).await.map(drop)
        })?;
        Ok(())
    }

    async fn profiles_on_host(&self, host: &str, status: ProfileStatus) -> Result<Vec<HermesProfile>> {
        let sql = format!("SELECT {PROFILE_COLUMNS} FROM hermes_profiles WHERE host = $1 AND status = $2 ORDER BY created_at");
        Ok(on_pool!(self, |pool| { sqlx::query_as::<_, HermesProfile>(&sql).bind(host).bind(status.as_str()).fetch_all(pool).await })?)
    }

    async fn lease_scheduled_job(&self, job: &str, holder: &str, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<bool> {
        let leased = on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO scheduled_jobs (job, holder, lease_until) VALUES ($1, $2, $4) \
                 ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
                 WHERE scheduled_jobs.holder IS NULL OR scheduled_jobs.lease_until < $3 OR scheduled_jobs.holder = excluded.holder",
            )
            .bind(job)
            .bind(holder)
            .bind(now.trunc_subsecs(6))
            .bind(lease_until.trunc_subsecs(6))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(leased > 0)
    }

    async fn finish_scheduled_job(&self, job: &str, holder: &str, run: &JobRun) -> Result<bool> {
        // A success clears the failure count (and the backoff with it); a failure adds one.
        let (at, error) = match run {
            JobRun::Succeeded { at } => (at, None),
            JobRun::Failed { at, error } => (at, Some(error.as_str())),
        };
        let finished = on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE scheduled_jobs SET holder = NULL, lease_until = NULL, \
                 last_success_at = CASE WHEN $4 IS NULL THEN $3 ELSE last_success_at END, \
                 last_failure_at = CASE WHEN $4 IS NULL THEN last_failure_at ELSE $3 END, \
                 last_error = COALESCE($4, last_error), \
                 failures = CASE WHEN $4 IS NULL THEN 0 ELSE failures + 1 END \
                 WHERE job = $1 AND holder = $2",
            )
            .bind(job)
            .bind(holder)
            .bind(at.trunc_subsecs(6))
            .bind(error)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(finished > 0)
    }

    async fn scheduled_jobs(&self) -> Result<Vec<ScheduledJob>> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, ScheduledJob>(
                "SELECT job, holder, lease_until, last_success_at, last_failure_at, last_error, failures FROM scheduled_jobs ORDER BY job",
            )
            .fetch_all(pool)
            .await
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_rejects_unknown_schemes_without_echoing_the_url() {
        let err = SqlAccounts::connect("mysql://app:s3cret@db/twilight").await.unwrap_err();
        assert!(matches!(err, AccountsError::InvalidUrl(_)), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
