#![forbid(unsafe_code)]
//! Charts: one metric of a symbol over a range, drawn from the warehouse to a PNG sized for a
//! phone, with up to three comparison symbols drawn as % change from their first day. No HTTP
//! here: the API serves this one operation as `GET /chart` and as the MCP `chart` tool.

mod font;
mod render;

use std::str::FromStr;

use chrono::{DateTime, Months, NaiveDate, Utc};
use twilight_core::{china_today, Symbol};
use twilight_market::{History, Market, MarketError, Metric};

pub use font::Fonts;

/// The metrics a chart draws.
pub const METRICS: [Metric; 5] = [Metric::Close, Metric::PctChg, Metric::PeTtm, Metric::Pb, Metric::TotalMv];
/// Comparison symbols a chart draws at most beside its own.
pub const MAX_COMPARE: usize = 3;
/// Pixels: a phone screen's width, 3:2.
pub const WIDTH: u32 = 1080;
pub const HEIGHT: u32 = 720;

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("{message}")]
    InvalidInput { field: &'static str, message: String },
    #[error(transparent)]
    Market(#[from] MarketError),
    /// No font that covers Chinese: charts are refused rather than drawn with boxes.
    #[error("charts are unavailable: {0}")]
    NoFont(String),
    #[error("drawing the chart failed: {0}")]
    Render(String),
}

/// How far back a chart reaches from the last session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    OneMonth,
    ThreeMonths,
    SixMonths,
    OneYear,
    ThreeYears,
    FiveYears,
}

impl Span {
    const ALL: [(Span, &'static str, u32, &'static str); 6] = [
        (Span::OneMonth, "1m", 1, "近1月"),
        (Span::ThreeMonths, "3m", 3, "近3月"),
        (Span::SixMonths, "6m", 6, "近6月"),
        (Span::OneYear, "1y", 12, "近1年"),
        (Span::ThreeYears, "3y", 36, "近3年"),
        (Span::FiveYears, "5y", 60, "近5年"),
    ];

    fn entry(self) -> &'static (Span, &'static str, u32, &'static str) {
        Span::ALL.iter().find(|(span, ..)| *span == self).expect("every span is listed")
    }

    /// The spelling the API accepts.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The first day a chart of this span ending `today` reaches back to.
    pub fn start(self, today: NaiveDate) -> NaiveDate {
        today.checked_sub_months(Months::new(self.entry().2)).unwrap_or(today)
    }

    fn label(self) -> &'static str {
        self.entry().3
    }

    pub fn names() -> impl Iterator<Item = &'static str> {
        Span::ALL.iter().map(|(_, name, ..)| *name)
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Span, String> {
        Span::ALL
            .iter()
            .find(|(_, name, ..)| name.eq_ignore_ascii_case(s.trim()))
            .map(|(span, ..)| *span)
            .ok_or_else(|| format!("unknown range '{s}'; one of: {}", Span::names().collect::<Vec<_>>().join(", ")))
    }
}

/// What to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartRequest {
    pub symbol: Symbol,
    pub metric: Metric,
    pub span: Span,
    pub compare: Vec<Symbol>,
}

impl ChartRequest {
    /// From the API's strings (`compare` a comma list); each wrong one is refused naming its field.
    pub fn parse(code: Option<&str>, metric: Option<&str>, range: Option<&str>, compare: Option<&str>) -> Result<ChartRequest, ChartError> {
        let invalid = |field, message: String| ChartError::InvalidInput { field, message };
        let code = code.ok_or_else(|| invalid("code", "missing required parameter 'code', like code=600519.SH".into()))?;
        let symbol: Symbol = code.parse().map_err(|e: twilight_core::CodeError| invalid("code", e.to_string()))?;
        let metric = match metric {
            None => Metric::Close,
            Some(name) => name.parse::<Metric>().ok().filter(|m| METRICS.contains(m)).ok_or_else(|| {
                let names: Vec<_> = METRICS.iter().map(|m| m.name()).collect();
                invalid("metric", format!("a chart draws one of {}; not '{name}'", names.join(", ")))
            })?,
        };
        let span = match range {
            None => Span::OneYear,
            Some(range) => range.parse().map_err(|e| invalid("range", e))?,
        };
        let mut compared = Vec::new();
        for code in compare.into_iter().flat_map(|list| list.split(',')).map(str::trim).filter(|c| !c.is_empty()) {
            let other: Symbol = code.parse().map_err(|e: twilight_core::CodeError| invalid("compare", e.to_string()))?;
            if other != symbol && !compared.contains(&other) {
                compared.push(other);
            }
        }
        if compared.len() > MAX_COMPARE {
            return Err(invalid("compare", format!("at most {MAX_COMPARE} codes to compare with; got {}", compared.len())));
        }
        Ok(ChartRequest { symbol, metric, span, compare: compared })
    }
}

/// A drawn chart and what it was drawn from.
#[derive(Debug, Clone)]
pub struct Chart {
    pub png: Vec<u8>,
    /// The charted symbol's history first, then each comparison's.
    pub series: Vec<History>,
    /// The first and last day drawn.
    pub from: NaiveDate,
    pub through: NaiveDate,
    /// What the reader should know: a line starting late (listed since), sessions missing.
    pub notes: Vec<String>,
}

impl Chart {
    /// The newest fetch among the rows drawn.
    pub fn fetched_at(&self) -> Option<DateTime<Utc>> {
        self.series.iter().filter_map(|h| h.fetched_at).max()
    }

    pub fn cost_pts(&self) -> i32 {
        self.series.iter().map(|h| h.cost_pts).sum()
    }
}

/// Draws `request` from `market`'s histories (each symbol's missing sessions fetched once).
pub async fn draw(market: &Market, fonts: &std::sync::Arc<Fonts>, request: &ChartRequest) -> Result<Chart, ChartError> {
    fonts.family()?;
    let start = request.span.start(china_today(Utc::now()));
    let symbols = std::iter::once(&request.symbol).chain(&request.compare);
    let series = futures::future::try_join_all(symbols.map(|symbol| market.history(symbol, request.metric, start))).await?;
    let (from, through) = drawn_span(&series[0], request.metric, start)?;
    let stale = series
        .iter()
        .find(|h| h.stale)
        .map(|_| "some sessions are missing: an upstream failed, so the chart shows what the warehouse holds".to_string());
    let notes = series.iter().filter_map(|history| late_start(history, start)).chain(stale).collect();
    let (request, fonts, drawn) = (request.clone(), fonts.clone(), series.clone());
    let png = tokio::task::spawn_blocking(move || render(&request, &drawn, &fonts))
        .await
        .map_err(|e| ChartError::Render(format!("the drawing task failed: {e}")))??;
    Ok(Chart { png, series, from, through, notes })
}

/// `series` (the charted symbol's first) drawn as `request` asks, to PNG bytes.
pub fn render(request: &ChartRequest, series: &[History], fonts: &Fonts) -> Result<Vec<u8>, ChartError> {
    let family = fonts.family()?;
    let main = series.first().ok_or_else(|| ChartError::Render("nothing to draw".into()))?;
    let (from, through) = drawn_span(main, request.metric, NaiveDate::MIN)?;
    render::png(&render::Figure::of(request, series, from, through), family)
}

/// The first and last day of `main`, which sets the chart's span; nothing to draw is not found.
fn drawn_span(main: &History, metric: Metric, start: NaiveDate) -> Result<(NaiveDate, NaiveDate), ChartError> {
    match (main.points.first(), main.points.last()) {
        (Some(first), Some(last)) => Ok((first.0, last.0)),
        _ => Err(MarketError::NotFound(format!("no {} of {} since {start}", metric.name(), main.code)).into()),
    }
}

/// A note when `history` begins well after `start`: listed since, or no data before.
fn late_start(history: &History, start: NaiveDate) -> Option<String> {
    if let Some(listed) = history.listed_after_start {
        return Some(format!("{} was listed on {listed}: its line starts there", history.code));
    }
    let Some(&(first, _)) = history.points.first() else { return Some(format!("{} has no data in this range", history.code)) };
    (first > start + chrono::Days::new(14)).then(|| format!("{} has data from {first} only: its line starts there", history.code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<ChartRequest, ChartError>) -> &'static str {
        match result {
            Err(ChartError::InvalidInput { field, .. }) => field,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn requests_are_read_with_defaults_and_refused_by_field() {
        let request = ChartRequest::parse(Some("600519"), None, None, Some(" 000858.SZ, 600519.SH,,000858 ")).unwrap();
        assert_eq!(request.symbol.to_string(), "600519.SH");
        assert_eq!((request.metric, request.span), (Metric::Close, Span::OneYear));
        let compared: Vec<String> = request.compare.iter().map(ToString::to_string).collect();
        assert_eq!(compared, ["000858.SZ"], "itself and repeats are dropped");
        let request = ChartRequest::parse(Some("600519.SH"), Some("PE_TTM"), Some("5Y"), None).unwrap();
        assert_eq!((request.metric, request.span), (Metric::PeTtm, Span::FiveYears));

        assert_eq!(field_of(ChartRequest::parse(None, None, None, None)), "code");
        assert_eq!(field_of(ChartRequest::parse(Some("60051"), None, None, None)), "code");
        assert_eq!(field_of(ChartRequest::parse(Some("600519"), Some("vol"), None, None)), "metric");
        assert_eq!(field_of(ChartRequest::parse(Some("600519"), None, Some("2w"), None)), "range");
        assert_eq!(field_of(ChartRequest::parse(Some("600519"), None, None, Some("60051"))), "compare");
        let four = "000858.SZ,000001.SZ,600036.SH,601318.SH";
        assert_eq!(field_of(ChartRequest::parse(Some("600519"), None, None, Some(four))), "compare");
    }

    #[test]
    fn spans_reach_back_whole_months() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 31).unwrap();
        assert_eq!(Span::OneMonth.start(today), NaiveDate::from_ymd_opt(2026, 2, 28).unwrap());
        assert_eq!(Span::FiveYears.start(today), NaiveDate::from_ymd_opt(2021, 3, 31).unwrap());
        assert_eq!(Span::names().collect::<Vec<_>>(), ["1m", "3m", "6m", "1y", "3y", "5y"]);
    }
}
