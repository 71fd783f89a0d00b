//! Usage metering off the hot path that never loses a row (rows == requests answered).
//!
//! A request appends its row to a shared buffer (no timer and no task wake-up per request); one
//! writer task inserts the buffer in batches every `LINGER`. When the accounts DB does not take a
//! batch within `WRITE_TIMEOUT`, the batch goes to a local spill file (JSON lines, fsync'd) and
//! the writer only tries the DB again every `PROBE`; once it answers, the spill is replayed, oldest
//! first and before anything newer, then emptied. Every row carries an id the DB keeps once, so a
//! write that committed after its timeout, or a replay cut short by a crash, counts nothing twice.
//! Shutdown flushes everything recorded before it, to the DB or to the spill, which the next start
//! replays. The buffer is bounded: past `MAX_PENDING` rows a recording request spills them itself.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;
use twilight_accounts::{Accounts, Citation, UsageRecord};

use crate::auth::UserKey;

const BATCH: usize = 2_000;
const LINGER: Duration = Duration::from_millis(200);
/// Rows held in memory at most while the writer is behind.
const MAX_PENDING: usize = 100_000;
/// A write not done by then is given up and its batch spilled (it may still commit: row ids make
/// the replay harmless).
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// While rows wait in the spill, how often the DB is tried again.
const PROBE: Duration = Duration::from_secs(2);

struct Buffer {
    pending: Mutex<Vec<UsageRecord>>,
    /// Rung when a full batch is waiting, so a burst does not wait out the linger.
    full: Notify,
    /// Held while a batch is being written or spilled, so `flush` cannot overtake a write in
    /// progress; says when the DB may be tried again while the spill holds rows.
    writing: tokio::sync::Mutex<Option<Instant>>,
    accounts: Arc<dyn Accounts>,
    spill: Arc<Spill>,
}

/// The recording side, shared through the router state.
#[derive(Clone)]
pub struct UsageSink {
    buffer: Arc<Buffer>,
}

impl UsageSink {
    /// Starts the writer task on `accounts`, spilling to `spill_path` when they are unreachable (and
    /// first replaying what an earlier process left there); it ends once every sink is dropped.
    pub fn start(accounts: Arc<dyn Accounts>, spill_path: PathBuf) -> UsageSink {
        let buffer = Arc::new(Buffer {
            pending: Mutex::new(Vec::new()),
            full: Notify::new(),
            writing: tokio::sync::Mutex::new(None),
            accounts,
            spill: Arc::new(Spill { path: spill_path, file: Mutex::new(()) }),
        });
        tokio::spawn(write_batches(Arc::downgrade(&buffer)));
        UsageSink { buffer }
    }

    /// Meters one answered call of `key` (an HTTP request or an MCP tool call) to `endpoint`, with
    /// what its answer cited.
    pub fn record_call(&self, key: &UserKey, endpoint: impl Into<String>, status: u16, upstream_cost_pts: i32, citation: Option<Citation>) {
        self.record(UsageRecord {
            row_id: crate::time_ordered_id(),
            user_id: key.user_id,
            key_hash: key.key_hash.to_string(),
            endpoint: endpoint.into(),
            occurred_at: Utc::now(),
            upstream_cost_pts,
            status,
            citation,
        });
    }

    fn record(&self, record: UsageRecord) {
        let overflow = {
            let mut pending = self.buffer.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.push(record);
            metrics::gauge!("twilight_usage_pending_rows").set(pending.len() as f64);
            if pending.len() == BATCH {
                self.buffer.full.notify_one();
            }
            (pending.len() >= MAX_PENDING).then(|| std::mem::take(&mut *pending))
        };
        if let Some(rows) = overflow {
            tracing::warn!(rows = rows.len(), "the usage writer is far behind; spilling from the request");
            if let Err(rows) = self.buffer.spill.append(rows) {
                self.buffer.put_back(rows);
            }
        }
    }

    /// Waits until every row recorded before this call is in the database or in the spill file.
    pub async fn flush(&self) {
        self.buffer.write_pending(true).await;
    }
}

impl Buffer {
    /// Writes what is pending: behind the spill's rows if it has any (replayed first when the DB
    /// may be tried, `now` or at the probe time), else straight to the DB, spilling on failure.
    async fn write_pending(&self, now: bool) {
        let mut retry_at = self.writing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        metrics::gauge!("twilight_usage_pending_rows").set(0.0);
        if self.spill.has_rows() {
            let due = now || retry_at.is_none_or(|at| Instant::now() >= at);
            if !(due && self.replay().await) {
                if due {
                    *retry_at = Some(Instant::now() + PROBE);
                }
                self.spill_batch(batch).await;
                return;
            }
        }
        if batch.is_empty() {
            return;
        }
        if let Err(error) = self.insert(&batch).await {
            tracing::warn!(%error, rows = batch.len(), "usage write failed; spilling to disk until the database answers");
            *retry_at = Some(Instant::now() + PROBE);
            self.spill_batch(batch).await;
        }
    }

    async fn insert(&self, rows: &[UsageRecord]) -> Result<(), String> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.accounts.record_usage(rows)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {} s", WRITE_TIMEOUT.as_secs())),
        }
    }

    /// Writes the spill's rows to the DB, oldest first, deleting each file once written; whether
    /// the spill is empty now.
    async fn replay(&self) -> bool {
        while self.spill.has_rows() {
            let spill = self.spill.clone();
            let rows = match tokio::task::spawn_blocking(move || spill.take()).await {
                Ok(Ok(rows)) => rows,
                failed => {
                    tracing::error!(?failed, path = %self.spill.path.display(), "cannot read the usage spill");
                    return false;
                }
            };
            for chunk in rows.chunks(BATCH) {
                if let Err(error) = self.insert(chunk).await {
                    tracing::warn!(%error, spilled = rows.len(), "the database is still unreachable; usage rows stay spilled");
                    return false;
                }
            }
            let spill = self.spill.clone();
            if let failed @ (Ok(Err(_)) | Err(_)) = tokio::task::spawn_blocking(move || spill.done()).await {
                // Written but not deleted: the next replay writes them again, which the row ids
                // make a no-op.
                tracing::error!(?failed, "cannot delete the replayed usage spill");
                return false;
            }
            tracing::info!(rows = rows.len(), "spilled usage rows written to the database");
        }
        true
    }

    async fn spill_batch(&self, batch: Vec<UsageRecord>) {
        if batch.is_empty() {
            return;
        }
        let spill = self.spill.clone();
        let refused = match tokio::task::spawn_blocking(move || spill.append(batch)).await {
            Ok(Ok(())) => return,
            Ok(Err(rows)) => rows,
            Err(error) => {
                tracing::error!(%error, "spilling usage rows panicked; rows lost");
                return;
            }
        };
        self.put_back(refused);
    }

    /// Neither the DB nor the disk took `rows`: they wait in memory for the next pass, before
    /// anything recorded since.
    fn put_back(&self, mut rows: Vec<UsageRecord>) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        rows.append(&mut pending);
        *pending = rows;
    }
}

/// The local file usage rows wait in while the accounts DB is unreachable. A replay first moves
/// it aside (`….replaying`), so rows spilled during the replay start a new file instead of being
/// deleted with the old one.
struct Spill {
    path: PathBuf,
    /// Serialises appends and the moves and deletes of a replay within this process.
    file: Mutex<()>,
}

impl Spill {
    fn replaying(&self) -> PathBuf {
        self.path.with_extension("replaying")
    }

    fn has_rows(&self) -> bool {
        let nonempty = |path: &Path| std::fs::metadata(path).is_ok_and(|file| file.len() > 0);
        nonempty(&self.path) || nonempty(&self.replaying())
    }

    /// Appends `rows` (one JSON object a line) and syncs them to disk; gives them back if it cannot.
    fn append(&self, rows: Vec<UsageRecord>) -> Result<(), Vec<UsageRecord>> {
        let _file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let written = (|| {
            let mut lines = Vec::with_capacity(rows.len() * 200);
            for row in &rows {
                serde_json::to_writer(&mut lines, row).map_err(std::io::Error::other)?;
                lines.push(b'\n');
            }
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            file.write_all(&lines)?;
            file.sync_data()
        })();
        match written {
            Ok(()) => {
                metrics::counter!("twilight_usage_spilled_rows_total").increment(rows.len() as u64);
                tracing::debug!(rows = rows.len(), path = %self.path.display(), "usage rows spilled to disk");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, rows = rows.len(), path = %self.path.display(), "cannot spill usage rows; keeping them in memory");
                Err(rows)
            }
        }
    }

    /// The oldest spilled rows, moved aside for a replay: what an unfinished replay left there,
    /// else the spill file itself. A line cut short by a crash during its append is skipped: its
    /// batch was never acknowledged as spilled.
    fn take(&self) -> std::io::Result<Vec<UsageRecord>> {
        let _file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let replaying = self.replaying();
        if !replaying.exists() {
            match std::fs::rename(&self.path, &replaying) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                moved => moved?,
            }
        }
        let mut rows = Vec::new();
        for line in std::io::BufReader::new(std::fs::File::open(&replaying)?).lines() {
            match serde_json::from_str(&line?) {
                Ok(row) => rows.push(row),
                Err(error) => tracing::warn!(%error, "skipping a torn line of the usage spill"),
            }
        }
        Ok(rows)
    }

    /// The rows [`Self::take`] moved aside are in the database.
    fn done(&self) -> std::io::Result<()> {
        let _file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match std::fs::remove_file(self.replaying()) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

async fn write_batches(buffer: Weak<Buffer>) {
    loop {
        let Some(strong) = buffer.upgrade() else { return };
        let _ = tokio::time::timeout(LINGER, strong.full.notified()).await;
        strong.write_pending(false).await;
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn row(endpoint: &str) -> UsageRecord {
        UsageRecord {
            row_id: Uuid::new_v4(),
            user_id: Uuid::nil(),
            key_hash: "k".into(),
            endpoint: endpoint.into(),
            occurred_at: Utc::now(),
            upstream_cost_pts: 0,
            status: 200,
            citation: None,
        }
    }

    #[test]
    fn a_replay_takes_the_oldest_rows_and_leaves_newer_spills_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill { path: dir.path().join("usage-spill.jsonl"), file: Mutex::new(()) };
        assert!(!spill.has_rows());
        assert_eq!(spill.take().unwrap(), []);
        let (a, b, c) = (row("/a"), row("/b"), row("/c"));
        spill.append(vec![a.clone()]).unwrap();
        spill.append(vec![b.clone()]).unwrap();
        assert_eq!(spill.take().unwrap(), [a.clone(), b.clone()]);
        // Spilled while the replay runs: a new file, not deleted with the replayed one.
        spill.append(vec![c.clone()]).unwrap();
        // A replay that failed leaves its rows aside; the next one takes them again first.
        assert_eq!(spill.take().unwrap(), [a, b]);
        spill.done().unwrap();
        assert!(spill.has_rows());
        assert_eq!(spill.take().unwrap(), [c]);
        spill.done().unwrap();
        assert!(!spill.has_rows());
    }

    #[test]
    fn a_line_torn_by_a_crash_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill { path: dir.path().join("usage-spill.jsonl"), file: Mutex::new(()) };
        let kept = row("/kept");
        spill.append(vec![kept.clone()]).unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(&spill.path).unwrap();
        file.write_all(br#"{"row_id":"0000"#).unwrap();
        assert_eq!(spill.take().unwrap(), [kept]);
    }
}
