//! Which model dtypes the editors and trainers accept: f16 is refused before any work (no loss scaling exists),
//! bf16 is accepted.

use anyhow::Result;
use detox_edit::dinm::{DinmEditor, DinmOptions, DinmPreset};
use detox_edit::mend::{train_mend, MendConfig, MendEditor, MendNetwork, NetworkLayout};
use detox_edit::train::{train, RunOptions, TrainConfig};
use detox_edit::{EditError, EditMode, Editor, FtlEditor, FtlHyperParams};
use detox_runtime::PromptLayout;
use tch::{Device, Kind};

mod common;
use common::{digest, setup_in};

fn assert_refused(result: detox_edit::Result<impl std::fmt::Debug>, method: &str) {
    match result {
        Err(EditError::UnsupportedDtype { method: m, dtype }) => {
            assert_eq!(m, method);
            assert_eq!(dtype, "Half");
        }
        other => panic!("{method} accepted an f16 model: {other:?}"),
    }
}

#[test]
fn every_editor_and_trainer_refuses_an_f16_model_and_leaves_it_untouched() -> Result<()> {
    let (mut model, encoder, input, _) = setup_in(Kind::Half)?;
    let before = digest(&model);

    let mut dinm = DinmEditor::new(DinmPreset::Llama2_7bChat.hparams(), DinmOptions::reference())?;
    assert_refused(dinm.edit(&mut model, &encoder, &input), "DINM");
    assert_refused(dinm.edit_batch(&mut model, &encoder, &[input.clone(), input.clone()]), "DINM");

    let mut ftl = FtlEditor::new(FtlHyperParams::llama2_7b().at_layer(1), EditMode::Single)?;
    assert_refused(ftl.edit(&mut model, &encoder, &input), "FT-L");

    let name = "model.layers.1.mlp.down_proj.weight";
    let size = model.parameter(name)?.size();
    let layout = NetworkLayout {
        weights: vec![(name.into(), [size[0], size[1]])],
        rank: 4,
        init_edit_lr: 0.5,
    };
    let network = MendNetwork::new(layout, Device::Cpu, 3)?;
    let mut mend = MendEditor::new(network, PromptLayout::Raw, 64, EditMode::Single);
    assert_refused(mend.edit(&mut model, &encoder, &input), "MEND");
    assert_refused(
        train_mend(
            &mut model,
            &encoder,
            std::slice::from_ref(&input),
            &MendConfig::default(),
            &RunOptions::default(),
            &mut |_, _| {},
        ),
        "MEND training",
    );
    assert_refused(
        train(
            &mut model,
            &encoder,
            &[],
            &TrainConfig::sft(),
            &RunOptions::default(),
            &mut |_, _| {},
        ),
        "SFT/DPO training",
    );
    assert_eq!(digest(&model), before);
    Ok(())
}

#[test]
fn a_bf16_model_is_edited() -> Result<()> {
    let (mut model, encoder, input, _) = setup_in(Kind::BFloat16)?;
    let before = digest(&model);
    let hparams = FtlHyperParams { num_steps: 2, ..FtlHyperParams::llama2_7b() }.at_layer(1);
    let mut ftl = FtlEditor::new(hparams, EditMode::Single)?;
    let outcome = ftl.edit(&mut model, &encoder, &input)?;
    assert_eq!(outcome.details.steps().len(), 2);
    ftl.restore(&mut model)?;
    assert_eq!(digest(&model), before);
    Ok(())
}
