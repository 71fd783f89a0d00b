//! Deterministic results for a query: the same query always finds the same pages on a provider.

use chrono::{Duration, NaiveDate, NaiveDateTime};

const TOPICS: [&str; 12] = [
    "业绩公告",
    "年度报告摘要",
    "分红派息实施公告",
    "投资者关系活动记录表",
    "券商研报点评",
    "经营数据公告",
    "股东大会决议公告",
    "行业动态",
    "机构调研纪要",
    "新闻报道",
    "董事会决议公告",
    "季度报告",
];
const SITES: [&str; 12] = ["sse", "cninfo", "eastmoney", "stcn", "cs", "10jqka", "sina", "xueqiu", "yicai", "caixin", "cls", "jrj"];
/// The most results a simulator has for any query.
const MAX_DOCS: usize = 12;

pub(super) struct Doc {
    pub title: String,
    pub url: String,
    /// Plain text, with `&` in it so the entity-escaped spellings differ.
    pub snippet: String,
    pub subject: String,
    pub site: String,
    pub published: NaiveDateTime,
    pub score: f64,
}

impl Doc {
    /// As DashScope writes snippets: the matched words in `<em>`, entities escaped.
    pub fn snippet_html(&self) -> String {
        self.snippet_entities().replacen(&self.subject, &format!("<em>{}</em>", self.subject), 1)
    }

    /// As Google writes snippets: entities escaped.
    pub fn snippet_entities(&self) -> String {
        self.snippet.replace('&', "&amp;")
    }
}

/// Up to `n` pages for `query` on `provider`. The subject is the sandbox stock whose code the
/// query names (`600519` → 贵州茅台), else the query. Dates count back from 2026-04-30, five days
/// apart; on DashScope the second page repeats the first under a tracking parameter, as
/// aggregators do.
pub(super) fn for_query(query: &str, provider: &str, n: usize) -> Vec<Doc> {
    let subject = subject(query);
    let slug = format!("{:08x}", fnv(&query.to_lowercase()) as u32);
    let anchor = NaiveDate::from_ymd_opt(2026, 4, 30).and_then(|d| d.and_hms_opt(10, 0, 0)).expect("a valid anchor date");
    let offset = (fnv(provider) % TOPICS.len() as u64) as usize;
    let mut docs: Vec<Doc> = (0..n.min(MAX_DOCS))
        .map(|i| {
            let topic = TOPICS[(i + offset) % TOPICS.len()];
            let site = format!("{}.sandbox.invalid", SITES[(i + offset) % SITES.len()]);
            Doc {
                title: format!("{subject}：{topic}"),
                url: format!("https://{site}/{provider}/{slug}/{i}.html"),
                snippet: format!("（沙盒模拟结果）{subject}{topic}：营业收入 & 净利润等要点，详见原文。"),
                subject: subject.clone(),
                site,
                published: anchor - Duration::days(5 * i as i64) - Duration::hours(2 * i as i64),
                score: 1.0 - i as f64 / 20.0,
            }
        })
        .collect();
    if provider == "dashscope" && docs.len() >= 3 {
        let first = &docs[0];
        let repeat = Doc {
            title: first.title.clone(),
            url: format!("{}?utm_source=aggregator", first.url),
            snippet: first.snippet.clone(),
            subject: first.subject.clone(),
            site: first.site.clone(),
            published: first.published,
            score: first.score - 0.01,
        };
        docs[1] = repeat;
    }
    docs
}

fn subject(query: &str) -> String {
    let bytes: Vec<char> = query.chars().collect();
    let code = bytes.windows(6).map(|w| w.iter().collect::<String>()).find(|w| w.chars().all(|c| c.is_ascii_digit()));
    let stock = code.as_deref().and_then(|code| crate::tushare::universe::all().iter().find(|s| s.symbol == code));
    match stock {
        Some(stock) => format!("{}（{}）", stock.name, stock.symbol),
        None => query.split_whitespace().next().unwrap_or(query).to_string(),
    }
}

/// FNV-1a: a stable hash, the same in every build.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_names_its_stock_and_answers_repeat() {
        let docs = for_query("600519 业绩公告 2026", "dashscope", 5);
        assert_eq!(docs.len(), 5);
        assert!(docs[0].title.starts_with("贵州茅台（600519）"), "{}", docs[0].title);
        assert!(docs[0].url.contains(".sandbox.invalid/dashscope/"));
        assert!(docs[1].url.starts_with(&docs[0].url) && docs[1].url.contains("utm_source"));
        assert!(docs[0].snippet_html().contains("<em>贵州茅台（600519）</em>") && docs[0].snippet_html().contains("&amp;"));
        let again = for_query("600519 业绩公告 2026", "dashscope", 5);
        assert_eq!(docs.iter().map(|d| &d.url).collect::<Vec<_>>(), again.iter().map(|d| &d.url).collect::<Vec<_>>());
        assert_eq!(for_query("q", "bocha", 100).len(), MAX_DOCS);
    }
}
