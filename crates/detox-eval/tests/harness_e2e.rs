//! The harness end to end on a tiny model: record count, manifest, resume after a crash, summary consistency.

mod support;

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use detox_edit::dinm::{DinmEditor, DinmOptions, DinmPreset};
use detox_edit::registry::BuiltMethod;
use detox_edit::Editor;
use detox_eval::drive::merge::merge_shards;
use detox_eval::record::JudgeInfo;
use detox_eval::settings::{DatasetSource, SuffixPolicy};
use detox_eval::{BenchmarkCase, Evaluation, HarnessSettings, RunManifest, RunRecord, Summary};
use detox_metrics::SafetyJudge;
use detox_runtime::load::LoadedModel;
use detox_runtime::{load_model, CausalLm, PromptLayout};
use safeedit::Subset;
use serde_json::json;
use support::fixtures::{model_dir, sample_cases, sample_data};
use support::judges::LetterJudge;
use tch::{Device, Kind};

/// The first three sample records.
fn cases() -> Vec<BenchmarkCase> {
    sample_cases(3)
}

fn load() -> Result<LoadedModel> {
    Ok(load_model(&model_dir(), &[Device::Cpu], Kind::Float)?)
}

/// `editor` as a method whose manifest records no hyper-parameters.
fn method(editor: impl Editor + 'static) -> BuiltMethod {
    BuiltMethod::new(Box::new(editor), json!({}), json!({}))
}

fn dinm(options: DinmOptions) -> Result<BuiltMethod> {
    Ok(method(DinmEditor::new(DinmPreset::Llama2_7bChat.hparams(), options)?))
}

/// The run of `method` over `cases` (the `selection` of the sample records) with the letter judge.
fn evaluation<'a>(
    loaded: &'a mut LoadedModel,
    method: &'a mut BuiltMethod,
    selection: Subset,
    settings: HarnessSettings,
) -> Evaluation<'a> {
    Evaluation::new(
        loaded,
        method,
        &LetterJudge,
        DatasetSource::new(sample_data(), selection),
        settings,
    )
}

fn settings(out: &Path) -> HarnessSettings {
    let mut settings = HarnessSettings::new(out);
    settings.decoding.max_new_tokens = 6;
    settings.decoding.max_input_tokens = Some(200);
    settings.progress = false;
    settings
}

fn read_records(dir: &Path) -> Result<Vec<RunRecord>> {
    let text = std::fs::read_to_string(dir.join("records.jsonl"))?;
    Ok(text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

fn without_timings(mut r: RunRecord) -> RunRecord {
    r.timings = Default::default();
    r
}

/// A DINM run with the reference options and the letter judge over `cases` into `settings.out_dir`.
fn run_dinm(
    loaded: &mut LoadedModel,
    cases: &[BenchmarkCase],
    settings: HarnessSettings,
    on_record: impl FnMut(&RunRecord),
) -> Result<Summary> {
    let mut method = dinm(DinmOptions::reference())?;
    Ok(evaluation(loaded, &mut method, Subset::All, settings).run(cases, on_record)?)
}

#[test]
fn full_run_then_crash_and_resume_give_the_same_records() -> Result<()> {
    let mut loaded = load()?;
    let cases = cases();

    let clean_dir = tempfile::tempdir()?;
    let mut clean_method = dinm(DinmOptions::reference())?;
    let mut clean_run =
        evaluation(&mut loaded, &mut clean_method, Subset::All, settings(clean_dir.path()));
    let manifest = clean_run.manifest()?;
    let summary = clean_run.run(&cases, |_| {})?;
    let clean = read_records(clean_dir.path())?;
    assert_eq!(clean.len(), 3);
    assert_eq!(clean.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["0", "1", "2"]);
    for r in &clean {
        assert_eq!(r.pre.responses.len(), 5);
        assert!(r
            .post
            .responses
            .iter()
            .all(|p| p.input.ends_with(detox_eval::settings::protocol::SUFFIX_SYSTEM_PROMPT)));
        assert!(r
            .pre
            .responses
            .iter()
            .all(|p| !p.input.ends_with(detox_eval::settings::protocol::SUFFIX_SYSTEM_PROMPT)));
        assert!(!r.steps.is_empty() && r.layer.is_some());
    }
    assert!(
        clean[0].layer_distances.is_some() && clean[1].layer_distances.is_none(),
        "sticky layer"
    );

    // The summary on disk is what the records say.
    let on_disk: Summary =
        serde_json::from_str(&std::fs::read_to_string(clean_dir.path().join("summary.json"))?)?;
    assert_eq!(on_disk, summary);
    assert_eq!(
        on_disk,
        Summary::from_records("DINM", &[JudgeInfo::of(&LetterJudge)], &clean)
            .with_protocol("easyedit-2024-05", Some(200))
    );
    let ds_after = 100.0
        - 100.0 * clean.iter().map(|r| r.post.responses[0].label.safeedit_value()).sum::<f64>()
            / 3.0;
    let ds = summary.overall.after.rate(safeedit::Metric::Ds).expect("DS judged");
    assert!((ds - ds_after).abs() < 1e-9);
    for file in [
        "manifest.json",
        "summary.md",
        "ds_by_category.svg",
        "dg_avg_by_category.svg",
        "layer_distances.svg",
    ] {
        assert!(clean_dir.path().join(file).is_file(), "{file} written");
    }
    let written: RunManifest =
        serde_json::from_str(&std::fs::read_to_string(clean_dir.path().join("manifest.json"))?)?;
    assert_eq!(written, manifest);

    // Crash after the second record, with a torn third line, then resume.
    let crash_dir = tempfile::tempdir()?;
    let mut seen = 0;
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = run_dinm(&mut loaded, &cases, settings(crash_dir.path()), |_| {
            seen += 1;
            if seen == 2 {
                panic!("simulated crash");
            }
        });
    }));
    assert!(crashed.is_err());
    assert_eq!(read_records(crash_dir.path())?.len(), 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(crash_dir.path().join("records.jsonl"))?
        .write_all(b"{\"id\":\"2\",\"categ")?;

    let mut resumed_ids = Vec::new();
    run_dinm(&mut loaded, &cases, settings(crash_dir.path()), |r| resumed_ids.push(r.id.clone()))?;
    assert_eq!(resumed_ids, ["2"], "only the missing record is run again");
    let resumed = read_records(crash_dir.path())?;
    assert_eq!(resumed.len(), 3);
    let strip = |v: Vec<RunRecord>| v.into_iter().map(without_timings).collect::<Vec<_>>();
    assert_eq!(strip(resumed), strip(clean), "resumed run equals the uninterrupted one");

    // A record written twice (the copy edited to differ) is damage: resuming refuses it, naming the id and both
    // lines, instead of letting the first copy win.
    let records_path = crash_dir.path().join("records.jsonl");
    let intact = std::fs::read_to_string(&records_path)?;
    let second = intact.lines().nth(1).expect("three records").to_string();
    // Every label of the copy flipped.
    let altered = second
        .replace("\"label\":\"safe\"", "\"label\":\"flipped\"")
        .replace("\"label\":\"unsafe\"", "\"label\":\"safe\"")
        .replace("\"label\":\"flipped\"", "\"label\":\"unsafe\"");
    assert_ne!(altered, second, "the copy differs");
    std::fs::write(&records_path, format!("{intact}{altered}\n"))?;
    let err = run_dinm(&mut loaded, &cases, settings(crash_dir.path()), |_| {}).unwrap_err();
    let err = err.downcast::<detox_eval::EvalError>()?;
    assert!(
        matches!(&err, detox_eval::EvalError::DuplicateRecord { id, first: 2, second: 4, .. } if id == "1"),
        "{err}"
    );
    assert!(err.to_string().contains("line 2") && err.to_string().contains("line 4"), "{err}");
    std::fs::write(&records_path, &intact)?;

    // A different configuration refuses to resume the directory.
    let mut other = settings(crash_dir.path());
    other.seed = 1;
    let err = run_dinm(&mut loaded, &cases, other, |_| {}).unwrap_err();
    assert!(err.to_string().contains("seed"), "{err}");
    Ok(())
}

#[test]
fn shards_merge_into_the_full_run() -> Result<()> {
    let mut loaded = load()?;
    let cases = cases();
    let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    let mut dirs = Vec::new();
    let root = tempfile::tempdir()?;
    for index in 0..2 {
        let shard: Vec<BenchmarkCase> = safeedit::Subset::Shard { index, count: 2 }.apply(&cases);
        let dir = root.path().join(format!("shard{index}"));
        let mut method = dinm(DinmOptions::paper())?;
        let selection = Subset::Shard { index, count: 2 };
        evaluation(&mut loaded, &mut method, selection, settings(&dir)).run(&shard, |_| {})?;
        dirs.push(dir);
    }
    let merged = root.path().join("merged");
    let summary = merge_shards(&dirs, &ids, &merged)?;
    let records = read_records(&merged)?;
    assert_eq!(records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(
        summary,
        Summary::from_records("DINM", &[JudgeInfo::of(&LetterJudge)], &records)
            .with_protocol("easyedit-2024-05", Some(200))
    );

    // A merged run is re-judged like any run: another judge's verdicts on every record, both judges summarised.
    let rejudged = detox_eval::drive::rejudge::rejudge(
        &merged,
        &detox_metrics::PhraseJudge::default(),
        false,
        |_| {},
    )?;
    assert_eq!(rejudged.overall, summary.overall, "the primary judge's scores are unchanged");
    let names: Vec<&str> = rejudged.judges.iter().map(|j| j.judge.name.as_str()).collect();
    assert_eq!(names, [LetterJudge.name(), detox_metrics::PhraseJudge::default().name()]);
    assert_eq!(rejudged.judges[1].overall.records, ids.len());
    assert_eq!(rejudged.agreement.len(), 1);

    let err = merge_shards(&dirs[..1], &ids, &root.path().join("partial")).unwrap_err();
    assert!(err.to_string().contains("missing from the shards: 1"), "{err}");
    let twice = vec![dirs[0].clone(), dirs[0].clone()];
    let err = merge_shards(&twice, &ids, &root.path().join("dup")).unwrap_err();
    assert!(err.to_string().contains("appears in both"), "{err}");

    // One writer per directory: a merge into, or a run on, a directory another writer holds is refused.
    let held = detox_io::DirLock::acquire(&merged)?;
    let refused =
        format!("{} is in use by another process (pid {})", merged.display(), std::process::id());
    let err = merge_shards(&dirs, &ids, &merged).unwrap_err();
    assert!(err.to_string().contains(&refused), "{err}");
    let mut method = dinm(DinmOptions::paper())?;
    let err = evaluation(&mut loaded, &mut method, Subset::All, settings(&merged))
        .run(&cases, |_| {})
        .unwrap_err();
    assert!(err.to_string().contains(&refused), "{err}");
    drop(held);

    // A pre-edit cache shared between runs has one writer at a time too.
    let shared = root.path().join("shared-cache.jsonl");
    let held = detox_io::DirLock::acquire_file(&shared)?;
    let mut with_shared = settings(&root.path().join("uses-shared-cache"));
    with_shared.pre_edit_cache = Some(shared.clone());
    let err = evaluation(&mut loaded, &mut method, Subset::All, with_shared)
        .run(&cases, |_| {})
        .unwrap_err();
    let refused =
        format!("{} is in use by another process (pid {})", shared.display(), std::process::id());
    assert!(err.to_string().contains(&refused), "{err}");
    drop(held);
    Ok(())
}

#[test]
fn self_reminder_wraps_only_post_edit_inputs_and_leaves_weights_alone() -> Result<()> {
    let mut loaded = load()?;
    let model = &loaded.model;
    let before: Vec<tch::Tensor> =
        model.parameter_names().iter().map(|n| model.parameter(n).unwrap().copy()).collect();
    let out = tempfile::tempdir()?;
    let mut settings = settings(out.path());
    settings.suffix_policy = SuffixPolicy::Neither;
    let reminder = detox_edit::SelfReminder::for_assistant("AI assistant");
    let mut reminder_method = method(detox_edit::SelfReminderEditor::new(reminder.clone())?);
    let cases = cases();
    evaluation(&mut loaded, &mut reminder_method, Subset::All, settings).run(&cases, |_| {})?;

    let records = read_records(out.path())?;
    assert_eq!(records.len(), cases.len());
    for (record, case) in records.iter().zip(&cases) {
        assert_eq!(record.layer, None);
        assert!(record.steps.is_empty());
        for ((pre, post), (_, text)) in
            record.pre.responses.iter().zip(&record.post.responses).zip(&case.eval_inputs)
        {
            assert_eq!(&pre.input, text);
            assert_eq!(post.input, reminder.wrap(text));
        }
    }
    for (name, original) in loaded.model.parameter_names().iter().zip(&before) {
        assert!(loaded.model.parameter(name)?.equal(original), "{name} changed");
    }
    Ok(())
}

fn many_cases(n: usize) -> Result<Vec<BenchmarkCase>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/safeedit_sample_test.json");
    let split = safeedit::load_split(path, safeedit::Split::Test, safeedit::Mode::Strict)?;
    Ok(safeedit::Subset::First { n }
        .apply(&split.records)
        .iter()
        .map(|r| BenchmarkCase::from_record(r).unwrap())
        .collect())
}

/// Runs `cases` one record at a time and four at a time with editors from `make`, and checks both give the
/// same records; returns the one-at-a-time records.
fn compare_paths(
    make: &dyn Fn() -> Result<BuiltMethod>,
    cases: &[BenchmarkCase],
) -> Result<Vec<RunRecord>> {
    let mut loaded = load()?;
    let weights_before = sha256_of_weights(&loaded.model);
    let root = tempfile::tempdir()?;
    let mut results = Vec::new();
    for batch_records in [1, 4] {
        let dir = root.path().join(format!("batch{batch_records}"));
        let mut settings = settings(&dir);
        settings.batch_records = batch_records;
        let mut method = make()?;
        evaluation(&mut loaded, &mut method, Subset::All, settings).run(cases, |_| {})?;
        results.push(read_records(&dir)?);
    }
    assert_eq!(
        sha256_of_weights(&loaded.model),
        weights_before,
        "both paths leave the weights untouched"
    );
    let (alone, batched) = (&results[0], &results[1]);
    assert_eq!(alone.len(), batched.len());
    for (a, b) in alone.iter().zip(batched) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.layer, b.layer, "record {}: same layer", a.id);
        assert_eq!(a.steps.len(), b.steps.len(), "record {}: same number of steps", a.id);
        for (x, y) in a.steps.iter().zip(&b.steps) {
            assert!((x.loss - y.loss).abs() <= 1e-4 * x.loss.abs().max(1.0), "record {}", a.id);
        }
        for (side_a, side_b) in [(&a.pre, &b.pre), (&a.post, &b.post)] {
            assert_eq!(side_a.responses.len(), 5);
            for (x, y) in side_a.responses.iter().zip(&side_b.responses) {
                assert_eq!(x.input, y.input);
                assert_eq!(x.response, y.response, "record {}: same greedy response", a.id);
                assert_eq!(x.label, y.label);
            }
        }
    }
    Ok(results.swap_remove(0))
}

#[test]
fn batched_records_match_the_one_at_a_time_path() -> Result<()> {
    let hparams = DinmPreset::Llama2_7bChat.hparams();
    let options = DinmOptions {
        layer_selection: detox_locate::LayerSelection::PerRecord,
        ..DinmOptions::reference()
    };
    let make = || -> Result<BuiltMethod> {
        let editor = DinmEditor::new(hparams.clone(), options)?;
        Ok(BuiltMethod::new(Box::new(editor), json!({}), serde_json::to_value(options)?))
    };
    let alone = compare_paths(&make, &many_cases(6)?)?;
    let layers: Vec<Option<usize>> = alone.iter().map(|r| r.layer).collect();
    assert!(
        layers[..4].iter().any(|l| layers[..4].iter().filter(|m| *m == l).count() > 1),
        "the first chunk edits records located at one layer together: {layers:?}"
    );
    Ok(())
}

/// DINM at layer 1 for records whose prompt has an even length, at layer 3 otherwise: a chunk then holds two
/// layer groups, each generated with its own per-record weights.
struct TwoLayers {
    even: DinmEditor,
    odd: DinmEditor,
}

impl TwoLayers {
    fn new() -> Result<Self> {
        let at = |layer| -> Result<DinmEditor> {
            let mut h = DinmPreset::Llama2_7bChat.hparams();
            h.layers = vec![layer];
            Ok(DinmEditor::new(h, DinmOptions::reference())?)
        };
        Ok(Self { even: at(1)?, odd: at(3)? })
    }
}

impl Editor for TwoLayers {
    fn method(&self) -> &'static str {
        "DINM"
    }
    fn edit(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn detox_edit::PromptEncoder,
        input: &detox_edit::EditInput,
    ) -> detox_edit::Result<detox_edit::EditOutcome> {
        self.restore(model)?;
        if input.prompt.len() % 2 == 0 {
            self.even.edit(model, encoder, input)
        } else {
            self.odd.edit(model, encoder, input)
        }
    }
    fn edit_batch(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn detox_edit::PromptEncoder,
        inputs: &[detox_edit::EditInput],
    ) -> detox_edit::Result<Vec<detox_edit::EditOutcome>> {
        let (even, odd): (Vec<_>, Vec<_>) =
            inputs.iter().cloned().partition(|i| i.prompt.len() % 2 == 0);
        let mut even = self.even.edit_batch(model, encoder, &even)?.into_iter();
        let mut odd = self.odd.edit_batch(model, encoder, &odd)?.into_iter();
        Ok(inputs
            .iter()
            .map(|i| if i.prompt.len() % 2 == 0 { even.next() } else { odd.next() }.unwrap())
            .collect())
    }
    fn restore(&mut self, model: &mut CausalLm) -> detox_edit::Result<()> {
        self.even.restore(model)?;
        self.odd.restore(model)
    }
}

#[test]
fn batched_records_at_several_layers_match_the_one_at_a_time_path() -> Result<()> {
    let cases = many_cases(4)?;
    let parities: Vec<usize> = cases.iter().map(|c| c.edit.prompt.len() % 2).collect();
    assert!(parities.contains(&0) && parities.contains(&1), "both layers are used: {parities:?}");
    let make = || -> Result<BuiltMethod> { Ok(method(TwoLayers::new()?)) };
    let alone = compare_paths(&make, &cases)?;
    let layers: Vec<Option<usize>> = alone.iter().map(|r| r.layer).collect();
    assert!(layers.contains(&Some(1)) && layers.contains(&Some(3)), "{layers:?}");
    Ok(())
}

fn sha256_of_weights(model: &CausalLm) -> [u8; 32] {
    detox_runtime::digest::weights_digest(model).expect("hashing the weights")
}

#[test]
fn trained_baselines_and_mend_run_through_the_harness_and_restore_exactly() -> Result<()> {
    use detox_edit::mend::{MendEditor, MendNetwork, NetworkLayout};
    use detox_edit::train::{train, AdapterKind, PreferencePair, RunOptions, TrainConfig};
    let mut loaded = load()?;
    let weights_before = sha256_of_weights(&loaded.model);
    let cases = cases();
    let pairs: Vec<PreferencePair> = cases
        .iter()
        .map(|c| PreferencePair {
            prompt: c.edit.prompt.clone(),
            chosen: c.edit.safe_response.clone(),
            rejected: c.edit.unsafe_response.clone(),
        })
        .collect();
    let config = TrainConfig {
        adapter: AdapterKind::Lora { rank: 4, alpha: 8.0 },
        modules: vec!["down_proj".into()],
        prompt_layout: PromptLayout::Raw,
        lr: 1e-2,
        epochs: 2,
        batch_size: 2,
        max_length: 200,
        ..TrainConfig::sft()
    };
    let LoadedModel { model, tokenizer, .. } = &mut loaded;
    let trained = train(model, tokenizer, &pairs, &config, &RunOptions::default(), &mut |_, _| {})?;
    let sft = detox_edit::TrainedDeltaEditor::new("SFT", trained.adapters.delta()?)?;

    let names: Vec<String> =
        (2..4).map(|l| format!("model.layers.{l}.mlp.down_proj.weight")).collect();
    let weights = names
        .iter()
        .map(|n| {
            let s = model.parameter(n).unwrap().size();
            (n.clone(), [s[0], s[1]])
        })
        .collect();
    let network =
        MendNetwork::new(NetworkLayout { weights, rank: 8, init_edit_lr: 1e-2 }, Device::Cpu, 0)?;
    let mend = MendEditor::new(network, PromptLayout::Raw, 200, detox_edit::EditMode::Single);

    let methods = vec![(method(sft), "SFT"), (method(mend), "MEND")];
    for (mut built, method) in methods {
        let out = tempfile::tempdir()?;
        evaluation(&mut loaded, &mut built, Subset::All, settings(out.path()))
            .run(&cases, |_| {})?;
        let records = read_records(out.path())?;
        assert_eq!(records.len(), cases.len());
        assert!(records.iter().all(|r| r.method == method && r.post.responses.len() == 5));
        let changed = records
            .iter()
            .flat_map(|r| r.pre.responses.iter().zip(&r.post.responses))
            .filter(|(a, b)| a.response != b.response)
            .count();
        assert!(changed > 0, "{method}: the edit changes some responses");
        assert_eq!(
            sha256_of_weights(&loaded.model),
            weights_before,
            "{method}: weights restored exactly"
        );
    }
    Ok(())
}

#[test]
fn editors_without_a_batched_path_edit_batches_one_record_at_a_time() -> Result<()> {
    use detox_edit::{Batching, EditMode, FtlEditor, FtlHyperParams};
    let cases = many_cases(5)?;
    let make = || -> Result<BuiltMethod> {
        let hparams = FtlHyperParams { num_steps: 3, ..FtlHyperParams::llama2_7b().at_layer(1) };
        Ok(method(FtlEditor::new(hparams, EditMode::Single)?))
    };
    assert_eq!(make()?.editor.batching(), Batching::OneAtATime);
    let records = compare_paths(&make, &cases)?;
    assert!(records.iter().all(|r| r.layer == Some(1) && r.steps.len() == 3));

    // Sequential edits build on each other: a batch of records is refused before anything runs.
    let mut loaded = load()?;
    let mut sequential =
        method(FtlEditor::new(FtlHyperParams::llama2_7b().at_layer(1), EditMode::Sequential)?);
    let out = tempfile::tempdir()?;
    let mut settings = settings(out.path());
    settings.batch_records = 2;
    let err = evaluation(&mut loaded, &mut sequential, Subset::All, settings)
        .run(&cases, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("sequentially"), "{err}");
    assert!(!out.path().join("records.jsonl").exists(), "nothing was written");
    Ok(())
}

#[test]
fn the_protocol_bounds_inputs_and_the_summary_says_how_many_it_cut() -> Result<()> {
    use detox_edit::registry::{MethodArgs, Registry};
    use detox_eval::settings::ProtocolPreset;
    let mut loaded = load()?;
    let weights = sha256_of_weights(&loaded.model);
    let cases = cases();
    // `none` edits nothing: the baseline row under the same protocol.
    let mut none = Registry::builtin().build("none", &MethodArgs::new(), Device::Cpu)?;

    let out = tempfile::tempdir()?;
    let mut default = settings(out.path());
    default.decoding.max_input_tokens = None;
    let summary = evaluation(&mut loaded, &mut none, Subset::All, default).run(&cases, |_| {})?;
    assert_eq!(
        (summary.inputs.protocol.as_str(), summary.inputs.bound),
        ("easyedit-2024-05", None)
    );
    assert_eq!((summary.inputs.total, summary.inputs.cut), (30, 0), "the default cuts nothing");
    let records = read_records(out.path())?;
    assert!(records.iter().all(|r| r.method == "none" && r.layer.is_none() && r.steps.is_empty()));
    assert_eq!(sha256_of_weights(&loaded.model), weights);

    let out = tempfile::tempdir()?;
    let mut first =
        HarnessSettings::for_protocol(out.path(), ProtocolPreset::EasyEdit2024_03.protocol());
    assert_eq!(first.decoding.max_input_tokens, Some(400));
    first.decoding.max_new_tokens = 6;
    first.decoding.max_input_tokens = Some(12);
    first.progress = false;
    let summary = evaluation(&mut loaded, &mut none, Subset::All, first).run(&cases, |_| {})?;
    let records = read_records(out.path())?;
    let cut = records
        .iter()
        .flat_map(RunRecord::responses)
        .filter(|response| response.cut_tokens > 0)
        .count();
    assert!(cut > 0 && cut == summary.inputs.cut, "{cut} vs {:?}", summary.inputs);
    let md = std::fs::read_to_string(out.path().join("summary.md"))?;
    let line = format!("Protocol: easyedit-2024-03; inputs bounded at 12 tokens (the last ones kept): {cut} of 30 inputs cut.");
    assert!(md.contains(&line), "{md}");
    let manifest: RunManifest =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("manifest.json"))?)?;
    assert_eq!(manifest.protocol["max_length"], 1000);
    // The directory belongs to that protocol: the default one refuses to resume it.
    let mut other = settings(out.path());
    other.decoding.max_input_tokens = Some(12);
    let err =
        evaluation(&mut loaded, &mut none, Subset::All, other).run(&cases, |_| {}).unwrap_err();
    assert!(err.to_string().contains("protocol"), "{err}");
    Ok(())
}
