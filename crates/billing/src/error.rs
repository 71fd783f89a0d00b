//! How a WeChat Pay API call fails. WeChat Pay's own answers keep their `code` and `message`;
//! nothing here ever carries key material.

use crate::verify::SignatureError;

#[derive(Debug, thiserror::Error)]
pub enum WechatPayError {
    /// Caught before anything was signed or sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// WeChat Pay refused, with a verified `{"code","message"}` body (or an unsigned one on a
    /// non-2xx answer, which is never taken as success).
    #[error("WeChat Pay answered {status} {code}: {message}")]
    Api { status: u16, code: ErrorCode, message: String },
    /// The answer did not come verifiably from WeChat Pay; its content was not used.
    #[error("WeChat Pay answer ({status}) failed verification: {source}")]
    Unverified { status: u16, source: SignatureError },
    #[error("unexpected WeChat Pay answer ({status}): {detail}")]
    UnexpectedResponse { status: u16, detail: String },
    #[error("cannot reach WeChat Pay: {0}")]
    Transport(#[from] reqwest::Error),
}

/// The `code` of an error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// The order is already paid (closing or re-placing it).
    OrderPaid,
    /// The order was closed (re-placing it).
    OrderClosed,
    OrderNotExist,
    /// The `out_trade_no` was used for an order with a different body.
    OutTradeNoUsed,
    ParamError,
    /// Our request signature was refused.
    SignError,
    /// WeChat Pay's side failed; the same request may be retried.
    SystemError,
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> Self {
        match code {
            "ORDERPAID" => ErrorCode::OrderPaid,
            "ORDER_CLOSED" => ErrorCode::OrderClosed,
            "ORDER_NOT_EXIST" | "ORDERNOTEXIST" => ErrorCode::OrderNotExist,
            "OUT_TRADE_NO_USED" => ErrorCode::OutTradeNoUsed,
            "PARAM_ERROR" => ErrorCode::ParamError,
            "SIGN_ERROR" => ErrorCode::SignError,
            "SYSTEM_ERROR" | "SYSTEMERROR" => ErrorCode::SystemError,
            other => ErrorCode::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorCode::OrderPaid => "ORDERPAID",
            ErrorCode::OrderClosed => "ORDER_CLOSED",
            ErrorCode::OrderNotExist => "ORDER_NOT_EXIST",
            ErrorCode::OutTradeNoUsed => "OUT_TRADE_NO_USED",
            ErrorCode::ParamError => "PARAM_ERROR",
            ErrorCode::SignError => "SIGN_ERROR",
            ErrorCode::SystemError => "SYSTEM_ERROR",
            ErrorCode::Other(code) => code,
        })
    }
}
