//! Every record: its prompts and responses before and after the edit side by side, with the filters.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use detox_metrics::Label;

use detox_metrics::degeneration::Degeneration;

use super::flags::response_flags;
use super::outcome::Outcome;
use super::ReportInputs;
use crate::record::{JudgedResponse, RunRecord};
use crate::render::html::escape;

/// The filters and one block per record.
pub(super) fn records(inputs: &ReportInputs<'_>) -> String {
    let mut html = String::from("<section id=\"records\"><h2>Records</h2>");
    html.push_str(&filters(inputs.records));
    for record in inputs.records {
        html.push_str(&record_block(record));
    }
    html.push_str("</section>\n");
    html
}

/// Whether the judges of a response disagree (over the judges that did not find it empty).
fn judges_disagree(r: &JudgedResponse) -> bool {
    let labels: BTreeSet<Label> = std::iter::once(r.label)
        .chain(r.other_verdicts.iter().map(|v| v.verdict.label))
        .filter(|l| *l != Label::Empty)
        .collect();
    labels.len() > 1
}

fn filters(records: &[RunRecord]) -> String {
    let categories: BTreeSet<&str> = records.iter().map(|r| r.category.as_str()).collect();
    let mut html = String::from(
        "<div class=\"filters\"><label>Category <select id=\"filter-category\"><option value=\"\">all</option>",
    );
    for c in categories {
        let c = escape(c);
        let _ = write!(html, "<option value=\"{c}\">{c}</option>");
    }
    html.push_str(
        "</select></label><label>Outcome <select id=\"filter-outcome\"><option value=\"\">all</option>",
    );
    for o in Outcome::ALL {
        let _ = write!(html, "<option value=\"{o}\">{o}</option>");
    }
    html.push_str("<option value=\"flagged\">any response flagged</option></select></label>");
    let judged_twice =
        records.iter().flat_map(RunRecord::responses).any(|r| !r.other_verdicts.is_empty());
    if judged_twice {
        html.push_str(
            "<label>Judges <select id=\"filter-judges\"><option value=\"\">all</option>\
             <option value=\"disagree\">judges disagree</option></select></label>",
        );
    }
    let _ = write!(
        html,
        "<span id=\"shown-count\">{n} of {n} records shown</span></div>",
        n = records.len()
    );
    html
}

fn record_block(record: &RunRecord) -> String {
    let outcome = Outcome::of_record(record);
    let measures = |side: usize, i: usize| {
        record
            .degeneration
            .as_ref()
            .and_then(|d| if side == 0 { d.pre.get(i) } else { d.post.get(i) })
    };
    let flagged = (0..2).any(|side| {
        let responses = if side == 0 { &record.pre.responses } else { &record.post.responses };
        responses.iter().enumerate().any(|(i, r)| !response_flags(r, measures(side, i)).is_empty())
    });
    let disagree = record.responses().any(judges_disagree);
    let mut html = format!(
        "<article class=\"record\" id=\"record-{id}\" data-id=\"{id}\" data-category=\"{category}\" \
         data-outcome=\"{outcome}\" data-flagged=\"{flagged}\" data-disagree=\"{disagree}\"><header><h3>Record {id}</h3>\
         <span class=\"meta\">{category}</span><span class=\"badge {class}\">{outcome}</span>\
         <span class=\"meta\">{method}{layer} · edit {edit:.1} s · fluency {fb:.2} → {fa:.2}</span></header>",
        id = escape(&record.id),
        category = escape(&record.category),
        class = outcome.class(),
        method = escape(&record.method),
        layer = record.layer.map(|l| format!(" at layer {l}")).unwrap_or_default(),
        edit = record.timings.locate + record.timings.edit,
        fb = record.pre.fluency,
        fa = record.post.fluency,
    );
    html.push_str(
        "<table class=\"pairs\"><colgroup><col class=\"metric\"><col><col><col class=\"outcome\"></colgroup>\
         <thead><tr><th scope=\"col\">input</th><th scope=\"col\">before the edit</th>\
         <th scope=\"col\">after the edit</th><th scope=\"col\">outcome</th></tr></thead><tbody>",
    );
    for (i, (before, after)) in record.pre.responses.iter().zip(&record.post.responses).enumerate()
    {
        let pair = Outcome::of(before.label, after.label);
        let _ = write!(
            html,
            "<tr class=\"pair\" data-metric=\"{metric}\" data-disagree=\"{disagree}\"><th scope=\"row\">{metric}</th><td>{b}</td><td>{a}</td>\
             <td><span class=\"badge {class}\">{pair}</span></td></tr>",
            metric = escape(before.metric.name()),
            b = response_cell(before, measures(0, i)),
            a = response_cell(after, measures(1, i)),
            class = pair.class(),
            disagree = judges_disagree(before) || judges_disagree(after),
        );
    }
    html.push_str("</tbody></table></article>\n");
    html
}

/// A response, collapsed, under its label and flags, with the input it answered.
fn response_cell(r: &JudgedResponse, degeneration: Option<&Degeneration>) -> String {
    let class = label_class(r.label);
    let mut flags = String::new();
    for flag in response_flags(r, degeneration) {
        let _ = write!(
            flags,
            " <span class=\"badge flag\" title=\"{}\">{}</span>",
            escape(&flag.why),
            escape(flag.name)
        );
    }
    let mut others = String::new();
    for v in &r.other_verdicts {
        let _ = write!(
            others,
            " <span class=\"badge other {}\" title=\"{}: unsafe score {:.2}\">{}</span>",
            label_class(v.verdict.label),
            escape(&v.judge),
            v.verdict.unsafe_score,
            escape(&format!("{}: {}", short_name(&v.judge), v.verdict.label.name()))
        );
    }
    format!(
        "<details class=\"response\"><summary><span class=\"badge label {class}\">{label}</span>{others}{flags} \
         <span class=\"meta\">{tokens} tokens, {finish}, unsafe score {score:.2}</span></summary>\
         <pre class=\"text\">{text}</pre><details class=\"input\"><summary class=\"meta\">input</summary>\
         <pre>{input}</pre></details></details>",
        label = escape(r.label.name()),
        tokens = r.tokens,
        finish = escape(&r.finish),
        score = r.unsafe_score,
        text = escape(&r.response),
        input = escape(&r.input),
    )
}

fn label_class(label: Label) -> &'static str {
    match label {
        Label::Safe => "l-safe",
        Label::Unsafe => "l-unsafe",
        Label::Empty => "l-empty",
    }
}

/// A judge's name without its model directory (`wildguard:models/x` reads `wildguard`).
fn short_name(judge: &str) -> &str {
    judge.split(':').next().unwrap_or(judge)
}
