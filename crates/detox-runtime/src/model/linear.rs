//! Linear projections that accept one shared weight, one weight per batch row, or one weight per group of rows.

use tch::Tensor;

use crate::error::{Error, Result, TorchContext};

/// `xs @ weightᵀ + bias`, where `weight` is either shared by the batch, given per batch row, or given per group
/// of consecutive rows.
///
/// Per-row weights let a batch carry independent edits of the same layer: row `b` is multiplied by `weight[b]`.
/// With `k` weights for a batch of `k · g` rows, rows `i·g .. (i+1)·g` share `weight[i]` (e.g. the five
/// evaluation inputs of each of `k` edited records), without copying any weight.
///
/// # Shapes
/// - `xs`: `[batch, seq, in]`
/// - `weight`: `[out, in]` (shared), `[batch, out, in]` (per row) or `[k, out, in]` with `batch = k · g`
/// - `bias`: `[out]`
/// - returns `[batch, seq, out]`
pub(crate) fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if weight.dim() == 2 {
        return xs.f_linear(weight, bias).ctx("linear projection");
    }
    let (batch, k) = (xs.size()[0], weight.size()[0]);
    let transposed = weight.f_transpose(-2, -1).ctx("transposing per-row weight")?;
    let ys = if batch == k {
        xs.f_matmul(&transposed).ctx("per-row projection")?
    } else if k > 0 && batch % k == 0 {
        let (seq, width) = (xs.size()[1], xs.size()[2]);
        let group = batch / k;
        xs.f_reshape([k, group * seq, width])
            .ctx("grouping rows")?
            .f_matmul(&transposed)
            .ctx("per-group projection")?
            .f_reshape([batch, seq, -1])
            .ctx("ungrouping rows")?
    } else {
        return Err(Error::InvalidInput(format!(
            "{k} per-row weights cannot serve a batch of {batch} rows (need one per row or per equal group)"
        )));
    };
    match bias {
        Some(b) => ys.f_add(b).ctx("adding bias"),
        None => Ok(ys),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn grouped_weights_serve_consecutive_rows() {
        let opts = (Kind::Float, Device::Cpu);
        let xs = Tensor::randn([6, 3, 4], opts);
        let w = Tensor::randn([2, 5, 4], opts);
        let ys = linear(&xs, &w, None).unwrap();
        for row in 0..6 {
            let want = xs.get(row).matmul(&w.get(row / 3).transpose(0, 1));
            let diff = (ys.get(row) - want).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "row {row} off by {diff}");
        }
        assert!(linear(&xs, &Tensor::randn([4, 5, 4], opts), None).is_err());
    }
}
