//! Every kind of method artefact on the tiny fixture model, through the one [`Artefact`] mechanism: each is fitted
//! briefly, saved, loaded back equal to what was saved (the description, and every tensor bit for bit), loaded
//! again from a directory written before headers existed, and refused, with both kinds and the directory named,
//! where another kind's directory is given.

use std::path::{Path, PathBuf};

use anyhow::Result;
use detox_edit::mend::{train_mend, MendArtefact, MendConfig};
use detox_edit::profs::{fit_profs, ProfsFit, ProfsOptions};
use detox_edit::steering::{fit_steering, SteeringVectors};
use detox_edit::surgery::{
    fit_surgery, labelled_responses, ProbeConfig, SurgeryConfig, SurgeryFit,
};
use detox_edit::train::{
    train, AdapterKind, PreferencePair, RunOptions, TrainConfig, TrainedArtefact,
};
use detox_edit::{Artefact, EditError, EditInput, HEADER_FILE};
use detox_runtime::PromptLayout;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

mod common;
use common::{setup, training_records, FixtureEncoder};

/// What an artefact holds, in comparable form: its description as JSON and its tensors by name.
trait Parts: Artefact {
    fn description(&self) -> Value;
    fn tensors(&self) -> Vec<(String, Tensor)>;
}

fn json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

impl Parts for TrainedArtefact {
    fn description(&self) -> Value {
        json(&self.info)
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        self.delta
            .names()
            .map(|n| (n.to_string(), self.delta.get(n).unwrap().shallow_clone()))
            .collect()
    }
}

impl Parts for MendArtefact {
    fn description(&self) -> Value {
        json(&(&self.training, self.network.layout()))
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        self.network.named_tensors()
    }
}

impl Parts for ProfsFit {
    fn description(&self) -> Value {
        json(&self.info)
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        self.bases
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("basis {i}"), b.shallow_clone()))
            .collect()
    }
}

impl Parts for SteeringVectors {
    fn description(&self) -> Value {
        json(&self.info)
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        vec![("vectors".into(), self.vectors.shallow_clone())]
    }
}

impl Parts for SurgeryFit {
    fn description(&self) -> Value {
        json(&(&self.info, &self.rows))
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            ("probe.weight".into(), self.probe.weight.shallow_clone()),
            ("probe.bias".into(), self.probe.bias.shallow_clone()),
        ]
    }
}

/// The tensor's bits: floating-point values reinterpreted as integers of the same width, so that `equal` tells
/// apart values that compare equal as numbers (`0.0` and `-0.0`) and matches a NaN with itself.
fn bits(t: &Tensor) -> Tensor {
    match t.kind() {
        Kind::Float => t.view_dtype(Kind::Int),
        Kind::Double => t.view_dtype(Kind::Int64),
        _ => t.shallow_clone(),
    }
}

fn assert_same<A: Parts>(saved: &A, loaded: &A) {
    let kind = A::KIND;
    assert_eq!(loaded.description(), saved.description(), "{kind}: the description");
    // By name: a delta's entries come back in the file's (sorted) order.
    let sorted = |mut parts: Vec<(String, Tensor)>| {
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        parts
    };
    let (saved, loaded) = (sorted(saved.tensors()), sorted(loaded.tensors()));
    assert!(!saved.is_empty(), "{kind}: nothing to compare");
    let names =
        |parts: &[(String, Tensor)]| parts.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&loaded), names(&saved), "{kind}: the tensors' names");
    for ((name, a), (_, b)) in saved.iter().zip(&loaded) {
        assert_eq!((a.kind(), a.size()), (b.kind(), b.size()), "{kind}: `{name}`");
        assert!(bits(a).equal(&bits(b)), "{kind}: `{name}` is not bit-identical");
    }
}

/// Saves `artefact` under `root/KIND`, loads it back and compares; then does the same from a copy without the
/// header (as written before headers existed). Returns the directory.
fn round_trip<A: Parts>(artefact: &A, root: &Path) -> Result<PathBuf> {
    let dir = root.join(A::KIND);
    artefact.save(&dir)?;
    let header: Value = serde_json::from_slice(&std::fs::read(dir.join(HEADER_FILE))?)?;
    assert_eq!(header, serde_json::json!({ "kind": A::KIND, "version": 1 }));
    assert_same(artefact, &A::load(&dir, Device::Cpu)?);

    // Saving again over the same kind replaces it.
    artefact.save(&dir)?;
    assert_same(artefact, &A::load(&dir, Device::Cpu)?);

    let unheaded = root.join(format!("unheaded-{}", A::KIND));
    std::fs::create_dir_all(&unheaded)?;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_name() != HEADER_FILE {
            std::fs::copy(entry.path(), unheaded.join(entry.file_name()))?;
        }
    }
    assert_same(artefact, &A::load(&unheaded, Device::Cpu)?);
    Ok(dir)
}

/// Every directory of `dirs` holding another kind than `A` is refused by `A::load` and by `A::save`, naming the
/// directory, the kind found and `A`'s kind.
fn refuses_other_kinds<A: Parts>(artefact: &A, dirs: &[(&str, PathBuf)]) {
    for (kind, dir) in dirs.iter().filter(|(kind, _)| *kind != A::KIND) {
        let refusals = [A::load(dir, Device::Cpu).map(drop), artefact.save(dir)];
        for refusal in refusals {
            let err = refusal.expect_err("another kind's directory is refused");
            let message = err.to_string();
            assert!(
                matches!(&err, EditError::ArtefactKind { found, expected, .. }
                    if found == kind && *expected == A::KIND),
                "{message}"
            );
            assert!(
                message.contains(&format!("`{kind}`"))
                    && message.contains(&format!("`{}`", A::KIND))
                    && message.contains(&dir.display().to_string()),
                "{message}"
            );
        }
    }
}

fn pairs() -> Vec<PreferencePair> {
    training_records().iter().map(PreferencePair::from).collect()
}

fn trained(
    model: &mut detox_runtime::CausalLm,
    encoder: &FixtureEncoder,
) -> Result<TrainedArtefact> {
    let config = TrainConfig {
        modules: vec!["q_proj".into(), "down_proj".into()],
        adapter: AdapterKind::Lora { rank: 2, alpha: 4.0 },
        epochs: 1,
        batch_size: 2,
        max_length: 64,
        prompt_layout: PromptLayout::Raw,
        lr: 5e-3,
        ..TrainConfig::sft()
    };
    let outcome = train(model, encoder, &pairs(), &config, &RunOptions::default(), &mut |_, _| {})?;
    Ok(TrainedArtefact::from_run("SFT", &config, &outcome)?)
}

fn mend(model: &mut detox_runtime::CausalLm, encoder: &FixtureEncoder) -> Result<MendArtefact> {
    let config = MendConfig {
        layers: Some(vec![3]),
        rank: 4,
        lr: 1e-3,
        init_edit_lr: 1e-2,
        epochs: 1,
        prompt_layout: PromptLayout::Raw,
        max_length: 64,
        norm_samples: 2,
        ..MendConfig::default()
    };
    let inputs: Vec<EditInput> = training_records().iter().map(EditInput::from).collect();
    let outcome =
        train_mend(model, encoder, &inputs, &config, &RunOptions::default(), &mut |_, _| {})?;
    Ok(MendArtefact::from_run(&config, outcome)?)
}

#[test]
fn every_artefact_kind_round_trips_bit_exactly_and_refuses_the_others() -> Result<()> {
    let (mut model, encoder, _, _) = setup()?;
    let root = tempfile::tempdir()?;

    let trained = trained(&mut model, &encoder)?;
    assert!(trained.adapter.is_some(), "a training run's artefact carries its adapter");
    let mend = mend(&mut model, &encoder)?;
    let profs =
        fit_profs(&model, &encoder, &pairs(), &ProfsOptions { rank: 2, ..Default::default() })?;
    let steering = fit_steering(&model, &encoder, &pairs(), PromptLayout::Raw, 64)?;
    let probe = ProbeConfig { epochs: 3, batch_size: 2, holdout: 0.0, ..ProbeConfig::default() };
    let surgery = fit_surgery(
        &model,
        &encoder,
        &labelled_responses(&training_records()),
        &SurgeryConfig { probe, rows: Some(8), alpha: 1.08 },
    )?;

    let dirs = [
        (TrainedArtefact::KIND, round_trip(&trained, root.path())?),
        (MendArtefact::KIND, round_trip(&mend, root.path())?),
        (ProfsFit::KIND, round_trip(&profs, root.path())?),
        (SteeringVectors::KIND, round_trip(&steering, root.path())?),
        (SurgeryFit::KIND, round_trip(&surgery, root.path())?),
    ];
    let kinds: std::collections::BTreeSet<&str> = dirs.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds.len(), dirs.len(), "every kind has its own name");

    // The trained artefact's adapter file holds the trained tensors, though loading does not read it back.
    let adapter = detox_runtime::SafetensorsFiles::open_files(&[dirs[0]
        .1
        .join(detox_edit::train::artefact::ADAPTER_FILE)])?;
    for (name, tensor) in trained.adapter.as_ref().unwrap() {
        let stored = adapter.load(name, Device::Cpu, None)?;
        assert!(bits(tensor).equal(&bits(&stored)), "adapter `{name}`");
    }

    // Headed and unheaded directories of another kind alike.
    let unheaded: Vec<(&str, PathBuf)> = dirs
        .iter()
        .map(|(kind, _)| (*kind, root.path().join(format!("unheaded-{kind}"))))
        .collect();
    for dirs in [&dirs[..], &unheaded[..]] {
        refuses_other_kinds(&trained, dirs);
        refuses_other_kinds(&mend, dirs);
        refuses_other_kinds(&profs, dirs);
        refuses_other_kinds(&steering, dirs);
        refuses_other_kinds(&surgery, dirs);
    }
    // The refused saves wrote nothing: every directory still loads as its own kind.
    assert_same(&profs, &ProfsFit::load(&dirs[2].1, Device::Cpu)?);
    assert_same(&steering, &SteeringVectors::load(&unheaded[3].1, Device::Cpu)?);
    Ok(())
}
