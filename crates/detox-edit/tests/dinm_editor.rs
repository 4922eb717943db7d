//! The DINM editor end to end on the reference fixture: text inputs as the reference builds them, locate, edit,
//! delta export, restore.

use anyhow::Result;
use detox_edit::dinm::{build_tokens, DinmEditor, DinmOptions, DinmPreset};
use detox_edit::{Delta, EditMode, Editor};
use detox_runtime::PromptLayout;

mod common;
use common::{digest, row, setup};

#[test]
fn inputs_are_built_as_the_reference_builds_them() -> Result<()> {
    let (_, encoder, input, expected) = setup()?;
    let suffix = expected["suffix_system_prompt"].as_str().unwrap();
    let tokens = build_tokens(&encoder, &input, suffix, PromptLayout::Raw)?;
    let exp = &expected["reference"];
    assert_eq!(tokens.edit_input, row(&exp["edit_input_ids"]));
    assert_eq!(tokens.target, row(&exp["labels"]));
    assert_eq!(tokens.constraint_input, row(&exp["constraint_input_ids"]));
    assert_eq!(tokens.constraint_answer_len as u64, exp["constraint_answer_len"].as_u64().unwrap());

    let chat = build_tokens(&encoder, &input, suffix, PromptLayout::ChatTemplate)?;
    assert!(chat.edit_input.ends_with(&chat.target), "the response follows the chat prompt");
    assert_ne!(chat.edit_input, tokens.edit_input);
    Ok(())
}

#[test]
fn editor_locates_edits_exports_and_restores_exactly() -> Result<()> {
    let (mut model, encoder, input, expected) = setup()?;
    let original = digest(&model);
    let mut editor =
        DinmEditor::new(DinmPreset::Llama2_7bChat.hparams(), DinmOptions::reference())?;
    let outcome = editor.edit(&mut model, &encoder, &input)?;
    let exp = &expected["reference"];
    assert_eq!(outcome.layer, Some(exp["layer"].as_u64().unwrap() as usize));
    let located = outcome.details.located().expect("first record is located");
    assert_eq!(located.distances.len(), 4);
    let want_losses: Vec<f64> =
        exp["steps"].as_array().unwrap().iter().map(|s| s["loss"].as_f64().unwrap()).collect();
    assert_eq!(outcome.details.steps().len(), want_losses.len());
    for (got, want) in outcome.details.steps().iter().zip(&want_losses) {
        assert!((got.loss - want).abs() <= 1e-4 * want.abs().max(1.0), "{} vs {want}", got.loss);
    }
    let edited = digest(&model);
    assert_ne!(edited, original);
    let name = "model.layers.2.mlp.down_proj.weight";
    let edited_weight = model.parameter(name)?.copy();

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("delta.safetensors");
    outcome.delta.save(&path)?;
    editor.restore(&mut model)?;
    assert_eq!(digest(&model), original, "restore is bit-exact");

    let loaded = Delta::load(&path)?;
    assert_eq!(loaded.names().collect::<Vec<_>>(), vec!["model.layers.2.mlp.down_proj.weight"]);
    let snapshot = loaded.apply(&mut model)?;
    // W0 + (W1 - W0) equals W1 up to one rounding.
    let diff = (model.parameter(name)? - &edited_weight).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "applying the exported delta reproduces the edit (off by {diff})");
    model.restore(&snapshot)?;
    assert_eq!(digest(&model), original);
    Ok(())
}

#[test]
fn sequential_edits_accumulate_and_restore_all() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let original = digest(&model);
    let options = DinmOptions { mode: EditMode::Sequential, ..DinmOptions::reference() };
    let mut editor = DinmEditor::new(DinmPreset::Llama2_7bChat.hparams(), options)?;
    editor.edit(&mut model, &encoder, &input)?;
    let once = digest(&model);
    let second = editor.edit(&mut model, &encoder, &input)?;
    assert!(second.details.located().is_none(), "the reference keeps the first record's layer");
    assert_ne!(digest(&model), once, "the second edit starts from the first");
    editor.restore(&mut model)?;
    assert_eq!(digest(&model), original);

    let mut single = DinmEditor::new(DinmPreset::Llama2_7bChat.hparams(), DinmOptions::paper())?;
    single.edit(&mut model, &encoder, &input)?;
    let first = digest(&model);
    let again = single.edit(&mut model, &encoder, &input)?;
    assert!(again.details.located().is_some(), "the paper locates per record");
    assert_eq!(digest(&model), first, "single mode edits the original model each time");
    single.restore(&mut model)?;
    assert_eq!(digest(&model), original);
    Ok(())
}

#[test]
fn ftl_lowers_the_target_loss_within_its_norm_constraint() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let original = digest(&model);
    let eps = 1e-3;
    let hparams = detox_edit::FtlHyperParams {
        norm_constraint: Some(eps),
        num_steps: 8,
        ..detox_edit::FtlHyperParams::llama2_7b()
    }
    .at_layer(1);
    let mut editor = detox_edit::FtlEditor::new(hparams, EditMode::Single)?;
    let outcome = editor.edit(&mut model, &encoder, &input)?;
    assert_eq!(outcome.layer, Some(1));
    let first = outcome.details.steps().first().unwrap().nll;
    let last = outcome.details.steps().last().unwrap().nll;
    assert!(last < first, "fine-tuning lowers the NLL ({first} -> {last})");
    assert!(outcome.details.steps().iter().all(|s| s.kl == 0.0), "FT-L has no constraint term");
    let delta = outcome.delta.get("model.layers.1.mlp.down_proj.weight").unwrap();
    let max = delta.abs().max().double_value(&[]);
    assert!(
        max > 0.0 && max <= eps * (1.0 + 1e-5),
        "clamped to the norm constraint (max |delta| {max})"
    );
    editor.restore(&mut model)?;
    assert_eq!(digest(&model), original);
    let too_deep = detox_edit::FtlHyperParams::llama2_7b();
    let err = detox_edit::FtlEditor::new(too_deep, EditMode::Single)?
        .edit(&mut model, &encoder, &input)
        .unwrap_err();
    assert!(err.to_string().contains("layer 21"), "{err}");
    Ok(())
}

#[test]
fn single_mode_over_many_records_restores_bit_identically() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let original = digest(&model);
    let mut editor = DinmEditor::new(DinmPreset::Llama2_7bChat.hparams(), DinmOptions::paper())?;
    let mut layers = Vec::new();
    for i in 0..6 {
        let mut record = input.clone();
        record.prompt = format!("{} Variant {i}.", input.prompt);
        if i % 2 == 1 {
            record.safe_response = format!("I refuse, case {i}. {}", input.safe_response);
        }
        let outcome = editor.edit(&mut model, &encoder, &record)?;
        layers.push(outcome.layer);
        assert_ne!(digest(&model), original, "record {i} changed the weights");
    }
    editor.restore(&mut model)?;
    assert_eq!(digest(&model), original, "bit-identical after six single-mode edits");
    editor.restore(&mut model)?;
    assert_eq!(digest(&model), original, "a second restore changes nothing");
    assert!(layers.iter().all(Option::is_some));
    Ok(())
}
