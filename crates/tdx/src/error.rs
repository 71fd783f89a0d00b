use std::time::Duration;

/// Why a TDX call failed. Every variant but `Unavailable` is one server's failure: the pool drops
/// that connection, marks the server and tries another.
#[derive(Debug, thiserror::Error)]
pub enum TdxError {
    #[error("TDX server {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("TDX server {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// Bytes that are not the protocol: a broken or foreign server.
    #[error("TDX protocol: {0}")]
    Protocol(String),
    /// Every configured server failed recently; the first may be tried again after `retry_after`.
    #[error("no TDX server is available (retry in {retry_after:?})")]
    Unavailable { retry_after: Duration },
}

impl TdxError {
    pub(crate) fn protocol(message: impl Into<String>) -> TdxError {
        TdxError::Protocol(message.into())
    }
}
