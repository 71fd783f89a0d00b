//! A Tushare Pro simulator speaking the wire protocol of `protocols/tushare.md`: JSON POSTs to
//! `/`, `/{api_name}` or `/dataapi/{api_name}`, columnar answers, errors as HTTP 200 with a
//! non-zero `code`. Serves `trade_cal`, `stock_basic`, `daily`, `daily_basic`, `adj_factor`,
//! `fina_indicator` and `fina_indicator_vip` over a deterministic universe of ~5,400 A-share codes (see [`universe`] and
//! [`model`]); any other API answers with Tushare's no-permission error.

mod apis;
pub(crate) use apis::CLOSE_DATA_AT;
mod model;
mod table;
pub(crate) mod universe;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::seed;
use table::Data;

/// Calls per API per rolling minute before 40203, the figure of Tushare's basic tier.
pub const DEFAULT_RATE_LIMIT_PER_MIN: u32 = 500;
const PERMISSION_DOC: &str = "权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。";

/// How the simulated gateway behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TushareMode {
    #[default]
    Normal,
    /// HTTP 503 with an empty body, as a dead gateway answers.
    Down,
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// Every call gets the per-minute 40203.
    Throttled,
}

/// The simulator; clones share state.
#[derive(Clone)]
pub struct TushareSim {
    inner: Arc<Inner>,
}

struct Inner {
    token: String,
    /// First half of every `request_id`: differs between simulators and processes.
    id_prefix: u64,
    next_id: AtomicU64,
    state: Mutex<SimState>,
}

struct SimState {
    mode: TushareMode,
    rate_limit_per_min: u32,
    page_size: Option<usize>,
    /// Fixed "now"; the system clock when `None`.
    now: Option<DateTime<Utc>>,
    total_calls: u64,
    calls: HashMap<String, u64>,
    /// Admitted calls per API within the last minute (one token is valid, so per API is per token).
    recent: HashMap<String, VecDeque<Instant>>,
}

/// Why a call got a non-zero `code`.
#[derive(Debug)]
pub(crate) enum Failure {
    BadToken,
    NoPermission,
    PerMinute(u32),
    BadParam(String),
}

impl Failure {
    fn code(&self) -> i64 {
        match self {
            Failure::BadToken => 40101,
            Failure::NoPermission | Failure::PerMinute(_) => 40203,
            Failure::BadParam(_) => -2001,
        }
    }

    fn msg(&self) -> String {
        match self {
            Failure::BadToken => "您的token不对，请确认。".into(),
            Failure::NoPermission => format!("抱歉，您没有访问该接口的权限，{PERMISSION_DOC}"),
            Failure::PerMinute(n) => format!("抱歉，您每分钟最多访问该接口{n}次，{PERMISSION_DOC}"),
            Failure::BadParam(msg) => msg.clone(),
        }
    }
}

/// A request body. Fields are loose on purpose: a wrong `token` type is a token error, not a
/// parse error, and `fields` may come as a comma string or (leniently) a list.
#[derive(Deserialize)]
struct Call {
    #[serde(default)]
    api_name: Option<String>,
    #[serde(default)]
    token: Value,
    #[serde(default)]
    params: Option<Map<String, Value>>,
    #[serde(default)]
    fields: Value,
}

#[derive(Serialize)]
struct Envelope {
    request_id: String,
    code: i64,
    msg: String,
    data: Option<Data>,
}

/// Shanghai has kept UTC+8 without daylight saving since 1991.
fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

impl TushareSim {
    /// A simulator accepting only `token`.
    pub fn new(token: impl Into<String>) -> Self {
        static SIMS: AtomicU64 = AtomicU64::new(0);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        let id_prefix = seed::mix(&[nanos, u64::from(std::process::id()), SIMS.fetch_add(1, Ordering::Relaxed)]);
        let state = SimState {
            mode: TushareMode::Normal,
            rate_limit_per_min: DEFAULT_RATE_LIMIT_PER_MIN,
            page_size: None,
            now: None,
            total_calls: 0,
            calls: HashMap::new(),
            recent: HashMap::new(),
        };
        TushareSim { inner: Arc::new(Inner { token: token.into(), id_prefix, next_id: AtomicU64::new(0), state: Mutex::new(state) }) }
    }

    /// POST `/`, `/{api_name}` and `/dataapi/{api_name}`; a name in the path wins over the body's.
    pub fn router(&self) -> Router {
        let routes = Router::new()
            .route("/", post(unnamed))
            .route("/{api_name}", post(named))
            .route("/dataapi/{api_name}", post(named))
            .route("/_sandbox/calls", axum::routing::get(call_counts));
        crate::common::label(routes, "tushare").with_state(self.clone())
    }

    /// Requests received by an API route, whatever their outcome (errors and `Down` included).
    /// Also served as `GET /_sandbox/calls`, so a person trying the product can see caching work.
    pub fn calls(&self) -> u64 {
        self.state().total_calls
    }

    /// Requests received for `api` (as named by the path, else the body).
    pub fn calls_for(&self, api: &str) -> u64 {
        self.state().calls.get(api).copied().unwrap_or(0)
    }

    pub fn set_mode(&self, mode: TushareMode) {
        self.state().mode = mode;
    }

    /// Calls allowed per API per rolling minute (default [`DEFAULT_RATE_LIMIT_PER_MIN`]).
    pub fn set_rate_limit_per_min(&self, limit: u32) {
        self.state().rate_limit_per_min = limit;
    }

    /// Overrides every API's row cap, so tests can force `has_more` paging; `None` restores them.
    pub fn set_page_size(&self, rows: Option<usize>) {
        self.state().page_size = rows;
    }

    /// Fixes the simulator's clock (it decides which days' data are out); `None` follows the
    /// system clock. Data for a trading day appear at 16:00 Shanghai time, adjustment factors at
    /// 09:30, reports on their announcement day.
    pub fn set_now(&self, now: Option<DateTime<Utc>>) {
        self.state().now = now;
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn respond(&self, path_api: Option<String>, body: Bytes) -> Response {
        let call = serde_json::from_slice::<Call>(&body);
        let api_name = path_api.or_else(|| call.as_ref().ok().and_then(|c| c.api_name.clone())).unwrap_or_default();
        let mode = {
            let mut state = self.state();
            state.total_calls += 1;
            *state.calls.entry(api_name.clone()).or_default() += 1;
            state.mode
        };
        match mode {
            TushareMode::Down => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
            TushareMode::Slow(pause) => tokio::time::sleep(pause).await,
            TushareMode::Normal | TushareMode::Throttled => {}
        }
        let outcome = match call {
            Err(e) => Err(Failure::BadParam(format!("请求体不是合法的 JSON：{e}"))),
            // A whole-market answer takes a while in debug builds; keep it off the async workers.
            Ok(call) => {
                let sim = self.clone();
                tokio::task::spawn_blocking(move || sim.answer(&api_name, &call)).await.expect("answering does not panic")
            }
        };
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("{:016x}{:016x}", self.inner.id_prefix, seed::splitmix64(n));
        let envelope = match outcome {
            Ok(data) => Envelope { request_id, code: 0, msg: String::new(), data: Some(data) },
            Err(failure) => Envelope { request_id, code: failure.code(), msg: failure.msg(), data: None },
        };
        Json(envelope).into_response()
    }

    fn answer(&self, api_name: &str, call: &Call) -> Result<Data, Failure> {
        if call.token.as_str() != Some(self.inner.token.as_str()) {
            return Err(Failure::BadToken);
        }
        let api = apis::find(api_name).ok_or(Failure::NoPermission)?;
        let (now, page_size) = {
            let mut state = self.state();
            if state.mode == TushareMode::Throttled {
                return Err(Failure::PerMinute(state.rate_limit_per_min));
            }
            state.admit(api_name)?;
            (state.now.unwrap_or_else(Utc::now), state.page_size)
        };
        let fields = match &call.fields {
            Value::Null => Vec::new(),
            Value::String(s) => s.split(',').map(|f| f.trim().to_string()).collect(),
            Value::Array(list) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            other => return Err(Failure::BadParam(format!("参数 fields 错误：应为逗号分隔的字符串，收到 {other}"))),
        };
        let local: NaiveDateTime = now.with_timezone(&shanghai()).naive_local();
        api.answer(call.params.as_ref().unwrap_or(&Map::new()), &fields, local, page_size)
    }
}

impl SimState {
    /// Records a call to `api` unless it would exceed the per-minute limit.
    fn admit(&mut self, api: &str) -> Result<(), Failure> {
        let now = Instant::now();
        let recent = self.recent.entry(api.to_string()).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            recent.pop_front();
        }
        if recent.len() >= self.rate_limit_per_min as usize {
            return Err(Failure::PerMinute(self.rate_limit_per_min));
        }
        recent.push_back(now);
        Ok(())
    }
}

async fn unnamed(State(sim): State<TushareSim>, body: Bytes) -> Response {
    sim.respond(None, body).await
}

async fn named(State(sim): State<TushareSim>, Path(api_name): Path<String>, body: Bytes) -> Response {
    sim.respond(Some(api_name), body).await
}

/// `GET /_sandbox/calls`: the call counters as JSON (real Tushare has no such path; it only takes POSTs).
async fn call_counts(State(sim): State<TushareSim>) -> Json<serde_json::Value> {
    let state = sim.state();
    Json(serde_json::json!({ "total": state.total_calls, "by_api": state.calls }))
}
