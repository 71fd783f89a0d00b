//! Metering a relayed completion: [`Meter`] writes its one usage row (and adds its tokens to the
//! daily budget) exactly once — when the answer is complete, when it failed, or when it was dropped
//! unfinished — and [`Metered`] passes a streamed answer through chunk by chunk while reading the
//! usage chunk off the server-sent events as they go by.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use futures::Stream;

use super::{Relay, COMPLETION_ENDPOINT};
use crate::auth::UserKey;
use crate::usage::UsageSink;

/// The status recorded for a request whose client went away before it was answered (nginx's word).
const CLIENT_CLOSED: u16 = 499;
/// A longer SSE line is passed through but not scanned for usage.
const MAX_LINE: usize = 1024 * 1024;

/// One completion's usage row, written once.
pub(super) struct Meter {
    inner: Option<MeterInner>,
}

struct MeterInner {
    relay: Arc<Relay>,
    usage: UsageSink,
    key: Arc<UserKey>,
}

impl Meter {
    pub fn new(relay: Arc<Relay>, usage: UsageSink, key: Arc<UserKey>) -> Meter {
        Meter { inner: Some(MeterInner { relay, usage, key }) }
    }

    /// A meter already finished (what is left where one was handed on).
    pub fn done() -> Meter {
        Meter { inner: None }
    }

    /// Records the row: `status` answered, `tokens` the upstream's total (0 when it reported none).
    pub fn finish(&mut self, status: u16, tokens: u64) {
        let Some(inner) = self.inner.take() else { return };
        inner.relay.budget.add(inner.key.user_id, tokens);
        let cost = i32::try_from(tokens).unwrap_or(i32::MAX);
        inner.usage.record_call(&inner.key, COMPLETION_ENDPOINT, status, cost, None);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(CLIENT_CLOSED, 0);
    }
}

/// A streamed answer on its way to the client, metered when it ends, breaks off, or is dropped
/// because the client disconnected (with the usage seen so far).
pub(super) struct Metered<S> {
    inner: Pin<Box<S>>,
    scanner: UsageScanner,
    meter: Meter,
    status: u16,
}

impl<S> Metered<S> {
    pub fn new(inner: S, meter: Meter, status: u16) -> Metered<S> {
        Metered { inner: Box::pin(inner), scanner: UsageScanner::default(), meter, status }
    }

    fn finish(&mut self) {
        self.scanner.finish();
        self.meter.finish(self.status, self.scanner.total_tokens.unwrap_or(0));
    }
}

impl<S, E> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.scanner.feed(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(error = %error, "the LLM upstream's stream broke off");
                this.finish();
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Reads `usage.total_tokens` off OpenAI-style server-sent events (`data: {…}` lines; the usage
/// chunk comes last when `stream_options.include_usage` is set), whatever way the bytes are split.
#[derive(Default)]
pub(super) struct UsageScanner {
    line: Vec<u8>,
    /// The line being collected outgrew [`MAX_LINE`]; it is skipped.
    overlong: bool,
    pub total_tokens: Option<u64>,
    pub done: bool,
}

impl UsageScanner {
    pub fn feed(&mut self, bytes: &[u8]) {
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            if self.line.len() + piece.len() <= MAX_LINE {
                self.line.extend_from_slice(piece);
            } else {
                self.overlong = true;
            }
            if piece.ends_with(b"\n") {
                self.end_line();
            }
        }
    }

    /// Scans a last line that came without its newline.
    pub fn finish(&mut self) {
        if !self.line.is_empty() {
            self.end_line();
        }
    }

    fn end_line(&mut self) {
        if !self.overlong {
            let line = std::mem::take(&mut self.line);
            self.scan(&line);
            self.line = line;
        }
        self.line.clear();
        self.overlong = false;
    }

    fn scan(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else { return };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        if !data.windows(7).any(|w| w == b"\"usage\"") {
            return;
        }
        if let Ok(chunk) = serde_json::from_slice::<serde_json::Value>(data) {
            if let Some(total) = chunk["usage"]["total_tokens"].as_u64() {
                self.total_tokens = Some(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"贵州茅台\"}}],\"usage\":null}\r\n\r\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
: a comment\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":12,\"total_tokens\":42}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn usage_is_found_however_the_bytes_are_split() {
        let bytes = EVENTS.as_bytes();
        for size in [1, 2, 3, 7, 64, bytes.len()] {
            let mut scanner = UsageScanner::default();
            for chunk in bytes.chunks(size) {
                scanner.feed(chunk);
            }
            scanner.finish();
            assert_eq!((scanner.total_tokens, scanner.done), (Some(42), true), "chunks of {size}");
        }
    }

    #[test]
    fn a_stream_cut_short_has_no_usage_and_a_last_line_without_newline_counts() {
        let mut scanner = UsageScanner::default();
        scanner.feed(&EVENTS.as_bytes()[..60]);
        scanner.finish();
        assert_eq!((scanner.total_tokens, scanner.done), (None, false));

        let mut scanner = UsageScanner::default();
        scanner.feed(b"data: {\"usage\":{\"total_tokens\":7}}");
        scanner.finish();
        assert_eq!(scanner.total_tokens, Some(7));
    }

    #[test]
    fn an_overlong_line_is_skipped_not_kept() {
        let mut scanner = UsageScanner::default();
        scanner.feed(b"data: {\"usage\":{\"total_tokens\":1}, \"pad\":\"");
        scanner.feed(&vec![b'x'; MAX_LINE]);
        scanner.feed(b"\"}\n\ndata: {\"usage\":{\"total_tokens\":5}}\n\n");
        assert_eq!(scanner.total_tokens, Some(5));
        assert!(scanner.line.is_empty());
    }
}
