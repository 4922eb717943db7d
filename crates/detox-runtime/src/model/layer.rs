//! One decoder layer: grouped-query self-attention and a gated MLP, each with a residual, assembled from the
//! options of [`Config`] (norm kind and placement, q/k norms, fused projections, activation, attention scale and
//! soft-capping), as transformers' modular model files derive one family from another.

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::linear::linear;
use super::norm::norm;
use super::params::{LowRank, ParamId, ParamStore};
use super::probe::LinearProbe;
use super::rope::apply_rope;
use crate::config::{Activation, Architecture, Config, NormPlacement, QkNorm};
use crate::error::{Result, TorchContext};
use crate::kv_cache::KvCache;

/// A projection's weight and optional bias.
pub(crate) type Proj = (ParamId, Option<ParamId>);

/// The attention input projections: separate, or Phi-3's fused `qkv_proj` (query rows, then key, then value).
#[derive(Debug, Clone)]
pub(crate) enum QkvProj {
    Separate { q: Proj, k: Proj, v: Proj },
    Fused(Proj),
}

/// The MLP input projections: separate, or Phi-3's fused `gate_up_proj` (gate rows first).
#[derive(Debug, Clone)]
pub(crate) enum GateUpProj {
    Separate { gate: Proj, up: Proj },
    Fused(Proj),
}

/// The norms of a layer; which exist depends on [`NormPlacement`].
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerNorms {
    /// Before attention (`input_layernorm`).
    pub attn_pre: Option<ParamId>,
    /// After attention, before the residual (`post_attention_layernorm` of Gemma and OLMo-2).
    pub attn_post: Option<ParamId>,
    /// Before the MLP (Llama's `post_attention_layernorm`, Gemma's `pre_feedforward_layernorm`).
    pub mlp_pre: Option<ParamId>,
    /// After the MLP, before the residual (`post_feedforward_layernorm`).
    pub mlp_post: Option<ParamId>,
}

/// Parameter ids of one decoder layer.
#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer {
    pub index: usize,
    pub norms: LayerNorms,
    pub qkv: QkvProj,
    /// `self_attn.q_norm` and `self_attn.k_norm`.
    pub qk_norms: Option<(ParamId, ParamId)>,
    pub o: Proj,
    pub gate_up: GateUpProj,
    pub down: Proj,
}

/// What a layer needs besides its weights.
pub(crate) struct LayerInputs<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    /// Which keys each query may attend to.
    pub mask: &'a AttentionMask,
    /// Records gradient factors of chosen linear weights.
    pub probe: Option<&'a LinearProbe>,
}

/// How attention is restricted.
#[derive(Debug)]
pub(crate) enum AttentionMask {
    /// Plain causal attention over keys that are all valid (no padding, no window in reach): the fused kernel's
    /// own causal masking is used, or none at all for a single new query.
    Causal,
    /// An explicit mask.
    Dense {
        /// `[batch, 1, seq, kv_len]` boolean, true where a query may attend to a key.
        mask: Tensor,
        /// `[batch, 1, seq, 1]` boolean, false for query rows that may attend to nothing (left padding); their
        /// attention output is zero, as transformers' SDPA path produces.
        row_valid: Tensor,
    },
}

/// The Hugging Face names of a layer's norms for `placement`, in the order of [`LayerNorms`]' fields.
fn norm_names(placement: NormPlacement) -> [Option<&'static str>; 4] {
    match placement {
        NormPlacement::Pre => {
            [Some("input_layernorm"), None, Some("post_attention_layernorm"), None]
        }
        NormPlacement::Sandwich => [
            Some("input_layernorm"),
            Some("post_attention_layernorm"),
            Some("pre_feedforward_layernorm"),
            Some("post_feedforward_layernorm"),
        ],
        NormPlacement::Post => {
            [None, Some("post_attention_layernorm"), None, Some("post_feedforward_layernorm")]
        }
    }
}

/// The projections of a layer for `config` (module names under the layer), with whether each has a bias.
fn projections(config: &Config) -> Vec<(&'static str, bool)> {
    let mut out = Vec::with_capacity(7);
    if config.fused_projections {
        out.push(("self_attn.qkv_proj", has_attention_bias(config, "qkv_proj")));
    } else {
        for (module, proj) in [
            ("self_attn.q_proj", "q_proj"),
            ("self_attn.k_proj", "k_proj"),
            ("self_attn.v_proj", "v_proj"),
        ] {
            out.push((module, has_attention_bias(config, proj)));
        }
    }
    out.push(("self_attn.o_proj", has_attention_bias(config, "o_proj")));
    if config.fused_projections {
        out.push(("mlp.gate_up_proj", config.mlp_bias));
    } else {
        out.push(("mlp.gate_proj", config.mlp_bias));
        out.push(("mlp.up_proj", config.mlp_bias));
    }
    out.push(("mlp.down_proj", config.mlp_bias));
    out
}

impl DecoderLayer {
    /// The Hugging Face names of this layer's tensors for `config`.
    pub fn tensor_names(config: &Config, i: usize) -> Vec<String> {
        let p = format!("model.layers.{i}");
        let mut names: Vec<String> = norm_names(config.norm_placement)
            .into_iter()
            .flatten()
            .map(|n| format!("{p}.{n}.weight"))
            .collect();
        if config.qk_norm != QkNorm::None {
            names.push(format!("{p}.self_attn.q_norm.weight"));
            names.push(format!("{p}.self_attn.k_norm.weight"));
        }
        for (module, bias) in projections(config) {
            names.push(format!("{p}.{module}.weight"));
            if bias {
                names.push(format!("{p}.{module}.bias"));
            }
        }
        names
    }

    /// Registers this layer's tensors (taken from `source`) in `store`: the projections in the order of
    /// [`projections`] (q, k, v, o, gate, up, down for the unfused families, as before the other families were
    /// added), then the norms, then the q/k norms.
    pub fn register(
        config: &Config,
        i: usize,
        store: &mut ParamStore,
        source: &mut HashMap<String, Tensor>,
    ) -> Result<Self> {
        let p = format!("model.layers.{i}");
        let mut take = |module: &str, bias: bool| -> Result<Proj> {
            let w = store.take(source, &format!("{p}.{module}.weight"))?;
            let b =
                if bias { Some(store.take(source, &format!("{p}.{module}.bias"))?) } else { None };
            Ok((w, b))
        };
        let attn_bias = |proj: &str| has_attention_bias(config, proj);
        let qkv = if config.fused_projections {
            QkvProj::Fused(take("self_attn.qkv_proj", attn_bias("qkv_proj"))?)
        } else {
            QkvProj::Separate {
                q: take("self_attn.q_proj", attn_bias("q_proj"))?,
                k: take("self_attn.k_proj", attn_bias("k_proj"))?,
                v: take("self_attn.v_proj", attn_bias("v_proj"))?,
            }
        };
        let o = take("self_attn.o_proj", attn_bias("o_proj"))?;
        let gate_up = if config.fused_projections {
            GateUpProj::Fused(take("mlp.gate_up_proj", config.mlp_bias)?)
        } else {
            GateUpProj::Separate {
                gate: take("mlp.gate_proj", config.mlp_bias)?,
                up: take("mlp.up_proj", config.mlp_bias)?,
            }
        };
        let down = take("mlp.down_proj", config.mlp_bias)?;
        let mut norms = [None; 4];
        for (slot, name) in norms.iter_mut().zip(norm_names(config.norm_placement)) {
            if let Some(name) = name {
                *slot = Some(store.take(source, &format!("{p}.{name}.weight"))?);
            }
        }
        let [attn_pre, attn_post, mlp_pre, mlp_post] = norms;
        let qk_norms = match config.qk_norm {
            QkNorm::None => None,
            _ => Some((
                store.take(source, &format!("{p}.self_attn.q_norm.weight"))?,
                store.take(source, &format!("{p}.self_attn.k_norm.weight"))?,
            )),
        };
        Ok(Self {
            index: i,
            norms: LayerNorms { attn_pre, attn_post, mlp_pre, mlp_post },
            qkv,
            qk_norms,
            o,
            gate_up,
            down,
        })
    }

    /// The projection `module` (`self_attn.q_proj`, ..., `mlp.down_proj`, Phi-3's `self_attn.qkv_proj` and
    /// `mlp.gate_up_proj`), when the layer has it.
    fn projection(&self, module: &str) -> Option<&Proj> {
        match (module, &self.qkv, &self.gate_up) {
            ("self_attn.q_proj", QkvProj::Separate { q, .. }, _) => Some(q),
            ("self_attn.k_proj", QkvProj::Separate { k, .. }, _) => Some(k),
            ("self_attn.v_proj", QkvProj::Separate { v, .. }, _) => Some(v),
            ("self_attn.qkv_proj", QkvProj::Fused(qkv), _) => Some(qkv),
            ("self_attn.o_proj", _, _) => Some(&self.o),
            ("mlp.gate_proj", _, GateUpProj::Separate { gate, .. }) => Some(gate),
            ("mlp.up_proj", _, GateUpProj::Separate { up, .. }) => Some(up),
            ("mlp.gate_up_proj", _, GateUpProj::Fused(gate_up)) => Some(gate_up),
            ("mlp.down_proj", _, _) => Some(&self.down),
            _ => None,
        }
    }

    /// [`DecoderLayer::projection`], mutable.
    fn projection_mut(&mut self, module: &str) -> Option<&mut Proj> {
        match (module, &mut self.qkv, &mut self.gate_up) {
            ("self_attn.q_proj", QkvProj::Separate { q, .. }, _) => Some(q),
            ("self_attn.k_proj", QkvProj::Separate { k, .. }, _) => Some(k),
            ("self_attn.v_proj", QkvProj::Separate { v, .. }, _) => Some(v),
            ("self_attn.qkv_proj", QkvProj::Fused(qkv), _) => Some(qkv),
            ("self_attn.o_proj", _, _) => Some(&mut self.o),
            ("mlp.gate_proj", _, GateUpProj::Separate { gate, .. }) => Some(gate),
            ("mlp.up_proj", _, GateUpProj::Separate { up, .. }) => Some(up),
            ("mlp.gate_up_proj", _, GateUpProj::Fused(gate_up)) => Some(gate_up),
            ("mlp.down_proj", _, _) => Some(&mut self.down),
            _ => None,
        }
    }

    /// The bias of the projection `module`: `None` for no such projection, `Some(None)` when it has no bias.
    pub fn bias(&self, module: &str) -> Option<Option<ParamId>> {
        self.projection(module).map(|(_, b)| *b)
    }

    /// The bias slot of the projection `module` (see [`DecoderLayer::bias`]).
    pub fn bias_mut(&mut self, module: &str) -> Option<&mut Option<ParamId>> {
        self.projection_mut(module).map(|(_, bias)| bias)
    }

    /// Runs the layer.
    ///
    /// # Shapes
    /// - `xs`: `[batch, seq, hidden]`, returns the same.
    pub fn forward(
        &self,
        config: &Config,
        store: &ParamStore,
        xs: &Tensor,
        inputs: &LayerInputs<'_>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.forward_from(config, store, xs, 0, inputs, cache)
    }

    /// The layer's output at positions `from..` only: keys and values are computed for every position (the
    /// later positions attend to them), queries, the attention output and the MLP for the kept positions;
    /// `inputs.mask` covers those queries (`[batch, 1, seq - from, kv_len]`). `from = 0` is the whole layer.
    ///
    /// # Shapes
    /// `xs`: `[batch, seq, hidden]`; returns `[batch, seq - from, hidden]`.
    pub fn forward_from(
        &self,
        config: &Config,
        store: &ParamStore,
        xs: &Tensor,
        from: i64,
        inputs: &LayerInputs<'_>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let residual = self.attention_residual(config, store, xs, from, inputs, cache)?;
        let down_input = self.down_input(config, store, &residual, inputs.probe)?;
        self.down_residual(config, store, &residual, &down_input, inputs.probe)
    }

    /// `xs` through the norm `id`, or `xs` itself where the placement has no norm there.
    fn maybe_norm(
        config: &Config,
        store: &ParamStore,
        id: Option<ParamId>,
        xs: Tensor,
    ) -> Result<Tensor> {
        match id {
            Some(id) => norm(&xs, store.get(id), config.rms_norm_eps, config.norm_kind),
            None => Ok(xs),
        }
    }

    /// The residual stream after the attention block at positions `from..`: `xs + post(attention(pre(xs)))`
    /// there, `pre` and `post` the norms the placement has.
    ///
    /// # Shapes
    /// `xs`: `[batch, seq, hidden]`, returns `[batch, seq - from, hidden]`.
    pub fn attention_residual(
        &self,
        config: &Config,
        store: &ParamStore,
        xs: &Tensor,
        from: i64,
        inputs: &LayerInputs<'_>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let normed = Self::maybe_norm(config, store, self.norms.attn_pre, xs.shallow_clone())?;
        let attn = self.attention_from(config, store, &normed, from, inputs, cache)?;
        let attn = Self::maybe_norm(config, store, self.norms.attn_post, attn)?;
        kept_positions(xs, from)?.f_add(&attn).ctx("attention residual")
    }

    /// The input of the MLP's down-projection, `act(gate(pre(residual))) * up(pre(residual))`: everything of the
    /// layer that does not depend on `down_proj`.
    ///
    /// # Shapes
    /// `residual`: `[batch, seq, hidden]`, returns `[batch, seq, intermediate]`.
    pub fn down_input(
        &self,
        config: &Config,
        store: &ParamStore,
        residual: &Tensor,
        probe: Option<&LinearProbe>,
    ) -> Result<Tensor> {
        let normed = Self::maybe_norm(config, store, self.norms.mlp_pre, residual.shallow_clone())?;
        let (gate, up) = match self.gate_up {
            GateUpProj::Separate { gate, up } => {
                (apply(store, gate, &normed, probe)?, apply(store, up, &normed, probe)?)
            }
            GateUpProj::Fused(gate_up) => {
                let both = apply(store, gate_up, &normed, probe)?;
                let i = config.intermediate_size;
                (both.f_narrow(-1, 0, i).ctx("gate")?, both.f_narrow(-1, i, i).ctx("up")?)
            }
        };
        let gate = match config.hidden_act {
            Activation::Silu => gate.f_silu().ctx("silu")?,
            Activation::GeluTanh => gate.f_gelu("tanh").ctx("gelu")?,
        };
        gate.f_mul(&up).ctx("gating")
    }

    /// The layer's output from its attention residual and its down-projection's input: `residual +
    /// post(down(down_input))`, `post` Gemma's and OLMo-2's norm after the MLP.
    ///
    /// # Shapes
    /// `residual`: `[batch, seq, hidden]`, `down_input`: `[batch, seq, intermediate]`, returns
    /// `[batch, seq, hidden]`.
    pub fn down_residual(
        &self,
        config: &Config,
        store: &ParamStore,
        residual: &Tensor,
        down_input: &Tensor,
        probe: Option<&LinearProbe>,
    ) -> Result<Tensor> {
        let mlp = apply(store, self.down, down_input, probe)?;
        let mlp = Self::maybe_norm(config, store, self.norms.mlp_post, mlp)?;
        residual.f_add(&mlp).ctx("mlp residual")
    }

    /// The queries of positions `from..` and the keys and values of every position, split into heads and
    /// normalised as the family does, before RoPE.
    ///
    /// # Shapes
    /// `xs`: `[batch, seq, hidden]`; returns `q [batch, heads, seq - from, head_dim]`, `k`, `v` `[batch, kv_heads,
    /// seq, head_dim]`.
    fn qkv(
        &self,
        config: &Config,
        store: &ParamStore,
        xs: &Tensor,
        from: i64,
        probe: Option<&LinearProbe>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (q_width, kv_width) = (
            config.num_attention_heads * config.head_dim,
            config.num_key_value_heads * config.head_dim,
        );
        let (q, k, v) = match self.qkv {
            QkvProj::Separate { q, k, v } => (
                apply(store, q, &kept_positions(xs, from)?, probe)?,
                apply(store, k, xs, probe)?,
                apply(store, v, xs, probe)?,
            ),
            QkvProj::Fused(qkv) => {
                let all = apply(store, qkv, xs, probe)?;
                (
                    kept_positions(&all.f_narrow(-1, 0, q_width).ctx("q")?, from)?,
                    all.f_narrow(-1, q_width, kv_width).ctx("k")?,
                    all.f_narrow(-1, q_width + kv_width, kv_width).ctx("v")?,
                )
            }
        };
        let (q, k) = match (config.qk_norm, self.qk_norms) {
            (QkNorm::Whole, Some((qn, kn))) => (
                norm(&q, store.get(qn), config.rms_norm_eps, config.norm_kind)?,
                norm(&k, store.get(kn), config.rms_norm_eps, config.norm_kind)?,
            ),
            _ => (q, k),
        };
        let heads = |t: &Tensor, count: i64| -> Result<Tensor> {
            let size = t.size();
            t.f_view([size[0], size[1], count, config.head_dim])
                .ctx("splitting heads")?
                .f_transpose(1, 2)
                .ctx("heads")
        };
        let (q, k, v) = (
            heads(&q, config.num_attention_heads)?,
            heads(&k, config.num_key_value_heads)?,
            heads(&v, config.num_key_value_heads)?,
        );
        Ok(match (config.qk_norm, self.qk_norms) {
            (QkNorm::PerHead, Some((qn, kn))) => (
                norm(&q, store.get(qn), config.rms_norm_eps, config.norm_kind)?,
                norm(&k, store.get(kn), config.rms_norm_eps, config.norm_kind)?,
                v,
            ),
            _ => (q, k, v),
        })
    }

    /// Attention of the queries at positions `from..` over the keys and values of every position; `inputs`
    /// holds the rotary tables of every position and the mask of those queries (`[batch, 1, seq - from,
    /// kv_len]`).
    ///
    /// # Shapes
    /// - `xs`: `[batch, seq, hidden]` (normed); returns `[batch, seq - from, hidden]`
    fn attention_from(
        &self,
        config: &Config,
        store: &ParamStore,
        xs: &Tensor,
        from: i64,
        inputs: &LayerInputs<'_>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, s) = (xs.size()[0], xs.size()[1]);
        let n = s - from;
        let (cos_q, sin_q) = if from == 0 {
            (inputs.cos.shallow_clone(), inputs.sin.shallow_clone())
        } else {
            (
                inputs.cos.f_narrow(2, from, n).ctx("query positions")?,
                inputs.sin.f_narrow(2, from, n).ctx("query positions")?,
            )
        };
        let (q, k, v) = self.qkv(config, store, xs, from, inputs.probe)?;
        let q = apply_rope(&q, &cos_q, &sin_q)?;
        let k = apply_rope(&k, inputs.cos, inputs.sin)?;
        let (k, v) = match cache {
            Some(cache) => cache.append(self.index, &k, &v)?,
            None => (k, v),
        };
        let scoring = Scoring {
            scale: config.query_pre_attn_scalar.map(|s| s.powf(-0.5)),
            softcap: config.attn_logit_softcapping,
        };
        let out = attend(&q, &k, &v, inputs.mask, config.kv_groups(), scoring)?;
        let out = out
            .f_transpose(1, 2)
            .ctx("merging heads")?
            .f_reshape([b, n, config.num_attention_heads * config.head_dim])
            .ctx("merging heads")?;
        apply(store, self.o, &out, inputs.probe)
    }
}

/// How attention scores are formed: the scale on `q · kᵀ` (`None`: `head_dim ** -0.5`) and Gemma-2's
/// soft-capping of the scores.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scoring {
    pub scale: Option<f64>,
    pub softcap: Option<f64>,
}

/// Positions `from..` of `xs` (`[batch, seq, width]`): `xs` itself when `from` is 0.
pub(crate) fn kept_positions(xs: &Tensor, from: i64) -> Result<Tensor> {
    if from == 0 {
        return Ok(xs.shallow_clone());
    }
    xs.f_narrow(1, from, xs.size()[1] - from).ctx("kept positions")
}

fn has_attention_bias(config: &Config, proj: &str) -> bool {
    match config.architecture {
        // Qwen2 puts biases on q/k/v only.
        Architecture::Qwen2 => proj != "o_proj",
        // Phi-3's projections never carry biases.
        Architecture::Phi3 => false,
        _ => config.attention_bias,
    }
}

fn apply(
    store: &ParamStore,
    (w, b): (ParamId, Option<ParamId>),
    xs: &Tensor,
    probe: Option<&LinearProbe>,
) -> Result<Tensor> {
    let mut ys = linear(xs, store.get(w), b.map(|b| store.get(b)))?;
    if let Some(path) = store.low_rank(w) {
        ys = add_low_rank(xs, &ys, path)?;
    }
    match probe {
        Some(p) if p.wants(store.name(w)) => p.record(store.name(w), xs, ys),
        _ => Ok(ys),
    }
}

/// `ys + scale · (xs Aᵀ) Bᵀ`, the side path in `A`'s dtype, the sum in fp32, the result in `ys`'s dtype.
///
/// # Shapes
/// `xs`: `[batch, seq, in]`, `ys`: `[batch, seq, out]`, `A`: `[rank, in]`, `B`: `[out, rank]`.
fn add_low_rank(xs: &Tensor, ys: &Tensor, path: &LowRank) -> Result<Tensor> {
    let side = xs
        .f_to_kind(path.a.kind())
        .ctx("low-rank input")?
        .f_linear(&path.a, None::<&Tensor>)
        .ctx("low-rank A")?
        .f_linear(&path.b, None::<&Tensor>)
        .ctx("low-rank B")?
        .f_mul_scalar(path.scale)
        .ctx("low-rank scale")?;
    ys.f_to_kind(Kind::Float)
        .ctx("low-rank sum")?
        .f_add(&side)
        .ctx("low-rank sum")?
        .f_to_kind(ys.kind())
        .ctx("low-rank sum")
}

/// Grouped-query attention of `q` over the shared key/value heads.
///
/// A single new query (a decode step) is folded into its key/value head: the `groups` query heads that share a
/// key/value head become `groups` queries of it, so the cache is read in place instead of copied `groups` times
/// on every step. Longer inputs (prefill, training) repeat the keys and values once, which keeps the fused
/// kernel's own causal masking.
///
/// # Shapes
/// - `q`: `[batch, kv_heads * groups, seq, head_dim]`; `k`, `v`: `[batch, kv_heads, kv_len, head_dim]`
/// - returns `[batch, kv_heads * groups, seq, head_dim]`
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    groups: i64,
    scoring: Scoring,
) -> Result<Tensor> {
    if let Some(cap) = scoring.softcap {
        return attend_capped(q, k, v, mask, groups, scoring.scale, cap);
    }
    let scale = scoring.scale;
    let size = q.size();
    let (b, heads, seq, d) = (size[0], size[1], size[2], size[3]);
    if groups > 1 && seq == 1 {
        let folded = q.f_reshape([b, heads / groups, groups, d]).ctx("folding query groups")?;
        let (mask, row_valid) = match mask {
            AttentionMask::Causal => (None, None),
            AttentionMask::Dense { mask, row_valid } => {
                let kv_len = mask.size()[3];
                let mask = mask.f_expand([b, 1, groups, kv_len], false).ctx("folding the mask")?;
                (Some(mask), Some(row_valid))
            }
        };
        let out = sdpa(&folded, k, v, mask.as_ref(), false, scale)?
            .f_reshape([b, heads, 1, d])
            .ctx("unfolding query groups")?;
        return match row_valid {
            Some(row_valid) => zero_invalid_rows(&out, row_valid),
            None => Ok(out),
        };
    }
    let (k, v) = if groups > 1 {
        (repeat_kv(k, groups)?, repeat_kv(v, groups)?)
    } else {
        (k.shallow_clone(), v.shallow_clone())
    };
    match mask {
        AttentionMask::Causal => sdpa(q, &k, &v, None, seq > 1, scale),
        AttentionMask::Dense { mask, row_valid } => {
            zero_invalid_rows(&sdpa(q, &k, &v, Some(mask), false, scale)?, row_valid)
        }
    }
}

fn sdpa(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: Option<f64>,
) -> Result<Tensor> {
    Tensor::f_scaled_dot_product_attention(q, k, v, mask, 0.0, causal, scale, false)
        .ctx("scaled dot-product attention")
}

/// Attention with Gemma-2's soft-capped scores, `cap · tanh(scale · q · kᵀ / cap)`, which no fused kernel
/// computes: the scores are formed explicitly, masked, and normalised in fp32 as transformers' eager path does.
/// Query rows that may attend to nothing (left padding) give zeros, as on the fused path.
///
/// # Shapes
/// As [`attend`].
fn attend_capped(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    groups: i64,
    scale: Option<f64>,
    cap: f64,
) -> Result<Tensor> {
    let (seq, d) = (q.size()[2], q.size()[3]);
    let (k, v) = if groups > 1 {
        (repeat_kv(k, groups)?, repeat_kv(v, groups)?)
    } else {
        (k.shallow_clone(), v.shallow_clone())
    };
    let kv_len = k.size()[2];
    let scale = scale.unwrap_or((d as f64).powf(-0.5));
    let scores = q
        .f_matmul(&k.f_transpose(2, 3).ctx("attention scores")?)
        .ctx("attention scores")?
        .f_mul_scalar(scale)
        .ctx("attention scale")?
        .f_div_scalar(cap)
        .ctx("soft-capping")?
        .f_tanh()
        .ctx("soft-capping")?
        .f_mul_scalar(cap)
        .ctx("soft-capping")?;
    let (allowed, row_valid) = match mask {
        // The causal case has no cache before the queries, or a single query that sees every key.
        AttentionMask::Causal if seq > 1 => {
            let ones =
                Tensor::f_ones([seq, kv_len], (Kind::Bool, q.device())).ctx("causal mask")?;
            (Some(ones.f_tril(kv_len - seq).ctx("causal mask")?), None)
        }
        AttentionMask::Causal => (None, None),
        AttentionMask::Dense { mask, row_valid } => (Some(mask.shallow_clone()), Some(row_valid)),
    };
    let scores = match allowed {
        Some(allowed) => scores
            .f_masked_fill(&allowed.f_logical_not().ctx("attention mask")?, f64::NEG_INFINITY)
            .ctx("attention mask")?,
        None => scores,
    };
    let weights = scores
        .f_softmax(-1, Kind::Float)
        .ctx("attention softmax")?
        .f_to_kind(q.kind())
        .ctx("attention")?;
    let out = weights.f_matmul(&v).ctx("attention values")?;
    match row_valid {
        Some(row_valid) => zero_invalid_rows(&out, row_valid),
        None => Ok(out),
    }
}

/// Zeroes the output of query rows that may attend to nothing (left padding), as transformers' SDPA path does.
fn zero_invalid_rows(out: &Tensor, row_valid: &Tensor) -> Result<Tensor> {
    let zeros = Tensor::f_zeros([1], (out.kind(), out.device())).ctx("zeros")?;
    out.f_where_self(row_valid, &zeros).ctx("zeroing padded queries")
}

/// Repeats each key/value head `groups` times so that grouped-query attention becomes plain attention.
///
/// # Shapes
/// `[batch, kv_heads, seq, head_dim]` -> `[batch, kv_heads * groups, seq, head_dim]`
fn repeat_kv(xs: &Tensor, groups: i64) -> Result<Tensor> {
    let size = xs.size();
    let (b, h, s, d) = (size[0], size[1], size[2], size[3]);
    xs.f_unsqueeze(2)
        .ctx("repeat_kv")?
        .f_expand([b, h, groups, s, d], false)
        .ctx("repeat_kv")?
        .f_reshape([b, h * groups, s, d])
        .ctx("repeat_kv")
}

/// Boolean attention mask: causal, optionally windowed, and restricted to valid keys.
///
/// # Shapes
/// - `key_valid`: `[batch, kv_len]` bool
/// - returns `(mask [batch, 1, seq, kv_len], row_valid [batch, 1, seq, 1])`, both bool; rows that would see no key
///   are opened on their own position so attention stays finite (their output is discarded through `row_valid`).
pub(crate) fn attention_mask(
    key_valid: &Tensor,
    past: i64,
    seq: i64,
    window: Option<i64>,
) -> Result<AttentionMask> {
    let device = key_valid.device();
    let kv_len = key_valid.size()[1];
    let q_pos = Tensor::f_arange_start(past, past + seq, (Kind::Int64, device))
        .ctx("mask")?
        .f_view([seq, 1])
        .ctx("mask")?;
    let k_pos = Tensor::f_arange(kv_len, (Kind::Int64, device))
        .ctx("mask")?
        .f_view([1, kv_len])
        .ctx("mask")?;
    let mut allowed = k_pos.f_le_tensor(&q_pos).ctx("causal mask")?;
    if let Some(w) = window {
        let inside = k_pos.f_gt_tensor(&q_pos.f_sub_scalar(w).ctx("window")?).ctx("window mask")?;
        allowed = allowed.f_logical_and(&inside).ctx("window mask")?;
    }
    let keys = key_valid.f_unsqueeze(1).ctx("mask")?.f_unsqueeze(1).ctx("mask")?;
    let mask = allowed
        .f_unsqueeze(0)
        .ctx("mask")?
        .f_unsqueeze(0)
        .ctx("mask")?
        .f_logical_and(&keys)
        .ctx("mask")?;
    let row_valid = mask.f_any_dim(-1, true).ctx("mask rows")?;
    let own = k_pos
        .f_eq_tensor(&q_pos)
        .ctx("mask")?
        .f_unsqueeze(0)
        .ctx("mask")?
        .f_unsqueeze(0)
        .ctx("mask")?;
    let mask = mask
        .f_logical_or(&own.f_logical_and(&row_valid.f_logical_not().ctx("mask")?).ctx("mask")?)
        .ctx("mask")?;
    Ok(AttentionMask::Dense { mask, row_valid })
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    /// The folded decode step against plain attention over keys and values repeated per query head.
    #[test]
    fn a_folded_decode_step_equals_attention_over_repeated_heads() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let q = Tensor::randn([2, 6, 1, 8], opts);
        let k = Tensor::randn([2, 2, 5, 8], opts);
        let v = Tensor::randn([2, 2, 5, 8], opts);
        let plain = |mask: Option<&Tensor>| {
            sdpa(&q, &repeat_kv(&k, 3).unwrap(), &repeat_kv(&v, 3).unwrap(), mask, false, None)
                .unwrap()
        };
        let causal = attend(&q, &k, &v, &AttentionMask::Causal, 3, Scoring::default()).unwrap();
        assert_eq!(causal.size(), [2, 6, 1, 8]);
        assert!(causal.allclose(&plain(None), 1e-6, 1e-6, false));

        // The first row is left-padded by two keys.
        let key_valid =
            Tensor::from_slice(&[false, false, true, true, true, true, true, true, true, true])
                .view([2, 5]);
        let dense = attention_mask(&key_valid, 4, 1, None).unwrap();
        let AttentionMask::Dense { mask, .. } = &dense else { unreachable!() };
        let folded = attend(&q, &k, &v, &dense, 3, Scoring::default()).unwrap();
        assert!(folded.allclose(&plain(Some(mask)), 1e-6, 1e-6, false));
        assert!(!folded.allclose(&causal, 1e-3, 1e-3, false), "the mask changed nothing");
    }
}
