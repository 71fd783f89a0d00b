//! [`SqlAccounts`]: the one implementation of [`Accounts`], for PostgreSQL and SQLite.
//!
//! Each query is written once with `$N` placeholders (which sqlx-sqlite accepts too) and run on
//! whichever pool is connected by [`on_pool!`]. The only backend-specific SQL besides the
//! migrations is [`SqlAccounts::utc_day`].

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Encode, Postgres, QueryBuilder, Sqlite, Type};
use uuid::Uuid;

use crate::error::classify;
use crate::{
    Accounts, AccountsError, AdminToken, ApiKey, NewApiKey, NewUser, Result, UsageDay, UsageRecord,
    User, UserStatus,
};

/// Rows per multi-row INSERT (and keys per `last_used_at` UPDATE). A statement may carry at most
/// 32,766 bind parameters in SQLite and 65,535 in Postgres; at five per usage row this stays well
/// below both while keeping each statement cheap to build and parse.
const ROWS_PER_STATEMENT: usize = 1000;
const _: () = assert!(ROWS_PER_STATEMENT * 5 <= 32_766);

const BUMP_AUTH_EPOCH: &str = "UPDATE auth_epoch SET version = version + 1 WHERE id = 1";

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
        let user = User {
            user_id: Uuid::new_v4(),
            email: new.email,
            weixin_openid: None,
            display_name: new.display_name,
            plan: new.plan,
            status: UserStatus::Active,
            created_at: now(),
            paid_until: new.paid_until,
        };
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO users (user_id, email, weixin_openid, display_name, plan, status, \
                 created_at, paid_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(user.user_id)
            .bind(&user.email)
            .bind(&user.weixin_openid)
            .bind(&user.display_name)
            .bind(user.plan.as_str())
            .bind(user.status.as_str())
            .bind(user.created_at)
            .bind(user.paid_until)
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(user)
    }

    async fn user(&self, user_id: Uuid) -> Result<Option<User>> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, User>(
                "SELECT user_id, email, weixin_openid, display_name, plan, status, created_at, \
                 paid_until FROM users WHERE user_id = $1",
            )
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
