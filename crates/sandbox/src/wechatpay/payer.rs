//! The payer's side, which real WeChat Pay keeps inside the WeChat app: a test calls
//! [`WechatPaySim::pay`]; a person opens `GET /sandbox/pay/{out_trade_no}`, a page clearly marked
//! as a sandbox, and presses Pay (`POST` the same path, optional form field `openid`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use axum::{Form, Router};
use chrono::Utc;
use serde::Deserialize;

use super::ledger::{Order, PayError, Payment};
use super::notify::Event;
use super::WechatPaySim;
use crate::common::random_alphanumeric;
use crate::common::{escape_html as escape, sandbox_page};

pub fn router() -> Router<WechatPaySim> {
    Router::new().route("/sandbox/pay/{out_trade_no}", get(page).post(pay_form))
}

impl WechatPaySim {
    /// Pays `out_trade_no` as `openid` (a random one when `None`) and sends `TRANSACTION.SUCCESS`
    /// to the order's `notify_url` under the current [`super::NotifyFault`]; returns the new
    /// `transaction_id`. Fails for an unknown, paid, closed or expired order.
    pub async fn pay(&self, out_trade_no: &str, openid: Option<&str>) -> Result<String, PayError> {
        let now = Utc::now();
        let (prefix, n) = self.next_id();
        let transaction_id = format!("4200{:06}{}{:010}", prefix % 1_000_000, now.format("%Y%m%d"), n);
        // An openid is 28 characters, starting with `o`.
        let openid = openid.map_or_else(|| format!("o{}", random_alphanumeric(27)), str::to_string);
        let payment = Payment { transaction_id: transaction_id.clone(), openid, success_time: now };
        let (url, resource) = {
            let mut state = self.state();
            let order = state.ledger.pay(out_trade_no, payment)?;
            (order.request.notify_url.clone(), order.transaction_json(&self.inner.appid, &self.inner.mchid))
        };
        self.notify(Event::TransactionSuccess, url, out_trade_no.to_string(), &resource);
        Ok(transaction_id)
    }
}

#[derive(Deserialize)]
struct PayForm {
    #[serde(default)]
    openid: String,
}

async fn page(State(sim): State<WechatPaySim>, Path(no): Path<String>) -> (StatusCode, Html<String>) {
    let state = sim.state();
    match state.ledger.order(&no) {
        Ok(order) => (StatusCode::OK, Html(order_page(order))),
        Err(_) => (StatusCode::NOT_FOUND, Html(shell(&format!("<p>No order {}.</p>", escape(&no))))),
    }
}

async fn pay_form(State(sim): State<WechatPaySim>, Path(no): Path<String>, Form(form): Form<PayForm>) -> (StatusCode, Html<String>) {
    let openid = Some(form.openid.trim()).filter(|id| !id.is_empty());
    match sim.pay(&no, openid).await {
        Ok(transaction_id) => (
            StatusCode::OK,
            Html(shell(&format!(
                "<h1>Paid</h1><p>Order {} is paid (transaction {}). The merchant is being notified.</p>",
                escape(&no),
                escape(&transaction_id)
            ))),
        ),
        Err(error) => (StatusCode::CONFLICT, Html(shell(&format!("<h1>Not paid</h1><p>{}</p>", escape(&error.to_string()))))),
    }
}

fn order_page(order: &Order) -> String {
    let total = order.request.amount.total;
    let amount = format!("¥{}.{:02}", total / 100, total % 100);
    shell(&format!(
        r#"<h1>{description}</h1>
<p class="amount">{amount}</p>
<p>Order {no} · {state}</p>
<form method="post">
  <label>Payer openid (optional) <input name="openid" autocomplete="off"></label>
  <button type="submit">Pay {amount}</button>
</form>"#,
        description = escape(&order.request.description),
        no = escape(&order.request.out_trade_no),
        state = order.state.wire().0,
    ))
}

/// Every page carries the sandbox banner, so nobody mistakes it for a real payment.
fn shell(content: &str) -> String {
    sandbox_page("WeChat Pay simulator", "SANDBOX — no real money", content)
}
