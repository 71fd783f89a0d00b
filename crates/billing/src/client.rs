//! The WeChat Pay v3 merchant client for Native payments: every request signed with the merchant
//! key, every answer verified against a trusted WeChat Pay key before its content is used.

use chrono::{DateTime, FixedOffset, Utc};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::WechatPayConfig;
use crate::error::{ErrorCode, WechatPayError};
use crate::model::{validate, Order, Refund, RefundRequest, Transaction};
use crate::notify::{self, Notification, NotifyError};
use crate::signature::{nonce, RequestSigner};
use crate::verify::{is_signed, verify, SignatureError, HEADER_SIGNATURE};

const USER_AGENT: &str = concat!("twilight-billing/", env!("CARGO_PKG_VERSION"));
const NATIVE_PATH: &str = "/v3/pay/transactions/native";
const REFUND_PATH: &str = "/v3/refund/domestic/refunds";
/// Chars of an unexpected answer's body kept in an error, enough to recognise a proxy's page.
const BODY_EXCERPT: usize = 200;

pub struct WechatPayClient {
    http: reqwest::Client,
    config: WechatPayConfig,
}

impl std::fmt::Debug for WechatPayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPayClient").field("config", &self.config).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct NativeOrderBody<'a> {
    appid: &'a str,
    mchid: &'a str,
    description: &'a str,
    out_trade_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attach: Option<&'a str>,
    notify_url: &'a str,
    amount: OrderAmount<'a>,
}

#[derive(Serialize)]
struct OrderAmount<'a> {
    total: i64,
    currency: &'a str,
}

#[derive(Deserialize)]
struct CodeUrl {
    code_url: String,
}

#[derive(Serialize)]
struct CloseBody<'a> {
    mchid: &'a str,
}

#[derive(Serialize)]
struct RefundBody<'a> {
    out_trade_no: &'a str,
    out_refund_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    notify_url: &'a str,
    amount: RefundBodyAmount<'a>,
}

#[derive(Serialize)]
struct RefundBodyAmount<'a> {
    refund: i64,
    total: i64,
    currency: &'a str,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

/// A verified answer.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self) -> Result<T, WechatPayError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| WechatPayError::UnexpectedResponse { status: self.status.as_u16(), detail: format!("body does not parse: {e}") })
    }
}

impl WechatPayClient {
    pub fn new(config: WechatPayConfig) -> Result<Self, WechatPayError> {
        let http = reqwest::Client::builder().timeout(config.timeout).user_agent(USER_AGENT).build()?;
        Ok(WechatPayClient { http, config })
    }

    pub fn config(&self) -> &WechatPayConfig {
        &self.config
    }

    /// Places a Native order and returns its `code_url` (`weixin://wxpay/bizpayurl?pr=…`), to be
    /// shown as a QR code. Placing the same order again returns the same `code_url`.
    pub async fn create_native_order(&self, order: &Order) -> Result<String, WechatPayError> {
        validate::out_trade_no(&order.out_trade_no)
            .and_then(|()| validate::positive("amount", order.amount_fen))
            .and_then(|()| validate::at_most("description", &order.description, 127))
            .and_then(|()| order.attach.as_deref().map_or(Ok(()), |a| validate::at_most("attach", a, 128)))
            .map_err(WechatPayError::InvalidRequest)?;
        let body = NativeOrderBody {
            appid: &self.config.appid,
            mchid: &self.config.mchid,
            description: &order.description,
            out_trade_no: &order.out_trade_no,
            time_expire: order.time_expire.map(wire_time),
            attach: order.attach.as_deref(),
            notify_url: &self.config.notify_url,
            amount: OrderAmount { total: order.amount_fen, currency: &order.currency },
        };
        let answer = self.call(Method::POST, NATIVE_PATH, Some(&body)).await?;
        Ok(answer.json::<CodeUrl>()?.code_url)
    }

    /// The order as WeChat Pay has it; `trade_state` says whether it is paid.
    pub async fn query_order(&self, out_trade_no: &str) -> Result<Transaction, WechatPayError> {
        validate::out_trade_no(out_trade_no).map_err(WechatPayError::InvalidRequest)?;
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}", self.config.mchid);
        self.call(Method::GET, &path, None::<&()>).await?.json()
    }

    /// Closes an unpaid order so it can no longer be paid. Closing a closed order succeeds;
    /// closing a paid one fails with [`ErrorCode::OrderPaid`].
    pub async fn close_order(&self, out_trade_no: &str) -> Result<(), WechatPayError> {
        validate::out_trade_no(out_trade_no).map_err(WechatPayError::InvalidRequest)?;
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        self.call(Method::POST, &path, Some(&CloseBody { mchid: &self.config.mchid })).await?;
        Ok(())
    }

    /// Asks for a refund; it usually answers `PROCESSING`, and a `REFUND.SUCCESS` notification
    /// follows. The same `out_refund_no` refunds at most once.
    pub async fn refund(&self, request: &RefundRequest) -> Result<Refund, WechatPayError> {
        validate::out_trade_no(&request.out_trade_no)
            .and_then(|()| validate::out_refund_no(&request.out_refund_no))
            .and_then(|()| validate::positive("refund", request.refund_fen))
            .and_then(|()| validate::positive("total", request.total_fen))
            .and_then(|()| request.reason.as_deref().map_or(Ok(()), |r| validate::at_most("reason", r, 80)))
            .map_err(WechatPayError::InvalidRequest)?;
        let body = RefundBody {
            out_trade_no: &request.out_trade_no,
            out_refund_no: &request.out_refund_no,
            reason: request.reason.as_deref(),
            notify_url: &self.config.notify_url,
            amount: RefundBodyAmount { refund: request.refund_fen, total: request.total_fen, currency: &request.currency },
        };
        self.call(Method::POST, REFUND_PATH, Some(&body)).await?.json()
    }

    /// Verifies (against `now`), decrypts and checks a notification posted to our `notify_url`.
    /// `body` must be the raw bytes received.
    pub fn parse_notification(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<Notification, NotifyError> {
        notify::parse(&self.config, headers, body, now)
    }

    async fn call<B: Serialize>(&self, method: Method, path_and_query: &str, body: Option<&B>) -> Result<Answer, WechatPayError> {
        let url = Url::parse(&format!("{}{path_and_query}", self.config.base_url.trim_end_matches('/')))
            .map_err(|e| WechatPayError::InvalidRequest(format!("base_url {:?}: {e}", self.config.base_url)))?;
        let signed_path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let body = match body {
            Some(body) => serde_json::to_vec(body).map_err(|e| WechatPayError::InvalidRequest(e.to_string()))?,
            None => Vec::new(),
        };
        let signer = RequestSigner { mchid: &self.config.mchid, serial_no: &self.config.merchant_serial, key: &self.config.merchant_key };
        let authorization = signer.authorization(method.as_str(), &signed_path, Utc::now().timestamp(), &nonce(), &body);
        let mut request = self.http.request(method, url).header(AUTHORIZATION, authorization).header(ACCEPT, "application/json");
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        self.check(Answer { status, body }, &headers)
    }

    /// Accepts a 2xx only when signed by a trusted key; turns anything else into an error,
    /// refusing signed errors whose signature fails.
    fn check(&self, answer: Answer, headers: &HeaderMap) -> Result<Answer, WechatPayError> {
        let status = answer.status.as_u16();
        if is_signed(headers) {
            verify(self.config.platform_keys.as_ref(), headers, &answer.body, Utc::now())
                .map_err(|source| WechatPayError::Unverified { status, source })?;
        } else if answer.status.is_success() {
            return Err(WechatPayError::Unverified { status, source: SignatureError::MissingHeader(HEADER_SIGNATURE) });
        }
        if answer.status.is_success() {
            return Ok(answer);
        }
        match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(error) => Err(WechatPayError::Api { status, code: ErrorCode::parse(&error.code), message: error.message }),
            Err(_) => Err(WechatPayError::UnexpectedResponse {
                status,
                detail: String::from_utf8_lossy(&answer.body).chars().take(BODY_EXCERPT).collect(),
            }),
        }
    }
}

/// `time_expire` as WeChat Pay wants it: RFC 3339 to the second, in Beijing time.
fn wire_time(at: DateTime<Utc>) -> String {
    let beijing = FixedOffset::east_opt(8 * 3600).expect("valid offset");
    at.with_timezone(&beijing).format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    #[test]
    fn time_expire_is_beijing_time_to_the_second() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 5, 1, 4, 30, 0).unwrap() + chrono::Duration::milliseconds(250);
        assert_eq!(super::wire_time(at), "2026-05-01T12:30:00+08:00");
    }
}
