//! `report.html` of a real harness run on a tiny model, loaded in headless Chromium (Debian's `chromium`
//! package; the test fails, saying how to install it, when it is missing): the tables and every record render,
//! run text is shown as text and never run, responses start collapsed, and the category and outcome filters
//! show exactly the records they should.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{ensure, Result};
use detox_edit::dinm::{DinmEditor, DinmOptions, DinmPreset};
use detox_edit::registry::BuiltMethod;
use detox_eval::render::report::{flags::response_flags, Outcome, REPORT_FILE};
use detox_eval::settings::DatasetSource;
use detox_eval::{BenchmarkCase, Evaluation, HarnessSettings, RunRecord};
use detox_metrics::{Exchange, Label, SafetyJudge, Verdict};
use detox_runtime::load_model;
use safeedit::Subset;
use serde_json::{json, Value};
use support::chromium::Browser;
use support::fixtures::{model_dir, sample_data};
use support::judges::WordParityJudge;
use tch::{Device, Kind};

const MARKUP_CATEGORY: &str = "offensiveness <b>&</b> \"quotes\"";
const INJECTED: &str =
    "<script>window.injected = 1</script><img src=x onerror=\"window.injected = 2\">";

/// Four sample records over three categories, one of them with markup in its category and an evaluation input.
fn cases() -> Result<Vec<BenchmarkCase>> {
    let split = safeedit::load_split(sample_data(), safeedit::Split::Test, safeedit::Mode::Strict)?;
    let mut cases: Vec<BenchmarkCase> = split
        .records
        .iter()
        .filter(|r| [0, 1, 2, 4].contains(&r.id))
        .filter_map(BenchmarkCase::from_record)
        .collect();
    cases[1].category = MARKUP_CATEGORY.into();
    cases[1].eval_inputs[1].1 = format!("{INJECTED} {}", cases[1].eval_inputs[1].1);
    Ok(cases)
}

/// Runs the protocol on the tiny model into `out` and returns the records it wrote.
fn tiny_run(out: &Path) -> Result<Vec<RunRecord>> {
    let hparams = DinmPreset::Llama2_7bChat.hparams();
    let mut settings = HarnessSettings::new(out);
    settings.decoding.max_new_tokens = 8;
    settings.decoding.max_input_tokens = Some(200);
    settings.progress = false;
    let mut loaded = load_model(&model_dir(), &[Device::Cpu], Kind::Float)?;
    let mut method = BuiltMethod::new(
        Box::new(DinmEditor::new(hparams.clone(), DinmOptions::reference())?),
        serde_json::to_value(&hparams)?,
        json!({}),
    );
    let cases = cases()?;
    let mut records = Vec::new();
    let dataset = DatasetSource::new(sample_data(), Subset::All);
    Evaluation::new(&mut loaded, &mut method, &WordParityJudge::default(), dataset, settings)
        .run(&cases, |r| records.push(r.clone()))?;
    Ok(records)
}

/// The ids of the records the page shows.
const VISIBLE_IDS: &str = "Array.from(document.querySelectorAll('.record'))\
    .filter(r => !r.hidden && r.checkVisibility()).map(r => r.dataset.id)";

fn set_filters(
    page: &mut support::chromium::Page<'_>,
    category: &str,
    outcome: &str,
) -> Result<Value> {
    page.eval(&format!(
        "(() => {{ for (const [id, value] of [['filter-category', {}], ['filter-outcome', {}]]) {{ \
           const s = document.getElementById(id); s.value = value; \
           if (s.value !== value) throw new Error(id + ' has no option ' + value); \
           s.dispatchEvent(new Event('change')); }} \
         return {{ ids: {VISIBLE_IDS}, count: document.getElementById('shown-count').textContent }}; }})()",
        json!(category),
        json!(outcome)
    ))
}

#[test]
fn the_report_renders_every_record_and_its_filters_work_in_chromium() -> Result<()> {
    let out = tempfile::tempdir()?;
    let records = tiny_run(out.path())?;
    let report = out.path().join(REPORT_FILE);
    let html = std::fs::read_to_string(&report)?;
    // Self-contained: nothing refers to another file or address.
    for needle in ["src=\"http", "href=", "<link", "url(", "@import", "src=\"x\""] {
        ensure!(!html.contains(needle), "report.html holds {needle:?}");
    }

    let mut browser = Browser::launch()?;
    let mut page = browser.open(&report)?;

    // The tables render, with one per-category row per category and one for all records.
    let categories: BTreeSet<&str> = records.iter().map(|r| r.category.as_str()).collect();
    let tables = page.eval(
        "Array.from(document.querySelectorAll('table.summary, table.settings'))\
         .map(t => [t.className, t.querySelectorAll('tbody tr').length, t.getBoundingClientRect().height > 0])",
    )?;
    assert_eq!(
        tables,
        json!([
            ["summary overall", 7, true],
            ["summary per-category", categories.len() + 1, true],
            ["settings", 18, true]
        ])
    );
    // The degeneration section: its counts (seven kinds and distinct-2) and DS / DG-Avg with and without
    // safe-but-degenerate responses.
    let degeneration = page.eval(
        "Array.from(document.querySelectorAll('#degeneration table'))\
         .map(t => [t.className, t.querySelectorAll('tbody tr').length, t.getBoundingClientRect().height > 0])",
    )?;
    assert_eq!(
        degeneration,
        json!([["degeneration counts", 8, true], ["degeneration strict", 2, true]])
    );
    // The protocol and what its input bound did are stated where a reader starts.
    let inputs = page.eval("document.querySelector('#overview p.inputs').innerText")?;
    assert_eq!(
        inputs,
        json!("Protocol: easyedit-2024-05; inputs bounded at 200 tokens (the last ones kept): 0 of 40 inputs cut.")
    );
    let cells = page.eval(
        "Array.from(document.querySelectorAll('table.summary.per-category tbody th')).map(t => t.textContent)",
    )?;
    let mut expected_rows: Vec<&str> = categories.iter().copied().collect();
    expected_rows.push("all");
    assert_eq!(cells, json!(expected_rows));
    // The plots are drawn (a data: image that failed to decode has no natural width).
    let plots = page.eval(
        "Array.from(document.querySelectorAll('#plots img')).map(i => i.complete && i.naturalWidth > 0)",
    )?;
    assert_eq!(plots, json!([true, true, true]), "DS, DG-Avg and the locator's distances");

    // Every record renders, in order, with its five pairs of responses.
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(page.eval(VISIBLE_IDS)?, json!(ids));
    let pairs = page.eval(
        "Array.from(document.querySelectorAll('.record')).map(r => r.querySelectorAll('tr.pair').length)",
    )?;
    assert_eq!(pairs, json!(vec![5; records.len()]));
    let shown_labels = page.eval(
        "Array.from(document.querySelectorAll('.record')).map(r => \
         Array.from(r.querySelectorAll('.badge.label')).map(b => b.textContent))",
    )?;
    let labels: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            r.pre
                .responses
                .iter()
                .zip(&r.post.responses)
                .flat_map(|(b, a)| [b.label.to_string(), a.label.to_string()])
                .collect()
        })
        .collect();
    assert_eq!(shown_labels, json!(labels));

    // Run text is text: the markup in a category and an input is shown, not run.
    assert_eq!(page.eval("typeof window.injected")?, json!("undefined"));
    assert_eq!(
        page.eval(&format!(
            "document.getElementById('record-{}').dataset.category",
            records[1].id
        ))?,
        json!(MARKUP_CATEGORY)
    );
    let input = page.eval(&format!(
        "document.querySelector('#record-{} tr.pair:nth-child(2) details.input pre').textContent",
        records[1].id
    ))?;
    assert!(input.as_str().is_some_and(|t| t.starts_with(INJECTED)), "{input}");

    // Harmful text starts collapsed and opens on a click.
    assert_eq!(page.eval("document.querySelectorAll('details[open]').length")?, json!(0));
    let first_text = "document.querySelector('.record details.response pre.text')";
    assert_eq!(page.eval(&format!("{first_text}.checkVisibility()"))?, json!(false));
    page.eval("document.querySelector('.record details.response > summary').click()")?;
    assert_eq!(page.eval(&format!("{first_text}.checkVisibility()"))?, json!(true));

    // Each filter shows exactly its records; the two filters combine.
    let total = records.len();
    let expect = |keep: &dyn Fn(&RunRecord) -> bool| -> Value {
        let ids: Vec<&str> = records.iter().filter(|r| keep(r)).map(|r| r.id.as_str()).collect();
        json!({ "ids": ids, "count": format!("{} of {total} records shown", ids.len()) })
    };
    let flagged = |r: &RunRecord| {
        let measures = r.degeneration.as_ref();
        let pre = r
            .pre
            .responses
            .iter()
            .zip(measures.map(|d| d.pre.iter().map(Some)).into_iter().flatten());
        let post = r
            .post
            .responses
            .iter()
            .zip(measures.map(|d| d.post.iter().map(Some)).into_iter().flatten());
        assert!(measures.is_some(), "record {} carries its degeneration measures", r.id);
        pre.chain(post).any(|(x, d)| !response_flags(x, d).is_empty())
    };
    for category in &categories {
        assert_eq!(set_filters(&mut page, category, "")?, expect(&|r| r.category == *category));
    }
    for outcome in Outcome::ALL {
        assert_eq!(
            set_filters(&mut page, "", outcome.name())?,
            expect(&|r| Outcome::of_record(r) == outcome),
            "{outcome}"
        );
    }
    assert_eq!(set_filters(&mut page, "", "flagged")?, expect(&flagged));
    let outcome = Outcome::of_record(&records[0]);
    assert_eq!(
        set_filters(&mut page, "offensiveness", outcome.name())?,
        expect(&|r| r.category == "offensiveness" && Outcome::of_record(r) == outcome)
    );
    assert_eq!(set_filters(&mut page, "", "")?, expect(&|_| true));
    Ok(())
}

/// The word-parity judge's verdicts, flipped on the exchanges whose input is `flip`: a second judge
/// that disagrees with the first exactly where a test says.
struct FlippingJudge {
    flip: String,
}

impl SafetyJudge for FlippingJudge {
    fn name(&self) -> String {
        "flipping test judge".into()
    }
    fn is_approximation(&self) -> bool {
        false
    }
    fn judge(&self, exchanges: &[Exchange<'_>]) -> detox_metrics::Result<Vec<Verdict>> {
        let mut verdicts = WordParityJudge::default().judge(exchanges)?;
        for (verdict, e) in verdicts.iter_mut().zip(exchanges) {
            if e.prompt == self.flip {
                verdict.label = match verdict.label {
                    Label::Safe => Label::Unsafe,
                    Label::Unsafe => Label::Safe,
                    Label::Empty => Label::Empty,
                };
            }
        }
        Ok(verdicts)
    }
}

#[test]
fn a_rejudged_report_shows_every_judge_and_filters_what_they_disagree_on_in_chromium() -> Result<()>
{
    let out = tempfile::tempdir()?;
    let run = tiny_run(out.path())?;
    // An input no other response of the run answers, in the last record, with a response to judge.
    let inputs: Vec<&str> =
        run.iter().flat_map(RunRecord::responses).map(|r| r.input.as_str()).collect();
    let last = run.last().expect("records");
    let flip = last
        .pre
        .responses
        .iter()
        .filter(|r| !r.response.trim().is_empty())
        .map(|r| r.input.clone())
        .find(|input| inputs.iter().filter(|i| **i == input.as_str()).count() == 1)
        .expect("an input of the last record that no other response answers, answered");
    detox_eval::drive::rejudge::rejudge(out.path(), &FlippingJudge { flip }, false, |_| {})?;
    let text = std::fs::read_to_string(out.path().join("records.jsonl"))?;
    let mut records: Vec<RunRecord> =
        text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    detox_eval::record::judgements::attach(out.path(), &mut records)?;
    let disagree = |r: &detox_eval::record::JudgedResponse| {
        let other = r.other_verdicts[0].verdict.label;
        r.label != Label::Empty && other != Label::Empty && r.label != other
    };
    let pairs_disagreeing: Vec<usize> = records
        .iter()
        .map(|r| {
            r.pre
                .responses
                .iter()
                .zip(&r.post.responses)
                .filter(|(b, a)| disagree(b) || disagree(a))
                .count()
        })
        .collect();
    let expected_ids: Vec<&str> = records
        .iter()
        .zip(&pairs_disagreeing)
        .filter(|(_, n)| **n > 0)
        .map(|(r, _)| r.id.as_str())
        .collect();
    ensure!(
        expected_ids == [last.id.as_str()],
        "the judges should disagree on record {} alone, or the filter shows nothing: {expected_ids:?}",
        last.id
    );

    let mut browser = Browser::launch()?;
    let mut page = browser.open(&out.path().join(REPORT_FILE))?;
    // Both judges are named, with their scores and their agreement.
    let judges = page.eval(
        "Array.from(document.querySelectorAll('table.judges tbody th')).map(t => t.textContent)",
    )?;
    assert_eq!(
        judges,
        json!(["word-parity test judge primary (approximation)", "flipping test judge"])
    );
    let agreement = page.eval("document.querySelectorAll('table.agreement tbody tr').length")?;
    assert_eq!(agreement, json!(1));
    // Every response shows the second judge's verdict beside the primary label.
    let responses: usize =
        records.iter().map(|r| r.pre.responses.len() + r.post.responses.len()).sum();
    assert_eq!(page.eval("document.querySelectorAll('.badge.other').length")?, json!(responses));

    // The judges filter shows the records the judges disagree on, and in them only the disagreeing pairs.
    let shown = page.eval(&format!(
        "(() => {{ const s = document.getElementById('filter-judges'); s.value = 'disagree'; \
           s.dispatchEvent(new Event('change')); \
           return {{ ids: {VISIBLE_IDS}, count: document.getElementById('shown-count').textContent, \
             rows: Array.from(document.querySelectorAll('.record')).filter(r => !r.hidden) \
               .map(r => Array.from(r.querySelectorAll('tr.pair')).filter(p => p.checkVisibility()).length) }}; }})()"
    ))?;
    let rows: Vec<usize> = pairs_disagreeing.iter().copied().filter(|n| *n > 0).collect();
    assert_eq!(
        shown,
        json!({
            "ids": expected_ids,
            "count": format!("{} of {} records shown", expected_ids.len(), records.len()),
            "rows": rows,
        })
    );
    // Back to all: every record and every pair again.
    let all = page.eval(&format!(
        "(() => {{ const s = document.getElementById('filter-judges'); s.value = ''; \
           s.dispatchEvent(new Event('change')); \
           return [{VISIBLE_IDS}.length, Array.from(document.querySelectorAll('tr.pair')).filter(p => p.checkVisibility()).length]; }})()"
    ))?;
    assert_eq!(all, json!([records.len(), records.len() * 5]));
    Ok(())
}
