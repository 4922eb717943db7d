//! Activation steering by contrastive activation addition (Rimsky et al., ACL 2024, "Steering Llama 2 via
//! Contrastive Activation Addition"): a steering vector per layer, the mean difference of the residual stream
//! after that layer between safe and unsafe responses, added to the residual stream at inference with a strength
//! coefficient.
//!
//! Position and pooling: CAA reads one position, the answer letter of an A/B question, which is the only token
//! where its paired inputs differ. SafeEdit's pairs share the prompt and differ in a free-text response, so the
//! free-text analogue is used: each response's layer output averaged over the response tokens (the prompt
//! tokens are identical on both sides and, causally, carry no difference), then the per-pair differences
//! averaged over pairs. The prompt is laid out as at training time (the chat template by default).
//!
//! The vector enters the model as a bias of the layer's `down_proj`, attached for the edit (the runtime has no
//! such bias otherwise and pays nothing for it): the MLP output, and with it the residual stream after the layer,
//! moves by exactly `strength · v` at every position. It is an ordinary weight delta, so restore, delta export
//! and per-row weights in batched generation treat it like every other edit.

use std::path::Path;
use std::time::Instant;

use detox_runtime::{CausalLm, PromptLayout, SafetensorsFiles};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::activations::{pooled_layer_outputs, PooledRows};
use crate::artefact::Artefact;
use crate::delta::Delta;
use crate::editor::{EditInput, EditOutcome, Editor, PromptEncoder};
use crate::error::{torch, EditError, Result};
use crate::ledger::EditLedger;
use crate::train::checkpoint::{read_json, write_json};
use crate::train::{encode_pairs, PreferencePair};
use crate::trained::apply_fixed_delta;

/// The description file of a steering artefact directory.
pub const INFO_FILE: &str = "steering.json";
/// The vectors of a steering artefact directory.
pub const VECTORS_FILE: &str = "steering.safetensors";
const VECTORS: &str = "steering.vectors";

/// The layer steered by default in a model of `num_layers`: `⌊13 L / 32⌋`, CAA's choice for Llama-2-7b-chat
/// (layer 13 of 32).
pub fn default_layer(num_layers: usize) -> usize {
    num_layers * 13 / 32
}

/// How steering vectors were fitted (`steering.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeringInfo {
    /// Pairs fitted on.
    pub pairs: usize,
    /// How prompts were laid out before the responses (written `format` by earlier versions).
    #[serde(alias = "format")]
    pub prompt_layout: PromptLayout,
    /// Prompt + response were cut to this many tokens.
    pub max_length: usize,
    /// The norm of each layer's vector.
    pub norms: Vec<f64>,
    /// Fitting wall time in seconds.
    pub seconds: f64,
}

/// Steering vectors for every layer.
#[derive(Debug)]
pub struct SteeringVectors {
    /// How they were fitted.
    pub info: SteeringInfo,
    /// `[num_hidden_layers, hidden]` fp32: row `l` is the mean (safe - unsafe) output of layer `l`.
    pub vectors: Tensor,
}

/// Fits one steering vector per layer from `pairs` (`chosen` is the safe response, `rejected` the unsafe one).
pub fn fit_steering(
    model: &CausalLm,
    encoder: &dyn PromptEncoder,
    pairs: &[PreferencePair],
    format: PromptLayout,
    max_length: usize,
) -> Result<SteeringVectors> {
    let started = Instant::now();
    if pairs.is_empty() {
        return Err(EditError::EmptyInput { what: "the steering pairs".into() });
    }
    let encoded = encode_pairs(encoder, pairs, format, max_length)?;
    let side = |pick: fn(&crate::train::EncodedPair) -> &Vec<i64>| -> Result<Tensor> {
        let rows: Vec<Vec<i64>> =
            encoded.iter().map(|p| [p.prompt.as_slice(), pick(p)].concat()).collect();
        let pool = encoded.iter().map(|p| p.prompt.len()..p.prompt.len() + pick(p).len()).collect();
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        pooled_layer_outputs(model, &PooledRows { rows, pool, width }, encoder.pad_id())
    };
    let safe = side(|p| &p.chosen)?;
    let unsafe_ = side(|p| &p.rejected)?;
    let vectors = safe
        .f_sub(&unsafe_)
        .and_then(|d| d.f_mean_dim(1, false, Kind::Float))
        .map_err(torch("steering vectors"))?;
    let norms = vectors
        .f_norm_scalaropt_dim(2, [-1i64].as_slice(), false)
        .and_then(|n| n.f_to_kind(Kind::Double))
        .map_err(torch("steering norms"))?;
    let info = SteeringInfo {
        pairs: pairs.len(),
        prompt_layout: format,
        max_length,
        norms: Vec::<f64>::try_from(norms).map_err(torch("steering norms"))?,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(SteeringVectors { info, vectors })
}

/// Steering vectors are saved as an artefact of kind `steering`: [`VECTORS_FILE`] and [`INFO_FILE`].
impl Artefact for SteeringVectors {
    const KIND: &'static str = "steering";

    /// Writes [`VECTORS_FILE`], then [`INFO_FILE`].
    fn write_files(&self, dir: &Path) -> Result<()> {
        detox_runtime::weights::save_safetensors(
            &dir.join(VECTORS_FILE),
            &[(VECTORS.to_string(), self.vectors.shallow_clone())],
        )?;
        write_json(&dir.join(INFO_FILE), &self.info)
    }

    /// Reads the description and the `[layers, hidden]` vectors, onto `device`.
    fn read_files(dir: &Path, device: Device) -> Result<Self> {
        let info: SteeringInfo = read_json(&dir.join(INFO_FILE), "a steering description")?;
        let path = dir.join(VECTORS_FILE);
        let vectors = SafetensorsFiles::open_files(std::slice::from_ref(&path))?.load(
            VECTORS,
            device,
            Some(Kind::Float),
        )?;
        if vectors.dim() != 2 || vectors.size()[0] as usize != info.norms.len() {
            return Err(EditError::ShapeMismatch {
                what: format!("{}: `{VECTORS}`", path.display()),
                expected: format!("[{}, hidden]", info.norms.len()),
                got: vectors.size(),
            });
        }
        Ok(Self { info, vectors })
    }
}

impl SteeringVectors {
    /// The edit adding `strength` times the vectors of `layers` to the residual stream: one `down_proj.bias`
    /// entry per layer.
    pub fn delta(&self, layers: &[usize], strength: f64) -> Result<Delta> {
        let available = self.vectors.size()[0] as usize;
        if layers.is_empty() || !strength.is_finite() {
            return Err(EditError::InvalidConfig {
                method: "steering".into(),
                reason: format!("needs a layer and a finite strength (got {layers:?}, {strength})"),
            });
        }
        let mut delta = Delta::new();
        for &layer in layers {
            if layer >= available {
                return Err(EditError::NoSuchLayer {
                    method: "steering".into(),
                    layer,
                    layers: available,
                });
            }
            let v = self
                .vectors
                .get(layer as i64)
                .f_mul_scalar(strength)
                .map_err(torch("steering delta"))?;
            delta.add(&format!("model.layers.{layer}.mlp.down_proj.bias"), &v)?;
        }
        Ok(delta)
    }
}

/// Adds fitted steering vectors to the residual stream of every evaluated record; restore is bit-exact and
/// detaches the bias again.
#[derive(Debug)]
pub struct SteeringEditor {
    delta: Delta,
    ledger: EditLedger,
}

impl SteeringEditor {
    /// An editor steering `layers` (the default layer when `None`) with `strength` times `vectors`.
    pub fn new(vectors: &SteeringVectors, layers: Option<&[usize]>, strength: f64) -> Result<Self> {
        let default = [default_layer(vectors.info.norms.len())];
        let delta = vectors.delta(layers.unwrap_or(&default), strength)?;
        Ok(Self { delta, ledger: EditLedger::new() })
    }

    /// The edit applied to every record.
    pub fn delta(&self) -> &Delta {
        &self.delta
    }
}

impl Editor for SteeringEditor {
    fn method(&self) -> &'static str {
        "Steering"
    }

    fn edit(
        &mut self,
        model: &mut CausalLm,
        _encoder: &dyn PromptEncoder,
        _input: &EditInput,
    ) -> Result<EditOutcome> {
        let started = Instant::now();
        apply_fixed_delta(&mut self.ledger, model, "Steering", self.delta.shallow_clone(), started)
    }

    fn restore(&mut self, model: &mut CausalLm) -> Result<()> {
        self.ledger.restore(model)
    }
}
