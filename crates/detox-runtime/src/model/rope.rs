//! Rotary position embeddings with the default, linear, Llama-3 and LongRoPE frequency schedules, over all or
//! the leading part of each head, with a second table for Gemma-3's sliding-window layers.

use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

use crate::config::{Config, RopeScaling};
use crate::error::{Result, TorchContext};

/// Precomputed inverse frequencies of one model.
#[derive(Debug)]
pub(crate) struct Rope {
    global: RopeTable,
    /// Gemma-3's plain RoPE of sliding-window layers, with its own base.
    local: Option<RopeTable>,
}

/// The frequencies of one RoPE variant.
#[derive(Debug)]
struct RopeTable {
    /// `[rotary_dim / 2]` fp32.
    inv_freq: Tensor,
    /// LongRoPE: the frequencies used when a pass reaches past the pre-training context, and that context.
    long: Option<(Tensor, i64)>,
    /// The factor on the cosine and sine tables (LongRoPE's attention factor, else 1).
    scale: f64,
}

impl Rope {
    /// Builds the inverse frequencies for `config` on `device` (always fp32, as transformers keeps them).
    pub fn new(config: &Config, device: Device) -> Result<Self> {
        let dim = config.rotary_dim() as usize;
        let global = RopeTable::new(dim, config.rope_theta, &config.rope_scaling, device)?;
        let local = match config.local_rope_theta {
            Some(theta) => Some(RopeTable::new(dim, theta, &RopeScaling::Default, device)?),
            None => None,
        };
        Ok(Self { global, local })
    }

    /// Which of the tables [`Rope::cos_sin`] returns a layer with `window` uses.
    pub fn table_of(&self, window: Option<i64>) -> usize {
        usize::from(self.local.is_some() && window.is_some())
    }

    /// Cosine and sine tables for the given positions, cast to `kind`: the global table, then the local one
    /// where the model has one.
    ///
    /// # Shapes
    /// - `position_ids`: `[batch, seq]` int64
    /// - returns `(cos, sin)` pairs, each `[batch, 1, seq, rotary_dim]`
    pub fn cos_sin(&self, position_ids: &Tensor, kind: Kind) -> Result<Vec<(Tensor, Tensor)>> {
        let mut tables = vec![self.global.cos_sin(position_ids, kind)?];
        if let Some(local) = &self.local {
            tables.push(local.cos_sin(position_ids, kind)?);
        }
        Ok(tables)
    }
}

/// `1 / base^(i / dim)` for even `i < dim`, in fp64.
fn plain_inv_freq(dim: usize, base: f64) -> Vec<f64> {
    (0..dim).step_by(2).map(|i| 1.0 / base.powf(i as f64 / dim as f64)).collect()
}

fn to_tensor(inv: &[f32], device: Device) -> Result<Tensor> {
    Tensor::from_slice(inv).f_to_device_(device, Kind::Float, false, false).ctx("rope")
}

impl RopeTable {
    fn new(dim: usize, base: f64, scaling: &RopeScaling, device: Device) -> Result<Self> {
        let mut inv: Vec<f32> = plain_inv_freq(dim, base).into_iter().map(|f| f as f32).collect();
        let mut long = None;
        let mut scale = 1.0;
        match scaling {
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
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                let plain = plain_inv_freq(dim, base);
                let divided = |factors: &[f64]| -> Vec<f32> {
                    plain.iter().zip(factors).map(|(f, e)| (f / e) as f32).collect()
                };
                inv = divided(short_factor);
                long = Some((
                    to_tensor(&divided(long_factor), device)?,
                    *original_max_position_embeddings,
                ));
                scale = *attention_factor;
            }
        }
        Ok(Self { inv_freq: to_tensor(&inv, device)?, long, scale })
    }

    fn cos_sin(&self, position_ids: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
        let inv_freq = match &self.long {
            // transformers picks one set for the whole call: the long factors once its furthest position
            // is beyond the pre-training context. Reading that position is a device sync, paid by LongRoPE only.
            Some((long, original)) => {
                let furthest =
                    position_ids.f_max().ctx("rope positions")?.f_int64_value(&[]).ctx("rope")?;
                if furthest + 1 > *original {
                    long
                } else {
                    &self.inv_freq
                }
            }
            None => &self.inv_freq,
        };
        let freqs = position_ids
            .f_to_kind(Kind::Float)
            .ctx("rope positions")?
            .f_unsqueeze(-1)
            .ctx("rope")?
            .f_mul(inv_freq)
            .ctx("rope freqs")?;
        let emb = Tensor::f_cat(&[&freqs, &freqs], -1).ctx("rope cat")?;
        let (mut cos, mut sin) = (emb.f_cos().ctx("rope cos")?, emb.f_sin().ctx("rope sin")?);
        if self.scale != 1.0 {
            cos = cos.f_mul_scalar(self.scale).ctx("rope scale")?;
            sin = sin.f_mul_scalar(self.scale).ctx("rope scale")?;
        }
        let cos = cos.f_to_kind(kind).ctx("rope")?.f_unsqueeze(1).ctx("rope")?;
        let sin = sin.f_to_kind(kind).ctx("rope")?.f_unsqueeze(1).ctx("rope")?;
        Ok((cos, sin))
    }
}

/// Rotates the leading `cos.size(-1)` dimensions of each head by the position tables and passes the rest
/// through (Phi-3's partial rotary embeddings); the whole head when the tables are as wide as it.
///
/// # Shapes
/// - `xs`: `[batch, heads, seq, head_dim]`
/// - `cos`, `sin`: `[batch, 1, seq, rotary_dim]`, `rotary_dim <= head_dim`
/// - returns the shape of `xs`
pub(crate) fn apply_rope(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (width, rotary) = (xs.size()[3], cos.size()[3]);
    if rotary < width {
        let rotated = apply_rope(&xs.f_narrow(-1, 0, rotary).ctx("rope")?, cos, sin)?;
        let passed = xs.f_narrow(-1, rotary, width - rotary).ctx("rope")?;
        return Tensor::f_cat(&[&rotated, &passed], -1).ctx("rope");
    }
    let half = width / 2;
    let x1 = xs.f_narrow(-1, 0, half).ctx("rope")?;
    let x2 = xs.f_narrow(-1, half, half).ctx("rope")?;
    let rotated = Tensor::f_cat(&[&x2.f_neg().ctx("rope")?, &x1], -1).ctx("rope")?;
    xs.f_mul(cos).ctx("rope")?.f_add(&rotated.f_mul(sin).ctx("rope")?).ctx("rope")
}
