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
    Accounts, AccountsError, AdminToken, ApiKey, HermesProfile, JobKind, JobUpdate, NewApiKey, NewOrder, NewUser, Payment,
    PaymentState, ProvisioningJob, RefundRecorded, Result, SettleOutcome, Settled, Settlement,
    UsageDay, UsageRecord, User, UserStatus, JOB_CREATED,
};

/// Rows per multi-row INSERT (and keys per `last_used_at` UPDATE). A statement may carry at most
/// 32,766 bind parameters in SQLite and 65,535 in Postgres; at five per usage row this stays well
/// below both. 100 rather than 1,000: the benchmark's cached `/price` served 10–15 % more requests
/// per second with the server on one core (measured, two runs each; why is not established).
const ROWS_PER_STATEMENT: usize = 100;
const _: () = assert!(ROWS_PER_STATEMENT * 5 <= 32_766);

const BUMP_AUTH_EPOCH: &str = "UPDATE auth_epoch SET version = version + 1 WHERE id = 1";

const USER_COLUMNS: &str =
    "user_id, email, weixin_openid, display_name, plan, status, created_at, paid_until";
const INSERT_USER: &str = "INSERT INTO users (user_id, email, weixin_openid, display_name, plan, \
    status, created_at, paid_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const PAYMENT_COLUMNS: &str = "payment_id, user_id, out_trade_no, plan, amount_cents, currency, \
    processor, processor_ref, status, created_at, expires_at, paid_at, refunded_at, \
    onboarding_token_hash, code_url";

/// The SQL condition "this job is not finished", from [`crate::FINAL_JOB_STATES`].
fn unfinished_job() -> String {
    let finished = crate::FINAL_JOB_STATES.map(|state| format!("'{state}'")).join(", ");
    format!("state NOT IN ({finished})")
}

const JOB_COLUMNS: &str = "job_id, user_id, kind, payment_id, state, attempts, last_error, \
    next_attempt_at, locked_by, locked_until, pairing_qr, pairing_status, verify_code, bot_name, \
    created_at, updated_at";
const PROFILE_COLUMNS: &str = "profile_name, user_id, host, weixin_bot_id, status, created_at";
/// Enqueues a job for a payment; a second one of the same kind is a no-op, so a repeated
/// notification cannot enqueue twice.
const INSERT_JOB: &str = "INSERT INTO provisioning_jobs (job_id, user_id, kind, payment_id, state, \
    next_attempt_at, onboarding_token_hash, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $6) ON CONFLICT (payment_id, kind) DO NOTHING";
const PAYMENT_JOB: &str = "WHERE payment_id = $1 AND kind = $2";

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
            let revoked = sqlx::query(update)
                .bind(id)
                .bind(revoked_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
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
}

/// One subscription period after `from`: the same day of the next month (or its last day).
fn one_period_after(from: DateTime<Utc>) -> DateTime<Utc> {
    from.checked_add_months(Months::new(1))
        .expect("a month after a payment is within chrono's range")
}

/// Why a settlement claimed no pending order, given the order as stored: a repeat of the
/// settlement that paid it (answered with the order), or an error.
fn repeated_settlement(existing: Option<Payment>, settlement: &Settlement) -> Result<Payment> {
    let payment = existing.ok_or(AccountsError::NotFound("order"))?;
    if (payment.amount_cents, payment.currency.as_str())
        != (settlement.amount_cents, settlement.currency.as_str())
    {
        return Err(AccountsError::Rejected(format!(
            "paid {} {} but order {} charges {} {}",
            settlement.amount_cents,
            settlement.currency,
            payment.out_trade_no,
            payment.amount_cents,
            payment.currency
        )));
    }
    if payment.processor_ref.as_deref() != Some(settlement.processor_ref.as_str()) {
        return Err(AccountsError::Rejected(format!(
            "order {} is {} under another transaction",
            payment.out_trade_no, payment.status
        )));
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
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, ProvisioningJob>(&sql).bind(value).fetch_optional(pool).await
        })?)
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
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, Payment>(&sql).bind(value).fetch_optional(pool).await
        })?)
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
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
            Pool::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    async fn create_user(&self, new: NewUser) -> Result<User> {
        let user = new_user(new);
        on_pool!(self, |pool| bind_user(sqlx::query(INSERT_USER), &user)
            .execute(pool)
            .await
            .map(drop))?;
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
        let revoked = self
            .revoke(
                "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
                user_id,
            )
            .await?;
        if revoked == 0 && self.user(user_id).await?.is_none() {
            return Err(AccountsError::NotFound("user"));
        }
        Ok(revoked)
    }

    async fn revoke_api_key(&self, key_hash: &str) -> Result<bool> {
        let update =
            "UPDATE api_keys SET revoked_at = $2 WHERE key_hash = $1 AND revoked_at IS NULL";
        Ok(self.revoke(update, key_hash).await? > 0)
    }

    async fn insert_admin_token(&self, token_hash: &str, label: &str) -> Result<AdminToken> {
        let token = AdminToken {
            token_hash: token_hash.to_owned(),
            label: label.to_owned(),
            created_at: now(),
            revoked_at: None,
        };
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO admin_tokens (token_hash, label, created_at) VALUES ($1, $2, $3)",
            )
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

    async fn revoke_admin_token(&self, token_hash: &str) -> Result<bool> {
        let update =
            "UPDATE admin_tokens SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL";
        Ok(self.revoke(update, token_hash).await? > 0)
    }

    async fn auth_epoch(&self) -> Result<i64> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT version FROM auth_epoch WHERE id = 1")
                .fetch_one(pool)
                .await
        })?)
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(records.len());
        let mut last_used = BTreeMap::<&str, DateTime<Utc>>::new();
        for record in records {
            let status = i16::try_from(record.status).map_err(|_| {
                sqlx::Error::Encode(format!("HTTP status {} out of range", record.status).into())
            })?;
            rows.push((record, status));
            let latest = last_used
                .entry(&record.key_hash)
                .or_insert(record.occurred_at);
            *latest = (*latest).max(record.occurred_at);
        }
        let last_used: Vec<_> = last_used.into_iter().collect();

        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO usage_log (user_id, endpoint, occurred_at, upstream_cost_pts, status) ",
                );
                insert.push_values(chunk, |mut row, &(record, status)| {
                    row.push_bind(record.user_id)
                        .push_bind(&record.endpoint)
                        .push_bind(record.occurred_at)
                        .push_bind(record.upstream_cost_pts)
                        .push_bind(status);
                });
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
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, UsageDay>(&sql)
                .bind(user_id)
                .bind(since)
                .fetch_all(pool)
                .await
        })?)
    }

    async fn usage_count(&self, user_id: Uuid) -> Result<i64> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM usage_log WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(pool)
                .await
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

    async fn payment_by_onboarding_token(&self, token_hash: &str) -> Result<Option<Payment>> {
        self.payment_where("onboarding_token_hash = $1", token_hash.to_owned()).await
    }

    async fn pending_payments(&self, limit: i64) -> Result<Vec<Payment>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'pending' \
             ORDER BY created_at LIMIT $1"
        );
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, Payment>(&sql).bind(limit).fetch_all(pool).await
        })?)
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
        let select_job = format!("SELECT {JOB_COLUMNS} FROM provisioning_jobs {PAYMENT_JOB}");
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
                    let existing = sqlx::query_as::<_, Payment>(&select_payment)
                        .bind(&settlement.out_trade_no)
                        .fetch_optional(&mut *tx)
                        .await?;
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
            if outcome != SettleOutcome::AlreadyPaid {
                sqlx::query(INSERT_JOB)
                    .bind(Uuid::new_v4())
                    .bind(user.user_id)
                    .bind(JobKind::Provision.as_str())
                    .bind(payment.payment_id)
                    .bind(JOB_CREATED)
                    .bind(now())
                    .bind(&payment.onboarding_token_hash)
                    .execute(&mut *tx)
                    .await?;
            }
            let job = sqlx::query_as::<_, ProvisioningJob>(&select_job)
                .bind(payment.payment_id)
                .bind(JobKind::Provision.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Settled { outcome, payment, user, job })
        })
    }

    async fn refund_payment(&self, out_trade_no: &str, refunded_at: DateTime<Utc>) -> Result<RefundRecorded> {
        let refunded_at = refunded_at.trunc_subsecs(6);
        let claim = format!(
            "UPDATE payments SET status = 'refunded', refunded_at = $2 \
             WHERE out_trade_no = $1 AND status = 'paid' RETURNING {PAYMENT_COLUMNS}"
        );
        let select_payment = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE out_trade_no = $1");
        let select_job = format!("SELECT {JOB_COLUMNS} FROM provisioning_jobs {PAYMENT_JOB}");
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query_as::<_, Payment>(&claim)
                .bind(out_trade_no)
                .bind(refunded_at)
                .fetch_optional(&mut *tx)
                .await?;
            let newly_refunded = claimed.is_some();
            let payment = match claimed {
                Some(payment) => payment,
                None => {
                    let existing = sqlx::query_as::<_, Payment>(&select_payment)
                        .bind(out_trade_no)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or(AccountsError::NotFound("order"))?;
                    if existing.status != PaymentState::Refunded {
                        return Err(AccountsError::Rejected(format!(
                            "order {out_trade_no} is {}, not paid",
                            existing.status
                        )));
                    }
                    existing
                }
            };
            let user_id = payment.user_id.expect("a paid order always has its user");
            if newly_refunded {
                sqlx::query("UPDATE users SET status = $2 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(UserStatus::Refunded.as_str())
                    .execute(&mut *tx)
                    .await?;
                let revoked = sqlx::query(
                    "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
                )
                .bind(user_id)
                .bind(refunded_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if revoked > 0 {
                    sqlx::query(BUMP_AUTH_EPOCH).execute(&mut *tx).await?;
                }
                sqlx::query(INSERT_JOB)
                    .bind(Uuid::new_v4())
                    .bind(user_id)
                    .bind(JobKind::Deprovision.as_str())
                    .bind(payment.payment_id)
                    .bind(JOB_CREATED)
                    .bind(now())
                    .bind(None::<String>)
                    .execute(&mut *tx)
                    .await?;
            }
            let job = sqlx::query_as::<_, ProvisioningJob>(&select_job)
                .bind(payment.payment_id)
                .bind(JobKind::Deprovision.as_str())
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(RefundRecorded { newly_refunded, payment, job })
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
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM provisioning_jobs WHERE user_id = $1 ORDER BY created_at, kind"
        );
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, ProvisioningJob>(&sql).bind(user_id).fetch_all(pool).await
        })?)
    }

    async fn job(&self, job_id: Uuid) -> Result<Option<ProvisioningJob>> {
        self.job_where("job_id = $1", job_id).await
    }

    async fn job_by_onboarding_token(&self, token_hash: &str) -> Result<Option<ProvisioningJob>> {
        self.job_where("onboarding_token_hash = $1", token_hash.to_owned()).await
    }

    async fn claim_job(&self, worker: &str, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Option<ProvisioningJob>> {
        let skip_locked = match self.pool {
            Pool::Postgres(_) => "FOR UPDATE SKIP LOCKED",
            Pool::Sqlite(_) => "",
        };
        let unfinished = unfinished_job();
        let sql = format!(
            "UPDATE provisioning_jobs SET locked_by = $1, locked_until = $3, updated_at = $2 \
             WHERE job_id = (SELECT job_id FROM provisioning_jobs \
             WHERE {unfinished} AND next_attempt_at <= $2 \
             AND (locked_until IS NULL OR locked_until < $2) \
             ORDER BY next_attempt_at LIMIT 1 {skip_locked}) \
             RETURNING {JOB_COLUMNS}"
        );
        let (now, lease_until) = (now.trunc_subsecs(6), lease_until.trunc_subsecs(6));
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, ProvisioningJob>(&sql)
                .bind(worker)
                .bind(now)
                .bind(lease_until)
                .fetch_optional(pool)
                .await
        })?)
    }

    async fn update_job(&self, job_id: Uuid, worker: &str, update: &JobUpdate, lease_until: Option<DateTime<Utc>>) -> Result<bool> {
        let changed = on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE provisioning_jobs SET state = $3, attempts = $4, last_error = $5, \
                 next_attempt_at = $6, locked_until = $7, \
                 locked_by = CASE WHEN $7 IS NULL THEN NULL ELSE locked_by END, updated_at = $8 \
                 WHERE job_id = $1 AND locked_by = $2",
            )
            .bind(job_id)
            .bind(worker)
            .bind(&update.state)
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
        let job_id = Uuid::new_v4();
        on_pool!(self, |pool| {
            sqlx::query(INSERT_JOB)
                .bind(job_id)
                .bind(user_id)
                .bind(JobKind::Provision.as_str())
                .bind(None::<Uuid>)
                .bind(JOB_CREATED)
                .bind(now())
                .bind(onboarding_token_hash)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(|err| classify(err, "onboarding link"))?;
        self.job(job_id).await?.ok_or(AccountsError::NotFound("job"))
    }

    async fn wake_job(&self, job_id: Uuid) -> Result<bool> {
        let unfinished = unfinished_job();
        let sql = format!(
            "UPDATE provisioning_jobs SET next_attempt_at = $2 WHERE job_id = $1 AND {unfinished}"
        );
        let woken = on_pool!(self, |pool| {
            sqlx::query(&sql).bind(job_id).bind(now()).execute(pool).await.map(|done| done.rows_affected())
        })?;
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
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, HermesProfile>(&sql).bind(user_id).fetch_optional(pool).await
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_rejects_unknown_schemes_without_echoing_the_url() {
        let err = SqlAccounts::connect("mysql://app:s3cret@db/twilight")
            .await
            .unwrap_err();
        assert!(matches!(err, AccountsError::InvalidUrl(_)), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
