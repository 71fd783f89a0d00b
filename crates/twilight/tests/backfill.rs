//! `twilight backfill` run as an operator would, against the embedded default's sandbox TDX server.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use twilight_market::warehouse::{Cell, DAILY};
use twilight_market::Warehouse;

/// Runs `twilight backfill ARGS` on `data_dir`; its JSON lines and stderr.
fn backfill(data_dir: &std::path::Path, args: &[&str]) -> (bool, Vec<Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_twilight"))
        .env("TWILIGHT_DATA_DIR", data_dir)
        .env_remove("TWILIGHT_CONFIG")
        .arg("backfill")
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    (output.status.success(), lines, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn summary(lines: &[Value]) -> &Value {
    let last = lines.last().expect("a summary line");
    assert_eq!(last["event"], "summary", "{last}");
    &last["summary"]
}

#[test]
fn the_largest_three_hundred_over_five_years_then_a_run_with_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (ok, lines, err) = backfill(dir.path(), &[]);
    let elapsed = started.elapsed();
    assert!(ok, "{err}");
    let first = summary(&lines).clone();
    let rows = first["rows"].as_u64().unwrap();
    eprintln!("backfill of 300 codes x 5 years (debug build): {elapsed:?} wall, {rows} rows, {} TDX requests", first["requests"]);
    assert_eq!((first["codes"].as_u64(), first["fetched"].as_u64(), first["failed"].as_u64()), (Some(300), Some(300), Some(0)), "{first}");
    assert!(rows > 300 * 1_000, "about 1,210 sessions in 5 years per code: {rows}");
    let requests = first["requests"].as_u64().unwrap();
    assert!((300..=900).contains(&requests), "one or two 800-bar pages per code (fewer for later listings): {first}");
    let progress: Vec<&Value> = lines.iter().filter(|l| l["event"] == "progress").collect();
    assert_eq!(progress.len(), 300, "one progress line per code");
    assert_eq!(progress.last().unwrap()["done"], 300);
    assert!(progress.iter().all(|p| p["eta_secs"].is_number() && p["outcome"]["code"].is_string()));

    let (ok, lines, err) = backfill(dir.path(), &[]);
    assert!(ok, "{err}");
    let second = summary(&lines);
    assert_eq!(
        (second["skipped"].as_u64(), second["fetched"].as_u64(), second["rows"].as_u64()),
        (Some(300), Some(0), Some(0)),
        "{second}"
    );
    assert_eq!(second["requests"], 0, "nothing asked of the TDX server: {second}");

    // Every stored bar is TDX's: no Tushare point went on bars.
    let warehouse = Warehouse::open(&dir.path().join("warehouse.duckdb")).unwrap();
    let daily = warehouse.select(&DAILY, &[], None).unwrap();
    assert_eq!(daily.len() as u64, rows);
    assert!(daily.iter().all(|r| r.source == "sandbox:tdx"));
    let moutai = warehouse.select(&DAILY, &[Cell::Text("600519.SH".into())], Some("trade_date")).unwrap();
    let (since, through) = (first_date(&lines, "since"), first_date(&lines, "through"));
    assert_eq!(moutai.first().unwrap().date("trade_date"), Some(through));
    assert!(moutai.last().unwrap().date("trade_date").unwrap() >= since);
    assert!(moutai.len() > 1_150, "{}", moutai.len());
    assert!(moutai.iter().skip(1).take(10).all(|r| r.number("pre_close").is_some() && r.number("pct_chg").is_some()));
}

fn first_date(lines: &[Value], field: &str) -> chrono::NaiveDate {
    lines.last().unwrap()[field].as_str().unwrap().parse().unwrap()
}

#[test]
fn named_codes_fill_alone_and_a_code_tdx_lacks_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, lines, err) = backfill(dir.path(), &["--codes", "600519.SH,000001.SZ", "--years", "1"]);
    assert!(ok, "{err}");
    let first = summary(&lines);
    assert_eq!((first["fetched"].as_u64(), first["rows"].as_u64().map(|r| r > 400)), (Some(2), Some(true)), "{first}");

    // Five years where one was held: fetched again whole, and held whole from then on.
    let (ok, lines, err) = backfill(dir.path(), &["--codes", "600519.SH", "--years", "5"]);
    assert!(ok, "{err}");
    assert_eq!(summary(&lines)["fetched"], 1);
    let (ok, lines, _) = backfill(dir.path(), &["--codes", "600519.SH", "--years", "3"]);
    assert!(ok);
    assert_eq!(summary(&lines)["skipped"], 1, "three years are inside the five held");

    let (ok, lines, err) = backfill(dir.path(), &["--codes", "830799.BJ"]);
    assert!(!ok, "a Beijing code is not on the TDX servers");
    assert!(err.contains("1 of 1 codes failed"), "{err}");
    let outcome = &lines.iter().find(|l| l["event"] == "progress").unwrap()["outcome"];
    assert!(outcome["error"].as_str().unwrap().contains("Shanghai and Shenzhen"), "{outcome}");

    let (ok, _, err) = backfill(dir.path(), &["--codes", "60051"]);
    assert!(!ok && err.contains("60051"), "a malformed code is refused by name: {err}");
}
