//! Backups of the accounts DB: SQLite's `VACUUM INTO` (a consistent copy taken while it serves) or
//! PostgreSQL's `pg_dump --format=custom`; restored by replacing the file, or with `pg_restore
//! --clean` in one transaction. The Postgres password goes to the tools in `PGPASSWORD`, never on a
//! command line another user could read in /proc.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::{AccountsError, Result};

/// Where a database URL points.
enum Target {
    Sqlite(PathBuf),
    Postgres { url_without_password: String, password: Option<String> },
}

fn target(url: &str) -> Result<Target> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme {
        "sqlite" => {
            let options = SqliteConnectOptions::from_str(url).map_err(|e| AccountsError::InvalidUrl(e.to_string()))?;
            Ok(Target::Sqlite(options.get_filename().to_path_buf()))
        }
        "postgres" | "postgresql" => {
            let mut parsed = url::Url::parse(url).map_err(|e| AccountsError::InvalidUrl(e.to_string()))?;
            // Percent-decoded (form decoding, with a literal `+` kept).
            let decode = |p: &str| {
                url::form_urlencoded::parse(format!("p={}", p.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned())
            };
            let password = parsed.password().and_then(decode);
            parsed.set_password(None).map_err(|()| AccountsError::InvalidUrl("a postgres URL without a host".into()))?;
            Ok(Target::Postgres { url_without_password: parsed.to_string(), password })
        }
        other => Err(AccountsError::InvalidUrl(format!("unsupported scheme {other:?}"))),
    }
}

/// The file name a backup of the database at `url` is kept under.
pub fn file_name(url: &str) -> Result<&'static str> {
    Ok(match target(url)? {
        Target::Sqlite(_) => "accounts.sqlite",
        Target::Postgres { .. } => "accounts.pgdump",
    })
}

fn failed(what: &str, error: impl std::fmt::Display) -> AccountsError {
    AccountsError::Backup(format!("{what}: {error}"))
}

/// Writes a backup of the database at `url` to `to`, which must not exist.
pub async fn backup(url: &str, to: &Path) -> Result<()> {
    if to.exists() {
        return Err(failed("backup", format!("{} exists", to.display())));
    }
    match target(url)? {
        Target::Sqlite(_) => {
            let mut conn = SqliteConnectOptions::from_str(url).map_err(|e| AccountsError::InvalidUrl(e.to_string()))?.connect().await?;
            sqlx::query("VACUUM INTO ?").bind(to.to_string_lossy().into_owned()).execute(&mut conn).await?;
            conn.close().await?;
            Ok(())
        }
        Target::Postgres { url_without_password, password } => {
            let mut dump = tokio::process::Command::new("pg_dump");
            dump.args(["--format=custom", "--no-owner", "--no-privileges", "--file"]).arg(to).arg("--dbname").arg(&url_without_password);
            run(dump, password.as_deref(), "pg_dump").await
        }
    }
}

/// Replaces the database at `url` with the backup at `from` (written by [`backup`] for the same
/// kind of database). Every service using the database must be stopped first.
pub async fn restore(url: &str, from: &Path) -> Result<()> {
    if !from.is_file() {
        return Err(failed("restore", format!("{} is not a file", from.display())));
    }
    match target(url)? {
        Target::Sqlite(path) => {
            // The copy is checked before it replaces anything; a WAL left beside the old file
            // would be replayed into the new one, so it goes too.
            let staged = path.with_extension("restoring");
            std::fs::copy(from, &staged).map_err(|e| failed("restore", e))?;
            let staged_url = format!("sqlite:{}", staged.display());
            let mut conn =
                SqliteConnectOptions::from_str(&staged_url).map_err(|e| AccountsError::InvalidUrl(e.to_string()))?.connect().await?;
            let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await?;
            conn.close().await?;
            if check != "ok" {
                let _ = std::fs::remove_file(&staged);
                return Err(failed("restore", format!("{} is damaged: {check}", from.display())));
            }
            for suffix in ["-wal", "-shm"] {
                let side = PathBuf::from(format!("{}{suffix}", path.display()));
                if side.exists() {
                    std::fs::remove_file(&side).map_err(|e| failed("restore", e))?;
                }
            }
            std::fs::rename(&staged, &path).map_err(|e| failed("restore", e))
        }
        Target::Postgres { url_without_password, password } => {
            let mut restore = tokio::process::Command::new("pg_restore");
            restore.args([
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                "--dbname",
            ]);
            restore.arg(&url_without_password).arg(from);
            run(restore, password.as_deref(), "pg_restore").await
        }
    }
}

async fn run(mut command: tokio::process::Command, password: Option<&str>, tool: &str) -> Result<()> {
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().await.map_err(|e| failed(tool, format!("cannot run it ({e}); install the PostgreSQL client")))?;
    if !output.status.success() {
        return Err(failed(tool, String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(())
}
