use std::str::FromStr;

use crate::warehouse::{TableSpec, DAILY, DAILY_BASIC};

/// A number `/price` can answer, and the daily table that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Close,
    Open,
    High,
    Low,
    PreClose,
    Change,
    PctChg,
    Vol,
    Amount,
    Pe,
    PeTtm,
    Pb,
    Ps,
    TotalMv,
    CircMv,
    TurnoverRate,
}

const ALL: [(Metric, &str, &str); 16] = [
    (Metric::Close, "close", "CNY"),
    (Metric::Open, "open", "CNY"),
    (Metric::High, "high", "CNY"),
    (Metric::Low, "low", "CNY"),
    (Metric::PreClose, "pre_close", "CNY"),
    (Metric::Change, "change", "CNY"),
    (Metric::PctChg, "pct_chg", "%"),
    (Metric::Vol, "vol", "lots (100 shares)"),
    (Metric::Amount, "amount", "thousand CNY"),
    (Metric::Pe, "pe", "ratio"),
    (Metric::PeTtm, "pe_ttm", "ratio"),
    (Metric::Pb, "pb", "ratio"),
    (Metric::Ps, "ps", "ratio"),
    (Metric::TotalMv, "total_mv", "ten thousand CNY"),
    (Metric::CircMv, "circ_mv", "ten thousand CNY"),
    (Metric::TurnoverRate, "turnover_rate", "%"),
];

impl Metric {
    fn entry(self) -> &'static (Metric, &'static str, &'static str) {
        ALL.iter().find(|(m, _, _)| *m == self).expect("every metric is listed")
    }

    /// The column name, also the spelling the API accepts.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    pub fn unit(self) -> &'static str {
        self.entry().2
    }

    pub fn table(self) -> &'static TableSpec {
        match self {
            Metric::Pe | Metric::PeTtm | Metric::Pb | Metric::Ps | Metric::TotalMv | Metric::CircMv | Metric::TurnoverRate => &DAILY_BASIC,
            _ => &DAILY,
        }
    }

    /// Prices every daily source states alike (TDX's unadjusted bars, Tushare's `daily`), so their
    /// values of one day can be compared; the cite of these says what the other source holds.
    pub fn comparable_across_sources(self) -> bool {
        matches!(self, Metric::Close | Metric::Open | Metric::High | Metric::Low)
    }

    /// What Yahoo's chart states (the rest are A-share figures from `daily_basic`).
    pub fn from_yahoo(self) -> bool {
        self.table().name == "daily" && self != Metric::Amount
    }

    pub fn names() -> impl Iterator<Item = &'static str> {
        ALL.iter().map(|(_, name, _)| *name)
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ALL.iter()
            .find(|(_, name, _)| name.eq_ignore_ascii_case(s.trim()))
            .map(|(m, _, _)| *m)
            .ok_or_else(|| format!("unknown metric '{s}'; one of: {}", Metric::names().collect::<Vec<_>>().join(", ")))
    }
}
