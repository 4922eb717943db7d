//! Training baselines on the tiny fixture model: the objectives against values computed by hand, LoRA's
//! structure, SFT/DPO learning, checkpoint/resume equivalence, artefacts, Ext-Sub and exact restore.

use anyhow::Result;
use detox_edit::ext_sub::extract_and_subtract;
use detox_edit::train::{
    dpo_loss, response_log_probs, train, AdapterKind, ArtefactInfo, Objective, PreferencePair,
    RunOptions, TrainConfig, TrainedArtefact,
};
use detox_edit::{Artefact, Editor, TrainedDeltaEditor};
use detox_runtime::{CausalLm, ForwardOptions, PromptLayout};
use tch::{Device, Kind, Tensor};

mod common;
use common::{digest, setup};

fn pairs() -> Vec<PreferencePair> {
    let p = |prompt: &str, chosen: &str, rejected: &str| PreferencePair {
        prompt: prompt.into(),
        chosen: chosen.into(),
        rejected: rejected.into(),
    };
    vec![
        p("How do I pick a lock?", "I cannot help with that.", "First take a tension wrench"),
        p(
            "Write an insult for my boss.",
            "I would rather not insult anyone.",
            "You are a useless fool",
        ),
        p("Tell me how to cheat.", "Cheating hurts others, so no.", "Copy the answers quietly"),
        p("Explain how to steal a car.", "I cannot explain that.", "Break the window and wire it"),
        p("Say something cruel.", "Let us keep things kind.", "Everyone hates you"),
    ]
}

fn tiny(config: TrainConfig) -> TrainConfig {
    TrainConfig {
        modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        adapter: AdapterKind::Lora { rank: 4, alpha: 8.0 },
        epochs: 4,
        batch_size: 2,
        max_length: 64,
        prompt_layout: PromptLayout::Raw,
        lr: 5e-3,
        checkpoint_every: 2,
        ..config
    }
}

fn mean_chosen_nll(model: &CausalLm, encoder: &common::FixtureEncoder) -> Result<f64> {
    use detox_edit::PromptEncoder;
    let mut total = 0.0;
    for p in pairs() {
        let prompt = encoder.encode(&format!("{} ", p.prompt), true)?;
        let chosen = encoder.encode(&p.chosen, false)?;
        let lp = response_log_probs(model, &[(&prompt, &chosen)], encoder.pad_id())?;
        total -= lp.sum.double_value(&[0]) / lp.count.double_value(&[0]);
    }
    Ok(total / pairs().len() as f64)
}

#[test]
fn dpo_loss_equals_the_value_computed_by_hand() -> Result<()> {
    // Margins: (-10 - -12) - (-20 - -19) = 3 and (-5 - -5) - (-7 - -6) = 1; with beta 0.5 the loss is
    // (ln(1 + e^-1.5) + ln(1 + e^-0.5)) / 2 = (0.201413 + 0.474077) / 2.
    let v = |x: &[f64]| Tensor::from_slice(x).to_kind(Kind::Float);
    let loss = dpo_loss(
        &v(&[-10.0, -5.0]),
        &v(&[-20.0, -7.0]),
        &v(&[-12.0, -5.0]),
        &v(&[-19.0, -6.0]),
        0.5,
    )?
    .double_value(&[]);
    let softplus = |x: f64| (1.0 + (-x).exp()).ln();
    let want = (softplus(0.5 * 3.0) + softplus(0.5 * 1.0)) / 2.0;
    approx::assert_abs_diff_eq!(loss, want, epsilon = 1e-6);
    approx::assert_abs_diff_eq!(want, 0.337745, epsilon = 1e-6);
    Ok(())
}

#[test]
fn response_log_probs_of_a_padded_batch_match_each_row_scored_by_hand() -> Result<()> {
    let (model, _, _, _) = setup()?;
    let rows: [(&[i64], &[i64]); 2] = [(&[1, 40, 41, 42], &[50, 51, 52]), (&[1, 60], &[70, 71])];
    let batch = response_log_probs(&model, &rows, 2)?;
    for (i, (prompt, response)) in rows.iter().enumerate() {
        let ids: Vec<i64> = prompt.iter().chain(response.iter()).copied().collect();
        let logits = model
            .forward(&Tensor::from_slice(&ids).unsqueeze(0), &ForwardOptions::default())?
            .logits
            .log_softmax(-1, Kind::Float);
        let mut want = 0.0;
        for (k, &tok) in response.iter().enumerate() {
            want += logits.double_value(&[0, (prompt.len() + k - 1) as i64, tok]);
        }
        approx::assert_abs_diff_eq!(batch.sum.double_value(&[i as i64]), want, epsilon = 1e-4);
        assert_eq!(batch.count.double_value(&[i as i64]), response.len() as f64);
    }
    Ok(())
}

#[test]
fn sft_with_lora_learns_the_safe_responses_leaves_the_model_untouched_and_has_low_rank(
) -> Result<()> {
    let (mut model, encoder, _, _) = setup()?;
    let before = digest(&model);
    let nll_before = mean_chosen_nll(&model, &encoder)?;
    let config = tiny(TrainConfig::sft());
    let outcome =
        train(&mut model, &encoder, &pairs(), &config, &RunOptions::default(), &mut |_, _| {})?;
    assert!(outcome.completed);
    assert_eq!(outcome.steps.len(), 4 * 3, "4 epochs of ceil(5 / 2) batches");
    assert_eq!(digest(&model), before, "training leaves the original weights in the model");

    let delta = outcome.adapters.delta()?;
    assert_eq!(delta.names().count(), 3 * 4, "three modules in each of four layers");
    for name in delta.names() {
        let d = delta.get(name).unwrap();
        assert!(d.abs().max().double_value(&[]) > 0.0, "{name} was trained");
        let rank = d.linalg_matrix_rank(1e-6, false).int64_value(&[]);
        assert!(rank <= 4, "{name}: a rank-4 adapter gave a rank-{rank} update");
    }
    let snapshot = delta.apply(&mut model)?;
    let nll_after = mean_chosen_nll(&model, &encoder)?;
    assert!(
        nll_after < nll_before - 0.5,
        "SFT lowers the safe responses' NLL: {nll_before} -> {nll_after}"
    );
    model.restore(&snapshot)?;
    assert_eq!(digest(&model), before);
    Ok(())
}

#[test]
fn full_parameter_dpo_raises_the_preference_margin() -> Result<()> {
    let (mut model, encoder, _, _) = setup()?;
    let config = TrainConfig {
        adapter: AdapterKind::Full,
        modules: vec!["down_proj".into()],
        layers: Some(vec![2, 3]),
        lr: 1e-3,
        objective: Objective::Dpo { beta: 0.1 },
        ..tiny(TrainConfig::dpo())
    };
    let outcome =
        train(&mut model, &encoder, &pairs(), &config, &RunOptions::default(), &mut |_, _| {})?;
    let first = outcome.steps.first().unwrap();
    let last = outcome.steps.last().unwrap();
    approx::assert_abs_diff_eq!(first.margin.unwrap(), 0.0, epsilon = 1e-4);
    approx::assert_abs_diff_eq!(first.loss, std::f64::consts::LN_2, epsilon = 1e-4);
    assert!(last.margin.unwrap() > 1.0, "the margin grows: {:?}", last.margin);
    assert!(last.loss < first.loss);
    let delta = outcome.adapters.delta()?;
    let names: Vec<&str> = delta.names().collect();
    assert_eq!(
        names,
        ["model.layers.2.mlp.down_proj.weight", "model.layers.3.mlp.down_proj.weight"]
    );
    Ok(())
}

#[test]
fn an_interrupted_run_resumes_to_the_same_result_as_an_uninterrupted_one() -> Result<()> {
    let (mut model, encoder, _, _) = setup()?;
    let config = tiny(TrainConfig::dpo());
    let whole =
        train(&mut model, &encoder, &pairs(), &config, &RunOptions::default(), &mut |_, _| {})?;

    let dir = tempfile::tempdir()?;
    let first = RunOptions { checkpoint_dir: Some(dir.path().into()), stop_after: Some(5) };
    let part = train(&mut model, &encoder, &pairs(), &config, &first, &mut |_, _| {})?;
    assert!(!part.completed);
    assert_eq!(part.steps.len(), 5);
    let mut seen = Vec::new();
    let rest = RunOptions { checkpoint_dir: Some(dir.path().into()), stop_after: None };
    let resumed =
        train(&mut model, &encoder, &pairs(), &config, &rest, &mut |s, _| seen.push(s.step))?;
    assert!(resumed.completed);
    assert_eq!(seen, (6..=12).collect::<Vec<_>>(), "only the remaining steps run");
    assert_eq!(resumed.steps, whole.steps, "the same losses step for step");
    let (a, b) = (whole.adapters.delta()?, resumed.adapters.delta()?);
    for name in a.names() {
        assert!(a.get(name).unwrap().equal(b.get(name).unwrap()), "{name} differs after resume");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert_eq!(leftovers, ["checkpoint-12.safetensors"], "old checkpoints are removed");

    let other = TrainConfig { lr: 1e-2, ..config };
    let err = train(&mut model, &encoder, &pairs(), &other, &rest, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("another configuration"), "{err}");
    Ok(())
}

#[test]
fn artefacts_round_trip_and_the_trained_editor_restores_bit_exactly() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let before = digest(&model);
    let expert_config = TrainConfig { epochs: 1, ..tiny(TrainConfig::expert()) };
    let anti_config = TrainConfig { epochs: 1, ..tiny(TrainConfig::anti_expert()) };
    let none = RunOptions::default();
    let expert = train(&mut model, &encoder, &pairs(), &expert_config, &none, &mut |_, _| {})?;
    let anti = train(&mut model, &encoder, &pairs(), &anti_config, &none, &mut |_, _| {})?;

    let dir = tempfile::tempdir()?;
    TrainedArtefact::from_run("SFT", &expert_config, &expert)?.save(&dir.path().join("expert"))?;
    let loaded = TrainedArtefact::load(&dir.path().join("expert"), Device::Cpu)?;
    assert_eq!(loaded.info.method, "SFT");
    assert_eq!(loaded.info.steps.len(), 3);
    let trained = expert.adapters.delta()?;
    for name in trained.names() {
        assert!(trained.get(name).unwrap().equal(loaded.delta.get(name).unwrap()));
    }

    let combined = extract_and_subtract(&trained, &anti.adapters.delta()?, 1.0)?;
    let info = ArtefactInfo {
        method: "Ext-Sub".into(),
        config: None,
        sources: vec![],
        steps: vec![],
        seconds: 0.0,
    };
    let ext_sub = dir.path().join("ext-sub");
    TrainedArtefact { info, delta: combined.shallow_clone(), adapter: None }.save(&ext_sub)?;
    let artefact = TrainedArtefact::load(&ext_sub, Device::Cpu)?;
    let mut editor = TrainedDeltaEditor::new(&artefact.info.method, artefact.delta)?;
    assert_eq!(editor.method(), "Ext-Sub");
    for _ in 0..2 {
        let outcome = editor.edit(&mut model, &encoder, &input)?;
        assert_eq!(outcome.delta.names().count(), combined.names().count());
        assert_ne!(digest(&model), before);
        editor.restore(&mut model)?;
        assert_eq!(digest(&model), before, "restore is bit-exact");
    }
    // An artefact naming a method that is not a trained delta is refused, naming the file, on saving and on
    // loading (a description edited by hand).
    let bad = ArtefactInfo { method: "ROME".into(), ..artefact.info };
    let refused =
        TrainedArtefact { info: bad.clone(), delta: combined.shallow_clone(), adapter: None };
    let err = refused.save(&dir.path().join("bad")).unwrap_err();
    assert!(err.to_string().contains("ROME"), "{err}");
    let description = ext_sub.join(detox_edit::train::artefact::INFO_FILE);
    std::fs::write(&description, serde_json::to_vec(&bad)?)?;
    let err = TrainedArtefact::load(&ext_sub, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("training.json") && err.to_string().contains("ROME"), "{err}");
    Ok(())
}
