//! Warehouse replication: the primary publishes consistent snapshots into a directory, the serving
//! host's copy of that directory (rsync over SSH in production) is polled, and a newer snapshot is
//! checked and swapped in while reads go on.
//!
//! A publication is `warehouse-<time>.duckdb` plus `manifest.json` naming it with its size and
//! SHA-256; the manifest is written last, by rename, so a reader sees the old publication or the
//! new one whole. The replica copies the named file out of the directory before opening it (rsync
//! may replace it at any moment), checks it against the manifest, and only then swaps.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Market, MarketError, Warehouse};

pub const MANIFEST: &str = "manifest.json";
/// Publications kept in the directory besides the newest, for a replica still copying one.
const KEEP_OLDER: usize = 1;

/// What a publication holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

fn io(what: &Path, error: std::io::Error) -> MarketError {
    MarketError::Warehouse(format!("{}: {error}", what.display()))
}

/// Size and SHA-256 (hex) of the file at `path`.
pub fn checksum(path: &Path) -> Result<(u64, String), MarketError> {
    let mut file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| io(path, e))?;
        if n == 0 {
            return Ok((bytes, hex::encode(hasher.finalize())));
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
}

/// The manifest in `dir`, if there is one.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>, MarketError> {
    let path = dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| MarketError::Warehouse(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

/// Publishes a snapshot of `market`'s warehouse into `dir`, then prunes older publications.
pub async fn publish(market: &Market, dir: &Path) -> Result<Manifest, MarketError> {
    let (taken, _) = market.snapshot().await?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || publish_file(&taken, &dir))
        .await
        .map_err(|e| MarketError::Warehouse(format!("publishing failed: {e}")))?
}

fn publish_file(taken: &Path, dir: &Path) -> Result<Manifest, MarketError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let file = taken.file_name().and_then(|n| n.to_str()).ok_or_else(|| MarketError::Warehouse("a snapshot without a name".into()))?;
    let published = dir.join(file);
    if std::fs::rename(taken, &published).is_err() {
        std::fs::copy(taken, &published).map_err(|e| io(&published, e))?;
        std::fs::remove_file(taken).map_err(|e| io(taken, e))?;
    }
    let (bytes, sha256) = checksum(&published)?;
    let manifest = Manifest { file: file.to_string(), bytes, sha256, created_at: Utc::now() };
    let next = dir.join(format!("{MANIFEST}.next"));
    std::fs::write(&next, serde_json::to_vec_pretty(&manifest).expect("a manifest serialises")).map_err(|e| io(&next, e))?;
    std::fs::rename(&next, dir.join(MANIFEST)).map_err(|e| io(dir, e))?;
    prune(dir, &manifest.file, KEEP_OLDER);
    Ok(manifest)
}

/// Deletes `warehouse-*.duckdb` files in `dir` but `newest` and the `keep` newest others (names
/// sort by time).
fn prune(dir: &Path, newest: &str, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut older: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("warehouse-") && n.ends_with(".duckdb") && n != newest)
        })
        .collect();
    older.sort();
    let excess = older.len().saturating_sub(keep);
    for path in older.into_iter().take(excess) {
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "cannot prune an old publication");
        }
    }
}

/// What a replica serves, for `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// The publication served (none until the first swap).
    pub serving: Option<Manifest>,
    pub swapped_at: Option<DateTime<Utc>>,
    /// Swaps since this process started.
    pub swaps: u64,
    /// The last poll's failure, if it failed.
    pub last_error: Option<String>,
}

/// A serving host's side: polls `source` (its copy of the primary's publication directory) and
/// swaps newer snapshots into `market`, keeping its local copies in `local`.
pub struct Replica {
    source: PathBuf,
    local: PathBuf,
    status: Mutex<ReplicaStatus>,
}

impl Replica {
    pub fn new(source: PathBuf, local: PathBuf) -> Replica {
        Replica { source, local, status: Mutex::new(ReplicaStatus { serving: None, swapped_at: None, swaps: 0, last_error: None }) }
    }

    pub fn status(&self) -> ReplicaStatus {
        self.status.lock().expect("replica status").clone()
    }

    /// Swaps in the published snapshot if it is newer than the one served: `Some` with its manifest
    /// when it did.
    pub async fn poll(&self, market: &Market) -> Result<Option<Manifest>, MarketError> {
        let outcome = self.poll_once(market).await;
        let mut status = self.status.lock().expect("replica status");
        match &outcome {
            Ok(Some(manifest)) => {
                status.serving = Some(manifest.clone());
                status.swapped_at = Some(Utc::now());
                status.swaps += 1;
                status.last_error = None;
            }
            Ok(None) => status.last_error = None,
            Err(error) => status.last_error = Some(error.to_string()),
        }
        outcome
    }

    async fn poll_once(&self, market: &Market) -> Result<Option<Manifest>, MarketError> {
        let Some(manifest) = read_manifest(&self.source)? else { return Ok(None) };
        let serving = self.status().serving;
        if serving.as_ref().is_some_and(|s| s.created_at >= manifest.created_at) {
            return Ok(None);
        }
        let (source, local) = (self.source.join(&manifest.file), self.local.clone());
        let expected = manifest.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<Warehouse, MarketError> {
            std::fs::create_dir_all(&local).map_err(|e| io(&local, e))?;
            let copy = local.join(&expected.file);
            let _ = std::fs::remove_file(&copy);
            std::fs::copy(&source, &copy).map_err(|e| io(&source, e))?;
            let (bytes, sha256) = checksum(&copy)?;
            if (bytes, sha256.as_str()) != (expected.bytes, expected.sha256.as_str()) {
                let _ = std::fs::remove_file(&copy);
                return Err(MarketError::Warehouse(format!("{} does not match its manifest; not swapped in", expected.file)));
            }
            Warehouse::open(&copy)
        })
        .await
        .map_err(|e| MarketError::Warehouse(format!("opening a snapshot failed: {e}")))??;
        market.swap_warehouse(opened);
        // The copy served until now may still have reads in flight: it goes at the next swap.
        prune(&self.local, &manifest.file, 1);
        tracing::info!(file = %manifest.file, created_at = %manifest.created_at, "a newer warehouse snapshot is served");
        Ok(Some(manifest))
    }
}
