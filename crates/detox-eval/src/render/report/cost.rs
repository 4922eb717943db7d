//! The sections on what the edits cost the model: KQA, CSum and over-refusal before and after, and the
//! degeneration counts with DS and DG-Avg with and without safe-but-degenerate responses.

use std::fmt::Write as _;

use safeedit::Metric;

use super::ReportInputs;
use crate::aggregate::cost::CostScore;
use crate::aggregate::summary::Comparison;
use crate::render::html::{escape, number, table};
use crate::render::markdown::{degeneration_counts, DEGENERATION_RULE};

fn score_row(name: &str, s: &CostScore, records: usize) -> Vec<String> {
    vec![
        escape(name),
        number(s.before, 1),
        number(s.after, 1),
        records.to_string(),
        s.before_items.to_string(),
        s.after_items.to_string(),
    ]
}

/// KQA, CSum and over-refusal, overall and per category; nothing when the run measured no general sets.
pub(super) fn general(inputs: &ReportInputs<'_>) -> String {
    let Some(cost) = &inputs.summary.cost else {
        return String::new();
    };
    let c = &cost.config;
    let mut html = String::from("<section id=\"cost\"><h2>What the edits cost</h2>");
    let _ = write!(
        html,
        "<p>Before: the unedited model, once per run. After: the edited model of every k-th record (k = {}), before \
         its weights are restored. {}. CSum is ROUGE-1 F (%) of one-sentence XSum summaries. Over-refusal is the \
         share of safe XSTest prompts refused, by the {}. Sets drawn with seed {}: {} questions, {} articles, {} \
         prompts; at most {} new tokens.</p>",
        c.every,
        escape(&cost.kqa_note),
        escape(&cost.refusal_detector),
        c.seed,
        c.qa,
        c.sum,
        c.over_refusal,
        c.max_new_tokens
    );
    let o = &cost.overall;
    let mut rows = vec![
        score_row("KQA (%)", &o.kqa, o.records),
        score_row("CSum (ROUGE-1 F)", &o.csum, o.records),
        score_row("Over-refusal (%)", &o.over_refusal, o.records),
    ];
    for (judge, score) in &o.over_refusal_by_judge {
        rows.push(score_row(&format!("Over-refusal (%), by {judge}"), score, o.records));
    }
    html.push_str(&table(
        "cost overall",
        &["measure", "before", "after", "records", "items before", "items after"],
        &rows,
    ));
    let per_category: Vec<Vec<String>> = cost
        .per_category
        .iter()
        .map(|(category, c)| {
            vec![
                escape(category),
                c.records.to_string(),
                number(c.kqa.after, 1),
                number(c.csum.after, 1),
                number(c.over_refusal.after, 1),
            ]
        })
        .collect();
    html.push_str("<h3>Per unsafety category, after the edit</h3>");
    html.push_str(&table(
        "cost by-category",
        &["category", "records", "KQA", "CSum", "over-refusal"],
        &per_category,
    ));
    html.push_str("</section>\n");
    html
}

/// Degeneration before and after, safe-but-degenerate responses, and DS / DG-Avg without their credit; nothing
/// when the records carry no degeneration measures.
pub(super) fn degeneration(inputs: &ReportInputs<'_>) -> String {
    let Some(d) = &inputs.summary.degeneration else {
        return String::new();
    };
    let mut html = String::from("<section id=\"degeneration\"><h2>Degeneration</h2>");
    let _ = write!(html, "<p>{}</p>", escape(DEGENERATION_RULE));
    let (b, a) = (&d.before, &d.after);
    let mut rows: Vec<Vec<String>> = degeneration_counts(d)
        .into_iter()
        .map(|(name, x, y)| vec![escape(name), x.to_string(), y.to_string()])
        .collect();
    rows.push(vec![
        "mean distinct-2".into(),
        number(Some(b.mean_distinct_2), 2),
        number(Some(a.mean_distinct_2), 2),
    ]);
    html.push_str(&table("degeneration counts", &["responses", "before", "after"], &rows));
    let _ = write!(
        html,
        "<p><strong>Safe but degenerate</strong> after the edit: {} response(s) in {} of {} record(s) ({} before \
         the edit). Strict scores count them unsafe:</p>",
        d.safe_but_degenerate_responses,
        d.safe_but_degenerate_records,
        d.records,
        d.safe_but_degenerate_responses_before
    );
    let plain = &inputs.summary.overall;
    let ds = |c: &Comparison, after: bool| {
        number(if after { c.after.rate(Metric::Ds) } else { c.before.rate(Metric::Ds) }, 1)
    };
    let strict_rows = vec![
        vec![
            "DS".into(),
            ds(plain, false),
            ds(plain, true),
            ds(&d.strict, false),
            ds(&d.strict, true),
        ],
        vec![
            "DG-Avg".into(),
            number(plain.before.dg_avg, 1),
            number(plain.after.dg_avg, 1),
            number(d.strict.before.dg_avg, 1),
            number(d.strict.after.dg_avg, 1),
        ],
    ];
    html.push_str(&table(
        "degeneration strict",
        &["metric", "before", "after", "before, strict", "after, strict"],
        &strict_rows,
    ));
    html.push_str("</section>\n");
    html
}
