//! What we send and what WeChat Pay answers, with the field names of the wire protocol. Amounts are
//! integers in fen (¥198 = 19800). Fields WeChat Pay omits in some states (an unpaid order has no
//! `transaction_id`, payer or `success_time`) are `Option`s.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

/// Our order, as a processor sees it: `out_trade_no` is our order number, unique per merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// 6–32 characters of `[0-9a-zA-Z_-*]`.
    pub out_trade_no: String,
    /// What the payer sees in WeChat, at most 127 characters.
    pub description: String,
    pub amount_fen: i64,
    /// `CNY` for mainland merchants.
    pub currency: String,
    /// After this the payer can no longer pay; the order stays `NOTPAY` until we close it.
    pub time_expire: Option<DateTime<Utc>>,
    /// Echoed back in queries and notifications, at most 128 characters.
    pub attach: Option<String>,
}

/// A refund of (part of) a paid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub out_trade_no: String,
    /// Our refund number: 1–64 characters of `[0-9a-zA-Z_-|*@]`; the same number refunds only once.
    pub out_refund_no: String,
    pub reason: Option<String>,
    /// Fen to refund, at most what is left of `total_fen`.
    pub refund_fen: i64,
    /// What the order was charged, in fen.
    pub total_fen: i64,
    pub currency: String,
}

/// `trade_state`: where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    Success,
    /// Paid, then (partly) refunded.
    Refund,
    Notpay,
    Closed,
    Revoked,
    Userpaying,
    Payerror,
    /// A state this client does not know yet; never treated as paid.
    #[serde(other)]
    Unknown,
}

/// `status` of a refund answer, `refund_status` of a refund notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Success,
    Closed,
    Processing,
    Abnormal,
    #[serde(other)]
    Unknown,
}

/// An order as the query API answers it and as a `TRANSACTION.SUCCESS` notification carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default)]
    pub transaction_id: Option<String>,
    #[serde(default)]
    pub trade_type: Option<String>,
    pub trade_state: TradeState,
    #[serde(default)]
    pub trade_state_desc: String,
    #[serde(default)]
    pub success_time: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub payer: Option<Payer>,
    pub amount: TransactionAmount,
    #[serde(default)]
    pub attach: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub openid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    /// What the order charges, in fen; compare it with what we asked for.
    pub total: i64,
    /// What the payer actually paid (less than `total` when a coupon applied).
    #[serde(default)]
    pub payer_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub payer_currency: Option<String>,
}

/// A refund as the refund API answers it and as a `REFUND.*` notification carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub refund_id: String,
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// Notifications name it `refund_status`, the refund API `status`.
    #[serde(alias = "status")]
    pub refund_status: RefundStatus,
    #[serde(default)]
    pub success_time: Option<DateTime<FixedOffset>>,
    /// Present in notifications only.
    #[serde(default)]
    pub mchid: Option<String>,
    pub amount: RefundAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(default)]
    pub payer_total: Option<i64>,
    #[serde(default)]
    pub payer_refund: Option<i64>,
    /// The refund API names it; notifications leave it out (always CNY there).
    #[serde(default)]
    pub currency: Option<String>,
}

/// Checks WeChat Pay would reject anyway, made before anything is signed or sent.
pub(crate) mod validate {
    /// `out_trade_no`: 6–32 characters of `[0-9a-zA-Z_-*]`.
    pub fn out_trade_no(no: &str) -> Result<(), String> {
        chars("out_trade_no", no, 6..=32, "_-*")
    }

    /// `out_refund_no`: 1–64 characters of `[0-9a-zA-Z_-|*@]`.
    pub fn out_refund_no(no: &str) -> Result<(), String> {
        chars("out_refund_no", no, 1..=64, "_-|*@")
    }

    pub fn at_most(field: &str, value: &str, max_chars: usize) -> Result<(), String> {
        let n = value.chars().count();
        if n > max_chars {
            return Err(format!("{field} has {n} characters, at most {max_chars} allowed"));
        }
        Ok(())
    }

    pub fn positive(field: &str, fen: i64) -> Result<(), String> {
        if fen <= 0 {
            return Err(format!("{field} must be a positive number of fen, got {fen}"));
        }
        Ok(())
    }

    fn chars(field: &str, value: &str, len: std::ops::RangeInclusive<usize>, extra: &str) -> Result<(), String> {
        if let Some(c) = value.chars().find(|c| !c.is_ascii_alphanumeric() && !extra.contains(*c)) {
            return Err(format!("{field} may hold only letters, digits and {extra}, found {c:?}"));
        }
        if !len.contains(&value.len()) {
            return Err(format!("{field} must be {}–{} characters, got {}", len.start(), len.end(), value.len()));
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn out_trade_no_follows_the_protocol() {
            assert!(out_trade_no("TD20260501_a-b*").is_ok());
            assert!(out_trade_no("12345").is_err());
            assert!(out_trade_no(&"x".repeat(33)).is_err());
            assert!(out_trade_no("order 123").is_err());
            assert!(out_trade_no("order/123").is_err());
            assert!(out_refund_no("R@1|2").is_ok());
            assert!(out_refund_no("").is_err());
        }
    }
}
