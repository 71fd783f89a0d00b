//! The SSE trading calendar, as loaded from `trade_cal`.

use chrono::NaiveDate;

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
    }
}
