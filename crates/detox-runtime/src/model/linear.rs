//! Linear projections that accept one shared weight, one weight per batch row, or one weight per group of rows.

use tch::Tensor;

use crate::error::{Error, Result, TorchContext};

/// `xs @ weightᵀ + bias`, where `weight` and `bias` are each either shared by the batch, given per batch row,
/// or given per group of consecutive rows.
///
/// Per-row weights let a batch carry independent edits of the same layer: row `b` is multiplied by `weight[b]`.
/// With `k` weights for a batch of `k · g` rows, rows `i·g .. (i+1)·g` share `weight[i]` (e.g. the five
/// evaluation inputs of each of `k` edited records), without copying any weight. A per-row bias (`[k, out]`,
/// e.g. a steering vector per record) is added the same way.
///
/// # Shapes
/// - `xs`: `[batch, seq, in]`
/// - `weight`: `[out, in]` (shared), `[batch, out, in]` (per row) or `[k, out, in]` with `batch = k · g`
/// - `bias`: `[out]` (shared), `[batch, out]` or `[k, out]` with `batch = k · g`
/// - returns `[batch, seq, out]`
pub(crate) fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (shared_bias, row_bias) = match bias {
        Some(b) if b.dim() == 2 => (None, Some(b)),
        other => (other, None),
    };
    let ys = if weight.dim() == 2 {
        xs.f_linear(weight, shared_bias).ctx("linear projection")?
    } else {
        let transposed = weight.f_transpose(-2, -1).ctx("transposing per-row weight")?;
        let ys = per_group(xs, weight.size()[0], |g| g.f_matmul(&transposed))?;
        match shared_bias {
            Some(b) => ys.f_add(b).ctx("adding bias")?,
            None => ys,
        }
    };
    match row_bias {
        Some(b) => {
            let rows = b.f_unsqueeze(1).ctx("per-row bias")?;
            per_group(&ys, b.size()[0], |g| g.f_add(&rows))
        }
        None => Ok(ys),
    }
}

/// Applies `f` to `xs` viewed as `k` groups of consecutive rows, `[k, rows_per_group * seq, width]`, and views
/// the result back as `[batch, seq, out]` (no copy when each row is its own group).
fn per_group(
    xs: &Tensor,
    k: i64,
    f: impl Fn(&Tensor) -> std::result::Result<Tensor, tch::TchError>,
) -> Result<Tensor> {
    let batch = xs.size()[0];
    if batch == k {
        return f(xs).ctx("per-row projection");
    }
    if k == 0 || batch % k != 0 {
        return Err(Error::Unsupported { what: format!(
            "{k} per-row weights cannot serve a batch of {batch} rows (need one per row or per equal group)"
        ) });
    }
    let (seq, width) = (xs.size()[1], xs.size()[2]);
    let grouped = xs.f_reshape([k, batch / k * seq, width]).ctx("grouping rows")?;
    f(&grouped).ctx("per-group projection")?.f_reshape([batch, seq, -1]).ctx("ungrouping rows")
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

    #[test]
    fn grouped_biases_serve_consecutive_rows() {
        let opts = (Kind::Float, Device::Cpu);
        let xs = Tensor::randn([6, 3, 4], opts);
        let w = Tensor::randn([5, 4], opts);
        let b = Tensor::randn([2, 5], opts);
        for weight in [w.shallow_clone(), w.unsqueeze(0).expand([2, 5, 4], false)] {
            let ys = linear(&xs, &weight, Some(&b)).unwrap();
            for row in 0..6 {
                let want = xs.get(row).linear(&w, Some(&b.get(row / 3)));
                let diff = (ys.get(row) - want).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "row {row} off by {diff}");
            }
        }
        assert!(linear(&xs, &w, Some(&Tensor::randn([4, 5], opts))).is_err());
    }
}
