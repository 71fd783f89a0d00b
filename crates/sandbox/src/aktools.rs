//! An AKTools simulator (`protocols/yahoo-akshare.md`): AKShare's functions over HTTP as `GET
//! /api/public/{function}?symbol=600519`, answering a JSON array of records with AKShare's Chinese
//! column names. It serves the two functions Twilight calls, over the Tushare simulator's companies:
//!
//! - `stock_individual_info_em`: Eastmoney's summary as `[{"item": …, "value": …}]` (最新, 股票代码,
//!   股票简称, 总股本, 流通股, 总市值, 流通市值, 行业, 上市时间), shares and yuan as Eastmoney states them;
//!   a code Eastmoney does not know makes AKShare raise, which AKTools (FastAPI) answers with a
//!   plain-text 500.
//! - `stock_profile_cninfo`: CNINFO's profile, one record of 26 columns (公司名称, 所属市场, 所属行业,
//!   主营业务, …); an unknown code is an empty list.
//!
//! Any other name is AKTools' 404 `{"error": "未找到该接口…"}`.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Days, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::calendar;
use crate::common::{self, Fault, Switchboard};
use crate::tushare::universe::{self, Board, Stock};

/// The simulator; clones share state.
#[derive(Clone, Default)]
pub struct AktoolsSim {
    switchboard: Switchboard,
}

#[derive(Deserialize)]
struct Params {
    symbol: Option<String>,
}

/// Full registered names of the well-known companies (the rest are `<name>股份有限公司`).
const REGISTERED_NAMES: &[(&str, &str)] = &[
    ("600519.SH", "贵州茅台酒股份有限公司"),
    ("000001.SZ", "平安银行股份有限公司"),
    ("601318.SH", "中国平安保险(集团)股份有限公司"),
    ("000858.SZ", "宜宾五粮液股份有限公司"),
    ("300750.SZ", "宁德时代新能源科技股份有限公司"),
    ("600036.SH", "招商银行股份有限公司"),
    ("601398.SH", "中国工商银行股份有限公司"),
    ("000333.SZ", "美的集团股份有限公司"),
    ("002594.SZ", "比亚迪股份有限公司"),
    ("688981.SH", "中芯国际集成电路制造有限公司"),
    ("600900.SH", "中国长江电力股份有限公司"),
    ("601012.SH", "隆基绿能科技股份有限公司"),
];

/// A Tushare industry label → Eastmoney's industry board, the CSRC industry CNINFO states, and a main
/// business.
const INDUSTRIES: &[(&str, &str, &str, &str)] = &[
    ("白酒", "酿酒行业", "酒、饮料和精制茶制造业", "白酒的生产与销售"),
    ("银行", "银行", "货币金融服务", "吸收公众存款、发放贷款、办理结算等商业银行业务"),
    ("保险", "保险", "保险业", "人身保险、财产保险及相关金融服务"),
    ("证券", "证券", "资本市场服务", "证券经纪、投资银行、资产管理业务"),
    ("电气设备", "电源设备", "电气机械和器材制造业", "电气设备及新能源产品的研发、生产与销售"),
    ("家用电器", "家电行业", "电气机械和器材制造业", "家用电器的研发、生产与销售"),
    ("半导体", "半导体", "计算机、通信和其他电子设备制造业", "集成电路的研发、制造与销售"),
    ("水力发电", "电力行业", "电力、热力生产和供应业", "水力发电与电力销售"),
    ("汽车整车", "汽车整车", "汽车制造业", "汽车及零部件的研发、生产与销售"),
];

/// What CNINFO says of `stock`'s market.
fn cninfo_market(board: Board) -> &'static str {
    match board {
        Board::SseMain => "上交所主板",
        Board::Star => "上交所科创板",
        Board::SzseMain => "深交所主板",
        Board::ChiNext => "深交所创业板",
        Board::Bse => "北交所",
    }
}

impl AktoolsSim {
    pub fn new() -> AktoolsSim {
        AktoolsSim::default()
    }

    pub fn router(&self) -> Router {
        let routes = Router::new().route("/api/public/{function}", get(public));
        common::label(self.switchboard.instrument(routes), "aktools")
    }

    pub fn set_fault(&self, fault: Fault) {
        self.switchboard.set_fault(fault);
    }

    /// Function calls received, whatever their outcome.
    pub fn calls(&self) -> u64 {
        self.switchboard.calls("GET /api/public/{function}")
    }
}

/// FastAPI's answer when the AKShare function raises.
fn raised() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
}

async fn public(Path(function): Path<String>, Query(params): Query<Params>) -> Response {
    let stock = params.symbol.as_deref().and_then(find);
    match (function.as_str(), params.symbol) {
        // Called without its argument, the Python function raises.
        ("stock_individual_info_em" | "stock_profile_cninfo", None) => raised(),
        ("stock_individual_info_em", Some(_)) => stock.and_then(individual_info).map_or_else(raised, |items| Json(items).into_response()),
        ("stock_profile_cninfo", Some(_)) => Json(stock.map(profile).into_iter().collect::<Vec<Value>>()).into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "未找到该接口，请升级 AKShare 到最新版本并在文档中确认该接口的使用方式：https://akshare.akfamily.xyz"})),
        )
            .into_response(),
    }
}

/// The listed company whose six-digit code is `symbol`.
fn find(symbol: &str) -> Option<&'static Stock> {
    universe::all().iter().find(|stock| stock.symbol == symbol)
}

/// Eastmoney's board, CNINFO's industry and a main business for `stock`'s industry.
fn industry(stock: &Stock) -> (String, String, String) {
    match INDUSTRIES.iter().find(|(label, ..)| *label == stock.industry) {
        Some((_, board, csrc, business)) => (board.to_string(), csrc.to_string(), business.to_string()),
        None => (stock.industry.to_string(), format!("{}业", stock.industry), format!("{}产品的研发、生产与销售", stock.industry)),
    }
}

/// Eastmoney's summary on the latest session (the last one before today in Beijing: AKShare reads
/// a snapshot).
fn individual_info(stock: &'static Stock) -> Option<Value> {
    let today = (Utc::now() + chrono::Duration::hours(8)).date_naive();
    let day = calendar::prev_open(today + Days::new(1))?;
    let basic = stock.model.basic(day, calendar::index(day)?);
    let (board, ..) = industry(stock);
    // Tushare states shares in 万股 and values in 万元; Eastmoney in shares and yuan.
    let items = [
        ("最新", json!(basic.close)),
        ("股票代码", json!(stock.symbol)),
        ("股票简称", json!(stock.name)),
        ("总股本", json!((stock.model.total_share * 10_000.0).round())),
        ("流通股", json!((stock.model.float_share * 10_000.0).round())),
        ("总市值", json!((basic.total_mv * 10_000.0).round())),
        ("流通市值", json!((basic.circ_mv * 10_000.0).round())),
        ("行业", json!(board)),
        ("上市时间", json!(calendar::yyyymmdd(stock.list_date))),
    ];
    Some(Value::Array(items.into_iter().map(|(item, value)| json!({"item": item, "value": value})).collect()))
}

/// CNINFO's profile record of `stock`.
fn profile(stock: &'static Stock) -> Value {
    let name = REGISTERED_NAMES
        .iter()
        .find(|(code, _)| *code == stock.ts_code)
        .map_or_else(|| format!("{}股份有限公司", stock.name), |(_, name)| name.to_string());
    let (_, csrc, business) = industry(stock);
    let (a_code, a_name) = (stock.symbol.as_str(), stock.name.as_str());
    json!({
        "公司名称": name, "英文名称": null, "曾用简称": null, "A股代码": a_code, "A股简称": a_name,
        "B股代码": null, "B股简称": null, "H股代码": null, "H股简称": null, "入选指数": null,
        "所属市场": cninfo_market(stock.board), "所属行业": csrc, "法人代表": null, "注册资金": null,
        "成立日期": null, "上市日期": stock.list_date.format("%Y-%m-%d").to_string(), "官方网站": null, "电子邮箱": null,
        "联系电话": null, "传真": null, "注册地址": stock.area, "办公地址": stock.area,
        "邮政编码": null, "主营业务": business, "经营范围": business, "机构简介": null,
    })
}
