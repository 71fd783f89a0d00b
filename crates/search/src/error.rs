/// What a search can fail with, for the API crate to turn into a response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SearchError {
    #[error("{message}")]
    InvalidInput { field: &'static str, message: String },
    /// No provider could answer: each was throttled, out of quota or budget, or failing.
    #[error("web search is unavailable: {detail}")]
    Unavailable { detail: String, retry_after_secs: u64 },
}
