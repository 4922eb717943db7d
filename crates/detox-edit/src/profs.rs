//! ProFS (Uppaal et al., ICLR 2025, "DeTox: Toxic Subspace Projection for Model Editing"): the toxic subspace
//! of each chosen layer is spanned by the top singular directions of the differences between the sentence
//! embeddings of safe and unsafe texts, and the layer's MLP value matrix is projected onto its complement,
//! `down_proj.weight ← (I - Σₖ vₖvₖᵀ) W`. Fitting is forward passes and an SVD; no gradients.
//!
//! Where the paper is terse this follows the authors' `detox.py` (github `Uppaal/detox-edit`):
//! - a sentence embedding is a decoder layer's raw output (before the final norm) averaged over *all* positions,
//!   padding included; each side is tokenized on its own, right-padded to its longest text and cut at 128
//!   tokens, without the prompt;
//! - the difference matrix is `(preferred - non-preferred) / 2`, one row per pair;
//! - "centring" is not a mean subtraction: it projects out the top right singular vector of the *uncentred*
//!   matrix of preferred embeddings (`d ← d (I - u uᵀ)`);
//! - a reduced SVD in fp32 and a fixed `k` (2 by default, 10 in their 7B configurations);
//! - the edited layers default to the upper half (their Mistral-7B configuration edits 15..32 of 32 layers).
//!
//! Under transformers 5 the reference's `last_layer(...)[0]` takes batch item 0 of the last layer's recomputed
//! output (decoder layers now return a tensor, not a tuple), which puts one text's embedding in every row of
//! the last layer; this implementation uses the intended value, each text's own last-layer output.
//! Embeddings are averaged in fp32 (the reference averages in the model dtype), and every pair is used (the
//! reference runs `N // 50` batches of 50 and so drops the last `N mod 50` pairs when `N > 50`).

use std::path::Path;
use std::time::Instant;

use detox_runtime::{CausalLm, SafetensorsFiles};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::activations::{pooled_layer_outputs, PooledRows};
use crate::artefact::Artefact;
use crate::delta::Delta;
use crate::editor::{EditInput, EditOutcome, Editor, PromptEncoder};
use crate::error::{torch, EditError, Result};
use crate::ledger::EditLedger;
use crate::train::checkpoint::{read_json, write_json};
use crate::train::PreferencePair;
use crate::trained::apply_fixed_delta;

/// A relative gap `(σₖ - σₖ₊₁) / σₖ` below this makes the `k`-dimensional subspace ill-defined: a small change
/// of the data can swap the `k`-th and `(k+1)`-th directions.
pub const NEAR_TIE: f64 = 1e-2;

/// How many leading singular values of each layer the artefact records.
const RECORDED_SINGULAR_VALUES: usize = 32;

/// The description file of a ProFS artefact directory.
pub const INFO_FILE: &str = "profs.json";
/// The subspace bases of a ProFS artefact directory.
pub const BASIS_FILE: &str = "profs.safetensors";

/// What a ProFS fit is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfsOptions {
    /// The edited layers; `None` is the upper half, `⌊15 L / 32⌋ .. L` (see [`default_layers`]).
    pub layers: Option<Vec<usize>>,
    /// The subspace dimension `k` (the reference's `top_k_ranks`).
    pub rank: usize,
    /// Project the top direction of the preferred embeddings out of the differences first.
    pub centring: bool,
    /// Texts are cut to this many tokens (the reference's 128).
    pub max_length: usize,
}

impl Default for ProfsOptions {
    fn default() -> Self {
        Self { layers: None, rank: 2, centring: true, max_length: 128 }
    }
}

/// The layers edited by default in a model of `num_layers`: from `⌊15 L / 32⌋` to the last, as the reference's
/// Mistral-7B configuration (`lowest_layer_to_edit = 15` of 32).
pub fn default_layers(num_layers: usize) -> Vec<usize> {
    (num_layers * 15 / 32..num_layers).collect()
}

/// How a fit was made, and what its spectrum looked like (`profs.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfsInfo {
    /// The options, with the layers resolved.
    pub options: ProfsOptions,
    /// The edited layers, in order.
    pub layers: Vec<usize>,
    /// Pairs fitted on.
    pub pairs: usize,
    /// The leading singular values of each layer's difference matrix (at most 32).
    pub singular_values: Vec<Vec<f64>>,
    /// Each layer's relative gap `(σₖ - σₖ₊₁) / σₖ` (1 when there is no `(k+1)`-th value).
    pub rank_gaps: Vec<f64>,
    /// Fitting wall time in seconds.
    pub seconds: f64,
}

impl ProfsInfo {
    /// The layers whose `k`-th and `(k+1)`-th singular values nearly tie (relative gap below [`NEAR_TIE`]).
    pub fn near_ties(&self) -> Vec<usize> {
        self.layers
            .iter()
            .zip(&self.rank_gaps)
            .filter(|(_, gap)| **gap < NEAR_TIE)
            .map(|(layer, _)| *layer)
            .collect()
    }
}

/// A fitted toxic subspace per layer.
#[derive(Debug)]
pub struct ProfsFit {
    /// How it was made.
    pub info: ProfsInfo,
    /// One orthonormal basis per edited layer, `[k, hidden]` fp32 (rows are the right singular vectors).
    pub bases: Vec<Tensor>,
}

/// Fits the toxic subspaces from `pairs` (their `chosen` texts are the preferred side, `rejected` the
/// non-preferred; prompts are not used).
pub fn fit_profs(
    model: &CausalLm,
    encoder: &dyn PromptEncoder,
    pairs: &[PreferencePair],
    options: &ProfsOptions,
) -> Result<ProfsFit> {
    let started = Instant::now();
    let num_layers = model.config().num_hidden_layers;
    let layers = options.layers.clone().unwrap_or_else(|| default_layers(num_layers));
    check_options(options, &layers, num_layers, pairs.len())?;
    let side = |pick: fn(&PreferencePair) -> &str, field: &str| -> Result<Tensor> {
        let rows = pairs
            .iter()
            .enumerate()
            .map(|(i, pair)| {
                let mut ids = encoder.encode(pick(pair), true)?;
                ids.truncate(options.max_length);
                if ids.is_empty() {
                    return Err(EditError::NoTokens {
                        what: format!("ProFS pair {i}: field `{field}`"),
                    });
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let pool = vec![0..width; rows.len()];
        pooled_layer_outputs(model, &PooledRows { rows, pool, width }, encoder.pad_id())
    };
    let preferred = side(|p| &p.chosen, "chosen")?;
    let non_preferred = side(|p| &p.rejected, "rejected")?;
    let e = |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("ProFS subspace"));
    let mut bases = Vec::with_capacity(layers.len());
    let mut singular_values = Vec::with_capacity(layers.len());
    let mut rank_gaps = Vec::with_capacity(layers.len());
    for &layer in &layers {
        let l = layer as i64;
        let mut diff = e(e(preferred.get(l).f_sub(&non_preferred.get(l)))?.f_div_scalar(2.0))?;
        if options.centring {
            let (_, _, v) = reduced_svd(&preferred.get(l))?;
            let top = e(v.f_narrow(1, 0, 1))?;
            // d (I - u uᵀ) without forming I: d - (d u) uᵀ.
            diff =
                e(diff.f_sub(&e(e(diff.f_matmul(&top))?.f_matmul(&e(top.f_transpose(0, 1))?))?))?;
        }
        let (_, s, v) = reduced_svd(&diff)?;
        let vt = e(v.f_transpose(0, 1))?;
        let s: Vec<f64> = Vec::<f64>::try_from(e(s.f_to_kind(Kind::Double))?)
            .map_err(torch("ProFS singular values"))?;
        let k = options.rank;
        if s[k - 1] <= 0.0 {
            return Err(EditError::InvalidConfig {
                method: "ProFS".into(),
                reason: format!(
                    "layer {layer}: the difference matrix has rank below k = {k} (σ_k = {})",
                    s[k - 1]
                ),
            });
        }
        rank_gaps.push(s.get(k).map_or(1.0, |next| (s[k - 1] - next) / s[k - 1]));
        singular_values.push(s.iter().take(RECORDED_SINGULAR_VALUES).copied().collect());
        bases.push(e(e(vt.f_narrow(0, 0, k as i64))?.f_contiguous())?);
    }
    let info = ProfsInfo {
        options: ProfsOptions { layers: Some(layers.clone()), ..options.clone() },
        layers,
        pairs: pairs.len(),
        singular_values,
        rank_gaps,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(ProfsFit { info, bases })
}

/// The reduced SVD `m = U diag(S) Vᵀ` in fp32, returning `(U, S, V)`: for `[n, d]`, `V` is `[d, min(n, d)]`
/// with the right singular vectors as columns, singular values descending. (`linalg_svd` through tch always
/// names a driver, which libtorch accepts on CUDA only.)
fn reduced_svd(m: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    m.f_to_kind(Kind::Float).and_then(|m| Tensor::f_svd(&m, true, true)).map_err(torch("ProFS SVD"))
}

fn check_options(
    options: &ProfsOptions,
    layers: &[usize],
    num_layers: usize,
    pairs: usize,
) -> Result<()> {
    let bad = |reason: String| Err(EditError::InvalidConfig { method: "ProFS".into(), reason });
    if options.rank == 0 || options.rank > pairs {
        return bad(format!("k = {} needs 1 <= k <= the number of pairs ({pairs})", options.rank));
    }
    if options.max_length == 0 {
        return bad("max_length must be at least 1".into());
    }
    if layers.is_empty() {
        return bad("no layer to edit".into());
    }
    if let Some(l) = layers.iter().find(|l| **l >= num_layers) {
        return bad(format!("layer {l} does not exist (the model has {num_layers})"));
    }
    Ok(())
}

/// The edited parameter of `layer`.
fn value_matrix(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.down_proj.weight")
}

impl ProfsFit {
    /// The projections as a weight delta on `model`: `(P - I) W = -Vᵀ(V W)` for each edited layer's
    /// `down_proj.weight` `W` (`[hidden, intermediate]`), computed in fp32.
    pub fn delta(&self, model: &CausalLm) -> Result<Delta> {
        let mut delta = Delta::new();
        for (layer, basis) in self.info.layers.iter().zip(&self.bases) {
            let name = value_matrix(*layer);
            let weight = model.parameter(&name)?;
            if weight.dim() != 2 || weight.size()[0] != basis.size()[1] {
                return Err(EditError::ShapeMismatch {
                    what: format!("`{name}` (projected by layer {layer}'s ProFS basis)"),
                    expected: format!("[{}, in]", basis.size()[1]),
                    got: weight.size(),
                });
            }
            let diff = weight
                .f_to_kind(Kind::Float)
                .and_then(|w| {
                    let v = basis.f_to_device(w.device())?;
                    v.f_transpose(0, 1)?.f_matmul(&v.f_matmul(&w)?)?.f_neg()
                })
                .map_err(torch("ProFS projection"))?;
            delta.add(&name, &diff)?;
        }
        Ok(delta)
    }
}

/// A ProFS fit is saved as an artefact of kind `profs`: [`BASIS_FILE`] and [`INFO_FILE`].
impl Artefact for ProfsFit {
    const KIND: &'static str = "profs";

    /// Writes [`BASIS_FILE`], then [`INFO_FILE`].
    fn write_files(&self, dir: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .info
            .layers
            .iter()
            .zip(&self.bases)
            .map(|(l, b)| (basis_name(*l), b.shallow_clone()))
            .collect();
        detox_runtime::weights::save_safetensors(&dir.join(BASIS_FILE), &tensors)?;
        write_json(&dir.join(INFO_FILE), &self.info)
    }

    /// Reads the description and one `[k, hidden]` basis per layer it names, onto `device`.
    fn read_files(dir: &Path, device: Device) -> Result<Self> {
        let info: ProfsInfo = read_json(&dir.join(INFO_FILE), "a ProFS description")?;
        let files = SafetensorsFiles::open_files(&[dir.join(BASIS_FILE)])?;
        let bases = info
            .layers
            .iter()
            .map(|l| {
                let basis = files.load(&basis_name(*l), device, Some(Kind::Float))?;
                if basis.dim() != 2 || basis.size()[0] != info.options.rank as i64 {
                    return Err(EditError::ShapeMismatch {
                        what: format!("{}: `{}`", dir.join(BASIS_FILE).display(), basis_name(*l)),
                        expected: format!("[{}, hidden]", info.options.rank),
                        got: basis.size(),
                    });
                }
                Ok(basis)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { info, bases })
    }
}

fn basis_name(layer: usize) -> String {
    format!("model.layers.{layer}.profs.basis")
}

/// Applies a fitted ProFS projection to every evaluated record (the same edit for all of them, on the original
/// model each time); restore is bit-exact.
#[derive(Debug)]
pub struct ProfsEditor {
    fit: ProfsFit,
    ledger: EditLedger,
}

impl ProfsEditor {
    /// An editor applying `fit`.
    pub fn new(fit: ProfsFit) -> Self {
        Self { fit, ledger: EditLedger::new() }
    }

    /// The fit applied.
    pub fn fit(&self) -> &ProfsFit {
        &self.fit
    }
}

impl Editor for ProfsEditor {
    fn method(&self) -> &'static str {
        "ProFS"
    }

    fn edit(
        &mut self,
        model: &mut CausalLm,
        _encoder: &dyn PromptEncoder,
        _input: &EditInput,
    ) -> Result<EditOutcome> {
        let started = Instant::now();
        // The projection is of the original weights: undo a previous record's edit before reading them.
        self.ledger.restore(model)?;
        let delta = self.fit.delta(model)?;
        apply_fixed_delta(&mut self.ledger, model, "ProFS", delta, started)
    }

    fn restore(&mut self, model: &mut CausalLm) -> Result<()> {
        self.ledger.restore(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_ties_name_the_layers_whose_gap_is_small() {
        let info = ProfsInfo {
            options: ProfsOptions::default(),
            layers: vec![3, 4, 5],
            pairs: 10,
            singular_values: vec![vec![2.0, 1.0, 0.5], vec![2.0, 1.0, 0.999], vec![2.0, 1.0]],
            rank_gaps: vec![0.5, 0.001, 1.0],
            seconds: 0.0,
        };
        assert_eq!(info.near_ties(), [4]);
        assert_eq!(default_layers(32), (15..32).collect::<Vec<_>>());
    }
}
