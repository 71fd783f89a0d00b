//! Histories: one metric of one symbol over a range of sessions, oldest first, as charts draw
//! them. The warehouse answers the sessions it holds; the ones it lacks come from one upstream
//! range call per (table, code), shared by every concurrent asker and not repeated for
//! [`NEGATIVE_TTL`] (a suspended stock's missing days stay missing); while Tushare is down, daily
//! bars come from TDX.

use std::collections::BTreeMap;

use super::*;

/// One metric of one symbol over sessions, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    /// The symbol as its source spells it (`600519.SH`, `AAPL`).
    pub code: String,
    pub name: String,
    pub metric: Metric,
    /// The metric's unit; for a price of a symbol Yahoo lists, its currency.
    pub unit: String,
    /// (session, value), oldest first; sessions with no value (suspended, not stated) left out.
    pub points: Vec<(NaiveDate, f64)>,
    /// The source most points were read from, and the table.
    pub source: String,
    pub table: &'static str,
    /// When the newest of the rows read was fetched.
    pub fetched_at: Option<DateTime<Utc>>,
    /// The day the stock was listed, when it was after the range began.
    pub listed_after_start: Option<NaiveDate>,
    /// Upstream points this history spent (0 when the warehouse held it all).
    pub cost_pts: i32,
    /// Some sessions are missing because the upstream failed.
    pub stale: bool,
}

/// One range call: (table, code, first day, last day).
pub(super) type RangeKey = (&'static str, String, NaiveDate, NaiveDate);

/// Rows by day, one per day: the answering source's where it has one (Tushare's for A-shares).
type ByDay = BTreeMap<NaiveDate, Record>;

impl Market {
    /// `metric` of `symbol` for every session from `from` through the last one closed.
    pub async fn history(&self, symbol: &Symbol, metric: Metric, from: NaiveDate) -> Result<History, MarketError> {
        match route::route(symbol, metric)? {
            Route::AShare { code, table } => self.a_share_history(code, table, metric, from).await,
            Route::Yahoo { symbol } => self.yahoo_history(&symbol, metric, from).await,
        }
    }

    async fn a_share_history(
        &self,
        code: TsCode,
        spec: &'static TableSpec,
        metric: Metric,
        from: NaiveDate,
    ) -> Result<History, MarketError> {
        let ledger = Ledger::default();
        let stock = self.stock_noting(code, &ledger).await?;
        let calendar = self.calendar_noting(&ledger).await?;
        let through = calendar
            .last_session_by(Utc::now(), SESSION_FINAL)
            .ok_or_else(|| MarketError::NotFound("the trade calendar has no closed session yet".into()))?;
        let start = stock.list_date.map_or(from, |listed| listed.max(from));
        let mut by_day = self.stored_by_day(spec, code.to_string(), start, through).await;
        let sessions = calendar.open_between(start.pred_opt(), through);
        let missing: Vec<NaiveDate> = sessions.iter().copied().filter(|day| !by_day.contains_key(day)).collect();
        if let (Some(&first), Some(&last)) = (missing.first(), missing.last()) {
            let fetched = self
                .range((spec.name, code.to_string(), first, last), async {
                    let request = params(&[("ts_code", code.to_string()), ("start_date", compact(first)), ("end_date", compact(last))]);
                    let fetched = self.fetch(spec.name, request, &spec.fields(), &ledger).await?;
                    Ok(self.store(spec, fetched).await)
                })
                .await;
            // Tushare is down: TDX's bars stand in for daily rows, as they do for `/price`.
            let fetched = match fetched {
                Err(error) if error.is_source_failure() && route::tdx_stands_in(spec) => self.tdx_bars(code, first).await.ok_or(error),
                fetched => fetched,
            };
            self.merge_fetched(&mut by_day, fetched, &ledger)?;
        }
        let listed_after_start = stock.list_date.filter(|listed| *listed > from);
        Ok(History {
            name: stock.name.clone(),
            unit: metric.unit().to_string(),
            listed_after_start,
            ..history(code, spec, metric, &by_day, ledger)
        })
    }

    /// Yahoo lists no calendar here: the stored days serve when they reach to within a week of the
    /// range's start and four days of today; otherwise one chart call for the range.
    async fn yahoo_history(&self, symbol: &str, metric: Metric, from: NaiveDate) -> Result<History, MarketError> {
        let ledger = Ledger::default();
        let today = Utc::now().date_naive();
        let mut by_day = self.stored_by_day(&YAHOO_DAILY, symbol.to_string(), from, today).await;
        let reaches_start = by_day.first_key_value().is_some_and(|(day, _)| *day <= from + chrono::Days::new(7));
        let reaches_today = by_day.last_key_value().is_some_and(|(day, _)| *day + chrono::Days::new(4) >= today);
        if !(reaches_start && reaches_today) {
            let fetched = self
                .range((YAHOO_DAILY.name, symbol.to_string(), from, today), async {
                    let to = today + chrono::Days::new(1);
                    let chart = self.guarded("yahoo", &self.yahoo_breaker, self.yahoo.chart(symbol, from, to)).await?;
                    ledger.spent(1);
                    let records = Arc::new(chart.records(Utc::now()));
                    self.keep(&YAHOO_DAILY, records.clone()).await;
                    Ok(Arc::unwrap_or_clone(records))
                })
                .await;
            self.merge_fetched(&mut by_day, fetched, &ledger)?;
        }
        let newest = by_day.last_key_value().map(|(_, row)| row.clone());
        let unit = match (metric, &newest) {
            (Metric::Vol, _) => "shares".to_string(),
            (m, Some(row)) if m.unit() == "CNY" => row.text("currency").unwrap_or_default().to_string(),
            (m, _) => m.unit().to_string(),
        };
        let name = newest.as_ref().and_then(|row| row.text("name")).unwrap_or(symbol).to_string();
        Ok(History { name, unit, ..history(symbol, &YAHOO_DAILY, metric, &by_day, ledger) })
    }

    /// Stored rows of `code` in `spec` from `start` through `through`, one per day.
    async fn stored_by_day(&self, spec: &'static TableSpec, code: String, start: NaiveDate, through: NaiveDate) -> ByDay {
        let mut by_day = ByDay::new();
        for row in self.stored(spec, vec![Cell::Text(code)], None).await {
            let Some(day) = row.date("trade_date").filter(|day| (start..=through).contains(day)) else { continue };
            let answering = warehouse::source_name(&row.source) == "tushare" || spec.name == YAHOO_DAILY.name;
            if answering || !by_day.contains_key(&day) {
                by_day.insert(day, row);
            }
        }
        by_day
    }

    /// Exactly one upstream call for all concurrent askers of `key`, remembered for [`NEGATIVE_TTL`].
    async fn range(
        &self,
        key: RangeKey,
        call: impl std::future::Future<Output = Result<Vec<Record>, MarketError>>,
    ) -> Result<Arc<Vec<Record>>, MarketError> {
        let missed = AtomicBool::new(false);
        let rows = shared(
            self.ranges
                .try_get_with(key, async {
                    missed.store(true, Ordering::Relaxed);
                    call.await.map(Arc::new)
                })
                .await,
        );
        cache_lookup("ranges", missed.into_inner());
        rows
    }

    /// Adds what a range call fetched; when the upstream failed, what is stored serves, marked
    /// stale (and the failure is the answer when nothing is).
    fn merge_fetched(
        &self,
        by_day: &mut ByDay,
        fetched: Result<Arc<Vec<Record>>, MarketError>,
        ledger: &Ledger,
    ) -> Result<(), MarketError> {
        match fetched {
            Ok(rows) => {
                for row in rows.iter() {
                    if let Some(day) = row.date("trade_date") {
                        by_day.insert(day, row.clone());
                    }
                }
                Ok(())
            }
            Err(error) if error.is_source_failure() && !by_day.is_empty() => {
                ledger.went_stale();
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// The history of `metric` in the rows of `by_day` (name and unit left for the caller).
fn history(code: impl ToString, spec: &'static TableSpec, metric: Metric, by_day: &ByDay, ledger: Ledger) -> History {
    let points = by_day.iter().filter_map(|(day, row)| Some((*day, row.number(metric.name())?))).collect();
    let mut sources = BTreeMap::<&str, usize>::new();
    for row in by_day.values() {
        *sources.entry(row.source.as_str()).or_default() += 1;
    }
    let source = sources.into_iter().max_by_key(|(_, rows)| *rows).map(|(source, _)| source.to_string()).unwrap_or_default();
    let (cost_pts, stale) = ledger.into_parts();
    History {
        code: code.to_string(),
        name: String::new(),
        metric,
        unit: String::new(),
        points,
        source,
        table: spec.name,
        fetched_at: by_day.values().map(|row| row.fetched_at).max(),
        listed_after_start: None,
        cost_pts,
        stale,
    }
}
