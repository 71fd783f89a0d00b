//! Dates as Tushare writes them (`YYYYMMDD`), and "today" on the exchange's clock.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Asia::Shanghai;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a date: expected YYYYMMDD, like 20260430")]
pub struct DateError(pub String);

/// `2026-04-30 19:30` on China's clock, as customers read a time (a subscription's end).
pub fn china_minute(at: DateTime<Utc>) -> String {
    at.with_timezone(&Shanghai).format("%Y-%m-%d %H:%M").to_string()
}

/// Parses `20260430` (Tushare's form) or `2026-04-30`.
pub fn parse_date(input: &str) -> Result<NaiveDate, DateError> {
    let s = input.trim();
    let format = if s.len() == 10 { "%Y-%m-%d" } else { "%Y%m%d" };
    if !(s.len() == 8 || s.len() == 10) {
        return Err(DateError(s.to_string()));
    }
    NaiveDate::parse_from_str(s, format).map_err(|_| DateError(s.to_string()))
}

/// `YYYYMMDD`, the form every answer and every upstream call uses.
pub fn compact(date: NaiveDate) -> String {
    // Not `format("%Y%m%d")`: that parses the pattern on every call, and this runs per request.
    format!("{:04}{:02}{:02}", date.year(), date.month(), date.day())
}

/// The calendar date in Beijing time, which decides what "today" means for the market.
pub fn china_today(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&Shanghai).date_naive()
}

/// Whether `date` closes a reporting quarter (0331, 0630, 0930, 1231), the only valid `period`s.
pub fn is_quarter_end(date: NaiveDate) -> bool {
    matches!((date.month(), date.day()), (3, 31) | (6, 30) | (9, 30) | (12, 31))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings_and_rejects_junk() {
        let d = NaiveDate::from_ymd_opt(2026, 4, 30).unwrap();
        assert_eq!(parse_date("20260430"), Ok(d));
        assert_eq!(parse_date("2026-04-30"), Ok(d));
        for bad in ["2026043", "20261332", "20260230", "2026/04/30", "", "tomorrow", "202604300"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert_eq!(compact(d), "20260430");
    }

    #[test]
    fn today_is_beijing_time() {
        let late_utc = "2026-11-24T17:30:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(china_today(late_utc), NaiveDate::from_ymd_opt(2026, 11, 25).unwrap());
    }

    #[test]
    fn quarter_ends() {
        assert!(is_quarter_end(NaiveDate::from_ymd_opt(2025, 9, 30).unwrap()));
        assert!(!is_quarter_end(NaiveDate::from_ymd_opt(2025, 9, 29).unwrap()));
    }
}
