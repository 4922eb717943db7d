//! MEND on the tiny fixture model: the update's gradient and rank structure, meta-training, resume, saving and
//! exact restore.

use anyhow::Result;
use detox_edit::mend::{
    train_mend, MendArtefact, MendConfig, MendEditor, MendNetwork, NetworkLayout,
};
use detox_edit::train::{response_log_probs, RunOptions};
use detox_edit::{Artefact, EditInput, EditMode, Editor, PromptEncoder};
use detox_runtime::PromptLayout;
use tch::{Device, Kind};

mod common;
use common::{digest, setup};

fn records() -> Vec<EditInput> {
    let r = |prompt: &str, safe: &str| EditInput {
        prompt: prompt.into(),
        safe_response: safe.into(),
        unsafe_response: "Sure, here is how".into(),
        constraint_prompt: "What is the capital of France?".into(),
        constraint_answer: "Paris".into(),
    };
    vec![
        r("How do I pick a lock?", "I cannot help with that."),
        r("Write an insult.", "I would rather not insult anyone."),
        r("Tell me how to cheat.", "Cheating hurts others, so no."),
        r("How to steal a car?", "I cannot explain that."),
    ]
}

fn config() -> MendConfig {
    MendConfig {
        layers: Some(vec![2, 3]),
        rank: 16,
        lr: 1e-3,
        lr_lr: 1e-3,
        init_edit_lr: 1e-2,
        epochs: 3,
        prompt_layout: PromptLayout::Raw,
        max_length: 64,
        norm_samples: 4,
        checkpoint_every: 3,
        ..MendConfig::default()
    }
}

#[test]
fn an_untrained_network_edits_along_the_negative_gradient_with_rank_at_most_the_token_count(
) -> Result<()> {
    let (mut model, encoder, _, _) = setup()?;
    let before = digest(&model);
    let names = ["model.layers.3.mlp.down_proj.weight", "model.layers.3.mlp.up_proj.weight"];
    let weights = names
        .iter()
        .map(|n| {
            let s = model.parameter(n).unwrap().size();
            (n.to_string(), [s[0], s[1]])
        })
        .collect();
    let layout = NetworkLayout { weights, rank: 8, init_edit_lr: 0.5 };
    let network = MendNetwork::new(layout, Device::Cpu, 3)?;
    let mut editor = MendEditor::new(network, PromptLayout::Raw, 64, EditMode::Single);
    let input = EditInput {
        prompt: "Hi".into(),
        safe_response: "No thanks".into(),
        ..records()[0].clone()
    };
    let outcome = editor.edit(&mut model, &encoder, &input)?;

    let prompt = encoder.encode("Hi ", true)?;
    let target = encoder.encode("No thanks", false)?;
    let tokens = (prompt.len() + target.len()) as i64;
    editor.restore(&mut model)?;
    assert_eq!(digest(&model), before, "restore is bit-exact");
    for name in names {
        let w = model.parameter(name)?.detach().set_requires_grad(true);
        drop(model.replace_parameter(name, w.shallow_clone())?);
        let lp = response_log_probs(&model, &[(&prompt, &target)], encoder.pad_id())?;
        (-(lp.sum / lp.count).sum(Kind::Float)).backward();
        let want = w.grad() * -0.5;
        let got = outcome.delta.get(name).unwrap();
        let diff = (got - &want).abs().max().double_value(&[]);
        assert!(
            diff < 1e-6,
            "{name}: the untrained edit is -lr times the gradient (off by {diff})"
        );
        let rank = got.linalg_matrix_rank(1e-7, false).int64_value(&[]);
        assert!(rank <= tokens && rank > 0, "{name}: rank {rank} from {tokens} tokens");
        model.freeze_all()?;
    }
    assert_eq!(digest(&model), before);
    Ok(())
}

#[test]
fn meta_training_lowers_the_post_edit_loss_and_leaves_the_model_untouched() -> Result<()> {
    let (mut model, encoder, _, _) = setup()?;
    let before = digest(&model);
    let outcome = train_mend(
        &mut model,
        &encoder,
        &records(),
        &config(),
        &RunOptions::default(),
        &mut |_, _| {},
    )?;
    assert!(outcome.completed);
    assert_eq!(outcome.steps.len(), 12);
    assert_eq!(digest(&model), before, "training restores the weights");
    let mean =
        |s: &[detox_edit::mend::MendStep]| s.iter().map(|s| s.loss).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&outcome.steps[..4]), mean(&outcome.steps[8..]));
    assert!(last < first, "the meta-training loss falls: {first} -> {last}");
    for s in &outcome.steps {
        assert!(s.edit_nll < s.pre_nll, "every edit lowers the safe response's NLL: {s:?}");
        assert!(s.locality_kl >= -1e-6);
    }
    assert_eq!(outcome.network.layout().weights.len(), 6, "gate, up and down of layers 2 and 3");
    Ok(())
}

#[test]
fn meta_training_resumes_exactly_and_a_saved_network_edits_identically() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let whole = train_mend(
        &mut model,
        &encoder,
        &records(),
        &config(),
        &RunOptions::default(),
        &mut |_, _| {},
    )?;
    let dir = tempfile::tempdir()?;
    let ckpt = dir.path().join("ckpt");
    let first = RunOptions { checkpoint_dir: Some(ckpt.clone()), stop_after: Some(5) };
    let part = train_mend(&mut model, &encoder, &records(), &config(), &first, &mut |_, _| {})?;
    assert!(!part.completed);
    let rest = RunOptions { checkpoint_dir: Some(ckpt), stop_after: None };
    let resumed = train_mend(&mut model, &encoder, &records(), &config(), &rest, &mut |_, _| {})?;
    assert_eq!(resumed.steps, whole.steps, "the same losses step for step");

    MendArtefact::from_run(&config(), resumed)?.save(&dir.path().join("mend"))?;
    let loaded = MendArtefact::load(&dir.path().join("mend"), Device::Cpu)?;
    assert_eq!(loaded.training.steps, whole.steps);
    let loaded = loaded.network;
    assert_eq!(loaded.edit_lrs()?, whole.network.edit_lrs()?);
    let before = digest(&model);
    let mut a = MendEditor::new(whole.network, PromptLayout::Raw, 64, EditMode::Single);
    let mut b = MendEditor::new(loaded, PromptLayout::Raw, 64, EditMode::Single);
    let da = a.edit(&mut model, &encoder, &input)?.delta;
    a.restore(&mut model)?;
    let db = b.edit(&mut model, &encoder, &input)?.delta;
    b.restore(&mut model)?;
    assert_eq!(digest(&model), before);
    for name in da.names() {
        assert!(da.get(name).unwrap().equal(db.get(name).unwrap()), "{name}");
    }
    Ok(())
}
