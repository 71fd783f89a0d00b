//! Fresh, isolated accounts databases for tests, here and in crates built on this one.
//!
//! SQLite always works; Postgres is used when reachable and is mandatory in CI (`CI` set or
//! `TWILIGHT_REQUIRE_POSTGRES=1`), so a CI run can never pass by silently skipping it.

use std::env;
use std::fmt;
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection, Row, SqliteConnection};
use tempfile::TempDir;
use url::Url;

use crate::{Accounts, SqlAccounts};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A migrated SQLite store in a new temporary directory, deleted when the guard drops.
pub async fn fresh_sqlite() -> (SqlAccounts, TempDir) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let url = format!("sqlite:{}", dir.path().join("accounts.db").display());
    (migrated(&url).await, dir)
}

/// A new, empty database `twilight_test_<random hex>` on the server at `TWILIGHT_TEST_PG_URL`
/// (default `postgres://postgres@127.0.0.1:5432/postgres`), or `None` if that server is
/// unreachable and Postgres is not required. Call [`TestDb::cleanup`] at the end of the test.
///
/// # Panics
/// If Postgres is required but unreachable, or the database cannot be created.
pub async fn fresh_postgres() -> Option<TestDb> {
    let admin_url = env::var("TWILIGHT_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
    let mut admin = match connect_admin(&admin_url).await {
        Ok(conn) => conn,
        Err(err) if postgres_required() => panic!("Postgres required in CI but unreachable at {}: {err}", redact(&admin_url)),
        Err(_) => return None,
    };
    let name = format!("twilight_test_{:016x}", rand::random::<u64>());
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap_or_else(|err| panic!("creating test database {name}: {err}"));
    // Best effort: the server closes the session anyway when the socket goes.
    let _ = admin.close().await;

    let mut url = Url::parse(&admin_url).expect("TWILIGHT_TEST_PG_URL is a URL: it just connected");
    url.set_path(&name);
    Some(TestDb { url: url.into(), admin_url, name, dropped: false })
}

/// A throwaway Postgres database. [`cleanup`](TestDb::cleanup) drops it; if a test panics first,
/// dropping the guard drops the database, best effort.
pub struct TestDb {
    url: String,
    admin_url: String,
    name: String,
    dropped: bool,
}

impl TestDb {
    /// Connection URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A migrated store on this database.
    pub async fn accounts(&self) -> SqlAccounts {
        migrated(&self.url).await
    }

    /// Drops the database, terminating connections still open to it.
    pub async fn cleanup(mut self) {
        self.drop_now().await;
        self.dropped = true;
    }

    /// Drops the database under whoever is still connected (outage tests); `cleanup` stays safe.
    pub async fn drop_now(&self) {
        drop_database(&self.admin_url, &self.name).await.unwrap_or_else(|err| panic!("dropping test database {}: {err}", self.name));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // The test's runtime is shutting down (it panicked) and would cancel a spawned task, so
        // use a short-lived thread with its own runtime.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(drop_database(&admin_url, &name)).ok()
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

impl fmt::Debug for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDb").field("url", &redact(&self.url)).field("dropped", &self.dropped).finish_non_exhaustive()
    }
}

/// Tables whose every row [`dump`] prints: all but the append-only `usage_log`.
pub const STATE_TABLES: [&str; 6] = ["users", "api_keys", "admin_tokens", "payments", "provisioning_jobs", "hermes_profiles"];

/// Every row of [`STATE_TABLES`] as text, in a stable order: equal dumps before and after an
/// operation prove it changed nothing. Reads through its own connection, not the store under test.
pub async fn dump(url: &str) -> String {
    let mut out = String::new();
    for table in STATE_TABLES {
        out.push_str(table);
        out.push_str(":\n");
        let rows: Vec<String> = if url.starts_with("sqlite:") {
            let mut conn = SqliteConnection::connect(url).await.expect("opening the test database");
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(table)
                .fetch_all(&mut conn)
                .await
                .expect("listing columns");
            let row = columns.iter().map(|c| format!("quote({c})")).collect::<Vec<_>>().join(" || '|' || ");
            let sql = format!("SELECT {row} FROM {table} ORDER BY 1");
            sqlx::query_scalar(sql.as_str()).fetch_all(&mut conn).await.expect("dumping a table")
        } else {
            let mut conn = PgConnection::connect(url).await.expect("opening the test database");
            let sql = format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY 1");
            sqlx::query(sql.as_str())
                .fetch_all(&mut conn)
                .await
                .expect("dumping a table")
                .iter()
                .map(|row| row.get::<String, _>(0))
                .collect()
        };
        for row in rows {
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}

async fn migrated(url: &str) -> SqlAccounts {
    let accounts = SqlAccounts::connect(url).await.expect("connecting to the test database");
    accounts.migrate().await.expect("migrating the test database");
    accounts
}

async fn connect_admin(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await {
        Ok(conn) => conn.map_err(|err| err.to_string()),
        Err(_) => Err("no answer within 10 s".to_owned()),
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    admin.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str()).await?;
    admin.close().await
}

fn postgres_required() -> bool {
    env::var_os("CI").is_some() || env::var("TWILIGHT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// The URL with its password replaced, for messages and Debug output.
fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot hold a password, which this one does.
            let _ = parsed.set_password(Some("redacted"));
            parsed.into()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparsable url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://app:s3cret@db.internal:5432/twilight?sslmode=require"),
            "postgres://app:redacted@db.internal:5432/twilight?sslmode=require"
        );
        assert_eq!(redact("postgres://postgres@127.0.0.1/x"), "postgres://postgres@127.0.0.1/x");
        assert_eq!(redact("not a url:s3cret"), "<unparsable url>");
    }
}
