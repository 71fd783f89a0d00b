//! The metrics every upstream call is counted in, whichever client makes it (market data, TDX,
//! search), so `/metrics` names them one way.

use std::time::Duration;

/// How one upstream call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    Error,
    /// Not made: the source is left alone (a breaker, a backoff, a spent budget).
    Refused,
}

/// Counts a call to `source` by outcome and, for one that was made, records how long it took.
pub fn record_call(source: &'static str, outcome: CallOutcome, took: Option<Duration>) {
    let outcome = match outcome {
        CallOutcome::Ok => "ok",
        CallOutcome::Error => "error",
        CallOutcome::Refused => "refused",
    };
    metrics::counter!("twilight_upstream_calls_total", "source" => source, "outcome" => outcome).increment(1);
    if let Some(took) = took {
        metrics::histogram!("twilight_upstream_call_duration_seconds", "source" => source).record(took.as_secs_f64());
    }
}
