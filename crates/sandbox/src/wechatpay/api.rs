//! The merchant API under `/v3`: every request's signature checked before it is routed, every
//! answer (errors included) signed on the way out, errors as `{"code","message"}`.

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{from_fn_with_state, map_response_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ledger::{CreateOrder, CreateRefund};
use super::WechatPaySim;
use crate::seed;

const NATIVE: &str = "/v3/pay/transactions/native";
const BY_OUT_TRADE_NO: &str = "/v3/pay/transactions/out-trade-no/{out_trade_no}";
const CLOSE: &str = "/v3/pay/transactions/out-trade-no/{out_trade_no}/close";
const REFUNDS: &str = "/v3/refund/domestic/refunds";
/// Request bodies beyond this are refused before their signature is checked.
const MAX_BODY: usize = 64 * 1024;

/// A refusal, answered as WeChat Pay does: a 4xx/5xx with `{"code","message"}`.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Failure { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }

    pub fn param(message: impl Into<String>) -> Self {
        Self::bad_request("PARAM_ERROR", message)
    }

    pub fn order_paid() -> Self {
        Self::bad_request("ORDERPAID", "该订单已支付")
    }

    pub fn order_not_exist() -> Self {
        Failure { status: StatusCode::NOT_FOUND, code: "ORDER_NOT_EXIST", message: "订单不存在".into() }
    }

    fn sign_error(message: String) -> Self {
        Failure { status: StatusCode::UNAUTHORIZED, code: "SIGN_ERROR", message }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.code, "message": self.message}))).into_response()
    }
}

pub fn router(sim: &WechatPaySim) -> Router<WechatPaySim> {
    Router::new()
        .route(NATIVE, post(create_order))
        .route(BY_OUT_TRADE_NO, get(query_order))
        .route(CLOSE, post(close_order))
        .route(REFUNDS, post(refund))
        .route_layer(from_fn_with_state(sim.clone(), authenticate))
        .layer(map_response_with_state(sim.clone(), sign_answer))
}

/// Refuses a request whose `Authorization` does not verify (401 `SIGN_ERROR`), before any handler
/// sees it.
async fn authenticate(State(sim): State<WechatPaySim>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return Failure::param(format!("请求体超过 {MAX_BODY} 字节")).into_response();
    };
    // The path as the merchant sent (and signed) it, even when this router is nested.
    let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |original| &original.0);
    let path_with_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    if let Err(message) = sim.verify_request(parts.method.as_str(), path_with_query, &parts.headers, &body) {
        return Failure::sign_error(message).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// Signs every answer with the platform key, as WeChat Pay does, and tags it with a `Request-ID`.
async fn sign_answer(State(sim): State<WechatPaySim>, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    sim.sign_body(&body).apply(&mut parts.headers);
    let (prefix, n) = sim.next_id();
    let request_id = format!("{:016X}{:016X}", prefix, seed::splitmix64(n));
    parts.headers.insert("request-id", request_id.parse().expect("hex is a valid header value"));
    Response::from_parts(parts, Body::from(body))
}

/// Parses a JSON body, naming the problem the way WeChat Pay's PARAM_ERROR does.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| Failure::param(format!("请求体格式错误：{e}")))
}

fn valid_no(field: &str, value: &str, len: std::ops::RangeInclusive<usize>, extra: &str) -> Result<(), Failure> {
    let ok = len.contains(&value.len()) && value.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    ok.then_some(())
        .ok_or_else(|| Failure::param(format!("{field} {value:?} 须为 {}–{} 位数字、大小写字母或 {extra}", len.start(), len.end())))
}

fn valid_out_trade_no(value: &str) -> Result<(), Failure> {
    valid_no("out_trade_no", value, 6..=32, "_-*")
}

/// https, or plain http to this machine so a local product can take notifications; never a query.
fn valid_notify_url(url: &str) -> Result<(), Failure> {
    let local = ["http://127.0.0.1", "http://localhost"].iter().any(|p| url.starts_with(p));
    if !(url.starts_with("https://") || local) || url.contains('?') {
        return Err(Failure::param(format!("notify_url {url:?} 须为 https 且不带查询参数")));
    }
    Ok(())
}

async fn create_order(State(sim): State<WechatPaySim>, bytes: Bytes) -> Result<Json<Value>, Failure> {
    let request: CreateOrder = body(&bytes)?;
    if request.appid != sim.inner.appid || request.mchid != sim.inner.mchid {
        return Err(Failure::bad_request("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配"));
    }
    valid_out_trade_no(&request.out_trade_no)?;
    valid_notify_url(&request.notify_url)?;
    if request.description.is_empty() || request.description.chars().count() > 127 {
        return Err(Failure::param("description 须为 1–127 个字符"));
    }
    if request.attach.as_ref().is_some_and(|a| a.chars().count() > 128) {
        return Err(Failure::param("attach 最多 128 个字符"));
    }
    if request.amount.total <= 0 || request.amount.currency != "CNY" {
        return Err(Failure::param("amount.total 须为正整数（分），currency 须为 CNY"));
    }
    let code_url = {
        let mut state = sim.state();
        let new_code_url = || {
            let (prefix, n) = sim.next_id();
            format!("weixin://wxpay/bizpayurl?pr={:x}", seed::mix(&[prefix, n]))
        };
        state.ledger.place(request, new_code_url)?.code_url.clone()
    };
    Ok(Json(json!({"code_url": code_url})))
}

#[derive(Deserialize)]
struct MchidQuery {
    mchid: Option<String>,
}

#[derive(Deserialize)]
struct CloseBody {
    mchid: String,
}

async fn query_order(
    State(sim): State<WechatPaySim>,
    Path(no): Path<String>,
    Query(query): Query<MchidQuery>,
) -> Result<Json<Value>, Failure> {
    if query.mchid.as_deref() != Some(sim.inner.mchid.as_str()) {
        return Err(Failure::param("查询参数 mchid 缺失或与商户不符"));
    }
    let state = sim.state();
    Ok(Json(state.ledger.order(&no)?.transaction_json(&sim.inner.appid, &sim.inner.mchid)))
}

async fn close_order(State(sim): State<WechatPaySim>, Path(no): Path<String>, bytes: Bytes) -> Result<StatusCode, Failure> {
    let request: CloseBody = body(&bytes)?;
    if request.mchid != sim.inner.mchid {
        return Err(Failure::param("mchid 与商户不符"));
    }
    sim.state().ledger.close(&no)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accepts a refund, answers `PROCESSING`, and (for a new one) completes it at once and sends
/// `REFUND.SUCCESS` to the request's `notify_url`, else the order's.
async fn refund(State(sim): State<WechatPaySim>, bytes: Bytes) -> Result<Json<Value>, Failure> {
    let request: CreateRefund = body(&bytes)?;
    if let Some(no) = &request.out_trade_no {
        valid_out_trade_no(no)?;
    }
    valid_no("out_refund_no", &request.out_refund_no, 1..=64, "_-|*@")?;
    if let Some(url) = &request.notify_url {
        valid_notify_url(url)?;
    }
    let (answer, notification) = {
        let mut state = sim.state();
        let new_refund_id = || {
            let (prefix, n) = sim.next_id();
            format!("50{:06}{}{:013}", prefix % 1_000_000, Utc::now().format("%Y%m%d"), n)
        };
        let (refund, new) = state.ledger.refund(request, new_refund_id, Utc::now())?;
        let notification =
            new.then(|| (refund.notify_url.clone(), refund.out_trade_no.clone(), refund.notification_json(&sim.inner.mchid)));
        (refund.answer_json(new), notification)
    };
    if let Some((url, out_trade_no, resource)) = notification {
        sim.notify(super::notify::Event::RefundSuccess, url, out_trade_no, &resource);
    }
    Ok(Json(answer))
}
