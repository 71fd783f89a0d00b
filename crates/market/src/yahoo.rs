//! Yahoo Finance's chart API, for what Tushare does not list: US tickers and ADRs, Hong Kong, FX
//! (`protocols/yahoo-akshare.md`). Its answers become `yahoo_daily` records at this edge.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use twilight_core::cite::SANDBOX_HEADER;

use crate::warehouse::{Cell, Record, YAHOO_DAILY};
use crate::MarketError;

/// Yahoo refuses clients that do not look like a browser.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

#[derive(Debug, Clone)]
pub struct YahooConfig {
    /// Where `/v8/finance/chart/{symbol}` lives: `https://query1.finance.yahoo.com`.
    pub base_url: String,
    pub timeout: Duration,
}

/// One chart answer: the symbol's description and its daily bars, oldest first (halted days, which
/// Yahoo answers with nulls, left out).
#[derive(Debug, Clone)]
pub struct Chart {
    pub symbol: String,
    pub name: Option<String>,
    pub currency: String,
    pub bars: Vec<YahooBar>,
    /// `yahoo`, or `sandbox:yahoo` when the simulator answered.
    pub source: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YahooBar {
    /// The trading day where the symbol trades.
    pub date: NaiveDate,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: Option<f64>,
}

#[derive(Deserialize)]
struct Envelope {
    chart: ChartBody,
}

#[derive(Deserialize)]
struct ChartBody {
    result: Option<Vec<ChartResult>>,
    error: Option<ChartError>,
}

#[derive(Deserialize)]
struct ChartError {
    code: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    symbol: String,
    currency: Option<String>,
    short_name: Option<String>,
    long_name: Option<String>,
    #[serde(default)]
    gmtoffset: i64,
}

#[derive(Deserialize)]
struct ChartResult {
    meta: Meta,
    #[serde(default)]
    timestamp: Vec<i64>,
    indicators: Indicators,
}

#[derive(Deserialize)]
struct Indicators {
    quote: Vec<Quote>,
}

#[derive(Deserialize, Default)]
struct Quote {
    #[serde(default)]
    open: Vec<Option<f64>>,
    #[serde(default)]
    high: Vec<Option<f64>>,
    #[serde(default)]
    low: Vec<Option<f64>>,
    #[serde(default)]
    close: Vec<Option<f64>>,
    #[serde(default)]
    volume: Vec<Option<f64>>,
}

pub struct YahooClient {
    http: reqwest::Client,
    base_url: String,
}

fn upstream(message: String) -> MarketError {
    MarketError::Upstream { source_name: "yahoo", message }
}

impl YahooClient {
    pub fn new(config: YahooConfig) -> Result<YahooClient, MarketError> {
        let http =
            reqwest::Client::builder().timeout(config.timeout).user_agent(USER_AGENT).build().map_err(|e| MarketError::http("yahoo", e))?;
        Ok(YahooClient { http, base_url: config.base_url })
    }

    /// Daily bars of `symbol` over `from..=to` (days where it trades).
    pub async fn chart(&self, symbol: &str, from: NaiveDate, to: NaiveDate) -> Result<Chart, MarketError> {
        let epoch = |day: NaiveDate| day.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp();
        let url = format!("{}/v8/finance/chart/{}", self.base_url.trim_end_matches('/'), symbol);
        let period = [("period1", epoch(from).to_string()), ("period2", epoch(to + chrono::Days::new(1)).to_string())];
        let response =
            self.http.get(&url).query(&period).query(&[("interval", "1d")]).send().await.map_err(|e| MarketError::http("yahoo", e))?;
        let sandbox = response.headers().contains_key(SANDBOX_HEADER);
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| MarketError::http("yahoo", e))?;
        match status.as_u16() {
            200 => parse(symbol, &bytes, if sandbox { "sandbox:yahoo" } else { "yahoo" }),
            404 => Err(MarketError::NotFound(format!("unknown code {symbol}: Yahoo Finance lists no such symbol"))),
            429 => Err(MarketError::Throttled { source_name: "yahoo" }),
            _ => Err(upstream(format!("{symbol}: HTTP {status}"))),
        }
    }
}

fn parse(symbol: &str, bytes: &[u8], source: &'static str) -> Result<Chart, MarketError> {
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| upstream(format!("{symbol}: undecodable chart: {e}")))?;
    if let Some(error) = envelope.chart.error {
        return Err(upstream(format!("{symbol}: {}: {}", error.code.unwrap_or_default(), error.description.unwrap_or_default())));
    }
    let result =
        envelope.chart.result.and_then(|mut results| results.pop()).ok_or_else(|| upstream(format!("{symbol}: a chart without result")))?;
    let quote = result.indicators.quote.into_iter().next().unwrap_or_default();
    let at = |values: &[Option<f64>], i: usize| values.get(i).copied().flatten();
    let bars = result
        .timestamp
        .iter()
        .enumerate()
        .filter_map(|(i, &ts)| {
            let date = DateTime::<Utc>::from_timestamp(ts + result.meta.gmtoffset, 0)?.date_naive();
            let (open, high, low, close) = (at(&quote.open, i)?, at(&quote.high, i)?, at(&quote.low, i)?, at(&quote.close, i)?);
            Some(YahooBar { date, open, high, low, close, volume: at(&quote.volume, i) })
        })
        .collect();
    Ok(Chart {
        symbol: result.meta.symbol,
        name: result.meta.long_name.or(result.meta.short_name),
        currency: result.meta.currency.unwrap_or_default(),
        bars,
        source,
    })
}

impl Chart {
    /// The bars as `yahoo_daily` records: `pre_close`, `change` and `pct_chg` from the bar before
    /// (the first bar has none).
    pub fn records(&self, fetched_at: DateTime<Utc>) -> Vec<Record> {
        let round = |x: f64, dp: i32| (x * 10f64.powi(dp)).round() / 10f64.powi(dp);
        let number = |x: Option<f64>| x.map_or(Cell::Null, Cell::Number);
        let mut previous: Option<f64> = None;
        self.bars
            .iter()
            .map(|bar| {
                let change = previous.map(|pre| round(bar.close - pre, 4));
                let pct_chg = previous.zip(change).map(|(pre, change)| round(change / pre * 100.0, 4));
                let cells = vec![
                    Cell::Text(self.symbol.clone()),
                    Cell::Date(bar.date),
                    Cell::Number(bar.open),
                    Cell::Number(bar.high),
                    Cell::Number(bar.low),
                    Cell::Number(bar.close),
                    number(previous),
                    number(change),
                    number(pct_chg),
                    number(bar.volume),
                    Cell::Text(self.currency.clone()),
                    self.name.clone().map_or(Cell::Null, Cell::Text),
                ];
                previous = Some(bar.close);
                Record { spec: &YAHOO_DAILY, cells, source: self.source.to_string(), fetched_at, raw: None }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented shape, with a halted day's nulls inside the arrays.
    const AAPL: &str = r#"{"chart":{"result":[{"meta":{"currency":"USD","symbol":"AAPL","exchangeName":"NMS","shortName":"Apple Inc.",
        "regularMarketPrice":229.87,"gmtoffset":-18000,"timezone":"EST"},
        "timestamp":[1764599400,1764685800,1764772200],
        "indicators":{"quote":[{"open":[230.1,null,228.0],"high":[231.0,null,230.2],"low":[229.0,null,227.5],"close":[230.5,null,229.87],
        "volume":[51000000,null,47000000]}],"adjclose":[{"adjclose":[230.5,null,229.87]}]}}],"error":null}}"#;

    #[test]
    fn a_chart_decodes_skipping_halted_days() {
        let chart = parse("AAPL", AAPL.as_bytes(), "yahoo").unwrap();
        assert_eq!((chart.symbol.as_str(), chart.currency.as_str(), chart.name.as_deref()), ("AAPL", "USD", Some("Apple Inc.")));
        let dates: Vec<String> = chart.bars.iter().map(|b| b.date.to_string()).collect();
        assert_eq!(dates, ["2025-12-01", "2025-12-03"], "New York dates; the null day skipped");
        let records = chart.records(Utc::now());
        assert_eq!((records[1].number("change"), records[1].number("pct_chg")), (Some(-0.63), Some(-0.2733)));
        assert_eq!(records[0].number("pre_close"), None);
        assert_eq!(records[1].text("currency"), Some("USD"));
    }

    #[test]
    fn an_error_body_is_an_upstream_error() {
        let body = r#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#;
        assert!(matches!(parse("ZZZZ", body.as_bytes(), "yahoo"), Err(MarketError::Upstream { .. })));
        assert!(parse("AAPL", b"<html>", "yahoo").is_err());
    }
}
