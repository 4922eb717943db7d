//! Model Surgery on the tiny fixture model: the probe separates its training texts, the rows that change are
//! exactly the ones the ranking rule selects (recomputed here independently) and move by `alpha · direction`,
//! restore is bit-exact, and the delta and the artefact round-trip.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use common::{digest, setup};
use detox_edit::registry::{MethodArgs, Registry};
use detox_edit::surgery::{
    fit_surgery, gate_name, labelled_responses, train_probe, LabelledText, ProbeConfig,
    SurgeryConfig, SurgeryEditor, SurgeryFit,
};
use detox_edit::{Artefact, Delta, Editor};
use detox_runtime::CausalLm;
use safeedit::{load_split, Mode, Split};
use tch::{Device, Kind, Tensor};

fn training_texts() -> Result<Vec<LabelledText>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets/safeedit_sample_train.json");
    let split = load_split(&path, Split::Train, Mode::Strict)?;
    let records: Vec<_> = split.records.iter().map(|r| r.edit_request()).collect();
    Ok(labelled_responses(&records))
}

/// A probe trained long enough to fit the 18 sample texts, no texts held out.
fn config(rows: Option<usize>) -> SurgeryConfig {
    SurgeryConfig {
        probe: ProbeConfig {
            lr: 1e-2,
            epochs: 200,
            batch_size: 4,
            holdout: 0.0,
            ..ProbeConfig::default()
        },
        rows,
        alpha: 1.08,
    }
}

fn rows_of(t: &Tensor) -> Vec<Vec<f32>> {
    let n = t.size()[0];
    (0..n).map(|i| Vec::<f32>::try_from(t.get(i).to_kind(Kind::Float)).unwrap()).collect()
}

/// The selection rule written out on plain numbers: negated cosine in f64 of every gate row with the direction,
/// pooled over layers, the `count` highest. Also returns the gap between the last kept and the first dropped
/// score, so that a near tie (where f32 and f64 may order differently) is reported instead of misread.
fn expected_rows(
    model: &CausalLm,
    direction: &[f32],
    count: usize,
) -> (BTreeSet<(usize, usize)>, f64) {
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let mut scores = Vec::new();
    for layer in 0..model.config().num_hidden_layers {
        for (row, w) in rows_of(model.parameter(&gate_name(layer)).unwrap()).iter().enumerate() {
            let dot: f64 = w.iter().zip(direction).map(|(&a, &b)| a as f64 * b as f64).sum();
            scores.push((-dot / (norm(w) * norm(direction)), layer, row));
        }
    }
    scores.sort_by(|a, b| b.0.total_cmp(&a.0));
    let gap = scores[count - 1].0 - scores[count].0;
    (scores[..count].iter().map(|&(_, l, r)| (l, r)).collect(), gap)
}

fn fit(model: &CausalLm, rows: Option<usize>) -> Result<SurgeryFit> {
    let (_, encoder, _, _) = setup()?;
    Ok(fit_surgery(model, &encoder, &training_texts()?, &config(rows))?)
}

#[test]
fn the_probe_separates_its_training_texts() -> Result<()> {
    let (model, _, _, _) = setup()?;
    let fitted = fit(&model, None)?;
    assert_eq!(fitted.info.texts, 18);
    assert_eq!(fitted.info.train_accuracy, 1.0, "steps: {:?}", fitted.info.steps.last());
    let first = fitted.info.steps.first().unwrap().loss;
    let last = fitted.info.steps.last().unwrap().loss;
    assert!(last < first * 0.5, "loss {first} -> {last}");
    assert_eq!(fitted.info.config.rows, Some(4 * 32), "4 × hidden rows by default");
    assert_eq!(fitted.rows.len(), 128);
    assert_eq!(fitted.probe.weight.size(), [2, 32]);

    // Held-out texts are never trained on, and are measured.
    let mut held = config(None);
    held.probe.holdout = 0.25;
    let (_, encoder, _, _) = setup()?;
    let with_holdout = fit_surgery(&model, &encoder, &training_texts()?, &held)?;
    assert!(with_holdout.info.holdout_accuracy.is_some());
    assert_eq!(with_holdout.info.texts, 18);

    let one_class: Vec<LabelledText> = training_texts()?.into_iter().filter(|t| t.toxic).collect();
    let err = fit_surgery(&model, &encoder, &one_class, &config(None)).unwrap_err();
    assert!(err.to_string().contains("both classes"), "{err}");
    Ok(())
}

/// The authors' split trains on `int(0.9 * n)` texts (`train/run_pplm_discrim_train.py`), not on
/// `n - floor(0.1 * n)`: 28 of 32, not 29. Expected counts from Python 3: `[int(0.9 * n) for n in
/// (2, 3, 10, 19, 30, 32, 70, 1000)]` = `[1, 2, 9, 17, 27, 28, 63, 900]`, and `int((1 - 0.25) * 18)` = 13.
#[test]
fn the_probe_trains_on_the_authors_share_of_texts() -> Result<()> {
    let cases: [(usize, f64, usize); 10] = [
        (2, 0.1, 1),
        (3, 0.1, 2),
        (10, 0.1, 9),
        (19, 0.1, 17),
        (30, 0.1, 27),
        (32, 0.1, 28),
        (70, 0.1, 63),
        (1000, 0.1, 900),
        (18, 0.25, 13),
        (5, 0.0, 5),
    ];
    for (n, holdout, expected) in cases {
        let features = Tensor::randn([n as i64, 4], (Kind::Float, Device::Cpu));
        let toxic: Vec<bool> = (0..n).map(|i| i % 2 == 1).collect();
        let config = ProbeConfig { epochs: 1, holdout, ..ProbeConfig::default() };
        let fit = train_probe(&features, &toxic, &config)?;
        assert_eq!(fit.trained_on.len(), expected, "{n} texts, holdout {holdout}");
        assert_eq!(fit.holdout_accuracy.is_some(), expected < n, "{n} texts, holdout {holdout}");
    }
    Ok(())
}

#[test]
fn the_changed_rows_are_the_selected_ones_and_move_by_alpha_times_the_probe() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let count = 100;
    let fitted = fit(&model, Some(count))?;
    let direction = Vec::<f32>::try_from(fitted.probe.weight.get(1))?;
    let (expected, gap) = expected_rows(&model, &direction, count);
    assert!(
        gap > 1e-6,
        "the fixture ties at the selection boundary (gap {gap}): pick another count"
    );
    let selected: BTreeSet<(usize, usize)> = fitted.rows.iter().map(|r| (r.layer, r.row)).collect();
    assert_eq!(selected, expected, "the ranking rule");
    assert!(fitted.rows.windows(2).all(|w| w[0].score >= w[1].score), "best first");

    let layers = model.config().num_hidden_layers;
    let before: Vec<Vec<Vec<f32>>> =
        (0..layers).map(|l| rows_of(model.parameter(&gate_name(l)).unwrap())).collect();
    let digest_before = digest(&model);
    let mut editor = SurgeryEditor::new(&fitted.probe, fitted.rows.clone(), 1.08)?;
    let outcome = editor.edit(&mut model, &encoder, &input)?;
    assert_eq!(outcome.method, "Model-Surgery");

    let mut changed = BTreeSet::new();
    for (layer, rows_before) in before.iter().enumerate() {
        let rows_after = rows_of(model.parameter(&gate_name(layer))?);
        for (row, (b, a)) in rows_before.iter().zip(&rows_after).enumerate() {
            if a != b {
                changed.insert((layer, row));
                for ((&x, &y), &v) in b.iter().zip(a).zip(&direction) {
                    let moved = y as f64 - x as f64;
                    assert!(
                        (moved - 1.08 * v as f64).abs() < 1e-6,
                        "layer {layer} row {row} moved by {moved}, alpha·v is {}",
                        1.08 * v as f64
                    );
                }
            }
        }
    }
    assert_eq!(changed, expected, "exactly the selected rows change");
    let touched: BTreeSet<String> = outcome.delta.names().map(String::from).collect();
    let layers_hit: BTreeSet<String> = expected.iter().map(|&(l, _)| gate_name(l)).collect();
    assert_eq!(touched, layers_hit, "the delta touches only the gate weights of selected rows");

    // Delta export: written, read back and applied to the original model, it gives the same weights.
    let edited: Vec<Tensor> =
        (0..layers).map(|l| model.parameter(&gate_name(l)).unwrap().copy()).collect();
    let dir = tempfile::tempdir()?;
    outcome.delta.save(&dir.path().join("delta.safetensors"))?;
    editor.restore(&mut model)?;
    assert_eq!(digest(&model), digest_before, "restore is bit-exact");
    let snapshot = Delta::load(&dir.path().join("delta.safetensors"))?.apply(&mut model)?;
    for (l, w) in edited.iter().enumerate() {
        assert!(model.parameter(&gate_name(l))?.equal(w), "layer {l} from the exported delta");
    }
    model.restore(&snapshot)?;
    assert_eq!(digest(&model), digest_before);
    Ok(())
}

#[test]
fn the_artefact_round_trips_and_the_registry_builds_it() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let fitted = fit(&model, Some(40))?;
    let dir = tempfile::tempdir()?;
    fitted.save(dir.path())?;
    let loaded = SurgeryFit::load(dir.path(), Device::Cpu)?;
    assert_eq!(loaded.rows, fitted.rows);
    assert_eq!(loaded.info, fitted.info);
    assert!(loaded.probe.weight.equal(&fitted.probe.weight));
    assert!(loaded.probe.bias.equal(&fitted.probe.bias));

    let before = digest(&model);
    let mut direct = SurgeryEditor::new(&fitted.probe, fitted.rows.clone(), 1.08)?;
    drop(direct.edit(&mut model, &encoder, &input)?);
    let edited = digest(&model);
    direct.restore(&mut model)?;

    let registry = Registry::builtin();
    let args = MethodArgs::new().set("artefact", dir.path().display());
    let mut built = registry.build("surgery", &args, Device::Cpu)?;
    assert_eq!(built.editor.method(), "Model-Surgery");
    assert_eq!(built.options["alpha"], 1.08);
    drop(built.editor.edit(&mut model, &encoder, &input)?);
    assert_eq!(digest(&model), edited, "the reloaded artefact makes the same edit");
    built.editor.restore(&mut model)?;
    assert_eq!(digest(&model), before);

    let built = registry.build("surgery", &args.set("alpha", 2.0), Device::Cpu)?;
    assert_eq!(built.options["alpha"], 2.0);

    // A damaged artefact is refused with the file named.
    std::fs::write(dir.path().join("surgery.json"), b"{}")?;
    let err = SurgeryFit::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("surgery.json"), "{err}");
    Ok(())
}
