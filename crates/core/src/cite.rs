//! The cite envelope carried by every data and search answer, so the agent can quote where a number came from.

use chrono::{DateTime, Utc};
use serde::Serialize;

pub const SERVED_BY: &str = "twilight-drive-backend";
/// The header every simulator answers with (naming itself); a value it backs is cited as
/// `sandbox:<source>`, so nobody mistakes it for the real service's.
pub const SANDBOX_HEADER: &str = "x-twilight-sandbox";
pub const SERVED_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cite {
    pub kind: &'static str,
    /// The upstream actually consulted; `sandbox:<name>` when a simulator backed the value.
    pub source: String,
    pub served_by: &'static str,
    pub served_version: &'static str,
    pub table: &'static str,
    pub fetched_at: DateTime<Utc>,
    pub cache_age_seconds: i64,
    /// The upstream could not be reached, so this is the newest the warehouse had (the stock list,
    /// calendar or report list behind it may be older than usual, or the row older than asked);
    /// `cache_age_seconds` says how old.
    pub stale: bool,
    pub tool_call_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Cite {
    /// A tool cite for a value read from `table`, fetched from `source` at `fetched_at`, answered `now`.
    pub fn tool(source: &str, table: &'static str, fetched_at: DateTime<Utc>, now: DateTime<Utc>, tool_call_id: String) -> Self {
        Cite {
            kind: "tool",
            source: source.to_string(),
            served_by: SERVED_BY,
            served_version: SERVED_VERSION,
            table,
            fetched_at,
            cache_age_seconds: (now - fetched_at).num_seconds().max(0),
            stale: false,
            tool_call_id,
            url: None,
        }
    }

    /// The same cite, marked stale when `stale`.
    pub fn stale_if(mut self, stale: bool) -> Self {
        self.stale = stale;
        self
    }
}
