//! The RoBERTa (post-LayerNorm BERT) encoder: per layer, bidirectional multi-head self-attention and a GELU
//! feed-forward block, each followed by a residual add and LayerNorm.

use tch::{Device, Kind, Tensor};

use super::config::RobertaConfig;
use crate::error::{Error, Result, TorchContext};
use crate::weights::SafetensorsFiles;

struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(ckpt: &SafetensorsFiles, prefix: &str, device: Device, kind: Kind) -> Result<Self> {
        Ok(Self {
            weight: ckpt.load(&format!("{prefix}.weight"), device, Some(kind))?,
            bias: ckpt.load(&format!("{prefix}.bias"), device, Some(kind))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
        xs.f_linear(&self.weight, Some(&self.bias))
    }
}

/// A LayerNorm over the last (hidden) dimension.
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(
        ckpt: &SafetensorsFiles,
        prefix: &str,
        eps: f64,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        Ok(Self {
            weight: ckpt.load(&format!("{prefix}.weight"), device, Some(kind))?,
            bias: ckpt.load(&format!("{prefix}.bias"), device, Some(kind))?,
            eps,
        })
    }

    fn forward(&self, xs: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
        let hidden = self.weight.size();
        xs.f_layer_norm(hidden.as_slice(), Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// The stack of encoder layers.
pub(crate) struct Encoder {
    layers: Vec<Layer>,
    heads: i64,
    head_dim: i64,
}

impl Encoder {
    pub(crate) fn load(
        ckpt: &SafetensorsFiles,
        cfg: &RobertaConfig,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("roberta.encoder.layer.{i}");
                Ok(Layer {
                    query: Linear::load(ckpt, &format!("{p}.attention.self.query"), device, kind)?,
                    key: Linear::load(ckpt, &format!("{p}.attention.self.key"), device, kind)?,
                    value: Linear::load(ckpt, &format!("{p}.attention.self.value"), device, kind)?,
                    attn_out: Linear::load(
                        ckpt,
                        &format!("{p}.attention.output.dense"),
                        device,
                        kind,
                    )?,
                    attn_norm: LayerNorm::load(
                        ckpt,
                        &format!("{p}.attention.output.LayerNorm"),
                        eps,
                        device,
                        kind,
                    )?,
                    intermediate: Linear::load(
                        ckpt,
                        &format!("{p}.intermediate.dense"),
                        device,
                        kind,
                    )?,
                    output: Linear::load(ckpt, &format!("{p}.output.dense"), device, kind)?,
                    out_norm: LayerNorm::load(
                        ckpt,
                        &format!("{p}.output.LayerNorm"),
                        eps,
                        device,
                        kind,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, heads: cfg.num_attention_heads, head_dim: cfg.head_dim() })
    }

    /// `xs` [b, s, hidden], `additive_mask` [b, 1, 1, s] (0 for keys to attend, the dtype's minimum for padding)
    /// -> [b, s, hidden].
    pub(crate) fn forward(&self, xs: &Tensor, additive_mask: &Tensor) -> Result<Tensor> {
        let mut xs = xs.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            xs = self
                .layer_forward(layer, &xs, additive_mask)
                .ctx(&format!("running encoder layer {i}"))?;
        }
        Ok(xs)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        xs: &Tensor,
        additive_mask: &Tensor,
    ) -> std::result::Result<Tensor, tch::TchError> {
        let (b, s) = (xs.size()[0], xs.size()[1]);
        let split_heads = |t: Tensor| {
            t.f_view([b, s, self.heads, self.head_dim]).and_then(|t| t.f_transpose(1, 2))
        };
        let q = split_heads(layer.query.forward(xs)?)?;
        let k = split_heads(layer.key.forward(xs)?)?;
        let v = split_heads(layer.value.forward(xs)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores =
            q.f_matmul(&k.f_transpose(-1, -2)?)?.f_mul_scalar(scale)?.f_add(additive_mask)?;
        // Softmax in fp32 so that half-precision runs do not lose the small probabilities.
        let probs = scores.f_softmax(-1, Kind::Float)?.f_to_kind(xs.kind())?;
        let context = probs.f_matmul(&v)?.f_transpose(1, 2)?.f_contiguous()?.f_view([b, s, -1])?;
        let attended = layer.attn_norm.forward(&layer.attn_out.forward(&context)?.f_add(xs)?)?;
        // Hugging Face's `gelu` is the exact, erf-based GELU.
        let inner = layer.intermediate.forward(&attended)?.f_gelu("none")?;
        layer.out_norm.forward(&layer.output.forward(&inner)?.f_add(&attended)?)
    }
}

/// The additive attention mask for right- (or left-) padded batches: 0 where `attention_mask` is 1, the most
/// negative finite value of `kind` where it is 0 (as Hugging Face does, so a row with no key left stays finite).
///
/// # Shapes
/// `attention_mask` [b, s] (any integer or bool kind) -> [b, 1, 1, s] of `kind`.
pub fn additive_attention_mask(attention_mask: &Tensor, kind: Kind) -> Result<Tensor> {
    let minimum = match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.3895313892515355e38,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    };
    let (b, s) = match attention_mask.size().as_slice() {
        &[b, s] => (b, s),
        other => {
            return Err(Error::BadShape {
                what: format!("attention_mask must be [batch, seq], got {other:?}"),
            })
        }
    };
    attention_mask
        .f_eq(0)
        .and_then(|pad| {
            Tensor::f_zeros([b, s], (kind, attention_mask.device()))?.f_masked_fill(&pad, minimum)
        })
        .and_then(|m| m.f_view([b, 1, 1, s]))
        .ctx("building the attention mask")
}
