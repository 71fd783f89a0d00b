//! Usage metering off the hot path: requests enqueue a row, one writer task inserts them in batches,
//! and shutdown flushes everything enqueued before it (rows == requests answered).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use twilight_accounts::{Accounts, UsageRecord};

const BATCH: usize = 2_000;
const LINGER: Duration = Duration::from_millis(200);

enum Message {
    Record(UsageRecord),
    Flush(oneshot::Sender<()>),
}

/// The sending side, cloned into the router state.
#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::UnboundedSender<Message>,
}

impl UsageSink {
    /// Starts the writer task on `accounts`.
    pub fn start(accounts: std::sync::Arc<dyn Accounts>) -> UsageSink {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(accounts, rx));
        UsageSink { tx }
    }

    pub fn record(&self, record: UsageRecord) {
        if self.tx.send(Message::Record(record)).is_err() {
            tracing::error!("usage writer is gone; a usage row was lost");
        }
    }

    /// Waits until every row recorded before this call is in the database.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_batches(accounts: std::sync::Arc<dyn Accounts>, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut batch: Vec<UsageRecord> = Vec::with_capacity(BATCH);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Message::Record(record)) => batch.push(record),
                Some(Message::Flush(done)) => {
                    waiters.push(done);
                    break;
                }
                None => {}
            }
            if batch.len() >= BATCH {
                break;
            }
            next = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(message)) => Some(message),
                Ok(None) | Err(_) => break,
            };
        }
        write(&*accounts, &mut batch).await;
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
    }
    write(&*accounts, &mut batch).await;
}

/// Writes a batch, retrying while the database is unreachable: losing rows would under-bill.
async fn write(accounts: &dyn Accounts, batch: &mut Vec<UsageRecord>) {
    if batch.is_empty() {
        return;
    }
    let mut wait = Duration::from_millis(100);
    for attempt in 1.. {
        match accounts.record_usage(batch).await {
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
    batch.clear();
}
