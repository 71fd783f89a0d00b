//! A warehouse that cannot grow (the process may write no byte past a file's current end: what a
//! full disk looks like to DuckDB) still answers from what Tushare sends, keeps it in memory so
//! the next request does not pay Tushare again, and says so in `/healthz`.
//!
//! Alone in its binary: the file-size limit is the whole process's. Accounts live in Postgres,
//! which writes over a socket.

mod common;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{signal, SigHandler, Signal};
use serde_json::Value;

use common::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_that_cannot_grow_still_answers_and_reports_itself_degraded() {
    let Some(app) = TestApp::start(Backend::Postgres).await else { return };
    let (_, key) = app.user(1_000).await;
    let (status, _, _) = app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await;
    assert_eq!(status, 200);
    let (_, _, health) = app.get("/healthz", None).await;
    assert_eq!(health["checks"]["warehouse"]["degraded"], false, "{health}");

    // SAFETY: no handler is installed, only the default (terminate) replaced by "ignore", so a
    // write past the limit fails with EFBIG instead of killing the test.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    setrlimit(Resource::RLIMIT_FSIZE, 0, hard).unwrap();
    let answered = async {
        let before = app.tushare_calls("daily");
        let (status, _, first) = app.get("/price?code=000001.SZ&trade_date=20260429", Some(&key)).await;
        let (again_status, _, again) = app.get("/price?code=000001.SZ&trade_date=20260429", Some(&key)).await;
        let (_, _, health) = app.get("/healthz", None).await;
        (status, first, again_status, again, app.tushare_calls("daily") - before, health)
    }
    .await;
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
    let (status, first, again_status, again, daily_calls, health): (u16, Value, u16, Value, u64, Value) = answered;

    assert_eq!(status, 200, "{first}");
    assert_eq!((first["cite"]["source"].as_str(), first["cite"]["stale"].as_bool()), (Some("sandbox:tushare"), Some(false)), "{first}");
    assert_eq!((again_status, &again["value"]), (200, &first["value"]), "{again}");
    assert_eq!(daily_calls, 1, "the second request was answered from memory");
    let warehouse = &health["checks"]["warehouse"];
    assert_eq!(warehouse["degraded"], true, "{health}");
    assert!(warehouse["last_error"].as_str().unwrap().contains("write of daily"), "{health}");
    app.stop().await;
}
