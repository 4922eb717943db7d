//! Which `gate_proj` rows Model Surgery shifts, and the weight difference the shift amounts to.

use detox_runtime::CausalLm;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::delta::Delta;
use crate::error::{torch, EditError, Result};

/// One shifted row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SelectedRow {
    /// The decoder layer.
    pub layer: usize,
    /// The row of that layer's `gate_proj` weight (one intermediate unit).
    pub row: usize,
    /// The row's negated cosine with the toxic direction (the ranking score, highest first).
    pub score: f32,
}

/// The Hugging Face name of layer `layer`'s gate projection weight.
pub fn gate_name(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.gate_proj.weight")
}

/// Where layer `layer`'s gate rows live: the tensor's name and how many of its leading rows are gate rows. That
/// is the whole `mlp.gate_proj.weight`, or the first `intermediate_size` rows of Phi-3's fused
/// `mlp.gate_up_proj.weight` (its gate half; the up half follows).
pub fn gate_rows(model: &CausalLm, layer: usize) -> Result<(String, i64)> {
    let name = gate_name(layer);
    if let Ok(weight) = model.parameter(&name) {
        return Ok((name, weight.size()[0]));
    }
    match model.fused_parameter(&name) {
        Some(fused) => Ok((fused, model.config().intermediate_size)),
        None => Err(EditError::InvalidConfig {
            method: "Model Surgery".into(),
            reason: format!(
                "it shifts gate rows, and this {} model has neither `{name}` nor a fused `mlp.gate_up_proj` \
                 in layer {layer}",
                model.config().architecture.model_type()
            ),
        }),
    }
}

/// The `count` rows of all layers' `gate_proj` weights whose cosine with `direction` is the most negative,
/// best first: every row is scored by its negated cosine in fp32 (in fp16 a tenth of the chosen rows would
/// differ), the scores of all layers pooled and ranked. Equal scores keep layer order, then row order, as the
/// stable sort over layer-ordered lists in `modification/modify.py` does.
///
/// # Shapes
/// `direction`: `[hidden]`, any float dtype.
pub fn select_rows(model: &CausalLm, direction: &Tensor, count: usize) -> Result<Vec<SelectedRow>> {
    let hidden = model.config().hidden_size;
    if direction.size() != [hidden] {
        return Err(EditError::ShapeMismatch {
            what: "the probe direction".into(),
            expected: format!("[{hidden}] (the model's hidden size)"),
            got: direction.size(),
        });
    }
    let e = |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("ranking gate rows"));
    let _guard = tch::no_grad_guard();
    let mut scored = Vec::new();
    for layer in 0..model.config().num_hidden_layers {
        let (name, rows) = gate_rows(model, layer)?;
        let weight = e(model.parameter(&name)?.f_narrow(0, 0, rows))?;
        let weight = e(weight.f_to_kind(Kind::Float))?;
        let v =
            e(e(e(direction.f_to_kind(Kind::Float))?.f_to_device(weight.device()))?
                .f_unsqueeze(0))?;
        // `F.cosine_similarity(rows, v, dim=1)` with its default eps.
        let cosines = e(Tensor::f_cosine_similarity(&weight, &v, 1, 1e-8))?;
        let cosines =
            Vec::<f32>::try_from(e(cosines.f_neg())?).map_err(torch("reading cosines"))?;
        scored.extend(cosines.into_iter().enumerate().map(|(row, score)| SelectedRow {
            layer,
            row,
            score,
        }));
    }
    if count > scored.len() {
        return Err(EditError::InvalidConfig {
            method: "Model Surgery".into(),
            reason: format!(
                "cannot shift {count} gate rows: the model has {} ({} layers)",
                scored.len(),
                model.config().num_hidden_layers
            ),
        });
    }
    if let Some(bad) = scored.iter().find(|s| !s.score.is_finite()) {
        return Err(EditError::InvalidConfig {
            method: "Model Surgery".into(),
            reason: format!(
                "the cosine of layer {} row {} with the probe direction is {}",
                bad.layer, bad.row, bad.score
            ),
        });
    }
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    scored.truncate(count);
    Ok(scored)
}

/// The weight difference of shifting each of `rows` by `alpha · direction`: one fp32 entry per touched layer's
/// `gate_proj`, zero outside the chosen rows.
///
/// # Shapes
/// `direction`: `[hidden]`, any float dtype.
pub fn surgery_delta(
    model: &CausalLm,
    direction: &Tensor,
    rows: &[SelectedRow],
    alpha: f64,
) -> Result<Delta> {
    let e = |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("surgery delta"));
    let layers = model.config().num_hidden_layers;
    let shift = e(direction.f_to_kind(Kind::Float).and_then(|d| d.f_mul_scalar(alpha)))?;
    let mut delta = Delta::new();
    for layer in 0..layers {
        let mine: Vec<i64> =
            rows.iter().filter(|r| r.layer == layer).map(|r| r.row as i64).collect();
        if mine.is_empty() {
            continue;
        }
        let (name, rows) = gate_rows(model, layer)?;
        let size = model.parameter(&name)?.size();
        if size.len() != 2 || size[1] != shift.size()[0] {
            return Err(EditError::ShapeMismatch {
                what: format!("`{name}`"),
                expected: format!("[rows, {}] (the probe direction's width)", shift.size()[0]),
                got: size.clone(),
            });
        }
        if let Some(&row) = mine.iter().find(|&&r| r >= rows) {
            return Err(EditError::InvalidConfig {
                method: "Model Surgery".into(),
                reason: format!(
                    "gate row {row} of `{name}` does not exist (it has {rows} gate rows)"
                ),
            });
        }
        // Built where the weight lives, so that applying it moves nothing.
        let device = model.parameter_device(&name)?;
        let index = e(Tensor::from_slice(&mine).f_to_device(device))?;
        let row = e(e(shift.f_to_device(device))?.f_unsqueeze(0))?;
        let source = e(row.f_expand([mine.len() as i64, size[1]], false))?;
        let diff = e(e(Tensor::f_zeros(size.as_slice(), (Kind::Float, device)))?
            .f_index_copy(0, &index, &source))?;
        delta.add(&name, &diff)?;
    }
    if let Some(bad) = rows.iter().find(|r| r.layer >= layers) {
        return Err(EditError::NoSuchLayer {
            method: "Model Surgery".into(),
            layer: bad.layer,
            layers,
        });
    }
    Ok(delta)
}
