//! The hidden-state contrast itself, on token ids.

use detox_runtime::padding::{left_pad, LeftPadded};
use detox_runtime::{CausalLm, ForwardOptions};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::error::{torch, LocateError, Result};
use crate::options::PaddingPositions;

/// Every layer's distance between the two responses and the winner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LayerDistances {
    /// Frobenius distance between the `[sequence, hidden]` states of the two responses after each transformer
    /// layer (index 0 is the first layer; the embedding output is not included).
    pub distances: Vec<f64>,
    /// The 0-based layer with the largest distance (the first one on ties).
    pub toxic_layer: usize,
    /// The other layers whose distance is within [`NEAR_TIE_RELATIVE`] of the largest, in layer order; empty when
    /// the winner is clear. When it is not, the choice among these layers is decided by rounding: a bf16 model
    /// can name a different one than the same model in fp32.
    #[serde(default)]
    pub near_ties: Vec<usize>,
}

/// How close to the largest distance, relative to it, a layer's distance must be to count as a near-tie (0.1%).
pub const NEAR_TIE_RELATIVE: f64 = 1e-3;

impl LayerDistances {
    /// Builds the report from per-layer distances; an empty list or a non-finite distance is an error.
    pub fn from_distances(distances: Vec<f64>) -> Result<Self> {
        let toxic_layer = distances
            .iter()
            .enumerate()
            .fold(None::<(usize, f64)>, |best, (i, &d)| match best {
                Some((_, b)) if b >= d => best,
                _ => Some((i, d)),
            })
            .map(|(i, _)| i)
            .ok_or(LocateError::NoLayers)?;
        if let Some((layer, d)) = distances.iter().enumerate().find(|(_, d)| !d.is_finite()) {
            return Err(LocateError::NonFiniteDistance { layer, value: *d });
        }
        let best = distances[toxic_layer];
        let near_ties = distances
            .iter()
            .enumerate()
            .filter(|&(i, &d)| i != toxic_layer && best - d <= NEAR_TIE_RELATIVE * best.abs())
            .map(|(i, _)| i)
            .collect();
        Ok(Self { distances, toxic_layer, near_ties })
    }
}

/// Runs the two token sequences as one left-padded batch (padded with `pad_id`, as a tokenizer with left padding
/// does) and measures, per layer, how far apart their hidden states are.
///
/// Positions are `0..seq` for both rows, padding included, as a plain transformers forward call numbers them.
/// Distances are computed in fp32 whatever the model dtype.
pub fn contrast_token_ids(
    model: &CausalLm,
    safe: &[i64],
    unsafe_: &[i64],
    pad_id: i64,
    padding: PaddingPositions,
) -> Result<LayerDistances> {
    if safe.is_empty() || unsafe_.is_empty() {
        return Err(LocateError::EmptyResponse);
    }
    let LeftPadded { ids, mask, .. } = left_pad(&[safe, unsafe_], pad_id, Device::Cpu)?;
    let _guard = tch::no_grad_guard();
    let options = ForwardOptions {
        attention_mask: Some(&mask),
        output_hidden_states: true,
        ..Default::default()
    };
    let hidden = model.forward(&ids, &options)?.hidden_states.unwrap_or_default();
    let keep = match padding {
        PaddingPositions::Included => None,
        PaddingPositions::Masked => {
            let both = mask.f_prod_dim_int(0, false, Kind::Float).map_err(torch("padding mask"))?;
            Some(
                both.f_to_device(model.device())
                    .map_err(torch("padding mask"))?
                    .f_unsqueeze(-1)
                    .map_err(torch("mask"))?,
            )
        }
    };
    let distances = hidden
        .iter()
        .skip(1)
        .map(|h| {
            let h = h.f_to_kind(Kind::Float).map_err(torch("upcasting hidden states"))?;
            let mut diff = h
                .f_get(0)
                .map_err(torch("row"))?
                .f_sub(&h.f_get(1).map_err(torch("row"))?)
                .map_err(torch("difference"))?;
            if let Some(keep) = &keep {
                diff = diff.f_mul(keep).map_err(torch("masking padding"))?;
            }
            let norm = diff
                .f_square()
                .map_err(torch("norm"))?
                .f_sum(Kind::Double)
                .map_err(torch("norm"))?
                .f_sqrt()
                .map_err(torch("norm"))?;
            norm.f_double_value(&[]).map_err(torch("reading the distance"))
        })
        .collect::<Result<Vec<f64>>>()?;
    LayerDistances::from_distances(distances)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_ties_are_the_other_layers_within_a_thousandth_of_the_largest() {
        let report =
            LayerDistances::from_distances(vec![50.0, 99.95, 100.0, 99.89, 100.0]).unwrap();
        assert_eq!(report.toxic_layer, 2);
        assert_eq!(report.near_ties, vec![1, 4]);
        let clear = LayerDistances::from_distances(vec![1.0, 3.0, 2.0]).unwrap();
        assert!(clear.near_ties.is_empty());
    }

    #[test]
    fn a_non_finite_distance_is_an_error() {
        for bad in [f64::NAN, f64::INFINITY] {
            let err = LayerDistances::from_distances(vec![1.0, bad, 2.0]).unwrap_err();
            assert!(err.to_string().contains("layer 1"), "{err}");
        }
    }
}
