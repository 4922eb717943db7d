//! Several judges in one run, and re-judging a finished run: verdicts per judge in every record, per-judge scores
//! and agreement in the summary, a re-judge that resumes after a kill without losing or repeating a record, and
//! the refusals (a judge already in the run, responses changed since they were judged, a locked run).

mod support;

use std::path::Path;

use anyhow::Result;
use detox_edit::none::NoEdit;
use detox_edit::registry::BuiltMethod;
use detox_eval::drive::rejudge::rejudge;
use detox_eval::record::judgements::{Judgement, JUDGEMENTS_DIR};
use detox_eval::settings::DatasetSource;
use detox_eval::{EvalError, Evaluation, HarnessSettings, RunRecord, Summary};
use detox_metrics::{disagreements, pair_agreement, Exchange, Label, SafetyJudge};
use detox_runtime::load_model;
use safeedit::Subset;
use serde_json::json;
use support::fixtures::{model_dir, sample_cases, sample_data};
use support::judges::{LetterJudge, WordParityJudge};
use tch::{Device, Kind};

/// A run of the unedited model over the first `n` sample records, judged by `judges` (the first primary).
fn run(out: &Path, n: usize, judges: &[&dyn SafetyJudge]) -> Result<Summary> {
    run_with(out, n, judges, false)
}

/// [`run`], judging on another thread while the next record generates when `background` says.
fn run_with(
    out: &Path,
    n: usize,
    judges: &[&dyn SafetyJudge],
    background: bool,
) -> Result<Summary> {
    let mut loaded = load_model(&model_dir(), &[Device::Cpu], Kind::Float)?;
    let mut method = BuiltMethod::new(Box::new(NoEdit), json!({}), json!({}));
    let mut settings = HarnessSettings::new(out);
    settings.decoding.max_new_tokens = 8;
    settings.decoding.max_input_tokens = Some(200);
    settings.progress = false;
    settings.judge_in_background = background;
    let dataset = DatasetSource::new(sample_data(), Subset::First { n });
    let mut evaluation = Evaluation::new(&mut loaded, &mut method, judges[0], dataset, settings);
    for judge in &judges[1..] {
        evaluation = evaluation.with_judge(*judge)?;
    }
    Ok(evaluation.run(&sample_cases(n), |_| {})?)
}

fn read_records(dir: &Path) -> Result<Vec<RunRecord>> {
    let text = std::fs::read_to_string(dir.join("records.jsonl"))?;
    Ok(text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

/// Every response's label by the judge named `judge` (`letter` is primary in these runs).
fn labels_by(records: &[RunRecord], judge: &str) -> Vec<Label> {
    records
        .iter()
        .flat_map(RunRecord::responses)
        .map(|r| r.verdict_of(judge, &LetterJudge.name()).expect("judged").label)
        .collect()
}

#[test]
fn two_judges_in_one_run_give_each_response_both_verdicts_and_the_summary_their_agreement(
) -> Result<()> {
    let out = tempfile::tempdir()?;
    let parity = WordParityJudge::default();
    let summary = run(out.path(), 3, &[&LetterJudge, &parity])?;
    let records = read_records(out.path())?;
    assert_eq!(records.len(), 3);
    for response in records.iter().flat_map(RunRecord::responses) {
        assert_eq!(
            response.verdict(),
            LetterJudge.judge(&[Exchange::new("", &response.response)])?[0]
        );
        assert_eq!(response.other_verdicts.len(), 1);
        assert_eq!(response.other_verdicts[0].judge, parity.name());
        let expected = parity.judge(&[Exchange::new(&response.input, &response.response)])?[0];
        assert_eq!(response.other_verdicts[0].verdict, expected);
    }
    assert_eq!(summary.judge, LetterJudge.name());
    let names: Vec<(&str, bool)> =
        summary.judges.iter().map(|j| (j.judge.name.as_str(), j.primary)).collect();
    let expected = [LetterJudge.name(), parity.name()];
    assert_eq!(names, [(expected[0].as_str(), true), (expected[1].as_str(), false)]);
    assert_eq!(
        summary.judges[0].overall, summary.overall,
        "the primary judge's scores are the headline"
    );
    assert!(records.iter().all(|r| r.timings.judges.len() == 2));
    let (a, b) = (labels_by(&records, &LetterJudge.name()), labels_by(&records, &parity.name()));
    assert_eq!(summary.agreement.len(), 1);
    assert_eq!(summary.agreement[0].agreement, pair_agreement(&a, &b)?);
    assert!(
        !disagreements(&a, &b)?.is_empty(),
        "the two judges disagree somewhere, or the test shows nothing"
    );
    let markdown = summary.to_markdown();
    assert!(markdown.contains("## Judges") && markdown.contains("Cohen's kappa"), "{markdown}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("manifest.json"))?)?;
    assert_eq!(manifest["other_judges"], json!([{ "name": parity.name(), "approximation": true }]));

    // Two judges of one name could not be told apart.
    let mut loaded = load_model(&model_dir(), &[Device::Cpu], Kind::Float)?;
    let mut method = BuiltMethod::new(Box::new(NoEdit), json!({}), json!({}));
    let dataset = DatasetSource::new(sample_data(), Subset::All);
    let twice = Evaluation::new(
        &mut loaded,
        &mut method,
        &LetterJudge,
        dataset,
        HarnessSettings::new(out.path()),
    )
    .with_judge(&LetterJudge);
    assert!(matches!(twice, Err(EvalError::DuplicateJudge { .. })));
    Ok(())
}

#[test]
fn a_rejudge_adds_a_judge_resumes_after_a_kill_and_refuses_changed_responses() -> Result<()> {
    let out = tempfile::tempdir()?;
    let dir = out.path();
    let one_judge = run(dir, 3, &[&LetterJudge])?;
    let records = read_records(dir)?;
    let responses: usize =
        records.iter().map(|r| r.pre.responses.len() + r.post.responses.len()).sum();

    // The whole re-judge: every record once, the summary with both judges, records.jsonl untouched.
    let before = std::fs::read(dir.join("records.jsonl"))?;
    let parity = WordParityJudge::default();
    let mut seen = Vec::new();
    let summary = rejudge(dir, &parity, false, |id| seen.push(id.to_string()))?;
    assert_eq!(seen, records.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
    assert_eq!(parity.judged(), responses);
    assert_eq!(std::fs::read(dir.join("records.jsonl"))?, before, "records.jsonl is append-only");
    assert_eq!(summary.overall, one_judge.overall, "the primary judge's scores are unchanged");
    assert_eq!(summary.judges.len(), 2);
    let joined = {
        let mut records = records.clone();
        detox_eval::record::judgements::attach(dir, &mut records)?;
        records
    };
    let (a, b) = (labels_by(&joined, &LetterJudge.name()), labels_by(&joined, &parity.name()));
    assert_eq!(summary.agreement[0].agreement, pair_agreement(&a, &b)?);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json"))?)?;
    assert_eq!(written["judges"][1]["name"], json!(parity.name()));
    let verdicts_file = dir.join(JUDGEMENTS_DIR).join("0.jsonl");
    let complete = std::fs::read_to_string(&verdicts_file)?;
    assert_eq!(complete.lines().count(), 3);

    // A kill mid-write: the first record's line whole, the second's cut. The resumed re-judge repairs the file
    // and judges the two records left, and ends with the same verdicts.
    let lines: Vec<&str> = complete.lines().collect();
    std::fs::write(&verdicts_file, format!("{}\n{}", lines[0], &lines[1][..lines[1].len() / 2]))?;
    let resumed = WordParityJudge::default();
    let again = rejudge(dir, &resumed, false, |_| {})?;
    let first: Judgement = serde_json::from_str(lines[0])?;
    let first_record = records.iter().find(|r| r.id == first.id).unwrap();
    let first_count = first_record.pre.responses.len() + first_record.post.responses.len();
    assert_eq!(resumed.judged(), responses - first_count, "only the records without verdicts");
    let parsed = |text: &str| -> Result<Vec<Judgement>> {
        Ok(text.lines().map(serde_json::from_str).collect::<Result<Vec<_>, _>>()?)
    };
    let strip = |mut j: Vec<Judgement>| {
        j.iter_mut().for_each(|j| j.seconds = 0.0);
        j
    };
    assert_eq!(
        strip(parsed(&std::fs::read_to_string(&verdicts_file)?)?),
        strip(parsed(&complete)?)
    );
    assert_eq!(again.agreement, summary.agreement);

    // Done: nothing is judged again.
    let idle = WordParityJudge::default();
    rejudge(dir, &idle, false, |_| {})?;
    assert_eq!(idle.judged(), 0);

    // A judge already in the run is refused, and so is a run whose responses changed since they were judged.
    assert!(matches!(
        rejudge(dir, &LetterJudge, false, |_| {}),
        Err(EvalError::DuplicateJudge { .. })
    ));
    let text = std::fs::read_to_string(dir.join("records.jsonl"))?;
    let mut changed = records.clone();
    changed[1].post.responses[0].response = "a different answer".into();
    let lines: Vec<String> = changed.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
    std::fs::write(dir.join("records.jsonl"), lines.join("\n") + "\n")?;
    let err = rejudge(dir, &WordParityJudge::default(), false, |_| {}).unwrap_err();
    assert!(matches!(&err, EvalError::StaleJudgement { id, .. } if *id == records[1].id), "{err}");
    assert!(err.to_string().contains("0.jsonl"), "{err}");

    // A run another process holds is not re-judged.
    let _lock = detox_io::DirLock::acquire(dir)?;
    std::fs::write(dir.join("records.jsonl"), text)?;
    assert!(rejudge(dir, &WordParityJudge::default(), false, |_| {}).is_err());
    Ok(())
}

#[test]
fn judging_while_the_next_record_generates_writes_the_same_records() -> Result<()> {
    let (here, there) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let parity = WordParityJudge::default();
    let foreground = run_with(here.path(), 4, &[&LetterJudge, &parity], false)?;
    let background = run_with(there.path(), 4, &[&LetterJudge, &parity], true)?;
    let without_timings = |records: Vec<RunRecord>| -> Vec<RunRecord> {
        records
            .into_iter()
            .map(|mut r| {
                r.timings = Default::default();
                r
            })
            .collect()
    };
    let (a, b) = (read_records(here.path())?, read_records(there.path())?);
    assert_eq!(a.len(), 4);
    assert_eq!(without_timings(a), without_timings(b), "same records, in the same order");
    assert_eq!(foreground.overall, background.overall);
    assert_eq!(foreground.agreement, background.agreement);
    Ok(())
}

/// Drops the last verdict of every call: a broken judge.
struct DroppingJudge;

impl SafetyJudge for DroppingJudge {
    fn name(&self) -> String {
        "dropping".into()
    }
    fn is_approximation(&self) -> bool {
        false
    }
    fn judge(
        &self,
        exchanges: &[Exchange<'_>],
    ) -> detox_metrics::Result<Vec<detox_metrics::Verdict>> {
        let mut verdicts = LetterJudge.judge(exchanges)?;
        verdicts.pop();
        Ok(verdicts)
    }
}

#[test]
fn a_failing_judge_is_reported_with_the_records_it_was_judging() -> Result<()> {
    let out = tempfile::tempdir()?;
    let err = run(out.path(), 2, &[&LetterJudge, &DroppingJudge]).unwrap_err().to_string();
    let first = &sample_cases(1)[0].id;
    assert!(err.contains(&format!("judging record {first} (before the edit)")), "{err}");
    assert!(err.contains("verdicts"), "{err}");

    let finished = tempfile::tempdir()?;
    run(finished.path(), 2, &[&LetterJudge])?;
    let err = rejudge(finished.path(), &DroppingJudge, false, |_| {}).unwrap_err().to_string();
    let ids: Vec<String> = sample_cases(2).into_iter().map(|c| c.id).collect();
    assert!(err.contains(&format!("judging records {}", ids.join(", "))), "{err}");
    Ok(())
}
