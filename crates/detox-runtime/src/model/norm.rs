//! RMSNorm as transformers computes it (statistics in fp32, scale applied in the input dtype).

use tch::{Kind, Tensor};

use crate::error::{Result, TorchContext};

/// Root-mean-square normalisation followed by a learned scale.
///
/// # Shapes
/// - `xs`: `[..., hidden]`, any floating dtype
/// - `weight`: `[hidden]`
/// - returns the shape and dtype of `xs`
pub(crate) fn rms_norm(xs: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let kind = xs.kind();
    let x32 = xs.f_to_kind(Kind::Float).ctx("rms_norm upcast")?;
    let variance =
        x32.f_square().ctx("rms_norm")?.f_mean_dim(-1, true, Kind::Float).ctx("rms_norm mean")?;
    let normed = x32
        .f_mul(&variance.f_add_scalar(eps).ctx("rms_norm")?.f_rsqrt().ctx("rms_norm")?)
        .ctx("rms_norm")?;
    weight.f_mul(&normed.f_to_kind(kind).ctx("rms_norm downcast")?).ctx("rms_norm scale")
}
