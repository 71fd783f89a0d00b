//! The sandbox TDX server read by our client (`twilight-tdx`) and by the reference client, pytdx,
//! which must see exactly what ours sees; its bars agree with the Tushare simulator's; its fault
//! modes fail our client the way a broken server would.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use twilight_sandbox::{calendar, serve, TdxMode, TdxSim, TushareSim};
use twilight_tdx::wire::{self, cmd, yuan, ResponseHeader};
use twilight_tdx::{BarsQuery, Market, Period, PoolConfig, TdxError, TdxPool};

/// Thursday 2026-04-30, 17:00 in Shanghai: that day's bars are out at both simulators.
fn after_close() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 30, 9, 0, 0).unwrap()
}

async fn sandbox(mode: TdxMode) -> (TdxSim, String) {
    let sim = TdxSim::new();
    sim.set_now(Some(after_close()));
    sim.set_mode(mode);
    let (addr, _task) = sim.start(0).await.unwrap();
    (sim, addr.to_string())
}

fn pool(servers: &[&str], timeout: Duration) -> TdxPool {
    TdxPool::new(PoolConfig { servers: servers.iter().map(|s| s.to_string()).collect(), timeout, ..PoolConfig::default() })
}

/// The oracle venv's python (scripts/install-oracles); its absence fails the test in CI.
fn pytdx_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("TWILIGHT_PYTDX_PYTHON") {
        return Some(python.into());
    }
    let required = std::env::var_os("CI").is_some() || std::env::var("TWILIGHT_REQUIRE_PYTDX").as_deref() == Ok("1");
    assert!(!required, "TWILIGHT_PYTDX_PYTHON is not set (scripts/test sets it from scripts/install-oracles)");
    eprintln!("skipped: TWILIGHT_PYTDX_PYTHON is not set; run scripts/install-oracles");
    None
}

async fn pytdx(python: &PathBuf, addr: &str, calls: Value) -> Value {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let plan = json!({"host": host, "port": port.parse::<u16>().unwrap(), "calls": calls});
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pytdx_oracle.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(plan.to_string().as_bytes()).await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "pytdx: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// pytdx's `get_volume` decodes f32 words exactly only for values from 128 up (`protocols/tdx.md`:
/// 41.49 comes out as 180.24), so smaller ones are not an oracle for ours (`f32::from_le_bytes`).
/// Compared as f32: the JSON between us may move the last bit of an f64.
fn same_f32(ours: f32, theirs: &Value) -> bool {
    ours < 128.0 || ours == theirs.as_f64().unwrap() as f32
}

/// A pytdx price (thousandths over 1000, through JSON) in thousandths again.
fn milli(theirs: &Value) -> i64 {
    (theirs.as_f64().unwrap() * 1000.0).round() as i64
}

fn assert_bars_match(ours: &[wire::Bar], theirs: &Value) {
    let theirs = theirs.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (bar, t) in ours.iter().zip(theirs) {
        let date = (bar.time.year(), bar.time.month(), bar.time.day());
        assert_eq!(date, (t["year"].as_i64().unwrap() as i32, t["month"].as_u64().unwrap() as u32, t["day"].as_u64().unwrap() as u32));
        for (ours, field) in [(bar.open, "open"), (bar.close, "close"), (bar.high, "high"), (bar.low, "low")] {
            assert_eq!(ours, milli(&t[field]), "{field} on {date:?}");
        }
        assert!(same_f32(bar.vol, &t["vol"]) && same_f32(bar.amount, &t["amount"]), "{bar:?} vs {t}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pytdx_reads_exactly_what_our_client_reads() {
    let Some(python) = pytdx_python() else { return };
    let (_sim, addr) = sandbox(TdxMode::Normal).await;
    let calls = json!([
        ["count", 1],
        ["count", 0],
        ["list", 1, 0],
        ["list", 0, 1000],
        ["bars", 9, 1, "600519", 0, 800],
        ["bars", 4, 1, "600519", 800, 800],
        ["bars", 9, 0, "000001", 3, 20],
        ["xdxr", 1, "600519"]
    ]);
    let oracle = pytdx(&python, &addr, calls).await;
    let theirs = oracle["calls"].as_array().unwrap();
    let ours = pool(&[&addr], Duration::from_secs(10));

    assert_eq!(u64::from(ours.security_count(Market::Shanghai).await.unwrap()), theirs[0].as_u64().unwrap());
    assert_eq!(u64::from(ours.security_count(Market::Shenzhen).await.unwrap()), theirs[1].as_u64().unwrap());
    assert!(theirs[0].as_u64().unwrap() > 1000, "a Shanghai list longer than one page");

    for (market, start, theirs) in [(Market::Shanghai, 0, &theirs[2]), (Market::Shenzhen, 1000, &theirs[3])] {
        let list = ours.security_list(market, start).await.unwrap();
        let theirs = theirs.as_array().unwrap();
        assert_eq!(list.len(), theirs.len());
        assert!(!list.is_empty());
        for (s, t) in list.iter().zip(theirs) {
            assert_eq!((s.code.as_str(), s.name.as_str()), (t["code"].as_str().unwrap(), t["name"].as_str().unwrap()));
            assert_eq!(
                (u64::from(s.volunit), u64::from(s.decimal_point)),
                (t["volunit"].as_u64().unwrap(), t["decimal_point"].as_u64().unwrap())
            );
            assert!(same_f32(s.pre_close, &t["pre_close"]), "{s:?} vs {t}");
        }
    }
    let shanghai = ours.security_list(Market::Shanghai, 0).await.unwrap();
    assert!(shanghai.iter().any(|s| s.code == "600519" && s.name == "贵州茅台"), "GBK names decode");

    for (query, theirs) in [
        (BarsQuery { market: Market::Shanghai, code: "600519".into(), period: Period::DayAlt, start: 0, count: 800 }, &theirs[4]),
        (BarsQuery { market: Market::Shanghai, code: "600519".into(), period: Period::Day, start: 800, count: 800 }, &theirs[5]),
        (BarsQuery { market: Market::Shenzhen, code: "000001".into(), period: Period::DayAlt, start: 3, count: 20 }, &theirs[6]),
    ] {
        let bars = ours.bars(&query).await.unwrap();
        assert_eq!(bars.len(), usize::from(query.count), "{query:?}");
        assert_bars_match(&bars, theirs);
    }

    let events = ours.xdxr(Market::Shanghai, "600519").await.unwrap();
    let theirs_events = theirs[7].as_array().unwrap();
    assert!(!events.is_empty(), "Moutai pays dividends");
    assert_eq!(events.len(), theirs_events.len());
    for (event, t) in events.iter().zip(theirs_events) {
        assert_eq!((event.date.year() as i64, u64::from(event.category)), (t["year"].as_i64().unwrap(), t["category"].as_u64().unwrap()));
        let wire::XdxrDetail::Dividend { cash, .. } = event.detail else { panic!("{event:?}") };
        assert_eq!(cash, t["fenhong"].as_f64().unwrap() as f32);
    }

    // The real server's answer recorded in pytdx's source decodes in Rust to what pytdx parsed.
    let captured = hex(oracle["captured"]["hex"].as_str().unwrap());
    let header = ResponseHeader::parse(captured[..16].try_into().unwrap()).unwrap();
    assert_eq!(header.command, cmd::BARS);
    let bars = wire::parse_bars(Period::DayAlt, &header.unpack(&captured[16..]).unwrap()).unwrap();
    assert_bars_match(&bars, &oracle["captured"]["bars"]);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Closes from the Tushare simulator's `daily` for one code, newest first.
async fn tushare_closes(ts_code: &str, start: &str, end: &str) -> Vec<(String, f64)> {
    let tushare = TushareSim::new("t");
    tushare.set_now(Some(after_close()));
    let (addr, _task) = serve(tushare.router(), 0).await.unwrap();
    let body = json!({"api_name": "daily", "token": "t", "params": {"ts_code": ts_code, "start_date": start, "end_date": end}, "fields": "trade_date,close"});
    let answer: Value =
        reqwest::Client::new().post(format!("http://{addr}/")).body(body.to_string()).send().await.unwrap().json().await.unwrap();
    answer["data"]["items"].as_array().unwrap().iter().map(|row| (row[0].as_str().unwrap().to_string(), row[1].as_f64().unwrap())).collect()
}

#[tokio::test]
async fn a_whole_history_pages_back_and_agrees_with_tushare() {
    let (sim, addr) = sandbox(TdxMode::Normal).await;
    let tdx = pool(&[&addr], Duration::from_secs(10));
    let bars = tdx.daily_bars(Market::Shanghai, "600519", None).await.unwrap();
    let list_day = NaiveDate::from_ymd_opt(2001, 8, 27).unwrap();
    let expected = calendar::open_days(list_day, after_close().date_naive()).count();
    assert_eq!(bars.len(), expected, "every session since listing");
    assert!(bars.windows(2).all(|w| w[0].time < w[1].time), "oldest first, no overlap between pages");
    assert_eq!(sim.calls_for(cmd::BARS), expected.div_ceil(800) as u64);

    let since = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    let recent = tdx.daily_bars(Market::Shanghai, "600519", Some(since)).await.unwrap();
    assert_eq!(recent.first().unwrap().time.date(), since);
    let tushare = tushare_closes("600519.SH", "20260105", "20260430").await;
    assert_eq!(recent.len(), tushare.len());
    for (bar, (day, close)) in recent.iter().rev().zip(&tushare) {
        assert_eq!(&bar.time.format("%Y%m%d").to_string(), day);
        assert_eq!(yuan(bar.close), *close, "{day}: the same close at both simulators");
    }
}

#[tokio::test]
async fn a_broken_server_fails_fast_and_the_pool_moves_on() {
    let query = BarsQuery { market: Market::Shanghai, code: "600519".into(), period: Period::Day, start: 0, count: 5 };
    for (mode, expect) in [(TdxMode::Drop, "io"), (TdxMode::Garbage, "protocol"), (TdxMode::Slow(Duration::from_secs(3)), "timeout")] {
        let (_sim, addr) = sandbox(mode).await;
        let error = pool(&[&addr], Duration::from_millis(300)).bars(&query).await.unwrap_err();
        let kind = match error {
            TdxError::Io { .. } => "io",
            TdxError::Protocol(_) => "protocol",
            TdxError::Timeout { .. } => "timeout",
            TdxError::Unavailable { .. } => "unavailable",
        };
        assert_eq!(kind, expect, "{mode:?}: {error}");
    }

    let (broken, broken_addr) = sandbox(TdxMode::Drop).await;
    let (good, good_addr) = sandbox(TdxMode::Normal).await;
    let tdx = pool(&[&broken_addr, &good_addr], Duration::from_millis(500));
    assert_eq!(tdx.bars(&query).await.unwrap().len(), 5, "answered by the second server");
    let health = tdx.health();
    assert_eq!((health[0].failures, health[1].failures), (1, 0));
    assert!(health[0].resting_until.is_some());
    // The failed server rests: later calls go straight to the good one, over one kept connection.
    let before = broken.connections();
    for _ in 0..3 {
        tdx.bars(&query).await.unwrap();
    }
    assert_eq!(broken.connections(), before);
    assert_eq!(good.connections(), 1);
    assert_eq!(good.calls_for(cmd::BARS), 4);

    // Everything down: a clear error naming when to try again, without a connection attempt.
    good.set_mode(TdxMode::Drop);
    assert!(tdx.bars(&query).await.is_err());
    let TdxError::Unavailable { retry_after } = tdx.bars(&query).await.unwrap_err() else { panic!("both servers rest") };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
}

#[tokio::test]
async fn a_discrepancy_mode_shifts_closes_by_the_given_share() {
    let (_sim, addr) = sandbox(TdxMode::Differ(0.02)).await;
    let query = BarsQuery { market: Market::Shanghai, code: "600519".into(), period: Period::Day, start: 0, count: 3 };
    let shifted = pool(&[&addr], Duration::from_secs(5)).bars(&query).await.unwrap();
    let tushare = tushare_closes("600519.SH", "20260428", "20260430").await;
    for (bar, (_, close)) in shifted.iter().rev().zip(&tushare) {
        let diff_pct = (yuan(bar.close) - close) / close * 100.0;
        assert!((diff_pct - 0.02).abs() < 0.001, "{diff_pct}");
        assert!(bar.high >= bar.close && bar.low <= bar.close);
    }
}
