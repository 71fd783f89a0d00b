//! The cite envelope carried by every data and search answer, so the agent can quote where a number came from.

use chrono::{DateTime, Utc};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

pub const SERVED_BY: &str = "twilight-drive-backend";
/// The header every simulator answers with (naming itself); a value it backs is cited as
/// `sandbox:<source>`, so nobody mistakes it for the real service's.
pub const SANDBOX_HEADER: &str = "x-twilight-sandbox";
pub const SERVED_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// What another source holds for the same value (a `/price` close that TDX has too); absent
    /// when no other source has that day.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, example = json!({"tdx": "match"}))]
    pub agreement: Option<Agreement>,
    /// The source that should have answered and was down (`tushare` when TDX's bar stands in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<&'static str>,
}

/// Another source's value for the one cited, serialised as `{"tdx": "match"}` or
/// `{"tdx": "differs", "tdx_value": 1505.66, "diff_pct": 0.0106}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    /// The other upstream, without a `sandbox:` prefix (the cite's `source` says whether simulators
    /// answered).
    pub source: String,
    pub value: f64,
    /// (other − cited) / cited, in per cent, to 4 decimals.
    pub diff_pct: f64,
}

impl Agreement {
    /// Differences up to this many per cent are rounding, not disagreement.
    pub const TOLERANCE_PCT: f64 = 0.01;

    /// How `other` compares with the `cited` value; `None` when there is nothing to compare against.
    pub fn between(cited: f64, source: &str, other: f64) -> Option<Agreement> {
        (cited != 0.0 && cited.is_finite() && other.is_finite()).then(|| Agreement {
            source: source.strip_prefix("sandbox:").unwrap_or(source).to_string(),
            value: other,
            diff_pct: ((other - cited) / cited * 100.0 * 10_000.0).round() / 10_000.0,
        })
    }

    pub fn matches(&self) -> bool {
        self.diff_pct.abs() <= Self::TOLERANCE_PCT
    }
}

impl Serialize for Agreement {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.matches() {
            let mut map = serializer.serialize_map(Some(1))?;
            map.serialize_entry(&self.source, "match")?;
            return map.end();
        }
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry(&self.source, "differs")?;
        map.serialize_entry(&format!("{}_value", self.source), &self.value)?;
        map.serialize_entry("diff_pct", &self.diff_pct)?;
        map.end()
    }
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
            agreement: None,
            fallback_from: None,
        }
    }

    /// The same cite, marked stale when `stale`.
    pub fn stale_if(mut self, stale: bool) -> Self {
        self.stale = stale;
        self
    }

    /// The same cite, with what another source holds for the value.
    pub fn agreeing(mut self, agreement: Option<Agreement>) -> Self {
        self.agreement = agreement;
        self
    }

    /// The same cite, naming the source that was down when another answered for it.
    pub fn falling_back_from(mut self, source: Option<&'static str>) -> Self {
        self.fallback_from = source;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_says_match_within_the_tolerance_and_differs_beyond_it() {
        let cited = 1500.0;
        let close = Agreement::between(cited, "sandbox:tdx", 1500.075).unwrap();
        assert_eq!((close.source.as_str(), close.diff_pct), ("tdx", 0.005));
        assert_eq!(serde_json::to_value(&close).unwrap(), serde_json::json!({"tdx": "match"}));
        let off = Agreement::between(cited, "tdx", 1500.3).unwrap();
        assert_eq!(serde_json::to_value(&off).unwrap(), serde_json::json!({"tdx": "differs", "tdx_value": 1500.3, "diff_pct": 0.02}));
        assert!(Agreement::between(0.0, "tdx", 1.0).is_none());
    }
}
