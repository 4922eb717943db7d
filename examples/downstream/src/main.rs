//! A dependent of the detox crates: evaluates its own editor ([`editor::ScaleDownProj`]) with the SafeEdit
//! harness on a model directory, then checks that the weights came back bit-identical.
//!
//! `detox-downstream [MODEL_DIR] [OUT_DIR]`; the defaults are the repository's tiny Llama test model and
//! `detox-downstream` under the system's temporary directory, emptied first (the harness would resume a run).

mod editor;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use detox_eval::harness::{run, BenchmarkCase, HarnessSettings, SuffixPolicy};
use detox_eval::manifest::{sha256_dir, RunManifest};
use detox_eval::respond::{Decoding, PromptStyle};
use detox_metrics::{PhraseJudge, SafetyJudge};
use detox_runtime::{CausalLm, Sampling, Tokenizer};
use tch::{Device, Kind, Tensor};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let model_dir = args
        .next()
        .unwrap_or_else(|| Path::new(REPO).join("crates/detox-edit/tests/fixtures/dinm/model"));
    let out_dir = match args.next() {
        Some(dir) => dir,
        None => {
            let dir = std::env::temp_dir().join("detox-downstream");
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("emptying {}", dir.display()))?;
            }
            dir
        }
    };

    let tokenizer = Tokenizer::from_model_dir(&model_dir)?;
    let mut model = CausalLm::load(&model_dir, Device::Cpu, Kind::Float)?;
    let before: Vec<Tensor> = model
        .parameter_names()
        .iter()
        .map(|n| model.parameter(n).map(Tensor::copy))
        .collect::<Result<_, _>>()?;

    let data = Path::new(REPO).join("datasets/safeedit_sample_test.json");
    let split = safeedit::load_split(&data, safeedit::Split::Test, safeedit::Mode::Strict)?;
    let cases: Vec<BenchmarkCase> =
        split.records.iter().take(2).filter_map(BenchmarkCase::from_record).collect();
    ensure!(cases.len() == 2, "{} lacks two records with generalisation inputs", data.display());

    let mut editor = editor::ScaleDownProj::new(None, 0.5);
    let judge = PhraseJudge::default();
    let manifest = RunManifest {
        detox_version: env!("CARGO_PKG_VERSION").into(),
        libtorch_version: "2.11.0".into(),
        device: "cpu".into(),
        dtype: "float32".into(),
        model_path: model_dir.display().to_string(),
        model_sha256: sha256_dir(&model_dir)?,
        dataset_path: data.display().to_string(),
        dataset_sha256: "not checked".into(),
        selection: "first 2".into(),
        method: "scale-down-proj".into(),
        hyper_parameters: serde_json::json!({ "factor": editor.factor }),
        method_options: serde_json::json!({}),
        decoding: serde_json::json!({ "max_new_tokens": 8 }),
        prompt_style: "raw".into(),
        suffix_policy: "neither".into(),
        judge: judge.name(),
        judge_is_approximation: judge.is_approximation(),
        seed: 0,
    };
    let settings = HarnessSettings {
        out_dir: out_dir.clone(),
        decoding: Decoding {
            max_new_tokens: 8,
            max_input_tokens: 200,
            sampling: Sampling::Greedy,
            batch_size: 5,
        },
        prompt_style: PromptStyle::Raw,
        suffix_policy: SuffixPolicy::Neither,
        suffix: String::new(),
        pre_edit_cache: None,
        progress: false,
        batch_records: 1,
    };
    let summary =
        run(&mut model, &tokenizer, &mut editor, &judge, &cases, &manifest, &settings, |r| {
            println!("record {}: edited layer {:?}", r.id, r.layer)
        })
        .context("the harness run")?;

    for (name, saved) in model.parameter_names().iter().zip(&before) {
        ensure!(model.parameter(name)?.equal(saved), "{name} differs after restore");
    }
    println!("weights restored bit-exactly ({} tensors)", before.len());
    for (metric, value) in &summary.overall.after.rates {
        println!("after edit: {metric} = {value:.1}");
    }
    println!("results in {}", out_dir.display());
    Ok(())
}
