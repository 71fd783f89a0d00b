//! The simulator's books: orders and refunds, the state changes WeChat Pay allows, and the JSON
//! shapes it answers with (the query answer doubles as the payment notification's resource).

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::Failure;

/// A Native order request body, as received.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreateOrder {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default)]
    pub time_expire: Option<String>,
    #[serde(default)]
    pub attach: Option<String>,
    pub notify_url: String,
    pub amount: OrderAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderAmount {
    pub total: i64,
    #[serde(default = "cny")]
    pub currency: String,
}

/// A refund request body, as received.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreateRefund {
    #[serde(default)]
    pub transaction_id: Option<String>,
    #[serde(default)]
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub notify_url: Option<String>,
    pub amount: RefundAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RefundAmount {
    pub refund: i64,
    pub total: i64,
    #[serde(default = "cny")]
    pub currency: String,
}

fn cny() -> String {
    "CNY".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeState {
    Notpay,
    Success,
    Refund,
    Closed,
}

impl TradeState {
    /// `(trade_state, trade_state_desc)`.
    pub fn wire(self) -> (&'static str, &'static str) {
        match self {
            TradeState::Notpay => ("NOTPAY", "订单未支付"),
            TradeState::Success => ("SUCCESS", "支付成功"),
            TradeState::Refund => ("REFUND", "订单发生过退款"),
            TradeState::Closed => ("CLOSED", "订单已关闭"),
        }
    }
}

pub struct Order {
    pub request: CreateOrder,
    pub code_url: String,
    pub time_expire: Option<DateTime<FixedOffset>>,
    pub state: TradeState,
    /// Set once paid.
    pub payment: Option<Payment>,
    pub refunded: i64,
}

pub struct Payment {
    pub transaction_id: String,
    pub openid: String,
    pub success_time: DateTime<Utc>,
}

pub struct Refund {
    pub request: CreateRefund,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub refund_id: String,
    /// Where `REFUND.SUCCESS` goes: the request's `notify_url`, else the order's.
    pub notify_url: String,
    /// Refunds complete as they are accepted, so this is both `create_time` and `success_time`.
    pub at: DateTime<Utc>,
}

#[derive(Default)]
pub struct Ledger {
    pub orders: HashMap<String, Order>,
    /// By `out_refund_no`.
    pub refunds: HashMap<String, Refund>,
}

/// Why a payer could not pay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    #[error("no order {0}")]
    NotFound(String),
    #[error("order {0} is already paid")]
    AlreadyPaid(String),
    #[error("order {0} is closed")]
    Closed(String),
    #[error("order {0} expired at its time_expire")]
    Expired(String),
}

impl Ledger {
    /// Places `request` or finds the identical order placed before (same body → same `code_url`).
    pub fn place(&mut self, request: CreateOrder, new_code_url: impl FnOnce() -> String) -> Result<&Order, Failure> {
        let time_expire = match &request.time_expire {
            Some(at) => {
                Some(DateTime::parse_from_rfc3339(at).map_err(|_| Failure::param(format!("time_expire {at:?} 不是 RFC 3339 时间")))?)
            }
            None => None,
        };
        let no = request.out_trade_no.clone();
        if let Some(existing) = self.orders.get(&no) {
            match existing.state {
                TradeState::Success | TradeState::Refund => return Err(Failure::order_paid()),
                TradeState::Closed => return Err(Failure::bad_request("ORDER_CLOSED", "订单已关闭")),
                TradeState::Notpay if existing.request != request => {
                    return Err(Failure::bad_request("OUT_TRADE_NO_USED", "商户订单号重复"))
                }
                TradeState::Notpay => {}
            }
        } else {
            let order = Order { request, code_url: new_code_url(), time_expire, state: TradeState::Notpay, payment: None, refunded: 0 };
            self.orders.insert(no.clone(), order);
        }
        Ok(&self.orders[&no])
    }

    pub fn order(&self, out_trade_no: &str) -> Result<&Order, Failure> {
        self.orders.get(out_trade_no).ok_or_else(Failure::order_not_exist)
    }

    /// Closing twice is fine; closing a paid order is not.
    pub fn close(&mut self, out_trade_no: &str) -> Result<(), Failure> {
        let order = self.orders.get_mut(out_trade_no).ok_or_else(Failure::order_not_exist)?;
        match order.state {
            TradeState::Success | TradeState::Refund => Err(Failure::order_paid()),
            TradeState::Notpay | TradeState::Closed => {
                order.state = TradeState::Closed;
                Ok(())
            }
        }
    }

    /// Marks the order paid by `openid` and returns it.
    pub fn pay(&mut self, out_trade_no: &str, payment: Payment) -> Result<&Order, PayError> {
        let order = self.orders.get_mut(out_trade_no).ok_or_else(|| PayError::NotFound(out_trade_no.into()))?;
        match order.state {
            TradeState::Success | TradeState::Refund => return Err(PayError::AlreadyPaid(out_trade_no.into())),
            TradeState::Closed => return Err(PayError::Closed(out_trade_no.into())),
            TradeState::Notpay if order.time_expire.is_some_and(|at| at < payment.success_time) => {
                return Err(PayError::Expired(out_trade_no.into()))
            }
            TradeState::Notpay => {}
        }
        order.state = TradeState::Success;
        order.payment = Some(payment);
        Ok(order)
    }

    /// Accepts a refund of a paid order (an identical repeat gets the same refund back) and
    /// completes it at once; returns it and whether it is new.
    pub fn refund(
        &mut self,
        request: CreateRefund,
        new_refund_id: impl FnOnce() -> String,
        now: DateTime<Utc>,
    ) -> Result<(&Refund, bool), Failure> {
        let no = request.out_refund_no.clone();
        if let Some(existing) = self.refunds.get(&no) {
            if existing.request != request {
                return Err(Failure::bad_request("INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试"));
            }
            return Ok((&self.refunds[&no], false));
        }
        let order = match (&request.out_trade_no, &request.transaction_id) {
            (Some(out_trade_no), _) => self.orders.get_mut(out_trade_no),
            (None, Some(id)) => self.orders.values_mut().find(|o| o.payment.as_ref().is_some_and(|p| &p.transaction_id == id)),
            (None, None) => return Err(Failure::param("out_trade_no 与 transaction_id 须二选一")),
        }
        .ok_or_else(Failure::order_not_exist)?;
        let transaction_id = order
            .payment
            .as_ref()
            .map(|p| p.transaction_id.clone())
            .ok_or_else(|| Failure::bad_request("INVALID_REQUEST", "订单未支付，不能退款"))?;
        if request.amount.total != order.request.amount.total || request.amount.currency != order.request.amount.currency {
            return Err(Failure::param("amount.total/currency 与原订单不符"));
        }
        if request.amount.refund <= 0 || request.amount.refund > order.request.amount.total - order.refunded {
            return Err(Failure::bad_request("INVALID_REQUEST", "申请退款金额超过订单可退金额"));
        }
        let notify_url = request.notify_url.clone().unwrap_or_else(|| order.request.notify_url.clone());
        order.state = TradeState::Refund;
        order.refunded += request.amount.refund;
        let refund = Refund {
            out_trade_no: order.request.out_trade_no.clone(),
            transaction_id,
            refund_id: new_refund_id(),
            notify_url,
            at: now,
            request,
        };
        self.refunds.insert(no.clone(), refund);
        Ok((&self.refunds[&no], true))
    }
}

/// Beijing time, to the second, as every WeChat Pay timestamp is written.
pub fn wire_time(at: DateTime<impl chrono::TimeZone>) -> String {
    at.with_timezone(&FixedOffset::east_opt(8 * 3600).expect("valid offset")).format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

impl Order {
    /// The query answer, and the resource of `TRANSACTION.SUCCESS`.
    pub fn transaction_json(&self, appid: &str, mchid: &str) -> Value {
        let (trade_state, trade_state_desc) = self.state.wire();
        let mut body = json!({
            "appid": appid,
            "mchid": mchid,
            "out_trade_no": self.request.out_trade_no,
            "trade_state": trade_state,
            "trade_state_desc": trade_state_desc,
            "amount": {"total": self.request.amount.total, "currency": self.request.amount.currency, "payer_currency": "CNY"},
        });
        if let Some(attach) = &self.request.attach {
            body["attach"] = json!(attach);
        }
        if let Some(payment) = &self.payment {
            body["transaction_id"] = json!(payment.transaction_id);
            body["trade_type"] = json!("NATIVE");
            body["bank_type"] = json!("OTHERS");
            body["success_time"] = json!(wire_time(payment.success_time));
            body["payer"] = json!({"openid": payment.openid});
            body["amount"]["payer_total"] = json!(self.request.amount.total);
        }
        body
    }
}

impl Refund {
    /// The refund API's answer: a new refund is still `PROCESSING` (its completion comes by
    /// notification); asking again later shows it `SUCCESS`.
    pub fn answer_json(&self, new: bool) -> Value {
        let amount = &self.request.amount;
        json!({
            "refund_id": self.refund_id,
            "out_refund_no": self.request.out_refund_no,
            "transaction_id": self.transaction_id,
            "out_trade_no": self.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": wire_time(self.at),
            "success_time": (!new).then(|| wire_time(self.at)),
            "status": if new { "PROCESSING" } else { "SUCCESS" },
            "funds_account": "AVAILABLE",
            "amount": {
                "total": amount.total, "refund": amount.refund, "payer_total": amount.total, "payer_refund": amount.refund,
                "settlement_total": amount.total, "settlement_refund": amount.refund, "discount_refund": 0, "currency": amount.currency,
            },
        })
    }

    /// The resource of `REFUND.SUCCESS`.
    pub fn notification_json(&self, mchid: &str) -> Value {
        let amount = &self.request.amount;
        json!({
            "mchid": mchid,
            "out_trade_no": self.out_trade_no,
            "transaction_id": self.transaction_id,
            "out_refund_no": self.request.out_refund_no,
            "refund_id": self.refund_id,
            "refund_status": "SUCCESS",
            "success_time": wire_time(self.at),
            "user_received_account": "支付用户零钱",
            "amount": {"total": amount.total, "refund": amount.refund, "payer_total": amount.total, "payer_refund": amount.refund},
        })
    }
}
