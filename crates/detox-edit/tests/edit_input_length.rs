//! Long edit inputs: an input past the model's context is edited whole (as the reference does) and noted, a
//! bound cuts it to its last tokens (refusing to cut the scored response), and a batch notes the record far
//! longer than the others. The fixture model's context is 512 positions.

use anyhow::Result;
use detox_edit::dinm::{build_tokens, DinmEditor, DinmOptions, DinmPreset};
use detox_edit::{EditInput, EditNote, Editor, FtlEditor, FtlHyperParams};
use detox_runtime::PromptLayout;

mod common;
use common::{digest, setup};

/// The fixture's record with its prompt repeated `times` times.
fn long(input: &EditInput, times: usize) -> EditInput {
    EditInput { prompt: vec![input.prompt.as_str(); times].join(" "), ..input.clone() }
}

/// The fixture's record with its prompt repeated until the edit input has more than `tokens` tokens, and that
/// edit input's length.
fn longer_than(
    encoder: &common::FixtureEncoder,
    input: &EditInput,
    tokens: usize,
) -> (EditInput, usize) {
    let suffix = DinmPreset::Llama2_7bChat.hparams().suffix_system_prompt;
    (1..)
        .map(|times| {
            let long = long(input, times);
            let len =
                build_tokens(encoder, &long, &suffix, PromptLayout::Raw).unwrap().edit_input.len();
            (long, len)
        })
        .find(|(_, len)| *len > tokens)
        .unwrap()
}

fn hparams() -> detox_edit::dinm::DinmHyperParams {
    // A fixed layer and two steps: the notes do not depend on the optimisation.
    let mut hparams = DinmPreset::Llama2_7bChat.hparams();
    hparams.layers = vec![2];
    hparams.num_steps = 2;
    hparams
}

#[test]
fn an_input_past_the_context_is_edited_whole_and_noted() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let (long_input, long_len) = longer_than(&encoder, &input, 512);
    let mut editor = DinmEditor::new(hparams(), DinmOptions::reference())?;
    let outcome = editor.edit(&mut model, &encoder, &input)?;
    assert!(outcome.notes.is_empty(), "{:?}", outcome.notes);
    editor.restore(&mut model)?;

    let outcome = editor.edit(&mut model, &encoder, &long_input)?;
    assert_eq!(
        outcome.notes,
        [EditNote::LongerThanContext {
            input: "edit input".into(),
            tokens: long_len,
            context: 512,
        }]
    );
    assert!(outcome.notes[0].to_string().contains("more than the model's context of 512"));
    editor.restore(&mut model)?;

    let mut ftl = FtlEditor::new(
        FtlHyperParams { num_steps: 2, ..FtlHyperParams::llama2_7b().at_layer(1) },
        detox_edit::EditMode::Single,
    )?;
    // FT-L's input has no suffix: a longer prompt takes it past the context.
    let (ftl_input, _) = longer_than(&encoder, &input, 800);
    let outcome = ftl.edit(&mut model, &encoder, &ftl_input)?;
    assert!(
        matches!(outcome.notes.as_slice(), [EditNote::LongerThanContext { context: 512, .. }]),
        "{:?}",
        outcome.notes
    );
    ftl.restore(&mut model)?;
    Ok(())
}

#[test]
fn a_bound_keeps_the_last_tokens_and_is_noted() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let original = digest(&model);
    let suffix = DinmPreset::Llama2_7bChat.hparams().suffix_system_prompt;
    let short = build_tokens(&encoder, &input, &suffix, PromptLayout::Raw)?;
    // Long enough that neither input is cut: the constraint keeps its length, the edit input grows past it.
    let bound = (short.target.len() + 8).max(short.constraint_input.len());
    let (long_input, _) = longer_than(&encoder, &input, bound + 20);
    let tokens = build_tokens(&encoder, &long_input, &suffix, PromptLayout::Raw)?;
    assert!(tokens.edit_input.len() > bound && tokens.constraint_input.len() <= bound);
    let options = DinmOptions { max_edit_tokens: Some(bound), ..DinmOptions::reference() };
    let mut editor = DinmEditor::new(hparams(), options)?;
    let bounded = editor.edit(&mut model, &encoder, &long_input)?;
    assert_eq!(
        bounded.notes,
        [EditNote::Truncated {
            input: "edit input".into(),
            tokens: tokens.edit_input.len(),
            kept: bound
        }]
    );
    editor.restore(&mut model)?;

    // Only the last `bound` tokens reach the optimisation: a longer prompt ending the same way edits the same.
    let (longer, _) = longer_than(&encoder, &input, tokens.edit_input.len() + 20);
    let again = editor.edit(&mut model, &encoder, &longer)?;
    let name = bounded.delta.names().next().unwrap().to_owned();
    let diff = (bounded.delta.get(&name).unwrap() - again.delta.get(&name).unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert_eq!(diff, 0.0, "only the last {bound} tokens reach the optimisation");
    editor.restore(&mut model)?;
    assert_eq!(digest(&model), original);

    let mut plain = DinmEditor::new(hparams(), DinmOptions::reference())?;
    let unbounded = plain.edit(&mut model, &encoder, &long_input)?;
    assert!(unbounded.notes.is_empty(), "{:?}", unbounded.notes);
    plain.restore(&mut model)?;

    // A bound that would cut into the scored response is refused, and so is a bound of 0.
    let tight =
        DinmOptions { max_edit_tokens: Some(tokens.target.len()), ..DinmOptions::reference() };
    let err =
        DinmEditor::new(hparams(), tight)?.edit(&mut model, &encoder, &long_input).unwrap_err();
    assert!(err.to_string().contains("would cut into them"), "{err}");
    let zero = DinmOptions { max_edit_tokens: Some(0), ..DinmOptions::reference() };
    assert!(DinmEditor::new(hparams(), zero).is_err());
    Ok(())
}

#[test]
fn a_batch_notes_the_record_far_longer_than_the_others() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let suffix = DinmPreset::Llama2_7bChat.hparams().suffix_system_prompt;
    let short = build_tokens(&encoder, &input, &suffix, PromptLayout::Raw)?.edit_input.len();
    let (far_input, far) = longer_than(&encoder, &input, 4 * short);
    let (near_input, near) = longer_than(&encoder, &input, short + 10);
    assert!(near <= 4 * short);
    // The median of [short, short, far, near] is `short` (the lower middle value).
    let inputs = vec![input.clone(), near_input, far_input, input.clone()];
    let mut editor = DinmEditor::new(hparams(), DinmOptions::reference())?;
    let outcomes = editor.edit_batch(&mut model, &encoder, &inputs)?;
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 2 {
            // Also past the context (4 × 136 > 512): both are noted.
            assert!(
                outcome
                    .notes
                    .contains(&EditNote::FarLongerThanBatch { tokens: far, median: short }),
                "{:?}",
                outcome.notes
            );
        } else {
            assert!(outcome.notes.is_empty(), "record {i}: {:?}", outcome.notes);
        }
    }
    editor.restore(&mut model)?;
    Ok(())
}
