//! Which fused scaled-dot-product-attention kernel libtorch picks for the runtime's attention calls, and whether
//! their gradients stay finite.
//!
//! Explicit masks can send libtorch to a different kernel than the unmasked causal path (on Hopper, possibly
//! cuDNN attention, which has had NaN-gradient bugs with explicit masks). The runtime passes no mask when nothing
//! is padded; this check shows what each remaining case runs on a given device and dtype, so that a GPU run can
//! be trusted before an edit backpropagates through it. `cargo xtask doctor` and the GPU check print it.
//!
//! ```no_run
//! use detox_runtime::attention_check::check_attention;
//!
//! for case in check_attention(tch::Device::Cpu, tch::Kind::Float, 128)? {
//!     println!("{case}");
//! }
//! # Ok::<(), detox_runtime::Error>(())
//! ```

use std::fmt;

use tch::{Device, Kind, Tensor};

use super::layer::{attend, attention_mask, AttentionMask, Scoring};
use crate::error::{Result, TorchContext};

/// A fused attention kernel, as libtorch's `at::SDPBackend` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// The unfused reference implementation (matmul, softmax, matmul).
    Math,
    /// FlashAttention.
    Flash,
    /// Memory-efficient attention (xFormers-style).
    MemoryEfficient,
    /// cuDNN's fused attention.
    CuDnn,
    /// A backend registered by a device extension.
    Overrideable,
    /// None applies to these inputs (libtorch would raise an error).
    NoneApplies,
    /// A number this libtorch version does not document.
    Other(i64),
}

impl AttentionKernel {
    fn from_backend(code: i64) -> Self {
        match code {
            0 => Self::Math,
            1 => Self::Flash,
            2 => Self::MemoryEfficient,
            3 => Self::CuDnn,
            4 => Self::Overrideable,
            -1 => Self::NoneApplies,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for AttentionKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Math => write!(f, "math"),
            Self::Flash => write!(f, "flash"),
            Self::MemoryEfficient => write!(f, "memory-efficient"),
            Self::CuDnn => write!(f, "cuDNN"),
            Self::Overrideable => write!(f, "overrideable"),
            Self::NoneApplies => write!(f, "none applies"),
            Self::Other(code) => write!(f, "backend {code}"),
        }
    }
}

/// The attention calls the runtime makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionCase {
    /// A batch without padding: the kernel's own causal masking, no mask tensor.
    Unmasked,
    /// A left-padded batch (every padded batch, in the locator, DINM's batched edit and generation's prefill).
    LeftPadded,
    /// One decode step of grouped-query attention over a padded cache (queries folded onto their key head).
    GroupedDecodeStep,
}

impl fmt::Display for AttentionCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unmasked => write!(f, "unmasked causal"),
            Self::LeftPadded => write!(f, "left-padded mask"),
            Self::GroupedDecodeStep => write!(f, "grouped decode step"),
        }
    }
}

/// What one case runs on, and whether its gradients are finite.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionCheck {
    /// The case.
    pub case: AttentionCase,
    /// The device.
    pub device: Device,
    /// The dtype of queries, keys and values.
    pub kind: Kind,
    /// The kernel libtorch picks for it.
    pub kernel: AttentionKernel,
    /// Whether the output and the gradients of queries, keys and values are all finite.
    pub finite: bool,
}

impl fmt::Display for AttentionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:?} {}: {} kernel, gradients {}",
            self.device,
            self.kind,
            self.case,
            self.kernel,
            if self.finite { "finite" } else { "NOT FINITE" }
        )
    }
}

/// Runs each [`AttentionCase`] once forward and backward on random inputs of `head_dim` (128 for Llama-2-7B) on
/// `device` in `kind`: batch 2, 64 positions, the second row left-padded by 16, 6 query heads over 2 key heads
/// for the decode step.
pub fn check_attention(device: Device, kind: Kind, head_dim: i64) -> Result<Vec<AttentionCheck>> {
    let (batch, seq, pad) = (2, 64, 16);
    let key_valid = Tensor::f_ones([batch, seq], (Kind::Bool, device)).ctx("key mask")?;
    let _ = key_valid
        .f_select(0, 1)
        .ctx("padding")?
        .f_narrow(0, 0, pad)
        .ctx("padding")?
        .f_fill_(0)
        .ctx("padding")?;
    let mut checks = Vec::new();
    for case in
        [AttentionCase::Unmasked, AttentionCase::LeftPadded, AttentionCase::GroupedDecodeStep]
    {
        let (heads, groups, queries, mask) = match case {
            AttentionCase::Unmasked => (4, 1, seq, AttentionMask::Causal),
            AttentionCase::LeftPadded => (4, 1, seq, attention_mask(&key_valid, 0, seq, None)?),
            AttentionCase::GroupedDecodeStep => {
                (6, 3, 1, attention_mask(&key_valid, seq - 1, 1, None)?)
            }
        };
        let leaf = |shape: [i64; 4]| -> Result<Tensor> {
            Ok(Tensor::f_randn(shape, (kind, device)).ctx("inputs")?.set_requires_grad(true))
        };
        let q = leaf([batch, heads, queries, head_dim])?;
        let k = leaf([batch, heads / groups, seq, head_dim])?;
        let v = leaf([batch, heads / groups, seq, head_dim])?;
        let kernel = chosen_kernel(&q, &k, &v, &mask, groups)?;
        let out = attend(&q, &k, &v, &mask, groups, Scoring::default())?;
        out.f_to_kind(Kind::Float)
            .ctx("loss")?
            .f_sum(Kind::Float)
            .ctx("loss")?
            .f_backward()
            .ctx("attention backward")?;
        let mut finite = all_finite(&out)?;
        for t in [&q, &k, &v] {
            finite &= all_finite(&t.grad())?;
        }
        checks.push(AttentionCheck { case, device, kind, kernel, finite });
    }
    Ok(checks)
}

/// The kernel `attend` runs for these inputs, asked of libtorch with the tensors `attend` passes on.
fn chosen_kernel(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    groups: i64,
) -> Result<AttentionKernel> {
    let code = match mask {
        AttentionMask::Causal => {
            Tensor::f_internal_fused_sdp_choice(q, k, v, None::<Tensor>, 0.0, true, None, false)
        }
        AttentionMask::Dense { mask, .. } if groups > 1 => {
            let size = q.size();
            let folded =
                q.f_reshape([size[0], size[1] / groups, groups, size[3]]).ctx("folding")?;
            let mask = mask.f_expand([size[0], 1, groups, k.size()[2]], false).ctx("folding")?;
            Tensor::f_internal_fused_sdp_choice(&folded, k, v, Some(mask), 0.0, false, None, false)
        }
        AttentionMask::Dense { mask, .. } => {
            Tensor::f_internal_fused_sdp_choice(q, k, v, Some(mask), 0.0, false, None, false)
        }
    }
    .ctx("asking for the fused attention kernel")?;
    Ok(AttentionKernel::from_backend(code))
}

fn all_finite(t: &Tensor) -> Result<bool> {
    if !t.defined() {
        return Ok(true);
    }
    let all = t.f_isfinite().ctx("finite check")?.f_all().ctx("finite check")?;
    bool::try_from(&all).ctx("finite check")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_runs_with_finite_gradients_on_the_cpu() {
        for kind in [Kind::Float, Kind::BFloat16] {
            let checks = check_attention(Device::Cpu, kind, 64).unwrap();
            assert_eq!(checks.len(), 3);
            for check in &checks {
                assert!(check.finite, "{check}");
                assert_ne!(check.kernel, AttentionKernel::NoneApplies, "{check}");
            }
        }
    }
}
