//! AKShare through AKTools (`protocols/yahoo-akshare.md`): what a company is (its industry, registered
//! name, market, main business), the enrichment `/fundamentals` states beside the numbers. Its
//! answers become one `company_profile` record at this edge.
//!
//! AKTools evaluates the function name and parameters it is sent as Python, so only the functions of
//! [`AkFunction`] are ever called, with a stock code's six digits as the one parameter.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use twilight_core::cite::SANDBOX_HEADER;
use twilight_core::TsCode;

use crate::warehouse::{Cell, Record, COMPANY_PROFILE};
use crate::MarketError;

#[derive(Debug, Clone)]
pub struct AktoolsConfig {
    /// Where AKTools listens: `http://127.0.0.1:8081` (loopback only).
    pub base_url: String,
    pub timeout: Duration,
}

/// The AKShare functions we call: the allowlist, as a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkFunction {
    /// Eastmoney's one-stock summary: `[{"item": "行业", "value": "酿酒行业"}, …]`.
    IndividualInfoEm,
    /// CNINFO's company profile: one record with 公司名称, 所属行业, 主营业务 and 23 more columns.
    ProfileCninfo,
}

impl AkFunction {
    pub fn name(self) -> &'static str {
        match self {
            AkFunction::IndividualInfoEm => "stock_individual_info_em",
            AkFunction::ProfileCninfo => "stock_profile_cninfo",
        }
    }
}

/// One AKTools answer: the records, and who gave them (`aktools` or `sandbox:aktools`).
#[derive(Debug, Clone)]
pub struct AkAnswer {
    pub records: Vec<Map<String, Value>>,
    pub source: &'static str,
}

pub struct AktoolsClient {
    http: reqwest::Client,
    base_url: String,
}

fn upstream(message: String) -> MarketError {
    MarketError::Upstream { source_name: "aktools", message }
}

impl AktoolsClient {
    pub fn new(config: AktoolsConfig) -> Result<AktoolsClient, MarketError> {
        let http = reqwest::Client::builder().timeout(config.timeout).build().map_err(|e| MarketError::http("aktools", e))?;
        Ok(AktoolsClient { http, base_url: config.base_url.trim_end_matches('/').to_string() })
    }

    /// `function` of the stock `code`.
    pub async fn call(&self, function: AkFunction, code: TsCode) -> Result<AkAnswer, MarketError> {
        let url = format!("{}/api/public/{}", self.base_url, function.name());
        let response = self.http.get(&url).query(&[("symbol", code.symbol())]).send().await.map_err(|e| MarketError::http("aktools", e))?;
        let source = if response.headers().contains_key(SANDBOX_HEADER) { "sandbox:aktools" } else { "aktools" };
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| MarketError::http("aktools", e))?;
        Ok(AkAnswer { records: parse(function, status, &bytes)?, source })
    }

    /// Both answers about `code`, asked at once, as one `company_profile` record.
    pub async fn company_profile(&self, code: TsCode, fetched_at: DateTime<Utc>) -> Result<Record, MarketError> {
        let (info, profile) = tokio::try_join!(self.call(AkFunction::IndividualInfoEm, code), self.call(AkFunction::ProfileCninfo, code))?;
        Ok(profile_record(code, &info, &profile, fetched_at))
    }
}

/// An AKTools answer's records; a non-2xx status is an upstream error carrying AKTools' `{"error"}`
/// (an unknown function) or the text of the failure (an exception inside AKShare).
fn parse(function: AkFunction, status: reqwest::StatusCode, bytes: &[u8]) -> Result<Vec<Map<String, Value>>, MarketError> {
    let name = function.name();
    if !status.is_success() {
        let detail = serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|body| body.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(200).collect());
        return Err(upstream(format!("{name}: HTTP {status}: {detail}")));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(rows)) => {
            Ok(rows.into_iter().filter_map(|row| if let Value::Object(row) = row { Some(row) } else { None }).collect())
        }
        Ok(_) => Err(upstream(format!("{name}: the answer is not a list of records"))),
        Err(e) => Err(upstream(format!("{name}: undecodable answer: {e}"))),
    }
}

/// Eastmoney's `item → value` pairs and CNINFO's first record as one row: the Eastmoney industry board,
/// then CNINFO's columns; both answers kept whole in `raw`.
fn profile_record(code: TsCode, info: &AkAnswer, profile: &AkAnswer, fetched_at: DateTime<Utc>) -> Record {
    let text = |value: Option<&Value>| match value {
        Some(Value::String(s)) if !s.trim().is_empty() => Cell::Text(s.trim().to_string()),
        Some(Value::Number(n)) => Cell::Text(n.to_string()),
        _ => Cell::Null,
    };
    let item =
        |name: &str| text(info.records.iter().find(|r| r.get("item").and_then(Value::as_str) == Some(name)).and_then(|r| r.get("value")));
    let cninfo = profile.records.first();
    let column = |name: &str| text(cninfo.and_then(|r| r.get(name)));
    let cells = vec![
        Cell::Text(code.to_string()),
        item("行业"),
        column("所属行业"),
        column("公司名称"),
        column("所属市场"),
        column("主营业务"),
        column("官方网站"),
    ];
    let raw = json!({ (AkFunction::IndividualInfoEm.name()): info.records, (AkFunction::ProfileCninfo.name()): profile.records });
    Record { spec: &COMPANY_PROFILE, cells, source: profile.source.to_string(), fetched_at, raw: Some(raw.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> AkAnswer {
        AkAnswer { records: parse(AkFunction::IndividualInfoEm, reqwest::StatusCode::OK, body.as_bytes()).unwrap(), source: "aktools" }
    }

    #[test]
    fn both_answers_become_one_profile_row() {
        let info = answer(r#"[{"item":"最新","value":1460.0},{"item":"股票代码","value":"600519"},{"item":"行业","value":"酿酒行业"}]"#);
        let profile = answer(
            r#"[{"公司名称":"贵州茅台酒股份有限公司","所属市场":"上交所主板","所属行业":"酒、饮料和精制茶制造业",
                "主营业务":"茅台酒及系列酒的生产与销售","官方网站":"   ","成立日期":"1999-11-20"}]"#,
        );
        let record = profile_record("600519.SH".parse().unwrap(), &info, &profile, Utc::now());
        assert_eq!(record.text("ts_code"), Some("600519.SH"));
        assert_eq!(record.text("industry"), Some("酿酒行业"));
        assert_eq!(record.text("csrc_industry"), Some("酒、饮料和精制茶制造业"));
        assert_eq!(record.text("company_name"), Some("贵州茅台酒股份有限公司"));
        assert_eq!(record.text("market"), Some("上交所主板"));
        assert_eq!(record.text("website"), None, "a blank value is no value");
        assert!(record.raw.as_deref().unwrap().contains("1999-11-20"), "both answers are kept whole");
    }

    #[test]
    fn an_unknown_function_or_a_failure_inside_akshare_is_an_upstream_error() {
        let not_found = parse(AkFunction::ProfileCninfo, reqwest::StatusCode::NOT_FOUND, r#"{"error":"未找到该接口"}"#.as_bytes());
        assert!(matches!(not_found, Err(MarketError::Upstream { message, .. }) if message.contains("未找到该接口")));
        let failed = parse(AkFunction::IndividualInfoEm, reqwest::StatusCode::INTERNAL_SERVER_ERROR, b"Internal Server Error");
        assert!(matches!(failed, Err(MarketError::Upstream { message, .. }) if message.contains("Internal Server Error")));
        assert!(parse(AkFunction::IndividualInfoEm, reqwest::StatusCode::OK, br#"{"not":"a list"}"#).is_err());
    }

    #[test]
    fn an_empty_answer_is_a_profile_without_values() {
        let record = profile_record("600519.SH".parse().unwrap(), &answer("[]"), &answer("[]"), Utc::now());
        assert!(record.cells[1..].iter().all(|cell| *cell == Cell::Null));
    }
}
