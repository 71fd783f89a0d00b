//! The SSE/SZSE trade calendar (both exchanges, and the BSE, keep the same days).
//!
//! Real closures from 1990-12-19 (the SSE's first session) through [`HOLIDAY_DATA_END`]; see
//! `holidays.rs` for where they come from. Later dates are guesses: every weekday is open except
//! January 1, since the next year's closures are only announced in December.

mod holidays;

use chrono::{Datelike, Days, NaiveDate, Weekday};

use holidays::HOLIDAYS;

/// The first trading day: the SSE opened on Wednesday 1990-12-19.
pub const FIRST_OPEN_DAY: NaiveDate = NaiveDate::from_ymd_opt(1990, 12, 19).expect("valid date");
/// The last day covered by the real closure list.
pub const HOLIDAY_DATA_END: NaiveDate = NaiveDate::from_ymd_opt(2026, 12, 31).expect("valid date");
/// A Monday before [`FIRST_OPEN_DAY`], from which weekdays are counted.
const WEEK_EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1990, 12, 17).expect("valid date");

/// Whether the exchanges trade on `day`.
pub fn is_open(day: NaiveDate) -> bool {
    if day < FIRST_OPEN_DAY || matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
        return false;
    }
    if day <= HOLIDAY_DATA_END {
        HOLIDAYS.binary_search(&yyyymmdd(day)).is_err()
    } else {
        day.ordinal() != 1
    }
}

/// The last open day strictly before `day`, if trading had begun by then.
pub fn prev_open(day: NaiveDate) -> Option<NaiveDate> {
    let mut d = day.pred_opt()?;
    while d >= FIRST_OPEN_DAY {
        if is_open(d) {
            return Some(d);
        }
        d = d.pred_opt()?;
    }
    None
}

/// The first open day strictly after `day`.
pub fn next_open(day: NaiveDate) -> NaiveDate {
    let mut d = day.max(WEEK_EPOCH);
    loop {
        d = d.succ_opt().expect("far from the end of chrono's range");
        if is_open(d) {
            return d;
        }
    }
}

/// `day` itself when open, else the next open day.
pub fn open_on_or_after(day: NaiveDate) -> NaiveDate {
    if is_open(day) {
        day
    } else {
        next_open(day)
    }
}

/// Open days in `start..=end`, ascending; `.rev()` walks them descending.
pub fn open_days(start: NaiveDate, end: NaiveDate) -> impl DoubleEndedIterator<Item = NaiveDate> {
    days(start.max(FIRST_OPEN_DAY), end).filter(|d| is_open(*d))
}

/// Every calendar day in `start..=end`, open or not, ascending; `.rev()` walks them descending.
pub fn days(start: NaiveDate, end: NaiveDate) -> impl DoubleEndedIterator<Item = NaiveDate> {
    let span = if end < start { 0 } else { (end - start).num_days() as u64 + 1 };
    (0..span).map(move |k| start + Days::new(k))
}

/// The trading-day number of an open `day` (0 for [`FIRST_OPEN_DAY`]); `None` when it is closed.
///
/// Computed without walking the calendar, so pricing any day costs a couple of binary searches.
pub fn index(day: NaiveDate) -> Option<u32> {
    if !is_open(day) {
        return None;
    }
    let holidays_before = HOLIDAYS.partition_point(|&h| h < yyyymmdd(day));
    let guessed_closures_before = (HOLIDAY_DATA_END.year() + 1..=day.year())
        .filter_map(|y| NaiveDate::from_ymd_opt(y, 1, 1))
        .filter(|d| *d < day && !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .count();
    let n = weekdays_before(day) - weekdays_before(FIRST_OPEN_DAY) - holidays_before as u64 - guessed_closures_before as u64;
    Some(n as u32)
}

/// Weekdays in `WEEK_EPOCH..day`.
fn weekdays_before(day: NaiveDate) -> u64 {
    let n = (day - WEEK_EPOCH).num_days() as u64;
    n / 7 * 5 + (n % 7).min(5)
}

/// `day` as the number YYYYMMDD.
pub fn yyyymmdd(day: NaiveDate) -> u32 {
    day.year() as u32 * 10_000 + day.month() * 100 + day.day()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn holiday_list_is_sorted_weekday_dates_in_range() {
        assert!(HOLIDAYS.windows(2).all(|w| w[0] < w[1]));
        for &h in HOLIDAYS {
            let day = NaiveDate::parse_from_str(&h.to_string(), "%Y%m%d").unwrap();
            assert!(!matches!(day.weekday(), Weekday::Sat | Weekday::Sun), "{h}");
            assert!((FIRST_OPEN_DAY..=HOLIDAY_DATA_END).contains(&day), "{h}");
        }
    }

    #[test]
    fn known_closures_and_sessions() {
        for day in d(2024, 2, 9).iter_days().take_while(|x| *x <= d(2024, 2, 16)) {
            assert!(!is_open(day), "Spring Festival 2024: {day}");
        }
        assert!(is_open(d(2024, 2, 8)) && is_open(d(2024, 2, 19)));
        for day in 1..=7 {
            assert!(!is_open(d(2024, 10, day)), "National Day 2024: {day}");
        }
        assert!(is_open(d(2024, 10, 8)));
        assert!(!is_open(d(2025, 1, 1)));
        assert!(is_open(d(2025, 1, 2)));
        assert!(is_open(d(2026, 11, 25)), "an ordinary Wednesday");
        assert!(!is_open(d(2026, 11, 28)) && !is_open(d(2026, 11, 29)), "a weekend");
        assert!(is_open(FIRST_OPEN_DAY) && !is_open(d(1990, 12, 18)));
    }

    #[test]
    fn yearly_session_counts_match_the_source_list() {
        let sessions = |y| open_days(d(y, 1, 1), d(y, 12, 31)).count();
        assert_eq!([sessions(2023), sessions(2024), sessions(2025), sessions(2026)], [242, 242, 243, 242]);
        assert_eq!(open_days(FIRST_OPEN_DAY, HOLIDAY_DATA_END).count(), 8797, "days in calendar.json");
    }

    #[test]
    fn after_the_data_only_new_year_closes_weekdays() {
        assert!(!is_open(d(2027, 1, 1)));
        assert!(is_open(d(2027, 2, 10)), "no Spring Festival guess");
        assert!(!is_open(d(2027, 1, 2)), "a Saturday");
    }

    #[test]
    fn prev_and_next_skip_closures() {
        assert_eq!(prev_open(d(2024, 2, 19)), Some(d(2024, 2, 8)));
        assert_eq!(next_open(d(2024, 2, 8)), d(2024, 2, 19));
        assert_eq!(open_on_or_after(d(2024, 10, 1)), d(2024, 10, 8));
        assert_eq!(open_on_or_after(d(2024, 10, 8)), d(2024, 10, 8));
        assert_eq!(prev_open(FIRST_OPEN_DAY), None);
        assert_eq!(next_open(d(1980, 1, 1)), FIRST_OPEN_DAY);
    }

    #[test]
    fn index_counts_open_days() {
        assert_eq!(index(FIRST_OPEN_DAY), Some(0));
        assert_eq!(index(d(2024, 2, 10)), None);
        let (start, end) = (d(2023, 12, 1), d(2027, 3, 1));
        for (expected, day) in (index(start).unwrap()..).zip(open_days(start, end)) {
            assert_eq!(index(day), Some(expected), "{day}");
        }
        let from_first = open_days(FIRST_OPEN_DAY, d(2024, 12, 31)).count() as u32;
        assert_eq!(index(d(2024, 12, 31)), Some(from_first - 1));
    }

    #[test]
    fn open_days_run_both_ways() {
        let asc: Vec<_> = open_days(d(2024, 9, 27), d(2024, 10, 9)).collect();
        assert_eq!(asc, [d(2024, 9, 27), d(2024, 9, 30), d(2024, 10, 8), d(2024, 10, 9)]);
        let desc: Vec<_> = open_days(d(2024, 9, 27), d(2024, 10, 9)).rev().collect();
        assert_eq!(desc.first(), Some(&d(2024, 10, 9)));
        assert_eq!(open_days(d(2024, 10, 9), d(2024, 9, 27)).count(), 0);
    }
}
