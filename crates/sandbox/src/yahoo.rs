//! A Yahoo Finance chart API simulator (`protocols/yahoo-akshare.md`): `GET
//! /v8/finance/chart/{symbol}?period1=&period2=&interval=1d` answers `{"chart":{"result":[…]}}` with
//! the real shape (meta, timestamps at each market's open, quote arrays with nulls on halted days),
//! 404 with Yahoo's error body for an unknown symbol, 429 in plain text when throttled or when the
//! client does not look like a browser.
//!
//! Prices are pure functions of (symbol, day): weekdays trade, with a halt now and then. A Shanghai
//! symbol (`600519.SS`) answers the Tushare simulator's closes.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Datelike, NaiveDate, Utc, Weekday};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::seed::{mix, of_str, signed};
use crate::tushare::universe;
use crate::{calendar, common};

/// How the simulated API behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YahooMode {
    #[default]
    Normal,
    /// HTTP 503 with an empty body.
    Down,
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// 429 `Too Many Requests` to every call.
    Throttled,
}

/// The simulator; clones share state.
#[derive(Clone, Default)]
pub struct YahooSim {
    state: Arc<Mutex<SimState>>,
}

#[derive(Default)]
struct SimState {
    mode: YahooMode,
    calls: u64,
}

/// What the simulator lists besides Shanghai A-shares (and `CNY=X`, another name of `USDCNY=X`):
/// symbol, name, currency, exchange, time zone
/// offset (seconds), UTC hour and minute of the open, a price level.
struct Listing {
    symbol: &'static str,
    name: &'static str,
    currency: &'static str,
    exchange: &'static str,
    timezone: &'static str,
    gmtoffset: i64,
    open_utc: (u32, u32),
    level: f64,
}

const LISTINGS: &[Listing] = &[
    Listing {
        symbol: "AAPL",
        name: "Apple Inc.",
        currency: "USD",
        exchange: "NMS",
        timezone: "EST",
        gmtoffset: -18_000,
        open_utc: (14, 30),
        level: 230.0,
    },
    Listing {
        symbol: "BABA",
        name: "Alibaba Group Holding Limited",
        currency: "USD",
        exchange: "NYQ",
        timezone: "EST",
        gmtoffset: -18_000,
        open_utc: (14, 30),
        level: 95.0,
    },
    Listing {
        symbol: "0700.HK",
        name: "TENCENT",
        currency: "HKD",
        exchange: "HKG",
        timezone: "HKT",
        gmtoffset: 28_800,
        open_utc: (1, 30),
        level: 480.0,
    },
    Listing {
        symbol: "USDCNY=X",
        name: "USD/CNY",
        currency: "CNY",
        exchange: "CCY",
        timezone: "GMT",
        gmtoffset: 0,
        open_utc: (0, 0),
        level: 7.18,
    },
];

#[derive(Deserialize)]
struct ChartQuery {
    period1: Option<i64>,
    period2: Option<i64>,
    range: Option<String>,
}

impl YahooSim {
    pub fn new() -> YahooSim {
        YahooSim::default()
    }

    pub fn router(&self) -> Router {
        let routes = Router::new().route("/v8/finance/chart/{symbol}", get(chart));
        common::label(routes, "yahoo").with_state(self.clone())
    }

    pub fn set_mode(&self, mode: YahooMode) {
        self.state().mode = mode;
    }

    /// Chart requests received, whatever their outcome.
    pub fn calls(&self) -> u64 {
        self.state().calls
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn too_many() -> Response {
    (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response()
}

async fn chart(State(sim): State<YahooSim>, Path(symbol): Path<String>, Query(query): Query<ChartQuery>, headers: HeaderMap) -> Response {
    let mode = {
        let mut state = sim.state();
        state.calls += 1;
        state.mode
    };
    match mode {
        YahooMode::Down => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        YahooMode::Throttled => return too_many(),
        YahooMode::Slow(pause) => tokio::time::sleep(pause).await,
        YahooMode::Normal => {}
    }
    let browser = headers.get("user-agent").and_then(|v| v.to_str().ok()).is_some_and(|ua| ua.starts_with("Mozilla/"));
    if !browser {
        return too_many();
    }
    let now = Utc::now();
    let (from, to) = match (query.period1, query.period2, query.range.as_deref()) {
        (Some(p1), Some(p2), _) => (p1, p2),
        (_, _, Some("5d")) => (now.timestamp() - 7 * 86_400, now.timestamp()),
        _ => (now.timestamp() - 30 * 86_400, now.timestamp()),
    };
    match answer(&symbol, from, to.min(now.timestamp()), now) {
        Some(body) => Json(body).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"chart": {"result": null, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}}),
            ),
        )
            .into_response(),
    }
}

/// The chart of `symbol` for sessions opening in `from..to` (unix seconds); `None` for a symbol
/// the simulator does not list.
fn answer(symbol: &str, from: i64, to: i64, now: DateTime<Utc>) -> Option<Value> {
    let shanghai = symbol.strip_suffix(".SS").and_then(|digits| universe::find(&format!("{digits}.SH")));
    // Yahoo answers USD/CNY under both spellings.
    let listed_as = if symbol == "CNY=X" { "USDCNY=X" } else { symbol };
    let listing = LISTINGS.iter().find(|l| l.symbol == listed_as);
    let (name, currency, exchange, timezone, gmtoffset, open_utc) = match (shanghai, listing) {
        (Some(stock), _) => (stock.name.as_str(), "CNY", "SHH", "CST", 28_800, (1, 30)),
        (None, Some(l)) => (l.name, l.currency, l.exchange, l.timezone, l.gmtoffset, l.open_utc),
        (None, None) => return None,
    };
    let first = DateTime::<Utc>::from_timestamp(from, 0)?.date_naive();
    let last = DateTime::<Utc>::from_timestamp(to, 0)?.date_naive();
    let mut timestamps = Vec::new();
    let mut quote: [Vec<Option<f64>>; 5] = Default::default();
    for day in first.iter_days().take_while(|d| *d <= last) {
        let open_at = day.and_hms_opt(open_utc.0, open_utc.1, 0)?.and_utc();
        let trades = match shanghai {
            Some(stock) => calendar::is_open(day) && day >= stock.list_date,
            None => !matches!(day.weekday(), Weekday::Sat | Weekday::Sun),
        };
        if !trades || open_at.timestamp() < from || open_at > now {
            continue;
        }
        timestamps.push(open_at.timestamp());
        let bar = match (shanghai, listing) {
            (Some(stock), _) => {
                let b = stock.model.bar(calendar::index(day)?);
                Some([b.open, b.high, b.low, b.close, b.vol * 100.0])
            }
            (None, Some(l)) => generated(l, day),
            (None, None) => None,
        };
        for (k, series) in quote.iter_mut().enumerate() {
            series.push(bar.map(|b| b[k]));
        }
    }
    let [open, high, low, close, volume] = quote;
    let regular = close.iter().rev().flatten().next().copied();
    Some(json!({"chart": {"result": [{
        "meta": {"currency": currency, "symbol": symbol, "exchangeName": exchange, "instrumentType": "EQUITY", "shortName": name,
                 "longName": name, "regularMarketPrice": regular, "gmtoffset": gmtoffset, "timezone": timezone, "dataGranularity": "1d"},
        "timestamp": timestamps,
        "indicators": {"quote": [{"open": open, "high": high, "low": low, "close": close, "volume": volume}], "adjclose": [{"adjclose": close}]}
    }], "error": null}}))
}

/// A listed symbol's bar on `day`: [open, high, low, close, volume], or `None` on a halted day
/// (about one in sixty).
fn generated(listing: &Listing, day: NaiveDate) -> Option<[f64; 5]> {
    let seed = of_str(listing.symbol);
    let n = u64::try_from(day.num_days_from_ce()).unwrap_or(0);
    if mix(&[seed, 1, n]).is_multiple_of(60) {
        return None;
    }
    // Slow waves plus a little daily noise, so consecutive days stay close.
    let t = n as f64;
    let close_at = |t: f64, k: u64| {
        let wave = 0.12 * (t / 47.0 + signed(seed)).sin() + 0.05 * (t / 13.0 + signed(mix(&[seed, 2]))).sin();
        listing.level * (wave + 0.004 * signed(mix(&[seed, k, t as u64]))).exp()
    };
    let round = |x: f64| if listing.level < 20.0 { (x * 10_000.0).round() / 10_000.0 } else { (x * 100.0).round() / 100.0 };
    let close = round(close_at(t, 3));
    let open = round(close_at(t - 0.5, 4));
    let high = round(open.max(close) * (1.0 + 0.006 * signed(mix(&[seed, 5, n])).abs()));
    let low = round(open.min(close) * (1.0 - 0.006 * signed(mix(&[seed, 6, n])).abs()));
    let volume = if listing.exchange == "CCY" { 0.0 } else { (2e7 * (1.5 + signed(mix(&[seed, 7, n])))).round() };
    Some([open, high, low, close, volume])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_trade_with_a_halt_now_and_then_and_prices_stay_near_their_level() {
        let aapl = &LISTINGS[0];
        let days: Vec<NaiveDate> = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap().iter_days().take(365).collect();
        let bars: Vec<Option<[f64; 5]>> = days.iter().map(|d| generated(aapl, *d)).collect();
        let halts = bars.iter().filter(|b| b.is_none()).count();
        assert!((1..=15).contains(&halts), "{halts} halts");
        for [open, high, low, close, _] in bars.into_iter().flatten() {
            assert!(low <= open.min(close) && high >= open.max(close) && (150.0..350.0).contains(&close), "{open} {high} {low} {close}");
        }
    }
}
