//! RMSNorm as transformers computes it: statistics in fp32, the weight applied as the family does.

use tch::{Kind, Tensor};

use crate::config::NormKind;
use crate::error::{Result, TorchContext};

/// Root-mean-square normalisation followed by a learned scale, applied as `kind` says.
///
/// The three families differ only in rounding: Llama casts the normalised input to the model dtype before the
/// weight, OLMo-2 and Gemma multiply in fp32 and cast the product (Gemma by `1 + weight`). In fp32 the first two
/// are the same computation.
///
/// # Shapes
/// - `xs`: `[..., width]`, any floating dtype
/// - `weight`: `[width]`
/// - returns the shape and dtype of `xs`
pub(crate) fn norm(xs: &Tensor, weight: &Tensor, eps: f64, kind: NormKind) -> Result<Tensor> {
    let dtype = xs.kind();
    let x32 = xs.f_to_kind(Kind::Float).ctx("rms_norm upcast")?;
    let variance =
        x32.f_square().ctx("rms_norm")?.f_mean_dim(-1, true, Kind::Float).ctx("rms_norm mean")?;
    let normed = x32
        .f_mul(&variance.f_add_scalar(eps).ctx("rms_norm")?.f_rsqrt().ctx("rms_norm")?)
        .ctx("rms_norm")?;
    match kind {
        NormKind::CastThenScale => {
            weight.f_mul(&normed.f_to_kind(dtype).ctx("rms_norm downcast")?).ctx("rms_norm scale")
        }
        NormKind::ScaleThenCast => weight
            .f_to_kind(Kind::Float)
            .ctx("rms_norm weight")?
            .f_mul(&normed)
            .ctx("rms_norm scale")?
            .f_to_kind(dtype)
            .ctx("rms_norm downcast"),
        NormKind::OffsetScaleThenCast => normed
            .f_mul(
                &weight
                    .f_to_kind(Kind::Float)
                    .ctx("rms_norm weight")?
                    .f_add_scalar(1.0)
                    .ctx("rms_norm")?,
            )
            .ctx("rms_norm scale")?
            .f_to_kind(dtype)
            .ctx("rms_norm downcast"),
    }
}
