//! Results from any provider into one shape: plain-text titles and snippets, one date format
//! (RFC 3339 in Beijing time), each URL once, nothing older than `since` when its date is known.

use std::collections::HashSet;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Asia::Shanghai;
use serde::Serialize;

use crate::{RawHit, SearchRequest};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub title: String,
    pub url: String,
    pub snippet: String,
    /// RFC 3339 in Beijing time; `None` when the provider gave no readable date.
    pub published_at: Option<DateTime<FixedOffset>>,
}

/// Cleans, merges and trims what one provider answered to `request`.
pub fn hits(raw: Vec<RawHit>, request: &SearchRequest) -> Vec<Hit> {
    let mut seen = HashSet::new();
    let mut hits: Vec<Hit> = Vec::new();
    for hit in raw {
        let Some(key) = url_key(&hit.url) else { continue };
        let published_at = hit.published.as_deref().and_then(parse_published);
        if let (Some(since), Some(at)) = (request.since, published_at) {
            if at.date_naive() < since {
                continue;
            }
        }
        if !seen.insert(key.clone()) {
            // The same page twice: keep the first, with a date if only the later one had it.
            if let Some(first) = hits.iter_mut().find(|h| url_key(&h.url).as_ref() == Some(&key)) {
                first.published_at = first.published_at.or(published_at);
            }
            continue;
        }
        hits.push(Hit { title: plain_text(&hit.title), url: hit.url.trim().to_string(), snippet: plain_text(&hit.snippet), published_at });
    }
    hits.truncate(request.max_results);
    hits
}

/// What makes two URLs the same page: scheme, fragment, a trailing slash and `utm_*` tracking
/// parameters do not count. `None` for what is not an http(s) URL.
fn url_key(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
    let query: Vec<String> = url.query_pairs().filter(|(k, _)| !k.starts_with("utm_")).map(|(k, v)| format!("{k}={v}")).collect();
    let path = url.path().trim_end_matches('/');
    Some(format!("{}{}{path}?{}", url.host_str()?, url.port().map(|p| format!(":{p}")).unwrap_or_default(), query.join("&")))
}

/// Tags that break a line; the others (`<em>` around a match) sit inside words, and Chinese has
/// no spaces to put in their place.
const BREAKING_TAGS: [&str; 8] = ["br", "p", "div", "li", "tr", "td", "h1", "h2"];

/// Tags removed, entities decoded, whitespace collapsed.
pub fn plain_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut chars = html.chars().peekable();
    while let Some(c) = chars.next() {
        // Only `<` opening a tag (`<em>`, `</b>`, `<!-- -->`) starts markup; `a < b` is text.
        if c == '<' && chars.peek().is_some_and(|n| n.is_ascii_alphabetic() || matches!(n, '/' | '!')) {
            let tag: String = chars.by_ref().take_while(|inner| *inner != '>').collect();
            let name = tag.trim_start_matches('/').split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or_default();
            if BREAKING_TAGS.iter().any(|breaking| name.eq_ignore_ascii_case(breaking)) {
                text.push(' ');
            }
        } else {
            text.push(c);
        }
    }
    let decoded = html_escape::decode_html_entities(&text);
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The dates providers write: RFC 3339, `2026-04-30 10:00:00` and `2026-04-30` (Beijing time), and
/// Google's `Apr 30, 2026`.
pub fn parse_published(raw: &str) -> Option<DateTime<FixedOffset>> {
    let raw = raw.trim();
    let beijing = |naive: NaiveDateTime| Shanghai.from_local_datetime(&naive).single().map(|at| at.fixed_offset());
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Some(at.with_timezone(&Shanghai).fixed_offset());
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(raw, format) {
            return beijing(naive);
        }
    }
    ["%Y-%m-%d", "%b %d, %Y", "%Y年%m月%d日"]
        .iter()
        .find_map(|format| NaiveDate::parse_from_str(raw, format).ok())
        .and_then(|day| beijing(day.and_hms_opt(0, 0, 0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str, snippet: &str, published: Option<&str>) -> RawHit {
        RawHit {
            title: "<b>贵州茅台</b> 公告".into(), url: url.into(), snippet: snippet.into(), published: published.map(str::to_string)
        }
    }

    fn request(since: Option<&str>, max: usize) -> SearchRequest {
        let today = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        SearchRequest::parse(Some("q"), since, Some(&max.to_string()), today).unwrap()
    }

    #[test]
    fn strips_markup_and_decodes_entities() {
        assert_eq!(plain_text("<em>营业收入</em>增长 &amp; 净利润&#39;s <a href=\"x\">链接</a>"), "营业收入增长 & 净利润's 链接");
        assert_eq!(plain_text("第一段<br/>第二段</p><P class=\"x\">第三段"), "第一段 第二段 第三段");
        assert_eq!(plain_text("a < b and  c>d"), "a < b and c>d");
        assert_eq!(plain_text("  多余\n\t空白 "), "多余 空白");
    }

    #[test]
    fn dates_become_one_format() {
        let expect = "2026-04-30T10:00:00+08:00";
        for raw in ["2026-04-30 10:00:00", "2026-04-30T10:00:00+08:00", "2026-04-30T02:00:00Z", "2026-04-30T10:00:00"] {
            assert_eq!(parse_published(raw).map(|d| d.to_rfc3339()).as_deref(), Some(expect), "{raw}");
        }
        for raw in ["2026-04-30", "Apr 30, 2026", "2026年04月30日"] {
            assert_eq!(parse_published(raw).map(|d| d.to_rfc3339()).as_deref(), Some("2026-04-30T00:00:00+08:00"), "{raw}");
        }
        assert_eq!(parse_published("3 days ago"), None);
    }

    #[test]
    fn merges_duplicates_filters_old_and_trims() {
        let found = hits(
            vec![
                raw("https://example.com/a/", "one", None),
                raw("http://EXAMPLE.com/a?utm_source=x#top", "dup", Some("2026-11-30")),
                raw("https://example.com/old", "old", Some("2026-01-01 09:00:00")),
                raw("not a url", "junk", None),
                raw("https://example.com/b", "two", None),
                raw("https://example.com/c", "three", None),
            ],
            &request(Some("1m"), 2),
        );
        let urls: Vec<&str> = found.iter().map(|h| h.url.as_str()).collect();
        assert_eq!(urls, ["https://example.com/a/", "https://example.com/b"]);
        assert_eq!(found[0].title, "贵州茅台 公告");
        assert_eq!(found[0].published_at.map(|d| d.to_rfc3339()).as_deref(), Some("2026-11-30T00:00:00+08:00"));
    }
}
