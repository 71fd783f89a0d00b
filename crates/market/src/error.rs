use chrono::NaiveDate;

/// Everything the read path can answer instead of a value. `Clone` because single-flight shares one
/// outcome among every request waiting on the same fill.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MarketError {
    #[error("{message}")]
    InvalidInput { field: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{} is not a trading day{}", twilight_core::compact(*.date), .previous.map(|p| format!("; the trade date that applies is {}", twilight_core::compact(p))).unwrap_or_default())]
    NotTradingDay { date: NaiveDate, previous: Option<NaiveDate> },
    #[error("{source_name} rejected our credentials: {message}")]
    UpstreamAuth { source_name: &'static str, message: String },
    #[error("{source_name} refused: {message}")]
    UpstreamPermission { source_name: &'static str, message: String },
    #[error("{source_name} is throttling us; try again in a minute")]
    Throttled { source_name: &'static str },
    #[error("{source_name} did not answer in time")]
    Timeout { source_name: &'static str },
    #[error("{source_name} failed: {message}")]
    Upstream { source_name: &'static str, message: String },
    /// The source failed a moment ago and is left alone until `retry_after_secs` have passed.
    #[error("{source_name} is failing; it is asked again within {retry_after_secs} s")]
    SourceDown { source_name: &'static str, retry_after_secs: u64 },
    #[error("warehouse: {0}")]
    Warehouse(String),
}

impl MarketError {
    /// A failed HTTP exchange with `source_name`: a timeout, or an upstream failure whose message
    /// leaves out the URL (it may carry a token).
    pub(crate) fn http(source_name: &'static str, error: reqwest::Error) -> MarketError {
        if error.is_timeout() {
            MarketError::Timeout { source_name }
        } else {
            MarketError::Upstream { source_name, message: error.without_url().to_string() }
        }
    }

    /// A failure of the upstream itself (not of the question asked): worth answering from what the
    /// warehouse has, and worth not asking again for a while.
    pub fn is_source_failure(&self) -> bool {
        matches!(
            self,
            MarketError::UpstreamAuth { .. }
                | MarketError::UpstreamPermission { .. }
                | MarketError::Throttled { .. }
                | MarketError::Timeout { .. }
                | MarketError::Upstream { .. }
                | MarketError::SourceDown { .. }
        )
    }
}
