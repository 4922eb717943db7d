//! Linear projections that accept one shared weight or one weight per batch row.

use tch::Tensor;

use crate::error::{Result, TorchContext};

/// `xs @ weightᵀ + bias`, where `weight` is either shared by the batch or given per batch row.
///
/// Per-row weights let a batch carry independent edits of the same layer: row `b` is multiplied by `weight[b]`.
///
/// # Shapes
/// - `xs`: `[batch, seq, in]`
/// - `weight`: `[out, in]` (shared) or `[batch, out, in]` (per row)
/// - `bias`: `[out]`
/// - returns `[batch, seq, out]`
pub fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if weight.dim() == 2 {
        return xs.f_linear(weight, bias).ctx("linear projection");
    }
    let ys = xs
        .f_matmul(&weight.f_transpose(-2, -1).ctx("transposing per-row weight")?)
        .ctx("per-row projection")?;
    match bias {
        Some(b) => ys.f_add(b).ctx("adding bias"),
        None => Ok(ys),
    }
}
