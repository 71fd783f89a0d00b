//! One search as asked: validated, with `since` resolved to a date, and the normalised key under
//! which identical searches share a cached answer.

use chrono::{Days, Months, NaiveDate};

use crate::SearchError;

pub const MAX_QUERY_CHARS: usize = 200;
pub const MAX_RESULTS: usize = 20;
pub const DEFAULT_RESULTS: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// Trimmed, inner whitespace collapsed.
    pub query: String,
    /// Only results published on or after this day (Beijing time) when their date is known.
    pub since: Option<NaiveDate>,
    pub max_results: usize,
}

impl SearchRequest {
    /// Validates the three inputs as they arrive (query string or tool arguments); `today` (in
    /// Beijing) anchors a relative `since` such as `7d`.
    pub fn parse(query: Option<&str>, since: Option<&str>, max_results: Option<&str>, today: NaiveDate) -> Result<Self, SearchError> {
        let invalid = |field, message: String| SearchError::InvalidInput { field, message };
        let query = query.map(|q| q.split_whitespace().collect::<Vec<_>>().join(" ")).unwrap_or_default();
        if query.is_empty() {
            return Err(invalid("query", "missing required parameter 'query', like query=600519 业绩公告 2026".into()));
        }
        let chars = query.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(invalid("query", format!("query is {chars} characters long; at most {MAX_QUERY_CHARS}")));
        }
        let since =
            since.map(str::trim).filter(|s| !s.is_empty()).map(|s| parse_since(s, today).map_err(|m| invalid("since", m))).transpose()?;
        let max_results = match max_results.map(str::trim) {
            None | Some("") => DEFAULT_RESULTS,
            Some(n) => match n.parse::<usize>() {
                Ok(n @ 1..=MAX_RESULTS) => n,
                _ => return Err(invalid("max_results", format!("max_results must be a whole number from 1 to {MAX_RESULTS}, not '{n}'"))),
            },
        };
        Ok(SearchRequest { query, since, max_results })
    }

    /// Identical searches share this key: case and spacing do not matter, and a relative `since`
    /// counts as the day it names.
    pub fn cache_key(&self) -> String {
        let since = self.since.map(|d| d.to_string()).unwrap_or_default();
        format!("{}\u{1f}{since}\u{1f}{}", self.query.to_lowercase(), self.max_results)
    }
}

/// `YYYY-MM-DD` (or `YYYYMMDD`), or a span back from today: `7d`, `2w`, `1m`, `1y`.
fn parse_since(since: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    let problem = || format!("since must be a date like 2026-04-01 or a span back from today like 7d, 2w, 1m or 1y, not '{since}'");
    let date = match since.char_indices().last() {
        Some((at, unit @ ('d' | 'w' | 'm' | 'y'))) => {
            let n: u32 = since[..at].parse().ok().filter(|n| (1..=3650).contains(n)).ok_or_else(problem)?;
            match unit {
                'd' => today.checked_sub_days(Days::new(n.into())),
                'w' => today.checked_sub_days(Days::new(u64::from(n) * 7)),
                'm' => today.checked_sub_months(Months::new(n)),
                _ => today.checked_sub_months(Months::new(n.saturating_mul(12))),
            }
            .ok_or_else(problem)?
        }
        _ => twilight_core::parse_date(since).map_err(|_| problem())?,
    };
    if date > today {
        return Err(format!("since {date} is in the future (today in Beijing is {today})"));
    }
    Ok(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
    }

    fn parse(query: Option<&str>, since: Option<&str>, max: Option<&str>) -> Result<SearchRequest, SearchError> {
        SearchRequest::parse(query, since, max, today())
    }

    fn field(result: Result<SearchRequest, SearchError>) -> &'static str {
        match result {
            Err(SearchError::InvalidInput { field, .. }) => field,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn accepts_dates_and_spans_and_defaults() {
        let request = parse(Some("  600519   业绩公告 2026 "), None, None).unwrap();
        assert_eq!((request.query.as_str(), request.since, request.max_results), ("600519 业绩公告 2026", None, DEFAULT_RESULTS));
        let day = |y, m, d| Some(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        assert_eq!(parse(Some("q"), Some("2026-11-01"), Some("20")).unwrap().since, day(2026, 11, 1));
        assert_eq!(parse(Some("q"), Some("7d"), None).unwrap().since, day(2026, 11, 26));
        assert_eq!(parse(Some("q"), Some("2w"), None).unwrap().since, day(2026, 11, 19));
        assert_eq!(parse(Some("q"), Some("1m"), None).unwrap().since, day(2026, 11, 3));
        assert_eq!(parse(Some("q"), Some("1y"), None).unwrap().since, day(2025, 12, 3));
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(field(parse(None, None, None)), "query");
        assert_eq!(field(parse(Some("   "), None, None)), "query");
        assert_eq!(field(parse(Some(&"长".repeat(201)), None, None)), "query");
        assert!(parse(Some(&"长".repeat(200)), None, None).is_ok());
        for bad in ["yesterday", "0d", "7x", "2026-13-01", "2027-01-01", "-3d", "99999d"] {
            assert_eq!(field(parse(Some("q"), Some(bad), None)), "since", "{bad}");
        }
        for bad in ["0", "21", "-1", "ten", "1.5"] {
            assert_eq!(field(parse(Some("q"), None, Some(bad))), "max_results", "{bad}");
        }
    }

    #[test]
    fn identical_searches_share_a_key() {
        let a = parse(Some("Moutai  业绩"), Some("7d"), None).unwrap();
        let b = parse(Some("moutai 业绩"), Some("2026-11-26"), Some("10")).unwrap();
        assert_eq!(a.cache_key(), b.cache_key());
        assert_ne!(a.cache_key(), parse(Some("moutai 业绩"), None, None).unwrap().cache_key());
    }
}
