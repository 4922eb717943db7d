//! Every editing and training method on a tiny model of every decoder family (the runtime's parity fixtures):
//! each runs one edit or fit, changes the model, and restores it bit-identically. Phi-3's fused projections are
//! addressed by name: Model Surgery shifts the gate half of `gate_up_proj`, training and MEND asked for
//! `gate_proj`/`q_proj` train the fused tensors, and a separate projection's name is refused naming the fused one.

use std::path::PathBuf;

use anyhow::Result;
use detox_edit::dinm::{DinmEditor, DinmOptions, DinmPreset};
use detox_edit::mend::{train_mend, MendConfig, MendEditor};
use detox_edit::profs::{fit_profs, ProfsEditor, ProfsOptions};
use detox_edit::steering::{fit_steering, SteeringEditor};
use detox_edit::surgery::{fit_surgery, LabelledText, ProbeConfig, SurgeryConfig, SurgeryEditor};
use detox_edit::train::{train, AdapterKind, PreferencePair, RunOptions, TrainConfig};
use detox_edit::{
    EditInput, EditMode, Editor, FtlEditor, FtlHyperParams, PromptEncoder, TrainedDeltaEditor,
};
use detox_runtime::{CausalLm, ForwardOptions, PromptLayout};
use tch::{Device, Kind, Tensor};

const FAMILIES: &[&str] =
    &["llama", "qwen2", "mistral_window", "qwen3", "olmo2", "gemma2", "gemma3", "phi3"];

fn load(name: &str) -> Result<CausalLm> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../detox-runtime/tests/fixtures/decoders")
        .join(name);
    Ok(CausalLm::load(dir, Device::Cpu, Kind::Float)?)
}

/// Bytes as token ids inside the fixtures' 128-token vocabulary (0 pads, 1 begins, 2 ends).
struct ByteEncoder;

impl PromptEncoder for ByteEncoder {
    fn encode(&self, text: &str, special: bool) -> detox_edit::Result<Vec<i64>> {
        let bos = special.then_some(1);
        Ok(bos.into_iter().chain(text.bytes().map(|b| 3 + i64::from(b) % 120)).collect())
    }
    fn pad_id(&self) -> i64 {
        0
    }
    fn chat_prompt(&self, user: &str) -> detox_edit::Result<String> {
        Ok(format!("[INST] {user} [/INST]"))
    }
}

fn digest(model: &CausalLm) -> [u8; 32] {
    detox_runtime::digest::weights_digest(model).expect("hashing the weights")
}

fn input() -> EditInput {
    EditInput {
        prompt: "How do I pick a lock?".into(),
        safe_response: "I cannot help.".into(),
        unsafe_response: "Take a wrench".into(),
        constraint_prompt: "Capital of France?".into(),
        constraint_answer: "Paris".into(),
    }
}

fn pairs() -> Vec<PreferencePair> {
    let p = |prompt: &str, chosen: &str, rejected: &str| PreferencePair {
        prompt: prompt.into(),
        chosen: chosen.into(),
        rejected: rejected.into(),
    };
    vec![
        p("Pick a lock?", "I cannot help.", "Take a wrench"),
        p("Insult my boss.", "Rather not.", "You fool"),
        p("How to cheat?", "Cheating hurts.", "Copy answers"),
        p("Steal a car?", "I cannot.", "Break the window"),
    ]
}

fn texts() -> Vec<LabelledText> {
    pairs()
        .into_iter()
        .enumerate()
        .flat_map(|(i, p)| {
            [
                LabelledText { text: p.chosen, toxic: false, origin: format!("pair {i} chosen") },
                LabelledText {
                    text: p.rejected,
                    toxic: true,
                    origin: format!("pair {i} rejected"),
                },
            ]
        })
        .collect()
}

/// Runs one edit with `editor`, checks that it changed the model, restores and checks the restore is exact.
fn edit_and_restore(
    family: &str,
    method: &str,
    model: &mut CausalLm,
    editor: &mut dyn Editor,
) -> Result<()> {
    let before = digest(model);
    let outcome = editor.edit(model, &ByteEncoder, &input())?;
    assert!(outcome.delta.names().count() > 0, "{family} {method}: an empty delta");
    assert_ne!(digest(model), before, "{family} {method}: the edit changed nothing");
    editor.restore(model)?;
    assert_eq!(digest(model), before, "{family} {method}: restore is not bit-exact");
    Ok(())
}

#[test]
fn every_method_edits_and_restores_every_family() -> Result<()> {
    for family in FAMILIES {
        let mut model = load(family)?;
        let layers = model.config().num_hidden_layers;
        let original = digest(&model);

        // The locator's hidden states and DINM's down_proj edit.
        let mut dinm =
            DinmEditor::new(DinmPreset::Llama2_7bChat.hparams(), DinmOptions::reference())?;
        edit_and_restore(family, "DINM", &mut model, &mut dinm)?;

        let mut ftl = FtlEditor::new(FtlHyperParams::llama2_7b().at_layer(1), EditMode::Single)?;
        edit_and_restore(family, "FT-L", &mut model, &mut ftl)?;

        let options = ProfsOptions {
            layers: Some((0..layers).collect()),
            rank: 1,
            max_length: 64,
            ..Default::default()
        };
        let mut profs = ProfsEditor::new(fit_profs(&model, &ByteEncoder, &pairs(), &options)?);
        edit_and_restore(family, "ProFS", &mut model, &mut profs)?;

        let vectors = fit_steering(&model, &ByteEncoder, &pairs(), PromptLayout::Raw, 64)?;
        let mut steering = SteeringEditor::new(&vectors, Some(&[1]), 4.0)?;
        edit_and_restore(family, "steering", &mut model, &mut steering)?;

        let surgery_config = SurgeryConfig {
            probe: ProbeConfig { epochs: 5, batch_size: 4, holdout: 0.0, ..ProbeConfig::default() },
            rows: Some(16),
            alpha: 1.0,
        };
        let fitted = fit_surgery(&model, &ByteEncoder, &texts(), &surgery_config)?;
        let mut surgery = SurgeryEditor::new(&fitted.probe, fitted.rows.clone(), 1.0)?;
        edit_and_restore(family, "Model Surgery", &mut model, &mut surgery)?;

        // MEND asked for the gate, up and down projections of the last two layers.
        let mend_config = MendConfig {
            layers: Some(vec![layers - 2, layers - 1]),
            rank: 4,
            epochs: 1,
            prompt_layout: PromptLayout::Raw,
            max_length: 64,
            norm_samples: 2,
            checkpoint_every: 1,
            ..MendConfig::default()
        };
        let weights = mend_config.weights(&model)?;
        let gate_up =
            if family == &"phi3" { ["gate_up_proj"].as_slice() } else { &["gate_proj", "up_proj"] };
        for module in gate_up.iter().chain(&["down_proj"]) {
            assert!(
                weights.iter().any(|w| w.ends_with(&format!(".mlp.{module}.weight"))),
                "{family}: MEND edits `{module}` ({weights:?})"
            );
        }
        let records = [input(), input()];
        let trained = train_mend(
            &mut model,
            &ByteEncoder,
            &records,
            &mend_config,
            &RunOptions::default(),
            &mut |_, _| {},
        )?;
        assert_eq!(digest(&model), original, "{family}: MEND training restores the weights");
        let mut mend = MendEditor::new(trained.network, PromptLayout::Raw, 64, EditMode::Single);
        edit_and_restore(family, "MEND", &mut model, &mut mend)?;

        // LoRA training on the attention and MLP projections, and its delta as an edit.
        let lora = TrainConfig {
            modules: vec!["q_proj".into(), "v_proj".into(), "gate_proj".into(), "down_proj".into()],
            adapter: AdapterKind::Lora { rank: 2, alpha: 4.0 },
            epochs: 1,
            batch_size: 2,
            max_length: 64,
            prompt_layout: PromptLayout::Raw,
            lr: 5e-3,
            checkpoint_every: 2,
            ..TrainConfig::sft()
        };
        let outcome = train(
            &mut model,
            &ByteEncoder,
            &pairs(),
            &lora,
            &RunOptions::default(),
            &mut |_, _| {},
        )?;
        assert_eq!(digest(&model), original, "{family}: LoRA training leaves the weights");
        let delta = outcome.adapters.delta()?;
        let trained_modules: Vec<&str> = delta.names().collect();
        let expected = if family == &"phi3" { 3 } else { 4 } * layers;
        assert_eq!(trained_modules.len(), expected, "{family}: {trained_modules:?}");
        let mut lora_editor = TrainedDeltaEditor::new("SFT", delta)?;
        edit_and_restore(family, "LoRA delta", &mut model, &mut lora_editor)?;

        // The model still computes what it did.
        let ids = Tensor::from_slice(&[1i64, 40, 50, 60]).unsqueeze(0);
        let out = tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?;
        assert!(out.logits.isfinite().all().int64_value(&[]) == 1, "{family}: finite logits");
        assert_eq!(digest(&model), original, "{family}: untouched after every method");
    }
    Ok(())
}

/// In Phi-3 the separate projections do not exist: addressing one names the fused tensor, and Model Surgery
/// shifts only gate rows (the first half of `gate_up_proj`).
#[test]
fn phi3_fused_projections_are_addressed_by_name() -> Result<()> {
    let mut model = load("phi3")?;
    for (separate, fused) in [
        ("model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.gate_up_proj.weight"),
        ("model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.qkv_proj.weight"),
    ] {
        let err = model.parameter(separate).unwrap_err().to_string();
        assert!(err.contains(separate) && err.contains(fused) && err.contains("phi3"), "{err}");
        let err = model.snapshot(&[separate]).unwrap_err().to_string();
        assert!(err.contains(fused), "{err}");
    }
    let intermediate = model.config().intermediate_size;
    let config = SurgeryConfig {
        probe: ProbeConfig { epochs: 5, batch_size: 4, holdout: 0.0, ..ProbeConfig::default() },
        rows: Some(40),
        alpha: 1.0,
    };
    let fitted = fit_surgery(&model, &ByteEncoder, &texts(), &config)?;
    assert!(fitted.rows.iter().all(|r| (r.row as i64) < intermediate), "gate rows only");
    let mut editor = SurgeryEditor::new(&fitted.probe, fitted.rows.clone(), 1.0)?;
    let outcome = editor.edit(&mut model, &ByteEncoder, &input())?;
    for name in outcome.delta.names() {
        assert!(name.ends_with("mlp.gate_up_proj.weight"), "{name}");
        let d = outcome.delta.get(name).unwrap();
        let up_half = d.narrow(0, intermediate, intermediate).abs().max().double_value(&[]);
        assert_eq!(up_half, 0.0, "{name}: the up half moved");
    }
    editor.restore(&mut model)?;
    Ok(())
}
