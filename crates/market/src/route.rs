//! The one place that decides which source answers what.
//!
//! | asked for | answered by | beside it | while it is down |
//! |---|---|---|---|
//! | an A-share's day bar (`daily`: prices, volume) | Tushare | TDX (the cite's `agreement`) | TDX's bar (`fallback_from`), else stored rows |
//! | an A-share's valuation (`daily_basic`) or reports (`fina_indicator`) | Tushare | – | stored rows, marked stale |
//! | an A-share's company profile (`company_profile`) | AKTools | – | the stored row, marked stale |
//! | years of A-share history (`twilight backfill`) | TDX | – | – |
//! | US, Hong Kong, FX (`yahoo_daily`) | Yahoo | – | – |
//!
//! The symbol table behind it is [`Symbol`]: `600519.SH` = `sh600519` = `600519.SS` (TDX market 1,
//! `600519`), `0700.HK` = `00700`, `AAPL`.

use twilight_core::{Symbol, TsCode};

use crate::warehouse::{TableSpec, DAILY};
use crate::{MarketError, Metric};

/// Where one `/price` question goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Tushare's `table` (TDX beside it or standing in where [`tdx_stands_in`] says so).
    AShare { code: TsCode, table: &'static TableSpec },
    /// Yahoo's chart, for what Tushare does not list.
    Yahoo { symbol: String },
}

/// Which source answers `metric` of `symbol`; a metric the source does not state is refused, naming it.
pub fn route(symbol: &Symbol, metric: Metric) -> Result<Route, MarketError> {
    match symbol {
        Symbol::AShare(code) => Ok(Route::AShare { code: *code, table: metric.table() }),
        Symbol::Yahoo(symbol) if metric.from_yahoo() => Ok(Route::Yahoo { symbol: symbol.clone() }),
        Symbol::Yahoo(symbol) => Err(MarketError::InvalidInput {
            field: "metric",
            message: format!(
                "{symbol} is priced by Yahoo Finance, which has close, open, high, low, pre_close, change, pct_chg and vol; {} is an A-share figure",
                metric.name()
            ),
        }),
    }
}

/// Whether TDX's bar of a day may answer for Tushare's row of `table` while Tushare is down: only
/// the day bar, which both state alike.
pub fn tdx_stands_in(table: &TableSpec) -> bool {
    table.name == DAILY.name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::DAILY_BASIC;

    #[test]
    fn each_symbol_and_metric_has_one_source() {
        let symbol = |s: &str| s.parse::<Symbol>().unwrap();
        let moutai: TsCode = "600519.SH".parse().unwrap();
        for spelling in ["600519.SH", "sh600519", "600519.SS"] {
            assert_eq!(route(&symbol(spelling), Metric::Close).unwrap(), Route::AShare { code: moutai, table: &DAILY });
        }
        assert_eq!(route(&symbol("600519"), Metric::PeTtm).unwrap(), Route::AShare { code: moutai, table: &DAILY_BASIC });
        assert_eq!(route(&symbol("00700"), Metric::Close).unwrap(), Route::Yahoo { symbol: "0700.HK".into() });
        assert_eq!(route(&symbol("AAPL"), Metric::Vol).unwrap(), Route::Yahoo { symbol: "AAPL".into() });
        let refused = route(&symbol("AAPL"), Metric::PeTtm).unwrap_err();
        assert!(matches!(refused, MarketError::InvalidInput { field: "metric", ref message } if message.contains("pe_ttm")), "{refused:?}");
        assert!(tdx_stands_in(&DAILY) && !tdx_stands_in(&DAILY_BASIC));
    }
}
