//! `twilight backfill`: years of daily bars from TDX into the warehouse, resumable, with a progress
//! bar on a terminal and JSON progress lines otherwise. Bars cost no Tushare points; the ranking by
//! market value reads one whole-market `daily_basic` (once per day, then from the warehouse).
//! `twilight check-sources`: where the sources' closes disagree.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use chrono::{Datelike, NaiveDate};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use twilight_core::{Exchange, TsCode};
use twilight_market::{Backfill, BackfillPlan, BackfillSummary, CodeOutcome, Market, Warehouse};

use crate::app::{self, MarketSims};
use crate::cfg::Config;

/// Which codes to fill.
#[derive(Debug, Clone)]
pub enum Codes {
    /// These.
    Listed(Vec<TsCode>),
    /// Every listed Shanghai and Shenzhen stock.
    All,
    /// The largest by total market value on the last closed session.
    Largest(usize),
}

/// Runs one backfill of `years` of history and returns its summary.
pub async fn run(config: &Config, codes: Codes, years: u32) -> anyhow::Result<BackfillSummary> {
    let sims = match config.sandbox.enabled {
        true => Some(MarketSims::start().await?),
        false => None,
    };
    let market_config = app::market_config(config, sims.as_ref())?;
    let tdx = market_config.tdx.clone().context("no TDX server configured: set tdx.servers (host:port of each quote server)")?;
    let market = Market::open(market_config)
        .context("opening the warehouse (a running `serve` holds it: backfill on the warehouse primary, or stop serve first)")?;
    let through = market.last_closed_session().await.context("reading the trade calendar")?;
    let since = years_before(through, years);
    let codes = match codes {
        Codes::Listed(codes) => codes,
        Codes::All => market.listed().await?.into_iter().filter(|c| c.exchange() != Exchange::Beijing).collect(),
        Codes::Largest(n) => market.largest_by_market_value(through, n).await.context("ranking by market value")?,
    };
    let concurrency = tdx.pool.health().len() * config.tdx.connections_per_server.max(1);
    let backfill = Backfill::new(tdx.pool, market.warehouse(), tdx.source);
    let plan = BackfillPlan { codes, since, through, concurrency };
    let progress = Progress::new(plan.codes.len());
    let summary = backfill.run(&plan, |outcome| progress.code_done(outcome)).await?;
    progress.finish(&summary, &plan);
    Ok(summary)
}

/// `twilight check-sources`: every disagreement between Tushare's and other sources' closes held
/// from `since` on, one JSON line each, then a summary line; they are recorded in the warehouse's
/// `source_disagreements` as well.
pub fn check_sources(config: &Config, since: Option<NaiveDate>) -> anyhow::Result<()> {
    let warehouse = Warehouse::open(&config.warehouse_path()).context("opening the warehouse (a running `serve` holds it)")?;
    let check = warehouse.check_sources(since)?;
    for disagreement in &check.disagreements {
        println!("{}", json!({"event": "disagreement", "disagreement": disagreement}));
    }
    println!("{}", json!({"event": "summary", "since": since, "compared": check.compared, "disagreements": check.disagreements.len()}));
    Ok(())
}

/// The same calendar day `years` earlier (February 29 becomes the 28th).
fn years_before(day: NaiveDate, years: u32) -> NaiveDate {
    let year = day.year() - years as i32;
    day.with_year(year).or_else(|| NaiveDate::from_ymd_opt(year, day.month(), 28)).expect("a valid date")
}

enum Progress {
    Bar(ProgressBar),
    Lines { total: usize, done: AtomicUsize, started: Instant },
}

impl Progress {
    fn new(total: usize) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} codes, ETA {eta} {msg}")
                    .expect("a valid template"),
            );
            Progress::Bar(bar)
        } else {
            Progress::Lines { total, done: AtomicUsize::new(0), started: Instant::now() }
        }
    }

    fn code_done(&self, outcome: &CodeOutcome) {
        match self {
            Progress::Bar(bar) => {
                bar.set_message(outcome.code.to_string());
                if let Some(error) = &outcome.error {
                    bar.println(format!("{}: {error}", outcome.code));
                }
                bar.inc(1);
            }
            Progress::Lines { total, done, started } => {
                let done = done.fetch_add(1, Ordering::Relaxed) + 1;
                let elapsed = started.elapsed().as_secs_f64();
                let eta_secs = (elapsed / done as f64 * (total - done) as f64).round();
                println!("{}", json!({"event": "progress", "done": done, "total": total, "eta_secs": eta_secs, "outcome": outcome}));
            }
        }
    }

    fn finish(&self, summary: &BackfillSummary, plan: &BackfillPlan) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
            eprintln!(
                "backfilled {} codes from {} to {}: {} fetched, {} already held, {} failed; {} rows in {:.1} s",
                summary.codes,
                plan.since,
                plan.through,
                summary.fetched,
                summary.skipped,
                summary.failed,
                summary.rows,
                summary.elapsed_ms as f64 / 1000.0
            );
        }
        println!("{}", json!({"event": "summary", "since": plan.since, "through": plan.through, "summary": summary}));
    }
}
