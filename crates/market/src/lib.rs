#![forbid(unsafe_code)]
//! Market data: the DuckDB warehouse, upstream clients (Tushare, TDX, Yahoo, AKTools), the source
//! router, the read path that fills the warehouse on a miss, and the TDX backfill of bulk history.

pub mod aktools;
mod calendar;
mod error;
mod metric;
pub mod replica;
pub mod route;
mod service;
pub mod tdx;
pub mod tushare;
pub mod warehouse;
pub mod yahoo;

pub use aktools::AktoolsConfig;
pub use calendar::Calendar;
pub use error::MarketError;
pub use metric::Metric;
pub use service::{
    Claim, FillReport, FillSchedule, FundamentalsAnswer, History, Market, MarketConfig, PriceAnswer, Reading, SourceHealth, Stock,
    TdxSource, WarehouseHealth,
};
pub use tdx::{Backfill, BackfillPlan, BackfillSummary, CodeOutcome};
pub use tushare::{TushareClient, TushareConfig};
pub use warehouse::{Fact, Warehouse};
pub use yahoo::YahooConfig;
