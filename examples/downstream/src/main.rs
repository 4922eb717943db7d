//! A dependent of the detox crates: registers its own editor ([`editor::ScaleDownProj`]) by name, builds it
//! from `key=value` options as `safeedit_eval --method-arg` would, runs it through the SafeEdit harness on a
//! model directory, then checks that the weights came back bit-identical.
//!
//! `detox-downstream [MODEL_DIR] [OUT_DIR]`; the defaults are the repository's tiny Llama test model and
//! `detox-downstream` under the system's temporary directory, emptied first (the harness would resume a run).

mod editor;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use detox_edit::registry::{MethodArgs, Registry};
use detox_eval::settings::DatasetSource;
use detox_eval::{BenchmarkCase, Evaluation, HarnessSettings};
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

    let mut registry = Registry::builtin();
    registry.register(editor::SPEC)?;
    ensure!(registry.describe().contains("scale-down-proj"), "the method is listed");
    let args = MethodArgs::parse_pairs("scale-down-proj", &["factor=0.5"])?;
    let mut method = registry.build("scale-down-proj", &args, Device::Cpu)?;
    let judge = PhraseJudge::default();
    let mut settings = HarnessSettings::new(&out_dir);
    settings.decoding.max_new_tokens = 8;
    settings.decoding.max_input_tokens = Some(200);
    settings.progress = false;
    let dataset = DatasetSource::new(&data, selection);
    let summary = Evaluation::new(&mut loaded, &mut method, &judge, dataset, settings)
        .run(&cases, |r| println!("record {}: edited layer {:?}", r.id, r.layer))
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
