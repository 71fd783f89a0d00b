//! The read path: warehouse hit → answer; miss → exactly one upstream call fills it (single-flight), then answer.
//!
//! When an upstream fails, the answer is what the warehouse has (a stock list, calendar or report
//! list past its refresh age, the newest day row instead of the latest), marked stale; a failed
//! source is not asked again for a breaker window, so an outage costs one timeout, not one per
//! request. When the warehouse cannot store what was fetched, the answer is made from the fetched
//! rows all the same, and the warehouse reports itself degraded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use failsafe::futures::CircuitBreaker;
use failsafe::{backoff, failure_policy, StateMachine};
use moka::future::Cache;
use serde::Serialize;
use serde_json::{Map, Value};
use twilight_core::upstream::{record_call, CallOutcome};
use twilight_core::{china_today, compact, Agreement, Symbol, TsCode};
use twilight_tdx::TdxPool;

use crate::aktools::{AktoolsClient, AktoolsConfig};
use crate::calendar::Calendar;
use crate::route::{self, Route};
use crate::tdx::{daily_records, tdx_market};
use crate::tushare::{Fetched, TushareClient, TushareConfig};
use crate::warehouse::{
    self, Cell, Disagreement, Fact, Record, TableSpec, Warehouse, ADJ_FACTOR, COMPANY_PROFILE, DAILY, DAILY_BASIC, FINA_INDICATOR,
    STOCK_BASIC, TRADE_CAL, YAHOO_DAILY,
};
use crate::yahoo::{YahooClient, YahooConfig};
use crate::{MarketError, Metric};

mod fill;
mod history;
pub use fill::{FillReport, FillSchedule};
pub use history::History;

/// A day row we looked for and the upstream did not have (suspension, or today before publication)
/// is asked for again after this long.
const NEGATIVE_TTL: Duration = Duration::from_secs(600);
/// How long reference data (calendar, stock list, financial reports) is trusted before re-reading.
const REFERENCE_TTL: Duration = Duration::from_secs(3600);
/// Stored reference data older than this is refreshed from upstream.
const REFERENCE_MAX_AGE: chrono::Duration = chrono::Duration::hours(24);
const FIRST_TRADE_DATE: &str = "19901219";
/// From this Beijing time a session's daily bars are final at every source (TDX from the 15:00
/// close, Tushare loads them by about 16:00).
const SESSION_FINAL: chrono::NaiveTime = chrono::NaiveTime::from_hms_opt(16, 0, 0).expect("a valid time");

#[derive(Debug, Clone)]
pub struct MarketConfig {
    pub warehouse_path: PathBuf,
    pub tushare: TushareConfig,
    /// After an upstream fails, how long it is left alone: requests meanwhile are answered from
    /// the warehouse (or refused) at once.
    pub breaker_window: Duration,
    /// TDX quote servers, which answer a day's bar while Tushare is down.
    pub tdx: Option<TdxSource>,
    /// Yahoo Finance, for what Tushare does not list.
    pub yahoo: YahooConfig,
    /// AKTools, for company profiles; without it `/fundamentals` states numbers only.
    pub aktools: Option<AktoolsConfig>,
}

/// The TDX pool and the source name its rows are stored under.
#[derive(Clone)]
pub struct TdxSource {
    pub pool: TdxPool,
    /// `tdx`, or `sandbox:tdx` when the servers are the sandbox's.
    pub source: String,
}

impl std::fmt::Debug for TdxSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxSource").field("servers", &self.pool.health().len()).field("source", &self.source).finish()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Stock {
    pub code: TsCode,
    pub name: String,
    pub list_date: Option<NaiveDate>,
}

/// One number read from a stored row, with where it came from: what a cite is made of.
#[derive(Debug, Clone)]
pub struct Reading {
    pub metric: Metric,
    pub value: Option<f64>,
    /// The day the row is for.
    pub as_of: NaiveDate,
    pub source: String,
    pub table: &'static str,
    pub fetched_at: DateTime<Utc>,
    /// Upstream points this request spent (0 when the warehouse answered).
    pub cost_pts: i32,
}

impl Reading {
    fn of(record: &Record, metric: Metric, as_of: NaiveDate, cost_pts: i32) -> Reading {
        Reading {
            metric,
            value: record.number(metric.name()),
            as_of,
            source: record.source.clone(),
            table: record.spec.name,
            fetched_at: record.fetched_at,
            cost_pts,
        }
    }
}

/// One number of one symbol; the API turns provenance into a cite.
#[derive(Debug, Clone)]
pub struct PriceAnswer {
    /// The symbol as its source spells it (`600519.SH`, `0700.HK`).
    pub code: String,
    pub name: String,
    /// The metric's unit; for a price of a symbol Yahoo lists, its currency.
    pub unit: String,
    pub reading: Reading,
    /// Answered from the warehouse because the upstream failed (see `Cite::stale`).
    pub stale: bool,
    /// What another source holds for the value (see `Cite::agreement`).
    pub agreement: Option<Agreement>,
    /// The source that should have answered and was down (see `Cite::fallback_from`).
    pub fallback_from: Option<&'static str>,
}

/// One stated value of `/fundamentals`: a number of a report or a valuation, or a line of the
/// company's profile.
#[derive(Debug, Clone)]
pub struct Claim {
    pub metric: &'static str,
    pub value: Option<Fact>,
    pub unit: &'static str,
    pub period: NaiveDate,
    pub source: String,
    pub table: &'static str,
    pub fetched_at: DateTime<Utc>,
    /// This claim's row is a kept one standing in for a failed refresh.
    pub stale: bool,
}

impl Claim {
    fn of(record: &Record, metric: &'static str, unit: &'static str, period: NaiveDate) -> Claim {
        Claim {
            metric,
            value: record.fact(metric),
            unit,
            period,
            source: record.source.clone(),
            table: record.spec.name,
            fetched_at: record.fetched_at,
            stale: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FundamentalsAnswer {
    pub stock: Stock,
    /// The report period answered (a quarter end).
    pub period: NaiveDate,
    pub announced: Option<NaiveDate>,
    pub claims: Vec<Claim>,
    pub cost_pts: i32,
    /// Answered from the warehouse because the upstream failed.
    pub stale: bool,
}

/// How the warehouse is doing, for the deep health check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WarehouseHealth {
    /// The last write (or read) that failed since the last write that worked: answers are made
    /// from what upstreams send, but nothing new is kept.
    pub degraded_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// What answering one request cost and how it was answered, filled in along the read path.
#[derive(Default)]
struct Ledger {
    cost_pts: AtomicI32,
    stale: AtomicBool,
}

impl Ledger {
    fn spent(&self, pts: i32) {
        self.cost_pts.fetch_add(pts, Ordering::Relaxed);
    }

    fn went_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    fn into_parts(self) -> (i32, bool) {
        (self.cost_pts.into_inner(), self.stale.into_inner())
    }
}

type Breaker = StateMachine<failure_policy::ConsecutiveFailures<backoff::Constant>, ()>;

/// Last outcome per upstream, for the deep health check.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SourceHealth {
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<DateTime<Utc>>,
    pub last_error_message: Option<String>,
}

type DayKey = (&'static str, TsCode, NaiveDate);

/// One day's row of a per-day table as answered (Tushare's), and that day's rows from other
/// sources, which the answer is compared with.
#[derive(Debug, Default)]
struct DayRows {
    row: Option<Record>,
    others: Vec<Record>,
    /// `row` is another source's, standing in while Tushare is down.
    fallback: bool,
}

impl DayRows {
    /// Stored rows of one day split into Tushare's and the others'.
    fn of(rows: Vec<Record>) -> DayRows {
        let (mut tushare, others): (Vec<Record>, Vec<Record>) =
            rows.into_iter().partition(|r| warehouse::source_name(&r.source) == "tushare");
        DayRows { row: tushare.pop(), others, fallback: false }
    }

    /// What another source holds for `column` of the answered row.
    fn agreement(&self, column: &str) -> Option<Agreement> {
        let cited = self.row.as_ref()?.number(column)?;
        self.others.iter().find_map(|other| Agreement::between(cited, &other.source, other.number(column)?))
    }

    /// Where another source's close differs from the answered row's beyond rounding.
    fn disagreements(&self) -> Vec<Disagreement> {
        let Some(row) = &self.row else { return Vec::new() };
        self.others.iter().filter_map(|other| Disagreement::of(row, other, "close")).collect()
    }
}

/// How long a symbol's latest quote serves before Yahoo is asked again.
const LATEST_QUOTE_TTL: Duration = Duration::from_secs(600);

/// A past day's Yahoo rows keep for an hour (they change only if Yahoo corrects them); the latest for
/// [`LATEST_QUOTE_TTL`].
struct QuoteExpiry;

impl moka::Expiry<(String, Option<NaiveDate>), Arc<Vec<Record>>> for QuoteExpiry {
    fn expire_after_create(&self, key: &(String, Option<NaiveDate>), _: &Arc<Vec<Record>>, _: std::time::Instant) -> Option<Duration> {
        Some(if key.1.is_some() { REFERENCE_TTL } else { LATEST_QUOTE_TTL })
    }
}

/// Cached day rows expire only when absent, so a missing row is looked up again later, or when
/// another source stands in for Tushare, so Tushare's is asked for once its breaker lets it.
struct DayRowExpiry {
    fallback_for: Duration,
}

impl moka::Expiry<DayKey, Arc<DayRows>> for DayRowExpiry {
    fn expire_after_create(&self, _: &DayKey, value: &Arc<DayRows>, _: std::time::Instant) -> Option<Duration> {
        match (&value.row, value.fallback) {
            (_, true) => Some(self.fallback_for),
            (None, false) => Some(NEGATIVE_TTL),
            (Some(_), false) => None,
        }
    }
}

/// The listed stocks, and whether they are the stored list standing in for a failed refresh.
struct StockList {
    by_code: HashMap<TsCode, Stock>,
    stale: bool,
}

/// A refreshed stock list serves for [`REFERENCE_TTL`]; a stale one only until the breaker lets the
/// next refresh be tried, so an outage reads the stored list once per window, not on every request.
struct StockListExpiry {
    stale_for: Duration,
}

impl moka::Expiry<(), Arc<StockList>> for StockListExpiry {
    fn expire_after_create(&self, _: &(), list: &Arc<StockList>, _: std::time::Instant) -> Option<Duration> {
        Some(if list.stale { self.stale_for } else { REFERENCE_TTL })
    }
}

pub struct Market {
    /// Behind a lock only so that a replica can swap in a newer snapshot.
    warehouse: std::sync::RwLock<Arc<Warehouse>>,
    tushare: TushareClient,
    tdx: Option<TdxSource>,
    yahoo: YahooClient,
    yahoo_breaker: Breaker,
    aktools: Option<AktoolsClient>,
    aktools_breaker: Breaker,
    profiles: Cache<TsCode, Arc<Record>>,
    /// Rows of (symbol, day or latest): a latest answer serves for [`LATEST_QUOTE_TTL`].
    yahoo_days: Cache<(String, Option<NaiveDate>), Arc<Vec<Record>>>,
    day_rows: Cache<DayKey, Arc<DayRows>>,
    reports: Cache<TsCode, Arc<Vec<Record>>>,
    /// Range calls of the last [`NEGATIVE_TTL`], so a history's missing days are asked for once.
    ranges: Cache<history::RangeKey, Arc<Vec<Record>>>,
    calendar: Cache<(), Arc<Calendar>>,
    stocks: Cache<(), Arc<StockList>>,
    health: Mutex<HashMap<&'static str, SourceHealth>>,
    tushare_breaker: Breaker,
    breaker_window: Duration,
    warehouse_health: Mutex<WarehouseHealth>,
}

const FINA_CLAIMS: [(&str, &str); 12] = [
    ("eps", "CNY/share"),
    ("dt_eps", "CNY/share"),
    ("bps", "CNY/share"),
    ("roe", "%"),
    ("roe_dt", "%"),
    ("roa", "%"),
    ("grossprofit_margin", "%"),
    ("netprofit_margin", "%"),
    ("debt_to_assets", "%"),
    ("current_ratio", "ratio"),
    ("quick_ratio", "ratio"),
    ("netprofit_yoy", "%"),
];
const VALUATION_CLAIMS: [Metric; 5] = [Metric::PeTtm, Metric::Pe, Metric::Pb, Metric::Ps, Metric::TotalMv];
/// The `company_profile` columns `/fundamentals` states, as text.
const PROFILE_CLAIMS: [&str; 6] = ["industry", "csrc_industry", "company_name", "market", "main_business", "website"];

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, MarketError> + Send + 'static) -> Result<T, MarketError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| MarketError::Warehouse(format!("blocking task failed: {e}")))?
}

fn shared<T>(result: Result<T, Arc<MarketError>>) -> Result<T, MarketError> {
    result.map_err(|e| (*e).clone())
}

/// A source's breaker: one failure opens it for `window`.
fn breaker(window: Duration) -> Breaker {
    failsafe::Config::new().failure_policy(failure_policy::consecutive_failures(1, backoff::constant(window))).build()
}

fn params(pairs: &[(&str, String)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect()
}

impl Market {
    pub fn open(config: MarketConfig) -> Result<Market, MarketError> {
        Ok(Market {
            warehouse: std::sync::RwLock::new(Arc::new(Warehouse::open(&config.warehouse_path)?)),
            tushare: TushareClient::new(config.tushare)?,
            tdx: config.tdx,
            yahoo: YahooClient::new(config.yahoo)?,
            yahoo_breaker: breaker(config.breaker_window),
            aktools: config.aktools.map(AktoolsClient::new).transpose()?,
            aktools_breaker: breaker(config.breaker_window),
            profiles: Cache::builder().max_capacity(20_000).time_to_live(REFERENCE_TTL).build(),
            yahoo_days: Cache::builder().max_capacity(100_000).expire_after(QuoteExpiry).build(),
            day_rows: Cache::builder().max_capacity(2_000_000).expire_after(DayRowExpiry { fallback_for: config.breaker_window }).build(),
            reports: Cache::builder().max_capacity(20_000).time_to_live(REFERENCE_TTL).build(),
            // Weighed in rows: five years of one code are ~1,200, so this holds a few hundred ranges
            // in some tens of MB.
            ranges: Cache::builder()
                .weigher(|_, rows: &Arc<Vec<Record>>| u32::try_from(rows.len()).unwrap_or(u32::MAX).max(1))
                .max_capacity(100_000)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            calendar: Cache::builder().time_to_live(REFERENCE_TTL).build(),
            stocks: Cache::builder().expire_after(StockListExpiry { stale_for: config.breaker_window }).build(),
            health: Mutex::new(HashMap::new()),
            tushare_breaker: breaker(config.breaker_window),
            breaker_window: config.breaker_window,
            warehouse_health: Mutex::new(WarehouseHealth::default()),
        })
    }

    /// The warehouse answering now (a replica swaps in newer ones: see [`Market::swap_warehouse`]).
    pub fn warehouse(&self) -> Arc<Warehouse> {
        self.warehouse.read().expect("warehouse").clone()
    }

    /// Serves from `newer` from now on; reads in flight finish on the one they began with, which
    /// closes when the last of them lets go.
    pub fn swap_warehouse(&self, newer: Warehouse) {
        *self.warehouse.write().expect("warehouse") = Arc::new(newer);
    }

    /// A consistent copy of the warehouse, taken while it serves, in `snapshots/` beside it and named
    /// by the time it was taken: its path and size.
    pub async fn snapshot(&self) -> Result<(PathBuf, u64), MarketError> {
        let warehouse = self.warehouse();
        blocking(move || {
            let dir = warehouse.path().parent().unwrap_or(std::path::Path::new(".")).join("snapshots");
            std::fs::create_dir_all(&dir).map_err(|e| MarketError::Warehouse(format!("{}: {e}", dir.display())))?;
            let to = dir.join(format!("warehouse-{}.duckdb", Utc::now().format("%Y%m%dT%H%M%S%.6fZ")));
            let bytes = warehouse.snapshot(&to)?;
            Ok((to, bytes))
        })
        .await
    }

    /// Rows per warehouse table; fails when the warehouse cannot be read.
    pub async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>, MarketError> {
        let warehouse = self.warehouse();
        blocking(move || warehouse.row_counts()).await
    }

    pub fn health(&self) -> HashMap<&'static str, SourceHealth> {
        self.health.lock().expect("health").clone()
    }

    /// The rows of `table` the warehouse holds now under `key` (key column → value, dates as
    /// `YYYYMMDD`), one per source that has it, for tracing what an answer cited; none when the key
    /// does not name a row of that table.
    pub async fn stored_rows(&self, table: &str, key: &Map<String, Value>) -> Vec<Record> {
        let Some(spec) = warehouse::table(table) else { return Vec::new() };
        let cells: Option<Vec<Cell>> = spec.columns[..spec.key_len]
            .iter()
            .map(|column| {
                let value = key.get(column.name)?.as_str()?;
                match column.ty {
                    warehouse::ColType::Date => twilight_core::parse_date(value).ok().map(Cell::Date),
                    _ => Some(Cell::Text(value.to_string())),
                }
            })
            .collect();
        match cells {
            Some(cells) => self.stored(spec, cells, None).await,
            None => Vec::new(),
        }
    }

    pub fn warehouse_health(&self) -> WarehouseHealth {
        self.warehouse_health.lock().expect("warehouse health").clone()
    }

    fn warehouse_failed(&self, what: &str, error: &MarketError) {
        tracing::error!(%error, "warehouse {what} failed; answering from upstream data without keeping it");
        let mut health = self.warehouse_health.lock().expect("warehouse health");
        health.degraded_since.get_or_insert_with(Utc::now);
        health.last_error = Some(format!("{what}: {error}"));
    }

    /// `/price`: one metric of one symbol on one trading day (default: the latest with data), from
    /// the source [`route`](crate::route) picks.
    pub async fn price(&self, symbol: &Symbol, trade_date: Option<NaiveDate>, metric: Metric) -> Result<PriceAnswer, MarketError> {
        match route::route(symbol, metric)? {
            Route::AShare { code, table } => self.a_share_price(code, table, trade_date, metric).await,
            Route::Yahoo { symbol } => self.yahoo_price(&symbol, trade_date, metric).await,
        }
    }

    /// An A-share's metric from `spec` (Tushare's table; TDX beside it or standing in).
    async fn a_share_price(
        &self,
        code: TsCode,
        spec: &'static TableSpec,
        trade_date: Option<NaiveDate>,
        metric: Metric,
    ) -> Result<PriceAnswer, MarketError> {
        let ledger = Ledger::default();
        let stock = self.stock_noting(code, &ledger).await?;
        let calendar = self.calendar_noting(&ledger).await?;
        let (as_of, record) = match trade_date {
            Some(date) => {
                let date = self.check_trade_date(&calendar, &stock, date)?;
                (date, self.day_row(spec, code, date, &ledger).await?)
            }
            None => self.latest_day_row(&calendar, &stock, spec, &ledger).await?,
        };
        // Borrowed, not cloned: the cached row holds every column of the table.
        let day = record;
        let record = day.row.as_ref().ok_or_else(|| {
            MarketError::NotFound(format!("no {} data for {code} on {} (suspended that day?)", spec.name, compact(as_of)))
        })?;
        let (cost_pts, stale) = ledger.into_parts();
        Ok(PriceAnswer {
            code: stock.code.to_string(),
            name: stock.name,
            unit: metric.unit().to_string(),
            agreement: metric.comparable_across_sources().then(|| day.agreement(metric.name())).flatten(),
            fallback_from: day.fallback.then_some("tushare"),
            reading: Reading::of(record, metric, as_of, cost_pts),
            stale,
        })
    }

    /// `/fundamentals`: the financial indicators of one report period (default: the latest announced),
    /// plus the latest valuation and what the company is (its profile, when AKTools is configured).
    pub async fn fundamentals(&self, code: TsCode, period: Option<NaiveDate>) -> Result<FundamentalsAnswer, MarketError> {
        if let Some(p) = period.filter(|p| !twilight_core::is_quarter_end(*p)) {
            return Err(MarketError::InvalidInput {
                field: "period",
                message: format!("period {} is not a quarter end; use YYYY0331, YYYY0630, YYYY0930 or YYYY1231", compact(p)),
            });
        }
        let ledger = Ledger::default();
        let stock = self.stock_noting(code, &ledger).await?;
        let calendar = self.calendar_noting(&ledger).await?;
        let (reports, profile) = tokio::join!(self.reports(code, &ledger), self.company_profile(code));
        let reports = reports?;
        let report = match period {
            Some(p) => reports
                .iter()
                .find(|r| r.date("end_date") == Some(p))
                .ok_or_else(|| MarketError::NotFound(format!("{code} has no announced report for period {}", compact(p))))?,
            None => reports.first().ok_or_else(|| MarketError::NotFound(format!("{code} has no announced reports")))?,
        };
        let period = report.date("end_date").expect("key column is never null");
        let mut claims: Vec<Claim> = FINA_CLAIMS.iter().map(|(metric, unit)| Claim::of(report, metric, unit, period)).collect();
        let (valued_on, valuation) = self.latest_day_row(&calendar, &stock, VALUATION_CLAIMS[0].table(), &ledger).await?;
        if let Some(row) = valuation.row.as_ref() {
            claims.extend(VALUATION_CLAIMS.iter().map(|m| Claim::of(row, m.name(), m.unit(), valued_on)));
        }
        if let Some((row, stale)) = profile {
            // A profile holds as of the day it was read.
            let read_on = china_today(row.fetched_at);
            let stated = PROFILE_CLAIMS.into_iter().filter(|column| row.fact(column).is_some());
            claims.extend(stated.map(|column| Claim { stale, ..Claim::of(&row, column, "text", read_on) }));
        }
        let (cost_pts, stale) = ledger.into_parts();
        Ok(FundamentalsAnswer { announced: report.date("ann_date"), stock, period, claims, cost_pts, stale })
    }

    fn check_trade_date(&self, calendar: &Calendar, stock: &Stock, date: NaiveDate) -> Result<NaiveDate, MarketError> {
        let today = china_today(Utc::now());
        if date > today {
            return Err(MarketError::InvalidInput {
                field: "trade_date",
                message: format!("trade_date {} is in the future (today in Beijing is {})", compact(date), compact(today)),
            });
        }
        // Only a stale calendar (its refresh failed) can end before today.
        if !calendar.covers(date) && calendar.on_or_before(date).is_some() {
            return Err(MarketError::SourceDown { source_name: "tushare", retry_after_secs: self.breaker_window.as_secs().max(1) });
        }
        if !calendar.is_open(date) {
            return Err(MarketError::NotTradingDay { date, previous: calendar.before(date) });
        }
        if let Some(listed) = stock.list_date.filter(|listed| date < *listed) {
            return Err(MarketError::NotFound(format!("{} was listed on {}; no data for {}", stock.code, compact(listed), compact(date))));
        }
        Ok(date)
    }

    /// The newest row on or before today: today's data appears only after the close, so an empty
    /// answer for today falls back to the previous trade date. When the upstream fails, the newest
    /// row the warehouse has, marked stale.
    async fn latest_day_row(
        &self,
        calendar: &Calendar,
        stock: &Stock,
        spec: &'static TableSpec,
        ledger: &Ledger,
    ) -> Result<(NaiveDate, Arc<DayRows>), MarketError> {
        let today = china_today(Utc::now());
        let latest = calendar.on_or_before(today).ok_or_else(|| MarketError::NotFound("the trade calendar has no open day yet".into()))?;
        let fresh = async {
            let row = self.day_row(spec, stock.code, latest, ledger).await?;
            match calendar.before(latest) {
                Some(previous) if row.row.is_none() && latest == today => {
                    Ok((previous, self.day_row(spec, stock.code, previous, ledger).await?))
                }
                _ => Ok((latest, row)),
            }
        };
        let stored = async {
            let rows = self.stored(spec, vec![Cell::Text(stock.code.to_string())], Some("trade_date")).await;
            let newest = rows.into_iter().find(|r| r.date("trade_date").is_some_and(|d| d <= latest));
            newest.and_then(|row| Some((row.date("trade_date")?, Arc::new(DayRows { row: Some(row), ..DayRows::default() }))))
        };
        or_stored(fresh.await, stored, ledger).await
    }

    /// One row of a per-day table: memory, then warehouse, then exactly one upstream call for all
    /// concurrent askers of the same key; with it, that day's rows from other sources (a TDX
    /// backfill), whose disagreements with it are logged and recorded.
    async fn day_row(&self, spec: &'static TableSpec, code: TsCode, date: NaiveDate, ledger: &Ledger) -> Result<Arc<DayRows>, MarketError> {
        let missed = AtomicBool::new(false);
        let found = shared(
            self.day_rows
                .try_get_with((spec.name, code, date), async {
                    missed.store(true, Ordering::Relaxed);
                    let key = vec![Cell::Text(code.to_string()), Cell::Date(date)];
                    let mut day = DayRows::of(self.stored(spec, key, None).await);
                    if day.row.is_none() {
                        let request = params(&[("ts_code", code.to_string()), ("trade_date", compact(date))]);
                        match self.fetch(spec.name, request, &spec.fields(), ledger).await {
                            Ok(fetched) => {
                                day.row = self.store(spec, fetched).await.into_iter().find(|r| r.date("trade_date") == Some(date))
                            }
                            // Tushare is down: TDX's bar of the day stands in for a daily row.
                            Err(error) if error.is_source_failure() && route::tdx_stands_in(spec) => {
                                match self.tdx_day(code, date, &day.others).await {
                                    Some(row) => return Ok(Arc::new(DayRows { row, others: Vec::new(), fallback: true })),
                                    None => return Err(error),
                                }
                            }
                            Err(error) => return Err(error),
                        }
                    }
                    self.record_disagreements(day.disagreements()).await;
                    Ok(Arc::new(day))
                })
                .await,
        );
        cache_lookup("day_rows", missed.into_inner());
        found
    }

    /// While Tushare is down, TDX's bar of `code` on `date`: the one the warehouse holds, else one
    /// fetched now (with the days before it, for its `pre_close`) and kept. `Some(None)`: TDX has no
    /// bar that day (not yet published, or suspended); `None`: TDX cannot say (not configured,
    /// unreachable, or a code it does not list).
    async fn tdx_day(&self, code: TsCode, date: NaiveDate, stored: &[Record]) -> Option<Option<Record>> {
        if let Some(row) = stored.iter().find(|r| warehouse::source_name(&r.source) == "tdx") {
            return Some(Some(row.clone()));
        }
        let records = self.tdx_bars(code, date - chrono::Days::new(14)).await?;
        Some(records.iter().find(|r| r.date("trade_date") == Some(date)).cloned())
    }

    /// While Tushare is down, TDX's daily bars of `code` since `since`, fetched now and kept;
    /// `None` when TDX cannot say (not configured, unreachable, or a code it does not list).
    async fn tdx_bars(&self, code: TsCode, since: NaiveDate) -> Option<Arc<Vec<Record>>> {
        let tdx = self.tdx.as_ref()?;
        let bars = match tdx.pool.daily_bars(tdx_market(code)?, code.symbol(), Some(since)).await {
            Ok(bars) => bars,
            Err(error) => {
                tracing::warn!(%code, %error, "TDX cannot stand in for Tushare");
                return None;
            }
        };
        let records = Arc::new(daily_records(code, &bars, &tdx.source, Utc::now()));
        self.keep(&DAILY, records.clone()).await;
        Some(records)
    }

    /// Logs each disagreement between sources and keeps it in the warehouse (a failure to keep it
    /// is logged, never the answer's).
    async fn record_disagreements(&self, found: Vec<Disagreement>) {
        if found.is_empty() {
            return;
        }
        for d in &found {
            tracing::warn!(code = %d.ts_code, trade_date = %d.trade_date, field = d.field, source = %d.source, value = d.value,
                other_source = %d.other_source, other_value = d.other_value, diff_pct = d.diff_pct, "sources disagree");
        }
        let warehouse = self.warehouse();
        if let Err(error) = blocking(move || warehouse.record_disagreements(&found, Utc::now())).await {
            self.warehouse_failed("write of source_disagreements", &error);
        }
    }

    /// What `code` is, from AKTools (one row of both its answers, kept for a day), with whether it is
    /// the kept row standing in for a failed refresh. Enrichment never fails an answer: AKTools
    /// unconfigured, or down with nothing kept, is `None`.
    async fn company_profile(&self, code: TsCode) -> Option<(Arc<Record>, bool)> {
        let aktools = self.aktools.as_ref()?;
        let key = vec![Cell::Text(code.to_string())];
        let fresh = self
            .profiles
            .try_get_with(code, async {
                if let Some(row) = self.stored_if_fresh(&COMPANY_PROFILE, key.clone(), "ts_code").await.and_then(|mut rows| rows.pop()) {
                    return Ok(Arc::new(row));
                }
                let row = self.guarded("aktools", &self.aktools_breaker, aktools.company_profile(code, Utc::now())).await?;
                self.keep(&COMPANY_PROFILE, Arc::new(vec![row.clone()])).await;
                Ok::<_, MarketError>(Arc::new(row))
            })
            .await;
        match fresh {
            Ok(row) => Some((row, false)),
            Err(error) => {
                tracing::warn!(%code, %error, "no fresh company profile");
                self.stored(&COMPANY_PROFILE, key, None).await.pop().map(|row| (Arc::new(row), true))
            }
        }
    }

    /// Every announced report of `code`, newest period first.
    async fn reports(&self, code: TsCode, ledger: &Ledger) -> Result<Arc<Vec<Record>>, MarketError> {
        let key = vec![Cell::Text(code.to_string())];
        let fresh = shared(
            self.reports
                .try_get_with(code, async {
                    if let Some(records) = self.stored_if_fresh(&FINA_INDICATOR, key.clone(), "end_date").await {
                        // A scheduled fill's rows of one period alone are not the history.
                        let warehouse = self.warehouse();
                        if blocking(move || warehouse.has_report_history(code)).await.unwrap_or(false) {
                            return Ok(Arc::new(records));
                        }
                    }
                    let fetched =
                        self.fetch(FINA_INDICATOR.name, params(&[("ts_code", code.to_string())]), &FINA_INDICATOR.fields(), ledger).await?;
                    let fetched_at = Utc::now();
                    let mut rows = fetched.records(&FINA_INDICATOR, fetched_at);
                    let kept = rows.clone();
                    // A failure is the warehouse's trouble, recorded; the answer comes from `rows`.
                    let _ = self.write(FINA_INDICATOR.name, move |w| w.store_report_history(code, &kept, fetched_at)).await;
                    rows.sort_by_key(|r| std::cmp::Reverse(r.date("end_date")));
                    Ok(Arc::new(rows))
                })
                .await,
        );
        let stored =
            async { Some(Arc::new(self.stored(&FINA_INDICATOR, key.clone(), Some("end_date")).await)).filter(|rows| !rows.is_empty()) };
        or_stored(fresh, stored, ledger).await
    }

    /// The listed stock `code`, which must be known.
    pub async fn stock(&self, code: TsCode) -> Result<Stock, MarketError> {
        self.stock_noting(code, &Ledger::default()).await
    }

    /// Every listed code, by code.
    pub async fn listed(&self) -> Result<Vec<TsCode>, MarketError> {
        let mut codes: Vec<TsCode> = self.stocks_noting(&Ledger::default()).await?.by_code.keys().copied().collect();
        codes.sort();
        Ok(codes)
    }

    /// The listed stocks decide whether a code is known.
    async fn stock_noting(&self, code: TsCode, ledger: &Ledger) -> Result<Stock, MarketError> {
        let stocks = self.stocks_noting(ledger).await?;
        stocks.by_code.get(&code).cloned().ok_or_else(|| MarketError::NotFound(format!("unknown code {code}: no listed A-share has it")))
    }

    /// The listed stocks; when their refresh fails, the stored list (cached as stale for a breaker
    /// window).
    async fn stocks_noting(&self, ledger: &Ledger) -> Result<Arc<StockList>, MarketError> {
        let stocks = shared(
            self.stocks
                .try_get_with((), async {
                    if let Some(records) = self.stored_if_fresh(&STOCK_BASIC, Vec::new(), "ts_code").await {
                        return Ok(Arc::new(StockList { by_code: stock_list(&records), stale: false }));
                    }
                    let request = params(&[("list_status", "L".into())]);
                    let fresh = async {
                        let fetched = self.fetch(STOCK_BASIC.name, request, &STOCK_BASIC.fields(), ledger).await?;
                        Ok(StockList { by_code: stock_list(&self.store(&STOCK_BASIC, fetched).await), stale: false })
                    };
                    let stored = async {
                        let by_code = stock_list(&self.stored(&STOCK_BASIC, Vec::new(), None).await);
                        Some(StockList { by_code, stale: true }).filter(|list| !list.by_code.is_empty())
                    };
                    or_stored(fresh.await, stored, ledger).await.map(Arc::new)
                })
                .await,
        )?;
        if stocks.stale {
            ledger.went_stale();
        }
        Ok(stocks)
    }

    /// The newest session whose daily bars are final: today from 16:00 Beijing time on an open
    /// day, else the open day before.
    pub async fn last_closed_session(&self) -> Result<NaiveDate, MarketError> {
        let calendar = self.calendar().await?;
        calendar
            .last_session_by(Utc::now(), SESSION_FINAL)
            .ok_or_else(|| MarketError::NotFound("the trade calendar has no closed session yet".into()))
    }

    /// The `n` stocks of largest total market value on `day` (its whole-market `daily_basic`, one
    /// upstream call when the warehouse does not hold that day), largest first.
    pub async fn largest_by_market_value(&self, day: NaiveDate, n: usize) -> Result<Vec<TsCode>, MarketError> {
        let stored = {
            let warehouse = self.warehouse();
            blocking(move || warehouse.largest_by_market_value(day, n)).await?
        };
        let codes = match stored {
            Some(codes) => codes,
            None => {
                let request = params(&[("trade_date", compact(day))]);
                let fetched = self.fetch(DAILY_BASIC.name, request, &DAILY_BASIC.fields(), &Ledger::default()).await?;
                let mut rows = self.store(&DAILY_BASIC, fetched).await;
                rows.sort_by(|a, b| b.number("total_mv").unwrap_or(0.0).total_cmp(&a.number("total_mv").unwrap_or(0.0)));
                rows.iter().take(n).filter_map(|r| r.text("ts_code").map(str::to_string)).collect()
            }
        };
        Ok(codes.iter().filter_map(|code| code.parse().ok()).collect())
    }

    /// The SSE calendar.
    pub async fn calendar(&self) -> Result<Arc<Calendar>, MarketError> {
        self.calendar_noting(&Ledger::default()).await
    }

    /// The SSE calendar, read from the warehouse, or fetched whole when it does not reach today;
    /// when that fetch fails, the stored one.
    async fn calendar_noting(&self, ledger: &Ledger) -> Result<Arc<Calendar>, MarketError> {
        let fresh = shared(
            self.calendar
                .try_get_with((), async {
                    let today = china_today(Utc::now());
                    let calendar = self.stored_calendar().await;
                    if calendar.covers(today) {
                        return Ok(Arc::new(calendar));
                    }
                    let end = format!("{}1231", today.year());
                    let request = params(&[("exchange", "SSE".into()), ("start_date", FIRST_TRADE_DATE.into()), ("end_date", end)]);
                    let fetched = self.fetch(TRADE_CAL.name, request, &TRADE_CAL.fields(), ledger).await?;
                    Ok(Arc::new(calendar_of(&self.store(&TRADE_CAL, fetched).await)))
                })
                .await,
        );
        let stored = async { Some(Arc::new(self.stored_calendar().await)).filter(|calendar| !calendar.is_empty()) };
        or_stored(fresh, stored, ledger).await
    }

    async fn stored_calendar(&self) -> Calendar {
        calendar_of(&self.stored(&TRADE_CAL, vec![Cell::Text("SSE".into())], None).await)
    }

    /// Stored rows under `key_prefix` if there are any and the newest was fetched within a day.
    async fn stored_if_fresh(&self, spec: &'static TableSpec, key_prefix: Vec<Cell>, order: &'static str) -> Option<Vec<Record>> {
        let records = self.stored(spec, key_prefix, Some(order)).await;
        let newest = records.iter().map(|r| r.fetched_at).max();
        newest.filter(|at| Utc::now() - *at < REFERENCE_MAX_AGE).map(|_| records)
    }

    /// Stored rows of `spec` under `key_prefix`, newest first by `order_desc` if given; none when
    /// the warehouse cannot be read (the upstream is asked instead).
    async fn stored(&self, spec: &'static TableSpec, key_prefix: Vec<Cell>, order_desc: Option<&'static str>) -> Vec<Record> {
        let warehouse = self.warehouse();
        match blocking(move || warehouse.select(spec, &key_prefix, order_desc)).await {
            Ok(records) => records,
            Err(error) => {
                self.warehouse_failed("read", &error);
                Vec::new()
            }
        }
    }

    /// Keeps what was fetched and returns its rows; when the warehouse cannot take them, the rows
    /// are returned all the same (kept in memory by the caches only).
    async fn store(&self, spec: &'static TableSpec, fetched: Fetched) -> Vec<Record> {
        let records = Arc::new(fetched.records(spec, Utc::now()));
        self.keep(spec, records.clone()).await;
        Arc::unwrap_or_clone(records)
    }

    /// Writes `records` of `spec` to the warehouse; a failure marks the warehouse degraded and is
    /// not the caller's (the records serve from memory all the same).
    async fn keep(&self, spec: &'static TableSpec, records: Arc<Vec<Record>>) {
        // Already recorded as the warehouse's trouble, and the caller answers from `records`.
        let _ = self.write(spec.name, move |warehouse| warehouse.upsert(spec, &records)).await;
    }

    /// One write on the warehouse's writer; its outcome is the warehouse's health (`what` names
    /// the write in the health check).
    async fn write<T: Send + 'static>(
        &self,
        what: &str,
        write: impl FnOnce(&Warehouse) -> Result<T, MarketError> + Send + 'static,
    ) -> Result<T, MarketError> {
        let warehouse = self.warehouse();
        let outcome = blocking(move || write(&warehouse)).await;
        match &outcome {
            Ok(_) => *self.warehouse_health.lock().expect("warehouse health") = WarehouseHealth::default(),
            Err(error) => self.warehouse_failed(&format!("write of {what}"), error),
        }
        outcome
    }

    /// One metered upstream query behind the source's breaker, its outcome recorded for the
    /// health check.
    async fn fetch(&self, api_name: &str, params: Map<String, Value>, fields: &[&str], ledger: &Ledger) -> Result<Fetched, MarketError> {
        let fetched = self.guarded("tushare", &self.tushare_breaker, self.tushare.query(api_name, params, fields)).await?;
        ledger.spent(fetched.cost_pts);
        Ok(fetched)
    }

    /// One upstream call behind `source`'s breaker (refused at once while it is open), its outcome
    /// recorded for the health check.
    async fn guarded<T>(
        &self,
        source: &'static str,
        breaker: &Breaker,
        call: impl std::future::Future<Output = Result<T, MarketError>>,
    ) -> Result<T, MarketError> {
        let started = std::time::Instant::now();
        let result = match breaker.call_with(MarketError::is_source_failure, call).await {
            Ok(answer) => Ok(answer),
            Err(failsafe::Error::Inner(error)) => Err(error),
            Err(failsafe::Error::Rejected) => {
                record_call(source, CallOutcome::Refused, None);
                return Err(MarketError::SourceDown { source_name: source, retry_after_secs: self.breaker_window.as_secs().max(1) });
            }
        };
        record_call(source, if result.is_ok() { CallOutcome::Ok } else { CallOutcome::Error }, Some(started.elapsed()));
        let mut health = self.health.lock().expect("health");
        let entry = health.entry(source).or_default();
        match &result {
            Ok(_) => entry.last_success = Some(Utc::now()),
            Err(e) => {
                tracing::warn!(source, error = %e, "upstream call failed");
                entry.last_error = Some(Utc::now());
                entry.last_error_message = Some(e.to_string());
            }
        }
        result
    }

    /// A symbol only Yahoo lists (US, Hong Kong, FX): one metric on one day where it trades
    /// (default: its latest), from the warehouse or one chart call for the days around it.
    async fn yahoo_price(&self, symbol: &str, trade_date: Option<NaiveDate>, metric: Metric) -> Result<PriceAnswer, MarketError> {
        let tomorrow = Utc::now().date_naive() + chrono::Days::new(1);
        if let Some(day) = trade_date.filter(|day| *day > tomorrow) {
            return Err(MarketError::InvalidInput {
                field: "trade_date",
                message: format!("trade_date {} is in the future", compact(day)),
            });
        }
        let (rows, cost_pts) = self.yahoo_rows(symbol, trade_date).await?;
        let row = match trade_date {
            Some(day) => rows.iter().find(|r| r.date("trade_date") == Some(day)),
            None => rows.last(),
        };
        let row = row.ok_or_else(|| match trade_date {
            Some(day) => MarketError::NotFound(format!("{symbol} did not trade on {} (a holiday or a halt there?)", compact(day))),
            None => MarketError::NotFound(format!("{symbol} has not traded in the last two weeks")),
        })?;
        let unit = match metric {
            Metric::Vol => "shares",
            m if m.unit() == "CNY" => row.text("currency").unwrap_or_default(),
            m => m.unit(),
        };
        Ok(PriceAnswer {
            code: row.text("symbol").unwrap_or(symbol).to_string(),
            name: row.text("name").unwrap_or(symbol).to_string(),
            unit: unit.to_string(),
            reading: Reading::of(row, metric, row.date("trade_date").expect("a key column is never null"), cost_pts),
            stale: false,
            agreement: None,
            fallback_from: None,
        })
    }

    /// The rows a Yahoo answer is read from, oldest first: the stored row of `day`, else the two
    /// weeks up to `day` (or up to today) from one chart call, kept; concurrent askers share it.
    async fn yahoo_rows(&self, symbol: &str, day: Option<NaiveDate>) -> Result<(Arc<Vec<Record>>, i32), MarketError> {
        let (missed, fetched) = (AtomicBool::new(false), AtomicBool::new(false));
        let rows = shared(
            self.yahoo_days
                .try_get_with((symbol.to_string(), day), async {
                    missed.store(true, Ordering::Relaxed);
                    if let Some(day) = day {
                        let stored = self.stored(&YAHOO_DAILY, vec![Cell::Text(symbol.to_string()), Cell::Date(day)], None).await;
                        if !stored.is_empty() {
                            return Ok(Arc::new(stored));
                        }
                    }
                    let to = day.unwrap_or_else(|| Utc::now().date_naive() + chrono::Days::new(1));
                    let chart =
                        self.guarded("yahoo", &self.yahoo_breaker, self.yahoo.chart(symbol, to - chrono::Days::new(14), to)).await?;
                    fetched.store(true, Ordering::Relaxed);
                    let records = Arc::new(chart.records(Utc::now()));
                    self.keep(&YAHOO_DAILY, records.clone()).await;
                    Ok(records)
                })
                .await,
        );
        cache_lookup("yahoo_days", missed.into_inner());
        Ok((rows?, i32::from(fetched.into_inner())))
    }
}

/// Counts one lookup of a row cache, for `/metrics`: a miss is a lookup that had to read the
/// warehouse or an upstream.
fn cache_lookup(cache: &'static str, missed: bool) {
    metrics::counter!("twilight_cache_lookups_total", "cache" => cache, "result" => if missed { "miss" } else { "hit" }).increment(1);
}

/// `fresh`, or when it failed for its upstream's sake, what `stored` finds (marked stale); the
/// upstream's error when the warehouse has nothing either.
async fn or_stored<T>(
    fresh: Result<T, MarketError>,
    stored: impl std::future::Future<Output = Option<T>>,
    ledger: &Ledger,
) -> Result<T, MarketError> {
    match fresh {
        Err(error) if error.is_source_failure() => match stored.await {
            Some(value) => {
                ledger.went_stale();
                Ok(value)
            }
            None => Err(error),
        },
        fresh => fresh,
    }
}

fn stock_list(records: &[Record]) -> HashMap<TsCode, Stock> {
    records
        .iter()
        .filter_map(|r| {
            let code: TsCode = r.text("ts_code")?.parse().ok()?;
            Some((code, Stock { code, name: r.text("name").unwrap_or_default().to_string(), list_date: r.date("list_date") }))
        })
        .collect()
}

fn calendar_of(records: &[Record]) -> Calendar {
    let last = records.iter().filter_map(|r| r.date("cal_date")).max();
    let open = records.iter().filter(|r| r.number("is_open") == Some(1.0)).filter_map(|r| r.date("cal_date")).collect();
    Calendar::new(open, last)
}
