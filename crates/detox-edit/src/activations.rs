//! Layer activations pooled over chosen positions: what the methods fitted from contrasting texts (ProFS's
//! sentence embeddings, activation steering's mean differences) are computed from.

use std::ops::Range;

use detox_runtime::padding::right_pad;
use detox_runtime::{CausalLm, ForwardOptions};
use tch::{Kind, Tensor};

use crate::error::{torch, EditError, Result};

/// Rows run per forward pass (the ProFS reference's batch of 50; it only bounds memory).
const ROWS_PER_PASS: usize = 50;

/// Token rows and, for each, the positions whose layer outputs are averaged.
#[derive(Debug, Clone)]
pub(crate) struct PooledRows {
    /// The token ids of each row.
    pub rows: Vec<Vec<i64>>,
    /// The pooled positions of each row; they may reach into the padding.
    pub pool: Vec<Range<usize>>,
    /// Rows are right-padded to this many tokens (at least the longest row).
    pub width: usize,
}

/// The raw output of each decoder layer (the residual stream after it, the last one before the final norm),
/// averaged over each row's pooled positions, in fp32.
///
/// Rows are right-padded with `pad_id` and run with their padding mask and sequential positions, as a plain
/// Hugging Face `model(input_ids, attention_mask)` call on `padding_side="right"` tokens does.
///
/// # Shapes
/// Returns `[num_hidden_layers, rows, hidden]` fp32 on the CPU.
pub(crate) fn pooled_layer_outputs(
    model: &CausalLm,
    data: &PooledRows,
    pad_id: i64,
) -> Result<Tensor> {
    let layers = model.config().num_hidden_layers;
    for (i, (row, pool)) in data.rows.iter().zip(&data.pool).enumerate() {
        if row.is_empty() || pool.is_empty() || pool.end > data.width.max(row.len()) {
            return Err(EditError::InputLength {
                what: format!(
                    "text {i}: {} tokens, pooled positions {pool:?} of a width of {}",
                    row.len(),
                    data.width
                ),
            });
        }
    }
    let _guard = tch::no_grad_guard();
    let mut chunks = Vec::new();
    for (rows, pools) in data.rows.chunks(ROWS_PER_PASS).zip(data.pool.chunks(ROWS_PER_PASS)) {
        let (ids, mask) = right_pad(rows, pad_id, data.width, model.device())?;
        let width = ids.size()[1] as usize;
        let options = ForwardOptions {
            attention_mask: Some(&mask),
            output_hidden_states: true,
            ..Default::default()
        };
        let output = model.forward(&ids, &options)?;
        // [rows, width] weights: 1/|pool| on the pooled positions.
        let mut weights = vec![0f32; rows.len() * width];
        for (r, pool) in pools.iter().enumerate() {
            let share = 1.0 / pool.len() as f32;
            weights[r * width + pool.start..r * width + pool.end].fill(share);
        }
        let weights = Tensor::from_slice(&weights)
            .f_view([rows.len() as i64, width as i64, 1])
            .and_then(|w| w.f_to_device(model.device()))
            .map_err(torch("pooling weights"))?;
        let per_layer = (0..layers)
            .map(|layer| {
                let hidden = output.layer_output(layer).ok_or_else(|| {
                    EditError::State(format!(
                        "the forward pass returned no output of layer {layer}"
                    ))
                })?;
                hidden
                    .f_to_kind(Kind::Float)
                    .and_then(|h| h.f_mul(&weights))
                    .and_then(|h| h.f_sum_dim_intlist(1, false, Kind::Float))
                    .and_then(|h| h.f_to_device(tch::Device::Cpu))
                    .map_err(torch("pooling layer outputs"))
            })
            .collect::<Result<Vec<_>>>()?;
        chunks.push(Tensor::f_stack(&per_layer, 0).map_err(torch("stacking layers"))?);
    }
    Tensor::f_cat(&chunks, 1).map_err(torch("joining batches"))
}
