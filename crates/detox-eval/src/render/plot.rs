//! Small self-contained SVG charts for run reports: before/after bars per category and per-layer distances.

use std::fmt::Write as _;

use crate::render::html::escape;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 90.0;

fn frame(title: &str, y_label: &str, y_max: f64) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{}" y="22" font-size="14" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let plot_h = HEIGHT - TOP - BOTTOM;
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = TOP + plot_h * (1.0 - i as f64 / 4.0);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            format_tick(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    svg
}

fn format_tick(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Grouped bars: for each label, one bar per series (e.g. before and after the edit).
///
/// `series` holds `(name, colour, values)` with one value per label; values are drawn on a `0..=y_max` axis.
pub fn grouped_bars(
    title: &str,
    y_label: &str,
    labels: &[String],
    series: &[(&str, &str, Vec<f64>)],
    y_max: f64,
) -> String {
    let mut svg = frame(title, y_label, y_max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let group_w = plot_w / labels.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / series.len().max(1) as f64;
    for (g, label) in labels.iter().enumerate() {
        let x0 = LEFT + g as f64 * group_w + group_w * 0.1;
        for (s, (_, colour, values)) in series.iter().enumerate() {
            let v = values.get(g).copied().unwrap_or(0.0).clamp(0.0, y_max);
            let h = plot_h * v / y_max.max(f64::MIN_POSITIVE);
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {v:.1}</title></rect>"#,
                x0 + s as f64 * bar_w,
                TOP + plot_h - h,
                bar_w.max(1.0),
                h,
                escape(label)
            );
        }
        let cx = x0 + group_w * 0.4;
        let _ = write!(
            svg,
            r#"<text transform="translate({cx:.1} {}) rotate(35)" text-anchor="start">{}</text>"#,
            TOP + plot_h + 12.0,
            escape(label)
        );
    }
    legend(&mut svg, series.iter().map(|(n, c, _)| (*n, *c)));
    svg.push_str("</svg>\n");
    svg
}

/// One line per series over x = 0, 1, 2, ... (e.g. a record's distance per layer).
pub fn lines(title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<f64>)]) -> String {
    let y_max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.05;
    let n = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let mut svg = frame(title, y_label, y_max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of =
        |i: usize| LEFT + if n > 1 { plot_w * i as f64 / (n - 1) as f64 } else { plot_w / 2.0 };
    const PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
    for (k, (_, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x_of(i), TOP + plot_h * (1.0 - v / y_max)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            PALETTE[k % PALETTE.len()],
            points.join(" ")
        );
    }
    let step = (n / 16).max(1);
    for i in (0..n).step_by(step) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{i}</text>"#,
            x_of(i),
            TOP + plot_h + 14.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 32.0,
        escape(x_label)
    );
    let shown: Vec<(&str, &str)> = series
        .iter()
        .enumerate()
        .take(6)
        .map(|(k, (n, _))| (n.as_str(), PALETTE[k % PALETTE.len()]))
        .collect();
    legend(&mut svg, shown.into_iter());
    svg.push_str("</svg>\n");
    svg
}

fn legend<'a>(svg: &mut String, entries: impl Iterator<Item = (&'a str, &'a str)>) {
    for (i, (name, colour)) in entries.enumerate() {
        let x = LEFT + 10.0 + i as f64 * 130.0;
        let y = HEIGHT - 18.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="10" height="10" fill="{colour}"/><text x="{}" y="{y}">{}</text>"#,
            y - 9.0,
            x + 14.0,
            escape(name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_have_one_rect_per_value_and_escape_labels() {
        let labels = vec!["a&b".to_string(), "c".to_string()];
        let svg = grouped_bars(
            "DS",
            "%",
            &labels,
            &[("before", "#999", vec![10.0, 20.0]), ("after", "#07f", vec![90.0, 100.0])],
            100.0,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 4 + 2, "four bars and two legend swatches");
        assert!(svg.contains("a&amp;b") && !svg.contains("a&b"));
    }

    #[test]
    fn lines_draw_each_series() {
        let svg = lines(
            "distances",
            "layer",
            "distance",
            &[("r1".into(), vec![1.0, 3.0, 2.0]), ("r2".into(), vec![2.0, 1.0, 0.5])],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
