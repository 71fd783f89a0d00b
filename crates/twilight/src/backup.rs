//! `twilight backup` / `twilight restore`: the accounts DB and the warehouse in one directory, with
//! a manifest of sizes and SHA-256 checksums that a restore checks before it replaces anything.
//!
//! The warehouse file is open in `serve` (DuckDB lets one process hold it), so while `serve` runs the
//! backup asks it for a snapshot over the admin API; otherwise it opens the warehouse itself.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use twilight_market::Warehouse;

use crate::app;
use crate::cfg::Config;

const MANIFEST: &str = "manifest.json";
const WAREHOUSE_FILE: &str = "warehouse.duckdb";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub created_at: DateTime<Utc>,
    /// The `twilight` version that wrote it.
    pub version: String,
    pub files: Vec<BackedUp>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct BackedUp {
    /// `accounts` or `warehouse`.
    pub part: String,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

fn entry(part: &str, dir: &Path, file: &str) -> anyhow::Result<BackedUp> {
    let (bytes, sha256) = twilight_market::replica::checksum(&dir.join(file))?;
    Ok(BackedUp { part: part.into(), file: file.into(), bytes, sha256 })
}

/// Backs up the accounts DB and the warehouse into `out`, a directory that must not exist yet.
pub async fn backup(config: &Config, out: &Path) -> anyhow::Result<Manifest> {
    if out.exists() {
        bail!("{} exists; a backup goes into a new directory", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let url = config.accounts_url();
    let accounts_file = twilight_accounts::backup::file_name(&url)?;
    twilight_accounts::backup::backup(&url, &out.join(accounts_file)).await.context("backing up the accounts DB")?;
    snapshot_warehouse(config, &out.join(WAREHOUSE_FILE)).await.context("backing up the warehouse")?;
    let manifest = Manifest {
        created_at: Utc::now(),
        version: env!("CARGO_PKG_VERSION").into(),
        files: vec![entry("accounts", out, accounts_file)?, entry("warehouse", out, WAREHOUSE_FILE)?],
    };
    std::fs::write(out.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)?;
    Ok(manifest)
}

/// A snapshot of the warehouse at `to`: from the running `serve` when it holds the file, else
/// taken here.
async fn snapshot_warehouse(config: &Config, to: &Path) -> anyhow::Result<()> {
    let path = config.warehouse_path();
    if let Some(taken) = snapshot_from_serve(config).await? {
        // The snapshot sits beside the warehouse; a rename if `to` is on the same filesystem.
        if std::fs::rename(&taken, to).is_err() {
            std::fs::copy(&taken, to).with_context(|| format!("copying {}", taken.display()))?;
            std::fs::remove_file(&taken)?;
        }
        return Ok(());
    }
    let warehouse = Warehouse::open(&path).with_context(|| format!("opening {}", path.display()))?;
    warehouse.snapshot(to)?;
    Ok(())
}

/// Asks `serve` at the configured address for a snapshot; `None` when nothing listens there.
async fn snapshot_from_serve(config: &Config) -> anyhow::Result<Option<PathBuf>> {
    let token_file = config.data_dir.join("admin-token");
    let url = format!("http://{}/admin/warehouse/snapshot", app::loopback(config.listen));
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(600)).build()?;
    let Ok(token) = std::fs::read_to_string(&token_file) else { return Ok(None) };
    let response = match http.post(&url).bearer_auth(token.trim()).send().await {
        Ok(response) => response,
        Err(error) if error.is_connect() => return Ok(None),
        Err(error) => return Err(error).context("asking serve for a warehouse snapshot"),
    };
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("serve's snapshot answer")?;
    if !status.is_success() {
        bail!("serve refused the warehouse snapshot ({status}): {body}");
    }
    let path = body["path"].as_str().context("serve's snapshot answer names no path")?;
    Ok(Some(PathBuf::from(path)))
}

/// Restores the accounts DB and the warehouse from `from` (a [`backup`] directory) after checking
/// every file against the manifest. Stop `serve`, the scheduler and the provisioner first.
pub async fn restore(config: &Config, from: &Path) -> anyhow::Result<Manifest> {
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(from.join(MANIFEST)).with_context(|| format!("reading {}", from.join(MANIFEST).display()))?)
            .context("the manifest does not parse")?;
    for file in &manifest.files {
        let found = entry(&file.part, from, &file.file)?;
        if found != *file {
            bail!("{} does not match the manifest ({} bytes, sha256 {}); nothing was restored", file.file, found.bytes, found.sha256);
        }
    }
    let part = |name: &str| manifest.files.iter().find(|f| f.part == name).with_context(|| format!("the manifest lists no {name}"));
    let (accounts, warehouse) = (part("accounts")?, part("warehouse")?);
    let url = config.accounts_url();
    if twilight_accounts::backup::file_name(&url)? != accounts.file {
        bail!(
            "{} is a backup of another kind of accounts DB than {}",
            accounts.file,
            config.accounts_url.as_ref().map_or("the configured one".into(), |u| format!("{u:?}"))
        );
    }
    twilight_accounts::backup::restore(&url, &from.join(&accounts.file)).await.context("restoring the accounts DB")?;
    let target = config.warehouse_path();
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let staged = target.with_extension("restoring");
    std::fs::copy(from.join(&warehouse.file), &staged)?;
    Warehouse::open(&staged).context("the restored warehouse does not open")?;
    let wal = PathBuf::from(format!("{}.wal", target.display()));
    if wal.exists() {
        std::fs::remove_file(&wal)?;
    }
    let staged_wal = PathBuf::from(format!("{}.wal", staged.display()));
    if staged_wal.exists() {
        std::fs::remove_file(&staged_wal)?;
    }
    std::fs::rename(&staged, &target)?;
    Ok(manifest)
}
