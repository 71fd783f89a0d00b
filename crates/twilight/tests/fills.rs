//! Scheduled fills: three simulated sessions, each filled with one Tushare call per table for the
//! whole market; an outage on the second, caught up (in order) on the third; answers about the
//! filled sessions then need no upstream call at all; the job is leased so a second scheduler never
//! fills at once, backs off after a failure, and reports itself in `/healthz`.

mod common;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use twilight::scheduler::{Attempt, Backoff, WarehouseFills};
use twilight_market::FillSchedule;
use twilight_sandbox::TushareMode;

use common::{Backend, TestApp};

const TABLES: [&str; 3] = ["daily", "daily_basic", "adj_factor"];
const BREAKER_SECS: u64 = 1;

/// 19:00 in Beijing on `day`: after the 18:00 fill time.
fn evening(day: &str) -> DateTime<Utc> {
    let day = NaiveDate::parse_from_str(day, "%Y%m%d").unwrap();
    Utc.from_utc_datetime(&day.and_hms_opt(11, 0, 0).unwrap())
}

fn calls(app: &TestApp) -> Vec<u64> {
    TABLES.iter().map(|api| app.tushare_calls(api)).collect()
}

fn all_calls(app: &TestApp) -> u64 {
    app.running.sandbox.as_ref().unwrap().market.tushare.calls()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_three_sessions_are_filled_once_each_and_caught_up_after_an_outage() {
    three_sessions(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_sessions_are_filled_once_each_and_caught_up_after_an_outage() {
    three_sessions(Backend::Postgres).await;
}

async fn three_sessions(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |config| config.tushare.breaker_secs = BREAKER_SECS).await else { return };
    let fills = WarehouseFills {
        schedule: FillSchedule { after: chrono::NaiveTime::from_hms_opt(18, 0, 0).unwrap(), catch_up_sessions: 30 },
        check_every: Duration::from_secs(300),
        backoff: Backoff { first: Duration::from_secs(60), most: Duration::from_secs(3600) },
    };
    let (market, accounts) = (&app.running.market, &*app.running.accounts);
    let tushare = &app.running.sandbox.as_ref().unwrap().market.tushare;
    let fills = &fills;
    let fill = |holder: &'static str, now| async move { fills.run_once(market, accounts, holder, now).await.unwrap() };

    // Session one (Monday 2026-04-27): one call per table brings the whole market.
    assert_eq!(calls(&app), [0, 0, 0]);
    let Attempt::Ran(Ok(report)) = fill("a", evening("20260427")).await else { panic!("the first fill did not run") };
    assert_eq!(report.sessions, [NaiveDate::from_ymd_opt(2026, 4, 27).unwrap()]);
    assert!(report.rows > 3 * 4_000, "the whole market of three tables and the season's reports: {report:?}");
    assert_eq!(calls(&app), [1, 1, 1]);
    assert_eq!(app.tushare_calls("fina_indicator_vip"), 2, "April announces the annual report and Q1: one call per period");
    // Looked at again the same evening, nothing is due.
    let before = all_calls(&app);
    let Attempt::Ran(Ok(report)) = fill("a", evening("20260427") + chrono::Duration::minutes(5)).await else { panic!() };
    assert!(report.sessions.is_empty(), "{report:?}");
    assert_eq!(all_calls(&app), before, "nothing due, nothing asked");

    // Session two: Tushare is down. The fill fails, is recorded, and backs off.
    tushare.set_mode(TushareMode::Down);
    let Attempt::Ran(Err(error)) = fill("a", evening("20260428")).await else { panic!("a fill during the outage worked") };
    assert!(error.contains("tushare"), "{error}");
    assert_eq!(calls(&app), [1, 1, 1], "the outage stopped the fill before any session table was asked");
    let (_, _, health) = app.get("/healthz", None).await;
    let job = &health["checks"]["jobs"]["warehouse_fill"];
    assert_eq!((&job["ok"], &job["failures"]), (&false.into(), &1.into()), "{health}");
    assert!(job["last_error"].as_str().unwrap().contains("tushare"), "{job}");
    let Attempt::BackingOff { until } = fill("a", evening("20260428") + chrono::Duration::seconds(30)).await else {
        panic!("tried again within the backoff")
    };
    assert_eq!(until, evening("20260428") + chrono::Duration::seconds(60));

    // Session three: Tushare is back. The missed session is caught up first, then the new one.
    tushare.set_mode(TushareMode::Normal);
    tokio::time::sleep(Duration::from_millis(BREAKER_SECS * 1000 + 200)).await;
    let Attempt::Ran(Ok(report)) = fill("a", evening("20260429")).await else { panic!("the catch-up did not run") };
    let days: Vec<String> = report.sessions.iter().map(|d| d.format("%Y%m%d").to_string()).collect();
    assert_eq!(days, ["20260428", "20260429"]);
    assert_eq!(calls(&app), [3, 3, 3], "exactly one call per table per session");
    let (_, _, health) = app.get("/healthz", None).await;
    let job = &health["checks"]["jobs"]["warehouse_fill"];
    assert_eq!((&job["ok"], &job["failures"], &job["running"]), (&true.into(), &0.into(), &false.into()), "{health}");
    let last_success = job["last_success_at"].as_str().map(|at| at.parse::<DateTime<Utc>>().unwrap());
    assert_eq!(last_success, Some(evening("20260429")), "{job}");

    // While one scheduler holds the job, another does not run it.
    let now = evening("20260430");
    assert!(accounts.lease_scheduled_job("warehouse_fill", "b", now, now + chrono::Duration::minutes(10)).await.unwrap());
    assert!(matches!(fill("a", now).await, Attempt::HeldElsewhere));
    assert_eq!(calls(&app), [3, 3, 3]);
    let done = twilight_accounts::JobRun::Succeeded { at: now };
    assert!(accounts.finish_scheduled_job("warehouse_fill", "b", &done).await.unwrap());

    // Every filled session is answered without a single upstream call.
    let (_, key) = app.user(1_000).await;
    let before = all_calls(&app);
    for day in ["20260427", "20260428", "20260429"] {
        for (code, metric) in [("600519.SH", "close"), ("000001.SZ", "pe_ttm"), ("300750.SZ", "total_mv"), ("601318.SH", "turnover_rate")] {
            let (status, _, body) = app.get(&format!("/price?code={code}&trade_date={day}&metric={metric}"), Some(&key)).await;
            assert_eq!(status, 200, "{code} {day} {metric}: {body}");
            assert_eq!(body["as_of"], day, "{body}");
        }
    }
    assert_eq!(all_calls(&app), before, "answers about filled sessions asked Tushare");

    // A fill's report of one period is not a company's history: the first /fundamentals of a code
    // still fetches its reports (one query, paged by Tushare's 100 rows), then never again.
    assert_eq!(app.tushare_calls("fina_indicator"), 0);
    let (status, _, body) = app.get("/fundamentals?code=600519.SH&period=20240930", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    let history_pages = app.tushare_calls("fina_indicator");
    assert!(history_pages > 0);
    let (status, _, body) = app.get("/fundamentals?code=600519.SH&period=20200630", Some(&key)).await;
    assert_eq!((status, body["as_of"].as_str()), (200, Some("20200630")), "{body}");
    assert_eq!(app.tushare_calls("fina_indicator"), history_pages);
    app.stop().await;
}
