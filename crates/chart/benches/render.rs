//! Time to draw a chart to PNG, on made-up daily histories (no warehouse: only drawing and encoding
//! are measured): 1 year and 5 years with one comparison code, beside a 1-month single line as the
//! baseline of the same run. Prints p50, p99 and the PNG sizes. `cargo bench --workspace --bench render`
//! (`--workspace`: the same features as every other build, so DuckDB is not built again).

use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use twilight_chart::{render, ChartRequest, Fonts};
use twilight_market::{History, Metric};

fn history(code: &str, name: &str, sessions: u64, level: f64) -> History {
    let first = NaiveDate::from_ymd_opt(2021, 12, 6).unwrap();
    let points =
        (0..sessions).map(|i| (first + Days::new(i * 7 / 5), level * (1.0 + (i as f64 / 23.0).sin() * 0.1 + i as f64 / 2000.0))).collect();
    History {
        code: code.into(),
        name: name.into(),
        metric: Metric::Close,
        unit: "CNY".into(),
        points,
        source: "tushare".into(),
        table: "daily",
        fetched_at: Some(Utc::now()),
        listed_after_start: None,
        cost_pts: 0,
        stale: false,
    }
}

fn measure(label: &str, request: &ChartRequest, series: &[History], fonts: &Fonts) -> Duration {
    let runs = 60;
    let mut times = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs {
        let started = Instant::now();
        bytes = render(request, series, fonts).expect("drawn").len();
        times.push(started.elapsed());
    }
    times.sort();
    let (p50, p99) = (times[runs / 2], times[runs * 99 / 100]);
    println!("{label:<32} p50 {:>7.2} ms  p99 {:>7.2} ms  png {:>4} KB", ms(p50), ms(p99), bytes / 1024);
    p50
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let fonts = Fonts::new(None);
    let request = |range: &str, compare: Option<&str>| ChartRequest::parse(Some("600519.SH"), None, Some(range), compare).unwrap();
    // Loads the font once, outside the measurements.
    render(&request("1m", None), &[history("600519.SH", "贵州茅台", 22, 1500.0)], &fonts).expect("a CJK font (scripts/install-deps)");
    let baseline = measure("1 month, one line (baseline)", &request("1m", None), &[history("600519.SH", "贵州茅台", 22, 1500.0)], &fonts);
    for (label, range, sessions) in [("1 year + 1 comparison", "1y", 243), ("5 years + 1 comparison", "5y", 1215)] {
        let series = [history("600519.SH", "贵州茅台", sessions, 1500.0), history("000858.SZ", "五粮液", sessions, 130.0)];
        let p50 = measure(label, &request(range, Some("000858.SZ")), &series, &fonts);
        println!("{:<32} p50 {:.2}× the baseline", "", ms(p50) / ms(baseline));
    }
}
