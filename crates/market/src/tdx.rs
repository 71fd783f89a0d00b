//! TDX at our edge: which codes it serves, its bars as `daily` records (Tushare's units), and the
//! backfill of bulk daily history into the warehouse, which spends no Tushare points on bars.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use serde::Serialize;
use twilight_core::{Exchange, TsCode};
use twilight_tdx::{wire, Bar, TdxPool};

use crate::warehouse::{Cell, Record, Warehouse, DAILY};
use crate::MarketError;

/// The TDX market of an A-share code; Beijing codes are not on the servers we use.
pub fn tdx_market(code: TsCode) -> Option<twilight_tdx::Market> {
    match code.exchange() {
        Exchange::Shanghai => Some(twilight_tdx::Market::Shanghai),
        Exchange::Shenzhen => Some(twilight_tdx::Market::Shenzhen),
        Exchange::Beijing => None,
    }
}

fn round(x: f64, dp: i32) -> f64 {
    let scale = 10f64.powi(dp);
    (x * scale).round() / scale
}

/// Consecutive daily bars of `code`, oldest first, as `daily` records in Tushare's units (amount in
/// thousands of yuan). `pre_close`, `change` and `pct_chg` come from the bar before, so the first
/// bar has none.
pub fn daily_records(code: TsCode, bars: &[Bar], source: &str, fetched_at: DateTime<Utc>) -> Vec<Record> {
    let mut previous: Option<f64> = None;
    bars.iter()
        .map(|bar| {
            let close = wire::yuan(bar.close);
            let number = |x: Option<f64>| x.map_or(Cell::Null, Cell::Number);
            let change = previous.map(|pre| round(close - pre, 2));
            let pct_chg = previous.zip(change).map(|(pre, change)| round(change / pre * 100.0, 4));
            let cells = vec![
                Cell::Text(code.to_string()),
                Cell::Date(bar.time.date()),
                Cell::Number(wire::yuan(bar.open)),
                Cell::Number(wire::yuan(bar.high)),
                Cell::Number(wire::yuan(bar.low)),
                Cell::Number(close),
                number(previous),
                number(change),
                number(pct_chg),
                Cell::Number(round(f64::from(bar.vol), 2)),
                Cell::Number(round(f64::from(bar.amount) / 1000.0, 3)),
            ];
            previous = Some(close);
            Record { spec: &DAILY, cells, source: source.to_string(), fetched_at, raw: None }
        })
        .collect()
}

/// What a backfill fetches: each code's daily bars over `since..=through`.
#[derive(Debug, Clone)]
pub struct BackfillPlan {
    pub codes: Vec<TsCode>,
    pub since: NaiveDate,
    pub through: NaiveDate,
    /// Codes fetched at once (each holds one pooled connection while it pages).
    pub concurrency: usize,
}

/// How one code went.
#[derive(Debug, Clone, Serialize)]
pub struct CodeOutcome {
    pub code: TsCode,
    /// Rows written (0 when skipped).
    pub rows: usize,
    /// Already held from an earlier run: no network work.
    pub skipped: bool,
    pub error: Option<String>,
}

/// The end of a backfill.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillSummary {
    pub codes: usize,
    pub fetched: usize,
    pub skipped: usize,
    pub failed: usize,
    pub rows: usize,
    /// Requests sent to the TDX servers (bars pages, failed tries included).
    pub requests: u64,
    /// (code, day) closes both Tushare and this source hold over the range, compared at the end.
    pub compared: usize,
    /// Of those, the ones that differ beyond rounding (recorded in `source_disagreements`).
    pub disagreements: usize,
    pub elapsed_ms: u128,
}

pub struct Backfill {
    pool: TdxPool,
    warehouse: Arc<Warehouse>,
    /// `tdx`, or `sandbox:tdx` when the servers are the sandbox's.
    source: String,
}

impl Backfill {
    pub fn new(pool: TdxPool, warehouse: Arc<Warehouse>, source: impl Into<String>) -> Backfill {
        Backfill { pool, warehouse, source: source.into() }
    }

    /// Fetches every code of `plan` the warehouse does not already hold over its range, reporting
    /// each code to `on_code` as it finishes. A code that fails is reported and left for the next
    /// run; the others go on.
    pub async fn run(&self, plan: &BackfillPlan, on_code: impl Fn(&CodeOutcome)) -> Result<BackfillSummary, MarketError> {
        let started = Instant::now();
        let calls_before = self.calls();
        let held = {
            let (warehouse, source) = (self.warehouse.clone(), self.source.clone());
            tokio::task::spawn_blocking(move || warehouse.backfilled(&source))
                .await
                .map_err(|e| MarketError::Warehouse(format!("blocking task failed: {e}")))??
        };
        let mut summary = BackfillSummary { codes: plan.codes.len(), ..BackfillSummary::default() };
        let mut outcomes = futures::stream::iter(plan.codes.iter().copied())
            .map(|code| self.one(code, held.get(&code.to_string()).copied(), plan))
            .buffer_unordered(plan.concurrency.max(1));
        while let Some(outcome) = outcomes.next().await {
            summary.rows += outcome.rows;
            match (&outcome.error, outcome.skipped) {
                (Some(_), _) => summary.failed += 1,
                (None, true) => summary.skipped += 1,
                (None, false) => summary.fetched += 1,
            }
            on_code(&outcome);
        }
        summary.requests = self.calls() - calls_before;
        let (warehouse, since) = (self.warehouse.clone(), plan.since);
        let check = tokio::task::spawn_blocking(move || warehouse.check_sources(Some(since)))
            .await
            .map_err(|e| MarketError::Warehouse(format!("blocking task failed: {e}")))??;
        (summary.compared, summary.disagreements) = (check.compared, check.disagreements.len());
        summary.elapsed_ms = started.elapsed().as_millis();
        Ok(summary)
    }

    fn calls(&self) -> u64 {
        self.pool.health().iter().map(|server| server.calls).sum()
    }

    /// One code: nothing when an earlier run covered the range; only the days after it when it
    /// covered the start; else the whole range.
    async fn one(&self, code: TsCode, held: Option<(NaiveDate, NaiveDate)>, plan: &BackfillPlan) -> CodeOutcome {
        let mut outcome = CodeOutcome { code, rows: 0, skipped: false, error: None };
        let Some(market) = tdx_market(code) else {
            outcome.error = Some(format!("{code}: TDX serves Shanghai and Shenzhen codes only"));
            return outcome;
        };
        let from = match held {
            Some((since, through)) if since <= plan.since && through >= plan.through => {
                outcome.skipped = true;
                return outcome;
            }
            // The last held day is fetched again: its close is the next day's pre_close.
            Some((since, through)) if since <= plan.since => through,
            _ => plan.since,
        };
        let bars = match self.pool.daily_bars(market, code.symbol(), Some(from)).await {
            Ok(bars) => bars.into_iter().filter(|b| b.time.date() <= plan.through).collect::<Vec<_>>(),
            Err(error) => {
                outcome.error = Some(error.to_string());
                return outcome;
            }
        };
        let mut records = daily_records(code, &bars, &self.source, Utc::now());
        if from != plan.since {
            records.retain(|r| r.date("trade_date") != Some(from));
        }
        outcome.rows = records.len();
        let (warehouse, source, range) = (self.warehouse.clone(), self.source.clone(), (plan.since, plan.through));
        let stored = tokio::task::spawn_blocking(move || warehouse.store_backfill(&source, code, range, &records)).await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(error)) => outcome.error = Some(error.to_string()),
            Err(error) => outcome.error = Some(format!("blocking task failed: {error}")),
        }
        outcome
    }
}
