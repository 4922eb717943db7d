//! The run-level sections: settings and manifest, summary tables, plots.

use std::fmt::Write as _;
use std::path::Path;

use safeedit::Metric;
use serde_json::Value;

use super::ReportInputs;
use crate::render::html::{escape, number, table};
use crate::render::markdown::inputs_line;

/// One line on what was run, and the judge's warning when its scores are approximate.
pub(super) fn overview(inputs: &ReportInputs<'_>) -> String {
    let m = inputs.manifest;
    let model = Path::new(&m.model_path)
        .file_name()
        .map_or_else(|| m.model_path.clone(), |n| n.to_string_lossy().into_owned());
    format!(
        "<section id=\"overview\"><p class=\"lede\">{} on <code>{}</code> ({}, {}), {} records of <code>{}</code> \
         ({}), judged by {}.</p><p class=\"inputs\">{}</p>{}</section>\n",
        escape(&m.method),
        escape(&model),
        escape(&m.dtype),
        escape(&m.device),
        inputs.summary.overall.records,
        escape(&m.dataset_path),
        escape(&m.selection),
        judged_by(inputs),
        escape(&inputs_line(&inputs.summary.inputs)),
        approximation_note(inputs)
    )
}

/// The judges, the primary one first.
fn judged_by(inputs: &ReportInputs<'_>) -> String {
    let judges = &inputs.summary.judges;
    if judges.len() < 2 {
        return format!("<code>{}</code>", escape(&inputs.manifest.judge));
    }
    let names: Vec<String> =
        judges.iter().map(|j| format!("<code>{}</code>", escape(&j.judge.name))).collect();
    format!("{} (primary) and {}", names[0], names[1..].join(", "))
}

/// The manifest as a two-column table.
pub(super) fn settings(inputs: &ReportInputs<'_>) -> String {
    let m = inputs.manifest;
    let text = |v: &str| escape(v);
    let json = |v: &Value| escape(&v.to_string());
    let rows: Vec<Vec<String>> = [
        ("method", text(&m.method)),
        ("hyper-parameters", json(&m.hyper_parameters)),
        ("method options", json(&m.method_options)),
        ("judge", text(&m.judge)),
        ("model", text(&m.model_path)),
        ("model SHA-256", text(&m.model_sha256)),
        ("dtype", text(&m.dtype)),
        ("device", text(&m.device)),
        ("dataset", text(&m.dataset_path)),
        ("dataset SHA-256", text(&m.dataset_sha256)),
        ("selection", text(&m.selection)),
        ("decoding", json(&m.decoding)),
        ("prompt layout", text(&m.prompt_layout)),
        ("protocol", json(&m.protocol)),
        ("suffix policy", text(&m.suffix_policy)),
        ("seed", m.seed.to_string()),
        ("detox version", text(&m.detox_version)),
        ("libtorch version", text(&m.libtorch_version)),
    ]
    .into_iter()
    .map(|(k, v)| vec![escape(k), v])
    .collect();
    format!(
        "<section id=\"settings\"><h2>Settings and manifest</h2>{}</section>\n",
        table("settings", &["setting", "value"], &rows)
    )
}

fn approximation_note(inputs: &ReportInputs<'_>) -> String {
    if inputs.summary.judge_is_approximation {
        "<p class=\"note\"><strong>Approximate scores.</strong> This judge is an approximation of the paper's \
         safety classifier; the numbers are not comparable with published SafeEdit results.</p>"
            .into()
    } else {
        String::new()
    }
}

/// The overall scores before and after the edit, and the per-category table.
pub(super) fn summary_tables(inputs: &ReportInputs<'_>) -> String {
    let s = inputs.summary;
    let (b, a) = (&s.overall.before, &s.overall.after);
    let change = |x: Option<f64>, y: Option<f64>, digits: usize| match (x, y) {
        (Some(x), Some(y)) => format!("{:+.digits$}", y - x),
        _ => "–".into(),
    };
    let mut rows: Vec<Vec<String>> = Metric::ALL
        .into_iter()
        .map(|m| (m.name(), b.rate(m), a.rate(m), 1))
        .chain([("DG-Avg", b.dg_avg, a.dg_avg, 1), ("Fluency", b.fluency, a.fluency, 2)])
        .map(|(name, x, y, d)| vec![escape(name), number(x, d), number(y, d), change(x, y, d)])
        .collect();
    rows.retain(|r| r[1] != "–" || r[2] != "–");
    let per_category: Vec<Vec<String>> = s
        .groups()
        .map(|(category, c)| {
            vec![
                escape(category.unwrap_or("all")),
                c.records.to_string(),
                number(c.before.rate(Metric::Ds), 1),
                number(c.after.rate(Metric::Ds), 1),
                number(c.before.dg_avg, 1),
                number(c.after.dg_avg, 1),
                number(c.before.fluency, 2),
                number(c.after.fluency, 2),
            ]
        })
        .collect();
    let mut html = String::from("<section id=\"summary\"><h2>Summary</h2>");
    let _ = write!(
        html,
        "<p>Safe rates in %, fluency as n-gram entropy. Mean locate + edit time per record: {:.2} s.</p>",
        s.mean_edit_seconds
    );
    html.push_str(&table("summary overall", &["metric", "before", "after", "change"], &rows));
    html.push_str("<h3>Per unsafety category</h3>");
    html.push_str(&table(
        "summary per-category",
        &[
            "category",
            "records",
            "DS before",
            "DS after",
            "DG-Avg before",
            "DG-Avg after",
            "fluency before",
            "fluency after",
        ],
        &per_category,
    ));
    html.push_str("</section>\n");
    html
}

/// The run's SVG plots, inline as `data:` images: drawn as the files are, and unable to run anything whatever the
/// files hold.
pub(super) fn plots(inputs: &ReportInputs<'_>) -> String {
    if inputs.plots.is_empty() {
        return String::new();
    }
    let mut html = String::from("<section id=\"plots\"><h2>Plots</h2><div class=\"plots\">");
    for (name, svg) in inputs.plots {
        let _ = write!(
            html,
            "<figure><img src=\"data:image/svg+xml;charset=utf-8,{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
            escape(&data_url_text(svg)),
            escape(name),
            escape(name)
        );
    }
    html.push_str("</div></section>\n");
    html
}

/// `text` as the data part of a `data:` URL: `%` and `#` (which would start an escape or a fragment) and line
/// breaks percent-encoded.
fn data_url_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '#' => out.push_str("%23"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}
