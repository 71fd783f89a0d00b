//! Warehouse replication: a primary publishes snapshots; a serving host polling its copy of the
//! publication directory swaps each newer one in while reads go on, with no read failing, and then
//! answers from what the primary fetched without asking an upstream.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use twilight_market::replica;

use common::{Backend, TestApp};

async fn get_ok(app: &TestApp, path: &str, key: &str) -> Value {
    let (status, _, body) = app.get(path, Some(key)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn swaps_reach(app: &TestApp, swaps: u64) {
    let replica = app.running.replica.as_ref().expect("a replica");
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.status().swaps < swaps {
        assert!(Instant::now() < deadline, "no swap {swaps}: {:?}", replica.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_swaps_newer_snapshots_in_under_concurrent_reads() {
    let published = tempfile::tempdir().unwrap();
    let Some(primary) = TestApp::start(Backend::Sqlite).await else { return };
    let (_, key) = primary.user(100_000).await;
    for day in ["20260427", "20260428"] {
        get_ok(&primary, &format!("/price?code=600519.SH&trade_date={day}"), &key).await;
    }
    let rows_published = primary.running.market.row_counts().await.unwrap();
    let first = replica::publish(&primary.running.market, published.path()).await.unwrap();

    let Some(serving) = TestApp::start_with(Backend::Sqlite, |config| {
        config.replication.source_dir = Some(published.path().to_path_buf());
        config.replication.poll_secs = 1;
    })
    .await
    else {
        return;
    };
    swaps_reach(&serving, 1).await;
    assert_eq!(serving.running.replica.as_ref().unwrap().status().serving.as_ref(), Some(&first));
    assert_eq!(serving.running.market.row_counts().await.unwrap(), rows_published, "the replica serves the primary's rows");

    // Readers hit the warehouse itself (not a cache) while two newer snapshots are swapped in.
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let key_of_day: Map<String, Value> = json!({"ts_code": "600519.SH", "trade_date": "20260428"}).as_object().unwrap().clone();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (market, stop, reads, failures, key) =
                (serving.running.market.clone(), stop.clone(), reads.clone(), failures.clone(), key_of_day.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let rows = market.stored_rows("daily", &key).await;
                    reads.fetch_add(1, Ordering::Relaxed);
                    if rows.is_empty() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for (swap, day) in [(2, "20260429"), (3, "20260430")] {
        get_ok(&primary, &format!("/price?code=000001.SZ&trade_date={day}"), &key).await;
        replica::publish(&primary.running.market, published.path()).await.unwrap();
        swaps_reach(&serving, swap).await;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let (reads, failures) = (reads.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    eprintln!("replica: {reads} warehouse reads during two swaps, {failures} failed");
    assert!(reads > 0 && failures == 0, "{reads} reads, {failures} failed");

    // The primary's days answer on the replica with no upstream call at all.
    let (_, replica_key) = serving.user(1_000).await;
    let price = get_ok(&serving, "/price?code=000001.SZ&trade_date=20260430", &replica_key).await;
    assert_eq!(price["cite"]["source"], "sandbox:tushare");
    let upstream_calls: u64 = ["stock_basic", "trade_cal", "daily"].iter().map(|api| serving.tushare_calls(api)).sum();
    assert_eq!(upstream_calls, 0, "answered from the swapped-in snapshot");

    let (_, _, health) = serving.get("/healthz", None).await;
    let replica_check = &health["checks"]["warehouse"]["replica"];
    assert_eq!(replica_check["swaps"], 3, "{health}");
    assert!(replica_check["lag_secs"].as_i64().is_some_and(|lag| (0..60).contains(&lag)), "{health}");
    let kept =
        std::fs::read_dir(published.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".duckdb"));
    assert_eq!(kept.count(), 2, "the newest publication and one before it");
    serving.stop().await;
    primary.stop().await;
}
