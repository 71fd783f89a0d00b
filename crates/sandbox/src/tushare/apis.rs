//! The APIs the simulator serves: each checks its params, lists the keys of the matching rows in
//! Tushare's order and turns a key into a row; [`table::answer`] does the rest.

use std::rc::Rc;

use chrono::{Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Map, Value};

use super::model::Period;
use super::table::{self, date, num, opt_num, text, Data, Page, Schema};
use super::universe::{self, Stock};
use super::Failure;
use crate::calendar;

/// One served API.
pub(crate) struct Api {
    schema: Schema,
    run: fn(&Query) -> Result<Data, Failure>,
}

/// The API called `name`, if the simulator serves it.
pub(crate) fn find(name: &str) -> Option<&'static Api> {
    Some(match name {
        "trade_cal" => &TRADE_CAL,
        "stock_basic" => &STOCK_BASIC,
        "daily" => &DAILY,
        "daily_basic" => &DAILY_BASIC,
        "adj_factor" => &ADJ_FACTOR,
        "fina_indicator" => &FINA_INDICATOR,
        "fina_indicator_vip" => &FINA_INDICATOR_VIP,
        _ => return None,
    })
}

impl Api {
    /// Answers one call. `now` is Shanghai wall time; `max_rows` overrides the API's row cap.
    pub fn answer(
        &self,
        params: &Map<String, Value>,
        fields: &[String],
        now: NaiveDateTime,
        max_rows: Option<usize>,
    ) -> Result<Data, Failure> {
        let params = Params(params);
        let cap = max_rows.unwrap_or(self.schema.max_rows);
        let page = Page { offset: params.count("offset")?.unwrap_or(0), size: params.count("limit")?.map_or(cap, |limit| limit.min(cap)) };
        (self.run)(&Query { params, now, schema: &self.schema, columns: self.schema.select(fields), page })
    }
}

/// One call's inputs, as an API sees them.
struct Query<'a> {
    params: Params<'a>,
    now: NaiveDateTime,
    schema: &'a Schema,
    columns: Vec<usize>,
    page: Page,
}

impl Query<'_> {
    fn today(&self) -> NaiveDate {
        self.now.date()
    }

    /// The last day whose data is out, for data published daily at `time` (Shanghai).
    fn published_through(&self, time: NaiveTime) -> NaiveDate {
        if self.now.time() >= time {
            self.today()
        } else {
            self.today() - Days::new(1)
        }
    }

    fn answer<K>(&self, keys: impl Iterator<Item = K>, row: impl Fn(K) -> Vec<Value>) -> Result<Data, Failure> {
        Ok(table::answer(self.schema, &self.columns, self.page, keys, row))
    }
}

/// `params`, read leniently the way Tushare does: absent, null and "" all mean "not given",
/// numbers are accepted where strings are expected, and unknown keys are ignored.
struct Params<'a>(&'a Map<String, Value>);

impl Params<'_> {
    fn text(&self, key: &str) -> Result<Option<String>, Failure> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(bad(key, &format!("应为字符串，收到 {other}"))),
        }
    }

    fn date(&self, key: &str) -> Result<Option<NaiveDate>, Failure> {
        let Some(s) = self.text(key)? else { return Ok(None) };
        match NaiveDate::parse_from_str(&s, "%Y%m%d") {
            Ok(day) if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(day)),
            _ => Err(bad(key, &format!("应为 YYYYMMDD 格式的日期，收到 '{s}'"))),
        }
    }

    fn count(&self, key: &str) -> Result<Option<usize>, Failure> {
        let Some(s) = self.text(key)? else { return Ok(None) };
        s.parse().map(Some).map_err(|_| bad(key, &format!("应为非负整数，收到 '{s}'")))
    }

    /// The listed codes named by a comma-separated `ts_code`, sorted; codes not listed are dropped.
    fn stocks(&self) -> Result<Option<Vec<&'static Stock>>, Failure> {
        let Some(codes) = self.text("ts_code")? else { return Ok(None) };
        let mut stocks: Vec<&Stock> = codes.split(',').filter_map(|c| universe::find(&c.trim().to_ascii_uppercase())).collect();
        stocks.sort_by(|a, b| a.ts_code.cmp(&b.ts_code));
        stocks.dedup_by(|a, b| a.ts_code == b.ts_code);
        Ok(Some(stocks))
    }
}

fn bad(param: &str, problem: &str) -> Failure {
    Failure::BadParam(format!("参数 {param} 错误：{problem}"))
}

const A_SHARE_EXCHANGES: [&str; 3] = ["SSE", "SZSE", "BSE"];

const TRADE_CAL: Api =
    Api { schema: Schema { fields: &["exchange", "cal_date", "is_open", "pretrade_date"], defaults: 4, max_rows: 10_000 }, run: trade_cal };

/// Every calendar day, latest first, through the end of the current year; other exchanges'
/// calendars (futures, HK) are not simulated and come back empty.
fn trade_cal(q: &Query) -> Result<Data, Failure> {
    let exchange = q.params.text("exchange")?.unwrap_or_else(|| "SSE".into());
    let is_open = match q.params.text("is_open")?.as_deref() {
        None => None,
        Some("1") => Some(true),
        Some("0") => Some(false),
        Some(other) => return Err(bad("is_open", &format!("应为 0 或 1，收到 '{other}'"))),
    };
    let year_end = NaiveDate::from_ymd_opt(q.today().year(), 12, 31).expect("valid date");
    let start = q.params.date("start_date")?.unwrap_or(calendar::FIRST_OPEN_DAY).max(calendar::FIRST_OPEN_DAY);
    let end = q.params.date("end_date")?.unwrap_or(year_end).min(year_end);
    let days = A_SHARE_EXCHANGES
        .contains(&exchange.as_str())
        .then(|| calendar::days(start, end).rev())
        .into_iter()
        .flatten()
        .filter(|d| is_open.is_none_or(|open| calendar::is_open(*d) == open));
    q.answer(days, |day| {
        vec![text(&exchange), date(day), Value::from(u8::from(calendar::is_open(day))), calendar::prev_open(day).map_or(Value::Null, date)]
    })
}

const STOCK_BASIC: Api = Api {
    schema: Schema {
        fields: &[
            "ts_code",
            "symbol",
            "name",
            "area",
            "industry",
            "market",
            "list_date",
            "exchange",
            "curr_type",
            "list_status",
            "delist_date",
        ],
        defaults: 7,
        max_rows: 10_000,
    },
    run: stock_basic,
};

/// Listed companies (every simulated code is listed: `list_status` D or P finds none).
fn stock_basic(q: &Query) -> Result<Data, Failure> {
    let status = q.params.text("list_status")?.unwrap_or_else(|| "L".into());
    let (exchange, market, name) = (q.params.text("exchange")?, q.params.text("market")?, q.params.text("name")?);
    let chosen = q.params.stocks()?;
    let stocks = universe::all().iter().filter(|s| {
        status == "L"
            && s.list_date <= q.today()
            && exchange.as_deref().is_none_or(|e| e == s.board.exchange())
            && market.as_deref().is_none_or(|m| m == s.board.market())
            && name.as_deref().is_none_or(|n| n == s.name)
            && chosen.as_ref().is_none_or(|c| c.iter().any(|x| x.ts_code == s.ts_code))
    });
    q.answer(stocks, |s| {
        vec![
            text(&s.ts_code),
            text(&s.symbol),
            text(&s.name),
            text(s.area),
            text(s.industry),
            text(s.board.market()),
            date(s.list_date),
            text(s.board.exchange()),
            text("CNY"),
            text("L"),
            Value::Null,
        ]
    })
}

/// Daily bars are out by 16:00 Shanghai time (Tushare loads them between 15:00 and 17:00).
pub(crate) const CLOSE_DATA_AT: NaiveTime = NaiveTime::from_hms_opt(16, 0, 0).expect("valid time");
/// Tushare publishes the day's adjustment factors before the open.
const ADJ_FACTOR_AT: NaiveTime = NaiveTime::from_hms_opt(9, 30, 0).expect("valid time");

/// (code, trading day, trading-day number) for a daily table's params, latest day first and codes
/// ascending within a day: `trade_date`, or `start_date..=end_date`, for `ts_code` (a comma list)
/// or, without it, the whole market. Only open days the code was listed on, published by now.
fn sessions(q: &Query, published_at: NaiveTime) -> Result<impl Iterator<Item = (&'static Stock, NaiveDate, u32)>, Failure> {
    let stocks: Rc<[&'static Stock]> = match q.params.stocks()? {
        Some(chosen) => chosen.into(),
        None => universe::all().iter().collect(),
    };
    let (start, end) = match q.params.date("trade_date")? {
        Some(day) => (day, day),
        None => (q.params.date("start_date")?.unwrap_or(calendar::FIRST_OPEN_DAY), q.params.date("end_date")?.unwrap_or(NaiveDate::MAX)),
    };
    let end = end.min(q.published_through(published_at));
    Ok(calendar::open_days(start, end).rev().flat_map(move |day| {
        let i = calendar::index(day).expect("an open day");
        let stocks = Rc::clone(&stocks);
        (0..stocks.len()).map(move |k| stocks[k]).filter(move |s| s.list_date <= day).map(move |s| (s, day, i))
    }))
}

const DAILY: Api = Api {
    schema: Schema {
        fields: &["ts_code", "trade_date", "open", "high", "low", "close", "pre_close", "change", "pct_chg", "vol", "amount"],
        defaults: 11,
        max_rows: 6_000,
    },
    run: daily,
};

fn daily(q: &Query) -> Result<Data, Failure> {
    q.answer(sessions(q, CLOSE_DATA_AT)?, |(s, day, i)| {
        let b = s.model.bar(i);
        let change = b.close - b.pre_close;
        vec![
            text(&s.ts_code),
            date(day),
            num(b.open, 2),
            num(b.high, 2),
            num(b.low, 2),
            num(b.close, 2),
            num(b.pre_close, 2),
            num(change, 2),
            num(change / b.pre_close * 100.0, 4),
            num(b.vol, 2),
            num(b.amount, 3),
        ]
    })
}

const DAILY_BASIC: Api = Api {
    schema: Schema {
        fields: &[
            "ts_code",
            "trade_date",
            "close",
            "turnover_rate",
            "turnover_rate_f",
            "volume_ratio",
            "pe",
            "pe_ttm",
            "pb",
            "ps",
            "ps_ttm",
            "dv_ratio",
            "dv_ttm",
            "total_share",
            "float_share",
            "free_share",
            "total_mv",
            "circ_mv",
        ],
        defaults: 18,
        max_rows: 6_000,
    },
    run: daily_basic,
};

fn daily_basic(q: &Query) -> Result<Data, Failure> {
    q.answer(sessions(q, CLOSE_DATA_AT)?, |(s, day, i)| {
        let b = s.model.basic(day, i);
        vec![
            text(&s.ts_code),
            date(day),
            num(b.close, 2),
            num(b.turnover_rate, 4),
            num(b.turnover_rate_f, 4),
            opt_num(b.volume_ratio, 2),
            opt_num(b.pe, 4),
            opt_num(b.pe_ttm, 4),
            num(b.pb, 4),
            num(b.ps, 4),
            num(b.ps_ttm, 4),
            opt_num(b.dv_ratio, 4),
            opt_num(b.dv_ttm, 4),
            num(s.model.total_share, 4),
            num(s.model.float_share, 4),
            num(s.model.free_share, 4),
            num(b.total_mv, 4),
            num(b.circ_mv, 4),
        ]
    })
}

const ADJ_FACTOR: Api =
    Api { schema: Schema { fields: &["ts_code", "trade_date", "adj_factor"], defaults: 3, max_rows: 6_000 }, run: adj_factor };

fn adj_factor(q: &Query) -> Result<Data, Failure> {
    q.answer(sessions(q, ADJ_FACTOR_AT)?, |(s, day, _)| vec![text(&s.ts_code), date(day), num(s.model.adj_factor(day), 3)])
}

/// Tushare's documented output of `fina_indicator` (and `fina_indicator_vip`): the first 109 are
/// what an empty `fields` returns (in Tushare's order), the rest only when asked for.
const FINA_FIELDS: &[&str] = &[
    "ts_code",
    "ann_date",
    "end_date",
    "eps",
    "dt_eps",
    "total_revenue_ps",
    "revenue_ps",
    "capital_rese_ps",
    "surplus_rese_ps",
    "undist_profit_ps",
    "extra_item",
    "profit_dedt",
    "gross_margin",
    "current_ratio",
    "quick_ratio",
    "cash_ratio",
    "ar_turn",
    "ca_turn",
    "fa_turn",
    "assets_turn",
    "op_income",
    "ebit",
    "ebitda",
    "fcff",
    "fcfe",
    "current_exint",
    "noncurrent_exint",
    "interestdebt",
    "netdebt",
    "tangible_asset",
    "working_capital",
    "networking_capital",
    "invest_capital",
    "retained_earnings",
    "diluted2_eps",
    "bps",
    "ocfps",
    "retainedps",
    "cfps",
    "ebit_ps",
    "fcff_ps",
    "fcfe_ps",
    "netprofit_margin",
    "grossprofit_margin",
    "cogs_of_sales",
    "expense_of_sales",
    "profit_to_gr",
    "saleexp_to_gr",
    "adminexp_of_gr",
    "finaexp_of_gr",
    "impai_ttm",
    "gc_of_gr",
    "op_of_gr",
    "ebit_of_gr",
    "roe",
    "roe_waa",
    "roe_dt",
    "roa",
    "npta",
    "roic",
    "roe_yearly",
    "roa2_yearly",
    "debt_to_assets",
    "assets_to_eqt",
    "dp_assets_to_eqt",
    "ca_to_assets",
    "nca_to_assets",
    "tbassets_to_totalassets",
    "int_to_talcap",
    "eqt_to_talcapital",
    "currentdebt_to_debt",
    "longdeb_to_debt",
    "ocf_to_shortdebt",
    "debt_to_eqt",
    "eqt_to_debt",
    "eqt_to_interestdebt",
    "tangibleasset_to_debt",
    "tangasset_to_intdebt",
    "tangibleasset_to_netdebt",
    "ocf_to_debt",
    "turn_days",
    "roa_yearly",
    "roa_dp",
    "fixed_assets",
    "profit_to_op",
    "q_saleexp_to_gr",
    "q_gc_to_gr",
    "q_roe",
    "q_dt_roe",
    "q_npta",
    "q_ocf_to_sales",
    "basic_eps_yoy",
    "dt_eps_yoy",
    "cfps_yoy",
    "op_yoy",
    "ebt_yoy",
    "netprofit_yoy",
    "dt_netprofit_yoy",
    "ocf_yoy",
    "roe_yoy",
    "bps_yoy",
    "assets_yoy",
    "eqt_yoy",
    "tr_yoy",
    "or_yoy",
    "q_sales_yoy",
    "q_op_qoq",
    "equity_yoy",
    "update_flag",
    "invturn_days",
    "arturn_days",
    "inv_turn",
];

const FINA_INDICATOR: Api = Api { schema: Schema { fields: FINA_FIELDS, defaults: 109, max_rows: 100 }, run: fina_indicator };

/// The whole market's reports of one period (Tushare's 5,000-point variant, which the scheduler's
/// fills in the reporting seasons call once per period).
const FINA_INDICATOR_VIP: Api = Api { schema: Schema { fields: FINA_FIELDS, defaults: 109, max_rows: 6_000 }, run: fina_indicator_vip };

/// One code's reports announced by today, latest period first. `period` picks a report period;
/// `ann_date`, `start_date` and `end_date` filter on the announcement date, as Tushare's do.
fn fina_indicator(q: &Query) -> Result<Data, Failure> {
    if q.params.text("ts_code")?.is_none() {
        return Err(bad("ts_code", "必填"));
    }
    let stock = q.params.stocks()?.unwrap_or_default().into_iter().next();
    let period = q.params.date("period")?;
    let ann_date = q.params.date("ann_date")?;
    let start = q.params.date("start_date")?.unwrap_or(NaiveDate::MIN);
    let end = q.params.date("end_date")?.unwrap_or(NaiveDate::MAX);
    let reports = stock.into_iter().flat_map(|s| {
        let first = s.model.first_report();
        std::iter::successors(Some(s.model.latest_report(q.today())), |p| Some(p.prev()))
            .take_while(move |p| *p >= first)
            .map(move |p| (s, p))
    });
    let wanted = reports.filter(|(s, p)| {
        let announced = s.model.ann_date(*p);
        period.is_none_or(|d| Period::ending(d) == Some(*p))
            && ann_date.is_none_or(|d| d == announced)
            && (start..=end).contains(&announced)
    });
    q.answer(wanted, fina_row)
}

/// Every listed company's report of `period`, announced by today, by code.
fn fina_indicator_vip(q: &Query) -> Result<Data, Failure> {
    let period = q.params.date("period")?.ok_or_else(|| bad("period", "必填"))?;
    let period = Period::ending(period).ok_or_else(|| bad("period", "应为季度末日期"))?;
    let today = q.today();
    let wanted = universe::all().iter().filter(move |s| s.model.first_report() <= period && s.model.ann_date(period) <= today);
    q.answer(wanted.map(move |s| (s, period)), fina_row)
}

fn fina_row((s, p): (&Stock, Period)) -> Vec<Value> {
    let figures = s.model.indicators(p);
    let figure = |name: &str| figures.iter().find(|(n, _)| *n == name).and_then(|(_, value)| *value);
    FINA_FIELDS
        .iter()
        .map(|&field| match field {
            "ts_code" => text(&s.ts_code),
            "ann_date" => date(s.model.ann_date(p)),
            "end_date" => date(p.end()),
            "update_flag" => text("1"),
            figure_name => opt_num(figure(figure_name), 4),
        })
        .collect()
}
