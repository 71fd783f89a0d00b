//! Usage metering off the hot path: a request appends its row to a shared buffer (no timer and no task
//! wake-up per request), one writer task inserts the buffer in batches every `LINGER`, and shutdown
//! flushes everything recorded before it (rows == requests answered).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use twilight_accounts::{Accounts, UsageRecord};

use crate::auth::UserKey;

const BATCH: usize = 2_000;
const LINGER: Duration = Duration::from_millis(200);

struct Buffer {
    pending: Mutex<Vec<UsageRecord>>,
    /// Rung when a full batch is waiting, so a burst does not wait out the linger.
    full: Notify,
    /// Held while a taken batch is being written, so `flush` cannot overtake a write in progress.
    writing: tokio::sync::Mutex<()>,
    accounts: Arc<dyn Accounts>,
}

/// The recording side, shared through the router state.
#[derive(Clone)]
pub struct UsageSink {
    buffer: Arc<Buffer>,
}

impl UsageSink {
    /// Starts the writer task on `accounts`; it ends once every sink is dropped.
    pub fn start(accounts: Arc<dyn Accounts>) -> UsageSink {
        let buffer = Arc::new(Buffer { pending: Mutex::new(Vec::new()), full: Notify::new(), writing: tokio::sync::Mutex::new(()), accounts });
        tokio::spawn(write_batches(Arc::downgrade(&buffer)));
        UsageSink { buffer }
    }

    /// Meters one answered call of `key` (an HTTP request or an MCP tool call) to `endpoint`.
    pub fn record_call(&self, key: &UserKey, endpoint: impl Into<String>, status: u16, upstream_cost_pts: i32) {
        self.record(UsageRecord {
            user_id: key.user_id,
            key_hash: key.key_hash.to_string(),
            endpoint: endpoint.into(),
            occurred_at: Utc::now(),
            upstream_cost_pts,
            status,
        });
    }

    fn record(&self, record: UsageRecord) {
        let waiting = {
            let mut pending = self.buffer.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.push(record);
            pending.len()
        };
        if waiting == BATCH {
            self.buffer.full.notify_one();
        }
    }

    /// Waits until every row recorded before this call is in the database.
    pub async fn flush(&self) {
        self.buffer.write_pending().await;
    }
}

impl Buffer {
    async fn write_pending(&self) {
        let _writing = self.writing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        write(&*self.accounts, batch).await;
    }
}

async fn write_batches(buffer: Weak<Buffer>) {
    loop {
        let Some(strong) = buffer.upgrade() else { return };
        let _ = tokio::time::timeout(LINGER, strong.full.notified()).await;
        strong.write_pending().await;
    }
}

/// Writes a batch, retrying while the database is unreachable: losing rows would under-bill.
async fn write(accounts: &dyn Accounts, batch: Vec<UsageRecord>) {
    if batch.is_empty() {
        return;
    }
    let mut wait = Duration::from_millis(100);
    for attempt in 1.. {
        match accounts.record_usage(&batch).await {
            Ok(()) => break,
            Err(e) if attempt < 8 => {
                tracing::warn!(error = %e, rows = batch.len(), attempt, "usage write failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = batch.len(), "usage write failed; rows dropped");
                break;
            }
        }
    }
}
