//! Drawing a [`Figure`] to PNG bytes: title, axes, one line per series with its last value marked,
//! a legend when several are compared, and a footer naming where the numbers came from.

use chrono::NaiveDate;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use twilight_market::{History, Metric};

use crate::{ChartError, ChartRequest, Span, HEIGHT, WIDTH};

const COLORS: [RGBColor; 4] = [RGBColor(200, 40, 40), RGBColor(30, 90, 200), RGBColor(20, 140, 70), RGBColor(220, 120, 0)];
const GREY: RGBColor = RGBColor(110, 110, 110);
const FOOTER_HEIGHT: u32 = 44;
/// Points drawn per line at most: about one per two pixels of the plot's width.
const MAX_POINTS: usize = 480;

/// Everything drawn, in the words and numbers shown.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    title: String,
    y_label: String,
    /// (legend label, points); the first is the charted symbol.
    lines: Vec<(String, Vec<(NaiveDate, f64)>)>,
    footer: String,
    from: NaiveDate,
    through: NaiveDate,
    day_ticks: bool,
}

fn metric_label(metric: Metric) -> &'static str {
    match metric {
        Metric::Close => "收盘价",
        Metric::PctChg => "日涨跌幅",
        Metric::PeTtm => "市盈率TTM",
        Metric::Pb => "市净率",
        Metric::TotalMv => "总市值",
        other => other.name(),
    }
}

/// Values as shown and their unit: market value in 亿元 rather than Tushare's 万元.
fn shown(metric: Metric, unit: &str) -> (f64, String) {
    match (metric, unit) {
        (Metric::TotalMv, _) => (1e-4, "亿元".into()),
        (_, "CNY") => (1.0, "元".into()),
        (_, "ratio") => (1.0, "倍".into()),
        (_, unit) => (1.0, unit.into()),
    }
}

impl Figure {
    pub(crate) fn of(request: &ChartRequest, series: &[History], from: NaiveDate, through: NaiveDate) -> Figure {
        let main = &series[0];
        let label = |h: &History| format!("{} {}", h.name, h.code);
        // Compared levels are drawn as % change from each line's first day; daily changes as they are.
        let relative = series.len() > 1 && request.metric != Metric::PctChg;
        let (scale, unit) = shown(request.metric, &main.unit);
        let lines = series
            .iter()
            .map(|h| {
                let base = h.points.first().map_or(1.0, |p| p.1);
                let points = h
                    .points
                    .iter()
                    .filter(|(day, _)| (from..=through).contains(day))
                    .map(|&(day, v)| (day, if relative { (v / base - 1.0) * 100.0 } else { v * scale }))
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                (label(h), points)
            })
            .collect();
        let title = match series {
            [_] => format!("{} · {} · {}", label(main), metric_label(request.metric), request.span.label()),
            _ => format!("{} 对比 · {} · {}", label(main), metric_label(request.metric), request.span.label()),
        };
        let y_label = if relative { "较首日涨跌 %".to_string() } else { unit };
        let mut sources: Vec<&str> = series.iter().map(|h| h.source.as_str()).collect();
        sources.dedup();
        let fetched = series.iter().filter_map(|h| h.fetched_at).max().map(|at| twilight_core::china_today(at).to_string());
        let mut footer = format!("数据来源 {} · {} · 取数于 {}", sources.join("/"), main.table, fetched.unwrap_or_default());
        if sources.iter().any(|s| s.starts_with("sandbox:")) {
            footer.push_str(" · 模拟数据（沙箱）");
        }
        let day_ticks = matches!(request.span, Span::OneMonth | Span::ThreeMonths | Span::SixMonths);
        Figure { title, y_label, lines, footer, from, through, day_ticks }
    }
}

/// The figure as a PNG drawn with the font registered as `family`.
pub(crate) fn png(figure: &Figure, family: &str) -> Result<Vec<u8>, ChartError> {
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(figure, family, &mut rgb).map_err(|e| ChartError::Render(e.to_string()))?;
    let mut out = Vec::with_capacity(128 * 1024);
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Paeth suits flat fills and anti-aliased lines: about a seventh of the default filter's bytes
    // at the same speed (measured on a 1-year chart: 39 KB vs 276 KB, ~9 ms in a release build).
    encoder.set_compression(png::Compression::Default);
    encoder.set_filter(png::FilterType::Paeth);
    let mut writer = encoder.write_header().map_err(|e| ChartError::Render(e.to_string()))?;
    writer.write_image_data(&rgb).map_err(|e| ChartError::Render(e.to_string()))?;
    writer.finish().map_err(|e| ChartError::Render(e.to_string()))?;
    Ok(out)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(figure: &Figure, family: &str, rgb: &mut [u8]) -> DrawResult {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (body, footer) = root.split_vertically(HEIGHT - FOOTER_HEIGHT);
    let (low, high) = figure
        .lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| (low.min(v), high.max(v)));
    let pad = ((high - low) * 0.06).max(high.abs() * 0.01).max(0.01);
    let mut chart = ChartBuilder::on(&body)
        .caption(&figure.title, (family, 34))
        .margin_left(16)
        .margin_right(40)
        .margin_top(12)
        .x_label_area_size(44)
        .y_label_area_size(96)
        .build_cartesian_2d(figure.from..figure.through, (low - pad)..(high + pad))?;
    let day_ticks = figure.day_ticks;
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(7)
        .x_label_formatter(&|day| day.format(if day_ticks { "%m-%d" } else { "%Y-%m" }).to_string())
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style((family, 20))
        .axis_desc_style((family, 20))
        .y_desc(&figure.y_label)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()?;
    let compared = figure.lines.len() > 1;
    for (i, (label, points)) in figure.lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Years of sessions are more points than pixels: every k-th (and the last) draws the same
        // line without the ragged overdraw of wide strokes on sub-pixel segments.
        let step = points.len().div_ceil(MAX_POINTS).max(1);
        let thinned = points.iter().step_by(step).chain(points.last().filter(|_| (points.len() - 1) % step != 0)).copied();
        let Some(&(day, value)) = points.last() else { continue };
        let line = chart.draw_series(LineSeries::new(thinned, color.stroke_width(if step > 1 { 2 } else { 3 })))?;
        if compared {
            // Several last values would collide at the right edge: each goes into its legend entry.
            line.label(format!("{label}  {value:+.2}%"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(3)));
        }
        chart.draw_series([Circle::new((day, value), 6, color.filled())])?;
        if !compared {
            let text = (family, 22).into_font().color(&color).pos(Pos::new(HPos::Right, VPos::Bottom));
            chart.draw_series([Text::new(format!("{value:.2}"), (day, value), text)])?;
        }
    }
    if compared {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((family, 20))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()?;
    }
    footer.draw(&Text::new(figure.footer.as_str(), (20, 10), (family, 20).into_font().color(&GREY)))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fonts;

    /// A year of made-up sessions of `code`.
    fn history(code: &str, name: &str, start: f64) -> History {
        let first = NaiveDate::from_ymd_opt(2025, 12, 8).unwrap();
        let points =
            (0..245).map(|i| (first + chrono::Days::new(i * 365 / 245), start + (i as f64 / 9.0).sin() * 40.0 + i as f64)).collect();
        History {
            code: code.into(),
            name: name.into(),
            metric: Metric::Close,
            unit: "CNY".into(),
            points,
            source: "sandbox:tushare".into(),
            table: "daily",
            fetched_at: Some(chrono::Utc::now()),
            listed_after_start: None,
            cost_pts: 0,
            stale: false,
        }
    }

    #[test]
    fn a_figure_names_its_stock_source_and_simulator_and_fits_a_phone() {
        let family = Fonts::new(None).family().expect("scripts/install-deps installs fonts-noto-cjk").to_string();
        let series = [history("600519.SH", "贵州茅台", 1500.0), history("000858.SZ", "五粮液", 130.0)];
        let request = ChartRequest::parse(Some("600519.SH"), None, None, None).unwrap();
        let (from, through) = (series[0].points[0].0, series[0].points.last().unwrap().0);
        let single = Figure::of(&request, &series[..1], from, through);
        assert_eq!(single.title, "贵州茅台 600519.SH · 收盘价 · 近1年");
        assert_eq!(single.y_label, "元");
        assert!(
            single.footer.starts_with("数据来源 sandbox:tushare · daily · 取数于 ") && single.footer.ends_with("模拟数据（沙箱）"),
            "{}",
            single.footer
        );
        let compared = Figure::of(&request, &series, from, through);
        assert_eq!(compared.y_label, "较首日涨跌 %");
        assert_eq!(compared.lines[1].1[0].1, 0.0, "each line starts at 0 %");
        for figure in [single, compared] {
            let png = png(&figure, &family).unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            assert_eq!(
                (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap())),
                (WIDTH, HEIGHT)
            );
            assert!(png.len() <= 200 * 1024, "{} bytes", png.len());
        }
    }
}
