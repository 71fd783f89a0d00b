//! The simulated A-share universe: ~5,400 listed codes spread over the real code blocks of each
//! board, a dozen well-known companies with their real names, and generated names for the rest.

use std::collections::HashSet;
use std::sync::OnceLock;

use chrono::{Days, NaiveDate};

use super::model::{Model, Profile};
use crate::calendar;
use crate::seed;

/// A listing board; decides the exchange, the `market` label and the daily price limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Board {
    SseMain,
    SzseMain,
    /// 创业板 (SZSE 300xxx/301xxx).
    ChiNext,
    /// 科创板 (SSE 688xxx).
    Star,
    /// 北交所.
    Bse,
}

impl Board {
    pub fn market(self) -> &'static str {
        match self {
            Board::SseMain | Board::SzseMain => "主板",
            Board::ChiNext => "创业板",
            Board::Star => "科创板",
            Board::Bse => "北交所",
        }
    }

    pub fn exchange(self) -> &'static str {
        match self {
            Board::SseMain | Board::Star => "SSE",
            Board::SzseMain | Board::ChiNext => "SZSE",
            Board::Bse => "BSE",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Board::SseMain | Board::Star => "SH",
            Board::SzseMain | Board::ChiNext => "SZ",
            Board::Bse => "BJ",
        }
    }

    /// The daily price limit as a fraction of the previous close. 创业板 has allowed 20% only since
    /// 2020-08-24; the simulator keeps its older 10% so that one bound holds over the whole history.
    pub fn limit(self) -> f64 {
        match self {
            Board::SseMain | Board::SzseMain | Board::ChiNext => 0.10,
            Board::Star => 0.20,
            Board::Bse => 0.30,
        }
    }
}

/// One listed company and the model behind its numbers.
pub(crate) struct Stock {
    pub ts_code: String,
    pub symbol: String,
    pub name: String,
    pub area: &'static str,
    pub industry: &'static str,
    pub board: Board,
    pub list_date: NaiveDate,
    pub model: Model,
}

/// Every listed code, sorted by `ts_code`. Built on first use (a few milliseconds), then shared.
pub(crate) fn all() -> &'static [Stock] {
    static UNIVERSE: OnceLock<Vec<Stock>> = OnceLock::new();
    UNIVERSE.get_or_init(build)
}

pub(crate) fn find(ts_code: &str) -> Option<&'static Stock> {
    let stocks = all();
    stocks.binary_search_by(|s| s.ts_code.as_str().cmp(ts_code)).ok().map(|i| &stocks[i])
}

/// A range of codes in which a share `density` is listed, with listing dates spread over
/// `first..=last` in code order (exchanges hand out codes roughly in listing order).
struct Block {
    board: Board,
    codes: std::ops::Range<u32>,
    density: f64,
    first: (i32, u32, u32),
    last: (i32, u32, u32),
}

const BLOCKS: &[Block] = &[
    Block { board: Board::SseMain, codes: 600_000..601_000, density: 0.78, first: (1990, 12, 19), last: (2004, 12, 31) },
    Block { board: Board::SseMain, codes: 601_000..602_000, density: 0.20, first: (2006, 6, 1), last: (2024, 6, 30) },
    Block { board: Board::SseMain, codes: 603_000..604_000, density: 0.72, first: (2011, 1, 1), last: (2024, 6, 30) },
    Block { board: Board::SseMain, codes: 605_000..605_600, density: 0.25, first: (2020, 1, 1), last: (2022, 12, 31) },
    Block { board: Board::Star, codes: 688_001..688_800, density: 0.70, first: (2019, 7, 22), last: (2024, 12, 31) },
    Block { board: Board::SzseMain, codes: 1..1_000, density: 0.50, first: (1991, 1, 29), last: (2001, 12, 31) },
    Block { board: Board::SzseMain, codes: 1_200..1_400, density: 0.30, first: (2021, 1, 1), last: (2024, 12, 31) },
    Block { board: Board::SzseMain, codes: 2_001..3_000, density: 0.85, first: (2004, 6, 25), last: (2021, 12, 31) },
    Block { board: Board::SzseMain, codes: 3_000..3_050, density: 0.80, first: (2020, 10, 1), last: (2021, 6, 30) },
    Block { board: Board::ChiNext, codes: 300_001..301_000, density: 0.85, first: (2009, 10, 30), last: (2021, 12, 31) },
    Block { board: Board::ChiNext, codes: 301_000..301_600, density: 0.82, first: (2020, 8, 24), last: (2024, 12, 31) },
    Block { board: Board::Bse, codes: 430_000..430_800, density: 0.06, first: (2021, 11, 15), last: (2024, 12, 31) },
    Block { board: Board::Bse, codes: 830_000..840_000, density: 0.012, first: (2020, 7, 27), last: (2024, 12, 31) },
    Block { board: Board::Bse, codes: 870_000..874_000, density: 0.02, first: (2020, 7, 27), last: (2024, 12, 31) },
];

struct Known {
    ts_code: &'static str,
    name: &'static str,
    area: &'static str,
    industry: &'static str,
    listed: (i32, u32, u32),
    profile: Profile,
}

/// Real companies, so answers about them look familiar: code, name, area, industry, list date and
/// calibration (price level for 2025–26, shares in 万股, float share, FY2024 EPS and BPS, volatility,
/// earnings growth), roughly their real figures.
#[rustfmt::skip]
const WELL_KNOWN: &[Known] = &[
    Known { ts_code: "600519.SH", name: "贵州茅台", area: "贵州", industry: "白酒", listed: (2001, 8, 27), profile: Profile { price: 1600.0, total_share: 125_619.78, float_ratio: 1.0, eps: 68.64, bps: 205.3, vol: 0.004, growth: 0.03 } },
    Known { ts_code: "000001.SZ", name: "平安银行", area: "深圳", industry: "银行", listed: (1991, 4, 3), profile: Profile { price: 11.5, total_share: 1_940_591.82, float_ratio: 1.0, eps: 2.15, bps: 22.3, vol: 0.006, growth: 0.0 } },
    Known { ts_code: "601318.SH", name: "中国平安", area: "深圳", industry: "保险", listed: (2007, 3, 1), profile: Profile { price: 55.0, total_share: 1_820_901.98, float_ratio: 0.59, eps: 6.95, bps: 51.0, vol: 0.008, growth: 0.03 } },
    Known { ts_code: "000858.SZ", name: "五粮液", area: "四川", industry: "白酒", listed: (1998, 4, 27), profile: Profile { price: 125.0, total_share: 388_160.8, float_ratio: 1.0, eps: 8.21, bps: 36.4, vol: 0.008, growth: 0.07 } },
    Known { ts_code: "300750.SZ", name: "宁德时代", area: "福建", industry: "电气设备", listed: (2018, 6, 11), profile: Profile { price: 280.0, total_share: 440_340.0, float_ratio: 0.9, eps: 11.58, bps: 56.0, vol: 0.010, growth: 0.15 } },
    Known { ts_code: "600036.SH", name: "招商银行", area: "深圳", industry: "银行", listed: (2002, 4, 9), profile: Profile { price: 42.0, total_share: 2_521_984.56, float_ratio: 0.82, eps: 5.66, bps: 40.0, vol: 0.007, growth: 0.03 } },
    Known { ts_code: "601398.SH", name: "工商银行", area: "北京", industry: "银行", listed: (2006, 10, 27), profile: Profile { price: 7.0, total_share: 35_640_625.71, float_ratio: 0.75, eps: 1.03, bps: 10.2, vol: 0.005, growth: 0.01 } },
    Known { ts_code: "000333.SZ", name: "美的集团", area: "广东", industry: "家用电器", listed: (2013, 9, 18), profile: Profile { price: 75.0, total_share: 768_000.0, float_ratio: 0.98, eps: 5.44, bps: 30.0, vol: 0.008, growth: 0.08 } },
    Known { ts_code: "002594.SZ", name: "比亚迪", area: "深圳", industry: "汽车整车", listed: (2011, 6, 30), profile: Profile { price: 110.0, total_share: 911_740.0, float_ratio: 0.62, eps: 4.6, bps: 27.0, vol: 0.010, growth: 0.20 } },
    Known { ts_code: "688981.SH", name: "中芯国际", area: "上海", industry: "半导体", listed: (2020, 7, 16), profile: Profile { price: 95.0, total_share: 799_000.0, float_ratio: 0.25, eps: 0.46, bps: 17.6, vol: 0.013, growth: 0.05 } },
    Known { ts_code: "600900.SH", name: "长江电力", area: "北京", industry: "水力发电", listed: (2003, 11, 18), profile: Profile { price: 28.0, total_share: 2_446_866.85, float_ratio: 1.0, eps: 1.33, bps: 8.3, vol: 0.005, growth: 0.06 } },
    Known { ts_code: "601012.SH", name: "隆基绿能", area: "陕西", industry: "电气设备", listed: (2012, 4, 11), profile: Profile { price: 18.0, total_share: 757_804.0, float_ratio: 1.0, eps: -1.14, bps: 8.6, vol: 0.011, growth: 0.0 } },
];

/// A Tushare industry label and name endings that suit it.
#[derive(Clone, Copy)]
struct Industry(&'static str, &'static [&'static str]);

/// Industries weighted by how common each is.
const INDUSTRIES: &[(Industry, u32)] = &[
    (Industry("元器件", &["电子", "光电", "微电", "精密"]), 8),
    (Industry("半导体", &["微电", "芯源", "半导", "集成"]), 5),
    (Industry("软件服务", &["软件", "信息", "数据", "智能"]), 7),
    (Industry("通信设备", &["通信", "光通", "网络", "讯通"]), 4),
    (Industry("IT设备", &["科技", "电脑", "信息"]), 3),
    (Industry("互联网", &["网络", "互联", "在线"]), 2),
    (Industry("电气设备", &["电气", "电力", "能源", "电工"]), 8),
    (Industry("专用机械", &["机械", "装备", "重工", "精机"]), 8),
    (Industry("机械基件", &["精工", "轴承", "传动"]), 3),
    (Industry("汽车配件", &["汽配", "汽车", "动力"]), 5),
    (Industry("化工原料", &["化工", "化学", "新材"]), 6),
    (Industry("塑料", &["塑业", "塑胶"]), 2),
    (Industry("农药化肥", &["农化", "化肥"]), 2),
    (Industry("化学制药", &["药业", "制药", "医药"]), 5),
    (Industry("生物制药", &["生物", "药业", "基因"]), 4),
    (Industry("中成药", &["药业", "中药", "制药"]), 2),
    (Industry("医疗保健", &["医疗", "医学", "健康"]), 5),
    (Industry("食品", &["食品", "食业"]), 3),
    (Industry("家用电器", &["电器", "家电"]), 2),
    (Industry("家居用品", &["家居"]), 2),
    (Industry("服饰", &["服饰", "时装"]), 2),
    (Industry("纺织", &["纺织", "织造"]), 2),
    (Industry("建筑工程", &["建设", "建工", "工程"]), 3),
    (Industry("区域地产", &["置业", "地产"]), 2),
    (Industry("小金属", &["矿业", "金属"]), 2),
    (Industry("环境保护", &["环保", "环境"]), 3),
    (Industry("新型电力", &["新能", "电力"]), 2),
    (Industry("仓储物流", &["物流", "储运"]), 2),
    (Industry("影视音像", &["传媒", "影视"]), 1),
    (Industry("银行", &["银行"]), 1),
    (Industry("证券", &["证券"]), 1),
    (Industry("煤炭开采", &["煤业", "能源"]), 1),
];

const NAME_STARTS: &[&str] = &[
    "华东", "华南", "华北", "东方", "南方", "北方", "西部", "中科", "中航", "国电", "长城", "长江", "黄河", "泰山", "昆仑", "金山", "银河",
    "星河", "海天", "天润", "新华", "宏达", "恒信", "博远", "瑞康", "永安", "光明", "三友", "联创", "汇川", "润达", "鼎盛", "嘉华", "安泰",
    "泰和", "和顺", "金龙", "凯迪", "利达", "富春", "晨光", "朝阳", "旭日", "东华", "明阳", "万里", "千禾", "百川", "海纳", "江南", "江淮",
    "齐鲁", "燕山", "太行", "巴蜀", "岭南", "闽东", "浙东", "苏州", "杭州", "宁波", "厦门", "青岛", "大连", "成都", "重庆", "武汉", "长沙",
    "合肥", "南京", "无锡", "常州", "佛山", "东莞", "珠海", "西安", "昆明", "贵阳", "南宁", "福州", "天津", "沈阳", "长春", "济南", "郑州",
    "太原", "兰州", "远东", "亚太", "环球", "联合", "通达", "精诚", "信达", "德赛", "先导", "领航", "卓越", "华锐", "天合", "科达", "华宇",
];

/// Tushare's `area` labels, weighted roughly by how many listed companies each has.
const AREAS: &[(&str, u32)] = &[
    ("广东", 9),
    ("深圳", 8),
    ("浙江", 12),
    ("江苏", 12),
    ("北京", 8),
    ("上海", 7),
    ("山东", 5),
    ("福建", 3),
    ("安徽", 3),
    ("四川", 3),
    ("湖北", 3),
    ("湖南", 3),
    ("河南", 2),
    ("河北", 1),
    ("辽宁", 1),
    ("陕西", 1),
    ("江西", 1),
    ("天津", 1),
    ("重庆", 1),
    ("吉林", 1),
    ("黑龙江", 1),
    ("山西", 1),
    ("云南", 1),
    ("广西", 1),
    ("新疆", 1),
    ("贵州", 1),
    ("甘肃", 1),
    ("内蒙", 1),
    ("海南", 1),
];

fn date((y, m, d): (i32, u32, u32)) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid table date")
}

fn build() -> Vec<Stock> {
    let mut used_names: HashSet<String> = WELL_KNOWN.iter().map(|k| k.name.to_string()).collect();
    let mut stocks: Vec<Stock> = WELL_KNOWN
        .iter()
        .map(|k| {
            let list_date = calendar::open_on_or_after(date(k.listed));
            stock(k.ts_code.to_string(), k.name.to_string(), k.area, k.industry, board_of(k.ts_code), list_date, Some(k.profile))
        })
        .collect();
    for block in BLOCKS {
        let (first, last) = (date(block.first), date(block.last));
        let span = (last - first).num_days() as f64;
        for code in block.codes.clone() {
            let ts_code = format!("{code:06}.{}", block.board.suffix());
            let h = seed::of_str(&ts_code);
            if seed::unit(h) >= block.density || WELL_KNOWN.iter().any(|k| k.ts_code == ts_code) {
                continue;
            }
            let position = (f64::from(code - block.codes.start) + seed::signed(seed::mix(&[h, 1])) * 30.0)
                / f64::from(block.codes.end - block.codes.start);
            let listed = first + Days::new((position.clamp(0.0, 1.0) * span) as u64);
            let list_date = calendar::open_on_or_after(listed);
            let Industry(industry, endings) = *seed::weighted(seed::mix(&[h, 2]), INDUSTRIES);
            let name = unique_name(h, endings, &mut used_names);
            let area = *seed::weighted(seed::mix(&[h, 3]), AREAS);
            stocks.push(stock(ts_code, name, area, industry, block.board, list_date, None));
        }
    }
    stocks.sort_by(|a, b| a.ts_code.cmp(&b.ts_code));
    stocks
}

fn stock(
    ts_code: String,
    name: String,
    area: &'static str,
    industry: &'static str,
    board: Board,
    list_date: NaiveDate,
    profile: Option<Profile>,
) -> Stock {
    let model = Model::new(seed::of_str(&ts_code), board, industry, list_date, profile);
    Stock { symbol: ts_code[..6].to_string(), ts_code, name, area, industry, board, list_date, model }
}

fn board_of(ts_code: &str) -> Board {
    match (&ts_code[..3], &ts_code[7..]) {
        ("688", _) => Board::Star,
        ("300" | "301", _) => Board::ChiNext,
        (_, "SH") => Board::SseMain,
        (_, "SZ") => Board::SzseMain,
        _ => Board::Bse,
    }
}

/// A name not used yet: two syllables taken from two of [`NAME_STARTS`] plus an ending that suits
/// the industry, chosen by hash and retried with new hashes on a clash (~10,000 starts per ending).
fn unique_name(h: u64, endings: &[&str], used: &mut HashSet<String>) -> String {
    let pick = |list_len: usize, x: u64| (x % list_len as u64) as usize;
    (0u64..)
        .map(|attempt| {
            let x = seed::mix(&[h, 4, attempt]);
            let first = NAME_STARTS[pick(NAME_STARTS.len(), x)].chars().next().expect("non-empty");
            let second = NAME_STARTS[pick(NAME_STARTS.len(), x >> 20)].chars().last().expect("non-empty");
            format!("{first}{second}{}", endings[pick(endings.len(), x >> 40)])
        })
        .find(|name| used.insert(name.clone()))
        .expect("the name space is far larger than any industry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn universe_size_and_boards_are_plausible() {
        let stocks = all();
        assert!((5_000..=5_600).contains(&stocks.len()), "{}", stocks.len());
        for board in [Board::SseMain, Board::SzseMain, Board::ChiNext, Board::Star, Board::Bse] {
            let n = stocks.iter().filter(|s| s.board == board).count();
            assert!(n >= 100, "{board:?}: {n}");
        }
        assert!(stocks.windows(2).all(|w| w[0].ts_code < w[1].ts_code), "sorted and unique");
        let names: HashSet<_> = stocks.iter().map(|s| &s.name).collect();
        assert_eq!(names.len(), stocks.len(), "names are unique");
    }

    #[test]
    fn list_dates_are_open_days_in_range() {
        for s in all() {
            assert!(calendar::is_open(s.list_date), "{}", s.ts_code);
            assert!(s.list_date <= date((2024, 12, 31)), "{} {}", s.ts_code, s.list_date);
        }
    }

    #[test]
    fn well_known_companies_keep_their_identity() {
        let moutai = find("600519.SH").unwrap();
        assert_eq!((moutai.name.as_str(), moutai.area, moutai.industry, moutai.board.market()), ("贵州茅台", "贵州", "白酒", "主板"));
        assert_eq!(moutai.list_date, date((2001, 8, 27)));
        assert_eq!(find("300750.SZ").unwrap().board.market(), "创业板");
        assert_eq!(find("688981.SH").unwrap().board.market(), "科创板");
        assert_eq!(find("000001.SZ").unwrap().list_date, date((1991, 4, 3)));
        assert!(find("600519.SZ").is_none());
    }
}
