//! A dependent of the detox crates: evaluates its own editor ([`editor::ScaleDownProj`]) with the SafeEdit
//! harness on a model directory, then checks that the weights came back bit-identical.
//!
//! `detox-downstream [MODEL_DIR] [OUT_DIR]`; the defaults are the repository's tiny Llama test model and
//! `detox-downstream` under the system's temporary directory, emptied first (the harness would resume a run).

mod editor;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use detox_edit::registry::BuiltMethod;
use detox_eval::harness::{run, BenchmarkCase, HarnessSettings};
use detox_eval::manifest::RunManifest;
use detox_metrics::PhraseJudge;
use detox_runtime::load_model;
use safeedit::Subset;
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

    let mut loaded = load_model(&model_dir, &[Device::Cpu], Kind::Float)?;
    let before: Vec<Tensor> = loaded
        .model
        .parameter_names()
        .iter()
        .map(|n| loaded.model.parameter(n).map(Tensor::copy))
        .collect::<Result<_, _>>()?;

    let data = Path::new(REPO).join("datasets/safeedit_sample_test.json");
    let split = safeedit::load_split(&data, safeedit::Split::Test, safeedit::Mode::Strict)?;
    let selection = Subset::First { n: 2 };
    let cases: Vec<BenchmarkCase> =
        selection.apply(&split.records).iter().filter_map(BenchmarkCase::from_record).collect();
    ensure!(cases.len() == 2, "{} lacks two records with generalisation inputs", data.display());

    let editor = editor::ScaleDownProj::new(None, 0.5);
    let hyper_parameters = serde_json::json!({ "factor": editor.factor });
    let mut method = BuiltMethod::new(Box::new(editor), hyper_parameters);
    let judge = PhraseJudge::default();
    let mut settings = HarnessSettings::new(&out_dir);
    settings.decoding.max_new_tokens = 8;
    settings.decoding.max_input_tokens = 200;
    settings.progress = false;
    let manifest = RunManifest::capture(&loaded, &data, &selection, &method, &judge, &settings, 0)?;
    let summary = run(
        &mut loaded.model,
        &loaded.tokenizer,
        method.editor.as_mut(),
        &judge,
        &cases,
        &manifest,
        &settings,
        |r| println!("record {}: edited layer {:?}", r.id, r.layer),
    )
    .context("the harness run")?;

    let model = &loaded.model;
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
