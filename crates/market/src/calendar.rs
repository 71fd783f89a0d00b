//! The SSE trading calendar, as loaded from `trade_cal`.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

#[derive(Debug, Clone, Default)]
pub struct Calendar {
    /// Open days, ascending.
    open: Vec<NaiveDate>,
    /// Last date the calendar knows about (open or not).
    last: Option<NaiveDate>,
}

impl Calendar {
    pub fn new(mut open: Vec<NaiveDate>, last: Option<NaiveDate>) -> Self {
        open.sort_unstable();
        open.dedup();
        Calendar { open, last }
    }

    /// No open day known (nothing stored yet).
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn covers(&self, date: NaiveDate) -> bool {
        self.last.is_some_and(|last| date <= last) && self.open.first().is_some_and(|first| *first <= date)
    }

    pub fn is_open(&self, date: NaiveDate) -> bool {
        self.open.binary_search(&date).is_ok()
    }

    /// The latest open day on or before `date`.
    pub fn on_or_before(&self, date: NaiveDate) -> Option<NaiveDate> {
        let i = self.open.partition_point(|d| *d <= date);
        i.checked_sub(1).map(|i| self.open[i])
    }

    /// The newest session over by `now`, a session being over from `over_at` Beijing time of its day.
    pub fn last_session_by(&self, now: DateTime<Utc>, over_at: NaiveTime) -> Option<NaiveDate> {
        let beijing = now.with_timezone(&chrono_tz::Asia::Shanghai);
        if beijing.time() >= over_at {
            self.on_or_before(beijing.date_naive())
        } else {
            self.before(beijing.date_naive())
        }
    }

    /// The open days after `after` (from the first known, if `None`) through `through`, ascending.
    pub fn open_between(&self, after: Option<NaiveDate>, through: NaiveDate) -> &[NaiveDate] {
        let from = after.map_or(0, |after| self.open.partition_point(|d| *d <= after));
        let to = self.open.partition_point(|d| *d <= through);
        &self.open[from..to.max(from)]
    }

    /// The latest open day strictly before `date`.
    pub fn before(&self, date: NaiveDate) -> Option<NaiveDate> {
        let i = self.open.partition_point(|d| *d < date);
        i.checked_sub(1).map(|i| self.open[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        twilight_core::parse_date(s).unwrap()
    }

    #[test]
    fn finds_neighbouring_open_days() {
        let cal = Calendar::new(vec![d("20260105"), d("20260102"), d("20260106")], Some(d("20261231")));
        assert!(cal.is_open(d("20260105")));
        assert!(!cal.is_open(d("20260103")));
        assert_eq!(cal.on_or_before(d("20260104")), Some(d("20260102")));
        assert_eq!(cal.on_or_before(d("20260105")), Some(d("20260105")));
        assert_eq!(cal.before(d("20260105")), Some(d("20260102")));
        assert_eq!(cal.before(d("20260102")), None);
        assert!(cal.covers(d("20261231")) && !cal.covers(d("20270101")) && !cal.covers(d("20251231")));
        assert_eq!(cal.open_between(Some(d("20260102")), d("20260106")), [d("20260105"), d("20260106")]);
        assert_eq!(cal.open_between(None, d("20260105")), [d("20260102"), d("20260105")]);
        assert!(cal.open_between(Some(d("20260106")), d("20260105")).is_empty());
    }

    #[test]
    fn a_session_is_over_at_the_given_beijing_time() {
        let cal = Calendar::new(vec![d("20260102"), d("20260105")], Some(d("20261231")));
        let over_at = NaiveTime::from_hms_opt(18, 0, 0).unwrap();
        // 09:59:59 and 10:00 UTC are 17:59:59 and 18:00 in Beijing.
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(cal.last_session_by(at("2026-01-05T09:59:59Z"), over_at), Some(d("20260102")));
        assert_eq!(cal.last_session_by(at("2026-01-05T10:00:00Z"), over_at), Some(d("20260105")));
        assert_eq!(cal.last_session_by(at("2026-01-04T12:00:00Z"), over_at), Some(d("20260102")), "a Sunday");
    }
}
