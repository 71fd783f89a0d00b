//! Tushare Pro client: one POST per page, columnar answers, errors carried in `code` (see protocols/tushare.md).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use twilight_core::cite::SANDBOX_HEADER;

use crate::warehouse::{Cell, ColType, Column, Record, TableSpec};
use crate::MarketError;

/// Estimated points one page costs; Tushare meters by account tier, we meter per call.
const COST_PTS_PER_PAGE: i32 = 1;
/// A runaway `has_more` must not loop forever.
const MAX_PAGES: usize = 50;

#[derive(Clone)]
pub struct TushareConfig {
    /// Where `/dataapi/{api_name}` lives; the official endpoint is `http://api.waditu.com`.
    pub base_url: String,
    pub token: secrecy::SecretString,
    pub timeout: Duration,
    /// Waits before retrying a per-minute throttle (40203); empty = fail at once.
    pub throttle_backoff: Vec<Duration>,
}

impl std::fmt::Debug for TushareConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TushareConfig")
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A decoded columnar answer: `fields` zipped with each of `items`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub fields: Vec<String>,
    pub items: Vec<Vec<Value>>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Rows as field → value maps.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.items.iter().map(move |item| Row { fields: &self.fields, item })
    }
}

pub struct Row<'a> {
    fields: &'a [String],
    item: &'a [Value],
}

impl Row<'_> {
    pub fn get(&self, field: &str) -> Option<&Value> {
        let i = self.fields.iter().position(|f| f == field)?;
        self.item.get(i).filter(|v| !v.is_null())
    }

    pub fn str(&self, field: &str) -> Option<&str> {
        self.get(field)?.as_str()
    }

    pub fn f64(&self, field: &str) -> Option<f64> {
        match self.get(field)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The row as a JSON object, for storing the raw upstream answer.
    pub fn to_json(&self) -> Value {
        Value::Object(self.fields.iter().cloned().zip(self.item.iter().cloned()).collect::<Map<_, _>>())
    }
}

/// What one logical query cost and who answered it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub table: Table,
    /// `tushare`, or `sandbox:tushare` when the simulator answered.
    pub source: &'static str,
    pub cost_pts: i32,
}

impl Fetched {
    /// The answer as `spec`'s records, converted here at Tushare's edge: each field into its
    /// column's type (junk becomes Null rather than a wrong number), the raw row kept where the
    /// table keeps it, rows without every key column dropped.
    pub fn records(&self, spec: &'static TableSpec, fetched_at: DateTime<Utc>) -> Vec<Record> {
        self.table
            .rows()
            .map(|row| Record {
                spec,
                cells: spec.columns.iter().map(|c| cell(&row, c)).collect(),
                source: self.source.to_string(),
                fetched_at,
                raw: spec.keep_raw.then(|| row.to_json().to_string()),
            })
            .filter(|record| record.cells[..spec.key_len].iter().all(|c| *c != Cell::Null))
            .collect()
    }
}

fn cell(row: &Row<'_>, column: &Column) -> Cell {
    match column.ty {
        ColType::Text => row.str(column.name).map_or(Cell::Null, |s| Cell::Text(s.to_string())),
        ColType::Date => row.str(column.name).and_then(|s| twilight_core::parse_date(s).ok()).map_or(Cell::Null, Cell::Date),
        ColType::Double | ColType::Int => row.f64(column.name).map_or(Cell::Null, Cell::Number),
    }
}

#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    msg: Option<String>,
    data: Option<Page>,
}

#[derive(Deserialize)]
struct Page {
    fields: Vec<String>,
    items: Vec<Vec<Value>>,
    #[serde(default)]
    has_more: bool,
}

pub struct TushareClient {
    http: reqwest::Client,
    config: TushareConfig,
}

impl TushareClient {
    pub fn new(config: TushareConfig) -> Result<Self, MarketError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| MarketError::Upstream { source_name: "tushare", message: e.to_string() })?;
        Ok(TushareClient { http, config })
    }

    /// Runs `api_name` with `params`, following `has_more` until the answer is complete.
    pub async fn query(&self, api_name: &str, params: Map<String, Value>, fields: &[&str]) -> Result<Fetched, MarketError> {
        let mut table = Table::default();
        let mut source = "tushare";
        for pages in 1..=MAX_PAGES {
            let mut page_params = params.clone();
            if !table.is_empty() {
                page_params.insert("offset".into(), Value::from(table.len()));
            }
            let (page, sandbox) = self.page_with_backoff(api_name, page_params, fields).await?;
            if sandbox {
                source = "sandbox:tushare";
            }
            if table.fields.is_empty() {
                table.fields = page.fields;
            }
            let got = page.items.len();
            table.items.extend(page.items);
            if !page.has_more || got == 0 {
                let cost_pts = i32::try_from(pages).map_or(i32::MAX, |pages| pages * COST_PTS_PER_PAGE);
                return Ok(Fetched { table, source, cost_pts });
            }
        }
        Err(MarketError::Upstream { source_name: "tushare", message: format!("{api_name}: more than {MAX_PAGES} pages") })
    }

    async fn page_with_backoff(&self, api_name: &str, params: Map<String, Value>, fields: &[&str]) -> Result<(Page, bool), MarketError> {
        let mut waits = self.config.throttle_backoff.iter();
        loop {
            match self.page(api_name, &params, fields).await {
                Err(MarketError::Throttled { .. }) if waits.len() > 0 => {
                    let wait = *waits.next().expect("checked non-empty");
                    tracing::warn!(api_name, ?wait, "tushare throttled; backing off");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn page(&self, api_name: &str, params: &Map<String, Value>, fields: &[&str]) -> Result<(Page, bool), MarketError> {
        use secrecy::ExposeSecret;
        let url = format!("{}/dataapi/{api_name}", self.config.base_url.trim_end_matches('/'));
        let body = serde_json::json!({
            "api_name": api_name,
            "token": self.config.token.expose_secret(),
            "params": params,
            "fields": fields.join(","),
        });
        let upstream = |message: String| MarketError::Upstream { source_name: "tushare", message };
        let response = self.http.post(&url).json(&body).send().await.map_err(|e| {
            // reqwest's error text includes the URL only, never the body with the token.
            if e.is_timeout() {
                MarketError::Timeout { source_name: "tushare" }
            } else {
                upstream(format!("{api_name}: {}", e.without_url()))
            }
        })?;
        let sandbox = response.headers().get(SANDBOX_HEADER).is_some();
        let status = response.status();
        if !status.is_success() {
            return Err(upstream(format!("{api_name}: HTTP {status}")));
        }
        let bytes = response.bytes().await.map_err(|e| upstream(format!("{api_name}: {}", e.without_url())))?;
        let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| upstream(format!("{api_name}: undecodable answer: {e}")))?;
        classify(api_name, envelope).map(|page| (page, sandbox))
    }
}

/// Maps Tushare's in-band error codes onto what a caller can act on.
fn classify(api_name: &str, envelope: Envelope) -> Result<Page, MarketError> {
    let msg = envelope.msg.unwrap_or_default();
    match envelope.code {
        0 => envelope
            .data
            .ok_or_else(|| MarketError::Upstream { source_name: "tushare", message: format!("{api_name}: code 0 without data") }),
        40101 => Err(MarketError::UpstreamAuth { source_name: "tushare", message: msg }),
        // The same code means "over your per-minute quota" or "your points do not cover this API".
        40203 if msg.contains("每分钟") || msg.contains("每小时") || msg.contains("每天") => {
            Err(MarketError::Throttled { source_name: "tushare" })
        }
        40203 => Err(MarketError::UpstreamPermission { source_name: "tushare", message: format!("{api_name}: {msg}") }),
        code => Err(MarketError::Upstream { source_name: "tushare", message: format!("{api_name}: code {code}: {msg}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(json: &str) -> Envelope {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn decodes_the_documented_columnar_answer() {
        let page = classify(
            "daily",
            envelope(r#"{"request_id":"x","code":0,"msg":"","data":{"fields":["ts_code","trade_date","close"],"items":[["600519.SH","20260430",1520.5],["600519.SH","20260429",null]],"has_more":false}}"#),
        )
        .unwrap();
        let table = Table { fields: page.fields, items: page.items };
        let rows: Vec<_> = table.rows().collect();
        assert_eq!(rows[0].str("ts_code"), Some("600519.SH"));
        assert_eq!(rows[0].f64("close"), Some(1520.5));
        assert_eq!(rows[1].f64("close"), None);
        assert_eq!(rows[0].to_json()["trade_date"], "20260430");
    }

    #[test]
    fn answers_become_records_at_the_edge() {
        use crate::warehouse::{DAILY, FINA_INDICATOR};
        let fields = |names: &[&str]| names.iter().map(|f| f.to_string()).collect();
        let daily = Fetched {
            table: Table {
                fields: fields(&["ts_code", "trade_date", "close", "vol"]),
                items: serde_json::from_str(r#"[["600519.SH","20260430",1505.5,"n/a"],[null,"20260429",1.0,1.0]]"#).unwrap(),
            },
            source: "sandbox:tushare",
            cost_pts: 1,
        };
        let at = Utc::now();
        let records = daily.records(&DAILY, at);
        assert_eq!(records.len(), 1, "a row without its key is dropped");
        assert_eq!((records[0].number("close"), records[0].number("vol"), records[0].number("open")), (Some(1505.5), None, None));
        assert_eq!((records[0].source.as_str(), records[0].fetched_at, records[0].raw.as_deref()), ("sandbox:tushare", at, None));

        let fina = Fetched {
            table: Table {
                fields: fields(&["ts_code", "end_date", "eps", "extra_field"]),
                items: serde_json::from_str(r#"[["600519.SH","20251231",68.64,"kept"]]"#).unwrap(),
            },
            source: "tushare",
            cost_pts: 1,
        };
        let raw = fina.records(&FINA_INDICATOR, at).remove(0).raw.unwrap();
        assert!(raw.contains(r#""extra_field":"kept""#), "{raw}");
    }

    #[test]
    fn maps_error_codes() {
        let err = |json| classify("daily", envelope(json)).err().unwrap();
        assert!(matches!(err(r#"{"code":40101,"msg":"您的token不对，请确认。","data":null}"#), MarketError::UpstreamAuth { .. }));
        assert!(matches!(
            err(
                r#"{"code":40203,"msg":"抱歉，您每分钟最多访问该接口500次，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。"}"#
            ),
            MarketError::Throttled { .. }
        ));
        assert!(matches!(err(r#"{"code":40203,"msg":"抱歉，您没有访问该接口的权限"}"#), MarketError::UpstreamPermission { .. }));
        assert!(matches!(err(r#"{"code":-2001,"msg":"参数错误"}"#), MarketError::Upstream { .. }));
    }
}
