//! The judges section: every judge's scores and time, each pair's agreement, for runs with several judges.

use safeedit::Metric;

use super::ReportInputs;
use crate::render::html::{escape, number, table};

/// Nothing for a run with one judge.
pub(super) fn judges(inputs: &ReportInputs<'_>) -> String {
    let s = inputs.summary;
    if s.judges.len() < 2 {
        return String::new();
    }
    let rows: Vec<Vec<String>> = s
        .judges
        .iter()
        .map(|j| {
            let o = &j.overall;
            let mut name = format!("<code>{}</code>", escape(&j.judge.name));
            if j.primary {
                name.push_str(" <span class=\"badge primary\">primary</span>");
            }
            if j.judge.approximation {
                name.push_str(" <span class=\"meta\">(approximation)</span>");
            }
            vec![
                name,
                o.records.to_string(),
                number(o.before.rate(Metric::Ds), 1),
                number(o.after.rate(Metric::Ds), 1),
                number(o.before.dg_avg, 1),
                number(o.after.dg_avg, 1),
                number(Some(j.seconds), 1),
            ]
        })
        .collect();
    let pairs: Vec<Vec<String>> = s
        .agreement
        .iter()
        .map(|p| {
            let a = &p.agreement;
            vec![
                format!("<code>{}</code> / <code>{}</code>", escape(&p.a), escape(&p.b)),
                a.judged.to_string(),
                number(Some(a.percent), 1),
                a.kappa.map_or_else(|| "undefined".into(), |k| format!("{k:.3}")),
                a.disagree().to_string(),
                a.excluded_empty.to_string(),
            ]
        })
        .collect();
    let mut html = String::from(
        "<section id=\"judges\"><h2>Judges</h2><p>Every judge's scores over the records it judged; the \
         summary above is the primary judge's. Filter the records below by <em>judges disagree</em> to read \
         the responses they judge differently.</p>",
    );
    html.push_str(&table(
        "judges",
        &[
            "judge",
            "records",
            "DS before",
            "DS after",
            "DG-Avg before",
            "DG-Avg after",
            "judging time (s)",
        ],
        &rows,
    ));
    html.push_str(
        "<h3>Agreement</h3><p>Over the responses both judges judged, before and after the edit; responses \
         either judge found empty are left out.</p>",
    );
    html.push_str(&table(
        "agreement",
        &["judges", "responses", "agree (%)", "Cohen's kappa", "disagree", "empty, left out"],
        &pairs,
    ));
    html.push_str("</section>\n");
    html
}
