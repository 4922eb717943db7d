//! Rotary position embeddings with the default, linear and Llama-3 frequency schedules.

use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

use crate::config::{Config, RopeScaling};
use crate::error::{Result, TorchContext};

/// Precomputed inverse frequencies of one model.
#[derive(Debug)]
pub(crate) struct Rope {
    inv_freq: Tensor,
}

impl Rope {
    /// Builds the inverse frequencies for `config` on `device` (always fp32, as transformers keeps them).
    pub fn new(config: &Config, device: Device) -> Result<Self> {
        let dim = config.head_dim as usize;
        let base = config.rope_theta;
        let mut inv: Vec<f32> =
            (0..dim).step_by(2).map(|i| (1.0 / base.powf(i as f64 / dim as f64)) as f32).collect();
        match &config.rope_scaling {
            RopeScaling::Default => {}
            RopeScaling::Linear { factor } => inv.iter_mut().for_each(|f| *f /= *factor as f32),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_len,
            } => {
                // Mirrors transformers' `_compute_llama3_parameters`, in fp32 like the reference.
                let (factor, low, high, old_len) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                    *old_len as f32,
                );
                let low_wavelen = old_len / low;
                let high_wavelen = old_len / high;
                for f in inv.iter_mut() {
                    let wavelen = 2.0 * PI as f32 / *f;
                    let scaled = if wavelen > low_wavelen { *f / factor } else { *f };
                    let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                    *f = if medium {
                        let smooth = (old_len / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
        }
        let inv_freq =
            Tensor::from_slice(&inv).f_to_device_(device, Kind::Float, false, false).ctx("rope")?;
        Ok(Self { inv_freq })
    }

    /// Cosine and sine tables for the given positions, cast to `kind`.
    ///
    /// # Shapes
    /// - `position_ids`: `[batch, seq]` int64
    /// - returns `(cos, sin)`, each `[batch, 1, seq, head_dim]`
    pub fn cos_sin(&self, position_ids: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
        let freqs = position_ids
            .f_to_kind(Kind::Float)
            .ctx("rope positions")?
            .f_unsqueeze(-1)
            .ctx("rope")?
            .f_mul(&self.inv_freq)
            .ctx("rope freqs")?;
        let emb = Tensor::f_cat(&[&freqs, &freqs], -1).ctx("rope cat")?;
        let cos =
            emb.f_cos().ctx("rope cos")?.f_to_kind(kind).ctx("rope")?.f_unsqueeze(1).ctx("rope")?;
        let sin =
            emb.f_sin().ctx("rope sin")?.f_to_kind(kind).ctx("rope")?.f_unsqueeze(1).ctx("rope")?;
        Ok((cos, sin))
    }
}

/// Rotates `xs` by the position tables.
///
/// # Shapes
/// - `xs`: `[batch, heads, seq, head_dim]`
/// - `cos`, `sin`: `[batch, 1, seq, head_dim]`
/// - returns the shape of `xs`
pub(crate) fn apply_rope(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = xs.size()[3] / 2;
    let x1 = xs.f_narrow(-1, 0, half).ctx("rope")?;
    let x2 = xs.f_narrow(-1, half, half).ctx("rope")?;
    let rotated = Tensor::f_cat(&[&x2.f_neg().ctx("rope")?, &x1], -1).ctx("rope")?;
    xs.f_mul(cos).ctx("rope")?.f_add(&rotated.f_mul(sin).ctx("rope")?).ctx("rope")
}
