//! Scheduled fills: after each session, the whole market's rows of that session from one upstream
//! call per table (`daily`, `daily_basic`, `adj_factor`, and in the reporting seasons the periods
//! being announced, by `fina_indicator_vip`), with the trade calendar kept a month ahead and the
//! listed stocks refreshed, so that an answer about a filled session needs no upstream call at all.
//! Sessions missed while nothing filled (downtime, an outage) are filled in order on the next pass.

use chrono::NaiveTime;

use super::*;

/// When sessions are filled.
#[derive(Debug, Clone)]
pub struct FillSchedule {
    /// Beijing time from which a session's rows are complete at Tushare (`daily_basic` lands last).
    pub after: NaiveTime,
    /// At most this many missed sessions are filled by one pass, the newest; older gaps are
    /// `twilight backfill`'s.
    pub catch_up_sessions: usize,
}

/// What one pass filled.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct FillReport {
    /// Sessions filled, oldest first.
    pub sessions: Vec<NaiveDate>,
    pub rows: usize,
    /// Missed sessions older than the catch-up window, left unfilled.
    pub skipped: usize,
    /// Whether the trade calendar was fetched ahead.
    pub calendar_fetched: bool,
}

/// How far ahead of today the stored calendar is kept.
const CALENDAR_AHEAD: chrono::Days = chrono::Days::new(30);

impl Market {
    /// One pass at `now`: the calendar ahead, then every session over by `schedule.after` Beijing
    /// time and not yet filled, oldest first (a first pass fills the newest only). Stops at the
    /// first session that fails: the ones after it wait for the next pass, so none is skipped.
    pub async fn fill(&self, now: DateTime<Utc>, schedule: &FillSchedule) -> Result<FillReport, MarketError> {
        let mut report = FillReport { calendar_fetched: self.calendar_ahead(now).await?, ..FillReport::default() };
        let calendar = self.calendar().await?;
        let Some(due) = calendar.last_session_by(now, schedule.after) else { return Ok(report) };
        let warehouse = self.warehouse();
        let pending = match blocking(move || warehouse.last_filled_session()).await? {
            Some(last) => calendar.open_between(Some(last), due).to_vec(),
            None => vec![due],
        };
        report.skipped = pending.len().saturating_sub(schedule.catch_up_sessions.max(1));
        if report.skipped > 0 {
            tracing::warn!(skipped = report.skipped, first = %pending[0], "missed sessions beyond the catch-up window are left to `twilight backfill`");
        }
        if pending.is_empty() {
            return Ok(report);
        }
        self.refresh_listed().await?;
        for &session in &pending[report.skipped..] {
            report.rows += self.fill_session(session).await?;
            report.sessions.push(session);
        }
        Ok(report)
    }

    /// Fetches the whole market's rows of `session`, one call per table, and stores them with the
    /// session marked filled in one transaction. A table with no rows yet (published late) fails
    /// the session, to be tried again.
    async fn fill_session(&self, session: NaiveDate) -> Result<usize, MarketError> {
        let ledger = Ledger::default();
        let fetched_at = Utc::now();
        let mut tables = Vec::new();
        for spec in [&DAILY, &DAILY_BASIC, &ADJ_FACTOR] {
            let fetched = self.fetch(spec.name, params(&[("trade_date", compact(session))]), &spec.fields(), &ledger).await?;
            if fetched.table.is_empty() {
                let message = format!("{}: no rows for {} yet", spec.name, compact(session));
                return Err(MarketError::Upstream { source_name: "tushare", message });
            }
            tables.push((spec, fetched.records(spec, fetched_at)));
        }
        let periods = reporting_periods(session);
        for period in &periods {
            let request = params(&[("period", compact(*period))]);
            let fetched = self.fetch("fina_indicator_vip", request, &FINA_INDICATOR.fields(), &ledger).await?;
            tables.push((&FINA_INDICATOR, fetched.records(&FINA_INDICATOR, fetched_at)));
        }
        let rows = self.write("a session fill", move |warehouse| warehouse.store_session(session, &tables, fetched_at)).await?;
        // Rows looked for before they were out are cached as absent; the reports as they were.
        self.day_rows.invalidate_all();
        if !periods.is_empty() {
            self.reports.invalidate_all();
        }
        tracing::info!(session = %session, rows, cost_pts = ledger.into_parts().0, "filled a session");
        Ok(rows)
    }

    /// Fetches the calendar through next year when the stored one ends within [`CALENDAR_AHEAD`]
    /// of `now`, at most once a day (an exchange publishes next year's in December).
    async fn calendar_ahead(&self, now: DateTime<Utc>) -> Result<bool, MarketError> {
        let today = china_today(now);
        if self.calendar().await?.covers(today + CALENDAR_AHEAD) {
            return Ok(false);
        }
        if self.stored_if_fresh(&TRADE_CAL, vec![Cell::Text("SSE".into())], "cal_date").await.is_some() {
            return Ok(false);
        }
        let end = format!("{}1231", today.year() + 1);
        let request = params(&[("exchange", "SSE".into()), ("start_date", compact(today)), ("end_date", end)]);
        let fetched = self.fetch(TRADE_CAL.name, request, &TRADE_CAL.fields(), &Ledger::default()).await?;
        let records = fetched.records(&TRADE_CAL, Utc::now());
        self.write(TRADE_CAL.name, move |warehouse| warehouse.upsert(&TRADE_CAL, &records)).await?;
        self.calendar.invalidate_all();
        Ok(true)
    }

    /// The listed stocks, fetched again (new listings, name changes) before sessions are filled.
    async fn refresh_listed(&self) -> Result<(), MarketError> {
        let request = params(&[("list_status", "L".into())]);
        let fetched = self.fetch(STOCK_BASIC.name, request, &STOCK_BASIC.fields(), &Ledger::default()).await?;
        let records = fetched.records(&STOCK_BASIC, Utc::now());
        self.write(STOCK_BASIC.name, move |warehouse| warehouse.upsert(&STOCK_BASIC, &records)).await?;
        self.stocks.invalidate_all();
        Ok(())
    }
}

/// The report periods being announced around `session`: annual reports from January to April,
/// Q1 in April, half-year in July and August, Q3 in October (the legal deadlines).
fn reporting_periods(session: NaiveDate) -> Vec<NaiveDate> {
    let quarter_end = |year, month, day| NaiveDate::from_ymd_opt(year, month, day).expect("a quarter end");
    let year = session.year();
    match session.month() {
        1..=3 => vec![quarter_end(year - 1, 12, 31)],
        4 => vec![quarter_end(year - 1, 12, 31), quarter_end(year, 3, 31)],
        7 | 8 => vec![quarter_end(year, 6, 30)],
        10 => vec![quarter_end(year, 9, 30)],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seasons_name_the_periods_being_announced() {
        let d = |s: &str| twilight_core::parse_date(s).unwrap();
        assert_eq!(reporting_periods(d("20260210")), [d("20251231")]);
        assert_eq!(reporting_periods(d("20260428")), [d("20251231"), d("20260331")]);
        assert_eq!(reporting_periods(d("20260515")), []);
        assert_eq!(reporting_periods(d("20260828")), [d("20260630")]);
        assert_eq!(reporting_periods(d("20261030")), [d("20260930")]);
        assert_eq!(reporting_periods(d("20261203")), []);
    }
}
