//! ProFS and activation steering on the tiny fixture model: ProFS removes its subspace from the value matrices
//! and leaves the complement alone; steering moves the residual stream by exactly its vector, also per row in
//! batched generation; both restore bit-exactly, export their deltas and reload their fitted artefacts. A ProFS edit
//! is written back as a model directory that reloads into the edited weights (steering's bias is refused there).

use anyhow::Result;
use detox_edit::profs::{fit_profs, ProfsFit, ProfsOptions, NEAR_TIE};
use detox_edit::registry::{MethodArgs, Registry};
use detox_edit::steering::{fit_steering, SteeringEditor, SteeringVectors};
use detox_edit::train::PreferencePair;
use detox_edit::{Artefact, Delta, Editor, PromptEncoder};
use detox_runtime::{generate, CausalLm, ForwardOptions, GenerationConfig, PromptLayout};
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
        p(
            "How to hurt someone?",
            "Please talk to someone you trust.",
            "Hit them where it hurts most",
        ),
    ]
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

fn down_proj(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.down_proj.weight")
}

/// A fit at a `k` whose singular values have a clear gap in every edited layer.
fn clear_fit(model: &CausalLm, encoder: &dyn PromptEncoder) -> Result<ProfsFit> {
    let layers = model.config().num_hidden_layers;
    let options =
        ProfsOptions { layers: Some((0..layers).collect()), rank: 2, ..Default::default() };
    let fit = fit_profs(model, encoder, &pairs(), &options)?;
    for (layer, gap) in fit.info.layers.iter().zip(&fit.info.rank_gaps) {
        assert!(*gap > 10.0 * NEAR_TIE, "layer {layer}: σ_2 and σ_3 nearly tie (gap {gap})");
    }
    Ok(fit)
}

#[test]
fn profs_removes_the_subspace_and_leaves_its_complement() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let fit = clear_fit(&model, &encoder)?;
    let originals: Vec<Tensor> =
        fit.info.layers.iter().map(|l| model.parameter(&down_proj(*l)).unwrap().copy()).collect();
    let mut editor = detox_edit::profs::ProfsEditor::new(fit);
    let outcome = editor.edit(&mut model, &encoder, &input)?;
    assert_eq!(outcome.method, "ProFS");
    let fit = editor.fit();
    tch::manual_seed(3);
    for ((layer, basis), original) in fit.info.layers.iter().zip(&fit.bases).zip(&originals) {
        let k = fit.info.options.rank as i64;
        let gram = basis.matmul(&basis.transpose(0, 1));
        assert!(max_abs(&(gram - Tensor::eye(k, (Kind::Float, Device::Cpu)))) < 1e-5);
        let edited = model.parameter(&down_proj(*layer))?;
        let x = Tensor::randn([edited.size()[1], 7], (Kind::Float, Device::Cpu));
        let (before, after) = (original.matmul(&x), edited.matmul(&x));
        // W' x has no component in span(V) ...
        let inside = basis.matmul(&after);
        assert!(max_abs(&inside) < 1e-5 * max_abs(&after), "layer {layer}: {}", max_abs(&inside));
        // ... and its component orthogonal to span(V) is W x's.
        let complement = |y: &Tensor| y - basis.transpose(0, 1).matmul(&basis.matmul(y));
        let moved = max_abs(&(complement(&after) - complement(&before)));
        assert!(moved < 1e-5 * max_abs(&before), "layer {layer}: complement moved by {moved}");
        // The edit did something: W x had a component in span(V).
        assert!(max_abs(&basis.matmul(&before)) > 1e-3);
    }
    Ok(())
}

#[test]
fn profs_restores_exports_and_reloads() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let before = digest(&model);
    let fit = clear_fit(&model, &encoder)?;
    let dir = tempfile::tempdir()?;
    fit.save(dir.path())?;
    let reloaded = ProfsFit::load(dir.path(), Device::Cpu)?;
    assert_eq!(reloaded.info, fit.info);
    for (a, b) in reloaded.bases.iter().zip(&fit.bases) {
        assert!(a.equal(b));
    }

    let args = MethodArgs::new().set("artefact", dir.path().display());
    let mut built = Registry::builtin().build("profs", &args, Device::Cpu)?;
    let outcome = built.editor.edit(&mut model, &encoder, &input)?;
    let edited = digest(&model);
    assert_ne!(edited, before);
    // A second record is edited on the original weights, not on the projected ones.
    built.editor.edit(&mut model, &encoder, &input)?;
    assert_eq!(digest(&model), edited);
    built.editor.restore(&mut model)?;
    assert_eq!(digest(&model), before, "restore is not bit-exact");

    let path = dir.path().join("delta.safetensors");
    outcome.delta.save(&path)?;
    let snapshot = Delta::load(&path)?.apply(&mut model)?;
    assert_eq!(digest(&model), edited, "the exported delta does not reproduce the edit");
    model.restore(&snapshot)?;
    assert_eq!(digest(&model), before);
    Ok(())
}

#[test]
fn profs_refuses_a_rank_above_the_data() -> Result<()> {
    let (model, encoder, _, _) = setup()?;
    let options = ProfsOptions { rank: 7, ..Default::default() };
    let err = fit_profs(&model, &encoder, &pairs(), &options).unwrap_err();
    assert!(err.to_string().contains("k = 7"), "{err}");
    Ok(())
}

fn steering_vectors(model: &CausalLm, encoder: &dyn PromptEncoder) -> Result<SteeringVectors> {
    Ok(fit_steering(model, encoder, &pairs(), PromptLayout::Raw, 64)?)
}

fn hidden(model: &CausalLm, ids: &Tensor) -> Result<detox_runtime::ForwardOutput> {
    let options = ForwardOptions { output_hidden_states: true, ..Default::default() };
    Ok(model.forward(ids, &options)?)
}

#[test]
fn steering_moves_the_residual_stream_by_exactly_the_vector() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let vectors = steering_vectors(&model, &encoder)?;
    let layers = model.config().num_hidden_layers;
    let ids = Tensor::from_slice(&encoder.encode(&input.prompt, true)?).unsqueeze(0);
    let plain = hidden(&model, &ids)?;
    let names_before = model.parameter_names().to_vec();
    let before = digest(&model);
    for layer in [0, layers - 1] {
        let strength = 2.5;
        let mut editor = SteeringEditor::new(&vectors, Some(&[layer]), strength)?;
        editor.edit(&mut model, &encoder, &input)?;
        let bias = format!("model.layers.{layer}.mlp.down_proj.bias");
        assert!(model.parameter_names().contains(&bias));
        let steered = hidden(&model, &ids)?;
        for earlier in 0..layer {
            let (a, b) =
                (plain.layer_output(earlier).unwrap(), steered.layer_output(earlier).unwrap());
            assert!(a.equal(b), "layer {earlier} before the steered one changed");
        }
        let moved = steered.layer_output(layer).unwrap() - plain.layer_output(layer).unwrap();
        let want = vectors.vectors.get(layer as i64) * strength;
        let off = max_abs(&(moved - want.view([1, 1, -1])));
        assert!(off < 1e-5 * max_abs(&want).max(1.0), "layer {layer}: off by {off}");
        assert!(max_abs(&want) > 1e-4, "layer {layer}: the vector is zero");

        editor.restore(&mut model)?;
        assert_eq!(model.parameter_names(), names_before.as_slice(), "the bias stayed attached");
        assert_eq!(digest(&model), before, "restore is not bit-exact");
        let restored = hidden(&model, &ids)?;
        assert!(restored.logits.equal(&plain.logits));
    }
    Ok(())
}

#[test]
fn per_row_steering_in_batched_generation_equals_rows_run_alone() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let vectors = steering_vectors(&model, &encoder)?;
    let layer = 1;
    let strengths = [4.0, -4.0, 0.0];
    let deltas: Vec<Delta> = strengths
        .iter()
        .map(|s| Ok(SteeringEditor::new(&vectors, Some(&[layer]), *s)?.delta().shallow_clone()))
        .collect::<Result<_>>()?;
    let prompts =
        vec![encoder.encode(&input.prompt, true)?, encoder.encode("Tell me a story", true)?];
    let config = GenerationConfig::greedy(12, vec![encoder.pad_id()]);

    let mut alone = Vec::new();
    for delta in &deltas {
        let snapshot = delta.apply(&mut model)?;
        alone.extend(generate(&model, &prompts, &config, None)?.into_iter().map(|g| g.tokens));
        model.restore(&snapshot)?;
    }

    // One batch: each record's two prompts carry its own steering vector.
    let name = format!("model.layers.{layer}.mlp.down_proj.bias");
    let snapshot = model.snapshot(&[&name])?;
    model.attach_bias(&name)?;
    let rows: Vec<Tensor> = deltas.iter().map(|d| d.get(&name).unwrap().shallow_clone()).collect();
    drop(model.replace_parameter(&name, Tensor::stack(&rows, 0))?);
    let batch: Vec<Vec<i64>> = strengths.iter().flat_map(|_| prompts.clone()).collect();
    let together: Vec<Vec<i64>> =
        generate(&model, &batch, &config, None)?.into_iter().map(|g| g.tokens).collect();
    model.restore(&snapshot)?;
    assert!(!model.parameter_names().contains(&name));

    assert_eq!(together, alone);
    assert_ne!(alone[0], alone[2], "steering changed nothing; the comparison would be vacuous");
    Ok(())
}

#[test]
fn steering_exports_and_reloads() -> Result<()> {
    let (mut model, encoder, input, _) = setup()?;
    let before = digest(&model);
    let vectors = steering_vectors(&model, &encoder)?;
    let dir = tempfile::tempdir()?;
    vectors.save(dir.path())?;
    let reloaded = SteeringVectors::load(dir.path(), Device::Cpu)?;
    assert_eq!(reloaded.info, vectors.info);
    assert!(reloaded.vectors.equal(&vectors.vectors));

    let args = MethodArgs::new()
        .set("artefact", dir.path().display())
        .set("layers", 1)
        .set("strength", 3.0);
    let mut built = Registry::builtin().build("steering", &args, Device::Cpu)?;
    let outcome = built.editor.edit(&mut model, &encoder, &input)?;
    let edited = digest(&model);
    built.editor.restore(&mut model)?;
    assert_eq!(digest(&model), before);

    let path = dir.path().join("delta.safetensors");
    outcome.delta.save(&path)?;
    let snapshot = Delta::load(&path)?.apply(&mut model)?;
    assert_eq!(digest(&model), edited, "the exported delta does not reproduce the edit");
    model.restore(&snapshot)?;
    assert_eq!(digest(&model), before);
    Ok(())
}

/// `--save-model` as a library does it: a fitted method's one edit applied to the unedited model, the model written
/// back as a Hugging Face directory that reloads into the edited weights, then the edit undone. Steering adds a
/// bias this architecture's checkpoints cannot hold, so writing it is refused; a per-record method is refused
/// before anything is applied.
#[test]
fn a_record_independent_edit_is_written_back_as_a_model_directory() -> Result<()> {
    use detox_edit::registry::{apply_record_independent, check_record_independent};
    use detox_runtime::{Error, SaveOptions};

    let (mut model, encoder, _, _) = setup()?;
    let source = common::fixtures().join("model");
    let before = digest(&model);
    let dir = tempfile::tempdir()?;
    let artefact = dir.path().join("profs");
    clear_fit(&model, &encoder)?.save(&artefact)?;
    let args = MethodArgs::new().set("artefact", artefact.display());
    let mut built = Registry::builtin().build("profs", &args, Device::Cpu)?;
    assert!(built.record_independent);
    apply_record_independent(&mut built, &mut model, &encoder)?;
    let edited = digest(&model);
    assert_ne!(edited, before);
    let out = dir.path().join("written");
    model.save_pretrained(&source, &out, &SaveOptions::new())?;
    built.editor.restore(&mut model)?;
    assert_eq!(digest(&model), before, "restore after writing is bit-exact");
    let written = CausalLm::load(&out, Device::Cpu, Kind::Float)?;
    assert_eq!(digest(&written), edited, "the written model is the edited one");
    assert!(out.join("tokenizer.json").is_file(), "the tokenizer is copied");

    let steering = dir.path().join("steering");
    steering_vectors(&model, &encoder)?.save(&steering)?;
    let args = MethodArgs::new().set("artefact", steering.display()).set("layers", 1);
    let mut built = Registry::builtin().build("steering", &args, Device::Cpu)?;
    apply_record_independent(&mut built, &mut model, &encoder)?;
    let e = model.save_pretrained(&source, &dir.path().join("steered"), &SaveOptions::new());
    assert!(matches!(&e, Err(Error::Export { reason, .. }) if reason.contains("bias")), "{e:?}");
    built.editor.restore(&mut model)?;
    assert_eq!(digest(&model), before);

    let mut dinm = Registry::builtin().build("dinm", &MethodArgs::new(), Device::Cpu)?;
    assert!(check_record_independent(&dinm).is_err());
    let e = apply_record_independent(&mut dinm, &mut model, &encoder).unwrap_err();
    assert!(e.to_string().contains("cannot be written"), "{e}");
    assert_eq!(digest(&model), before, "a refused method edits nothing");
    Ok(())
}
