#![forbid(unsafe_code)]
//! Market data: the DuckDB warehouse, upstream clients (Tushare, TDX), the read path that fills the
//! warehouse on a miss, and the TDX backfill of bulk history.

mod calendar;
mod error;
mod metric;
mod service;
pub mod tdx;
pub mod tushare;
pub mod warehouse;
pub mod yahoo;

pub use calendar::Calendar;
pub use error::MarketError;
pub use metric::Metric;
pub use service::{
    Claim, FundamentalsAnswer, Market, MarketConfig, PriceAnswer, QuoteAnswer, Reading, SourceHealth, Stock, TdxSource, WarehouseHealth,
};
pub use tdx::{Backfill, BackfillPlan, BackfillSummary, CodeOutcome};
pub use tushare::{TushareClient, TushareConfig};
pub use warehouse::Warehouse;
pub use yahoo::YahooConfig;
