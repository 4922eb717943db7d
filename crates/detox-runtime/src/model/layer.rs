//! One decoder layer: pre-norm grouped-query self-attention and a SwiGLU MLP, each with a residual.

use tch::{Kind, Tensor};

use super::linear::linear;
use super::norm::rms_norm;
use super::params::{LowRank, ParamId, ParamStore};
use super::probe::LinearProbe;
use super::rope::apply_rope;
use crate::config::Config;
use crate::error::{Result, TorchContext};
use crate::kv_cache::KvCache;

/// Parameter ids of one decoder layer.
#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer {
    pub index: usize,
    pub input_norm: ParamId,
    pub q: (ParamId, Option<ParamId>),
    pub k: (ParamId, Option<ParamId>),
    pub v: (ParamId, Option<ParamId>),
    pub o: (ParamId, Option<ParamId>),
    pub post_norm: ParamId,
    pub gate: (ParamId, Option<ParamId>),
    pub up: (ParamId, Option<ParamId>),
    pub down: (ParamId, Option<ParamId>),
}

/// The projections of a layer by module name, in the order of [`DecoderLayer`]'s fields.
const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

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

impl DecoderLayer {
    /// The Hugging Face names of this layer's tensors for `config`.
    pub fn tensor_names(config: &Config, i: usize) -> Vec<String> {
        let p = format!("model.layers.{i}");
        let mut names = vec![
            format!("{p}.input_layernorm.weight"),
            format!("{p}.post_attention_layernorm.weight"),
        ];
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            names.push(format!("{p}.self_attn.{proj}.weight"));
            if has_attention_bias(config, proj) {
                names.push(format!("{p}.self_attn.{proj}.bias"));
            }
        }
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            names.push(format!("{p}.mlp.{proj}.weight"));
            if config.mlp_bias {
                names.push(format!("{p}.mlp.{proj}.bias"));
            }
        }
        names
    }

    /// Registers this layer's tensors (taken from `source`) in `store`.
    pub fn register(
        config: &Config,
        i: usize,
        store: &mut ParamStore,
        source: &mut std::collections::HashMap<String, Tensor>,
    ) -> Result<Self> {
        let p = format!("model.layers.{i}");
        let mut proj =
            |module: &str, name: &str, bias: bool| -> Result<(ParamId, Option<ParamId>)> {
                let w = store.take(source, &format!("{p}.{module}.{name}.weight"))?;
                let b = if bias {
                    Some(store.take(source, &format!("{p}.{module}.{name}.bias"))?)
                } else {
                    None
                };
                Ok((w, b))
            };
        let q = proj("self_attn", "q_proj", has_attention_bias(config, "q_proj"))?;
        let k = proj("self_attn", "k_proj", has_attention_bias(config, "k_proj"))?;
        let v = proj("self_attn", "v_proj", has_attention_bias(config, "v_proj"))?;
        let o = proj("self_attn", "o_proj", has_attention_bias(config, "o_proj"))?;
        let gate = proj("mlp", "gate_proj", config.mlp_bias)?;
        let up = proj("mlp", "up_proj", config.mlp_bias)?;
        let down = proj("mlp", "down_proj", config.mlp_bias)?;
        Ok(Self {
            index: i,
            input_norm: store.take(source, &format!("{p}.input_layernorm.weight"))?,
            post_norm: store.take(source, &format!("{p}.post_attention_layernorm.weight"))?,
            q,
            k,
            v,
            o,
            gate,
            up,
            down,
        })
    }

    /// The bias of the projection `module` (`self_attn.q_proj`, ..., `mlp.down_proj`): `None` for no such
    /// projection, `Some(None)` when it has no bias.
    pub fn bias(&self, module: &str) -> Option<Option<ParamId>> {
        let i = PROJECTIONS.iter().position(|m| *m == module)?;
        Some([&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down][i].1)
    }

    /// The bias slot of the projection `module` (see [`DecoderLayer::bias`]).
    pub fn bias_mut(&mut self, module: &str) -> Option<&mut Option<ParamId>> {
        let i = PROJECTIONS.iter().position(|m| *m == module)?;
        let all = [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ];
        all.into_iter().nth(i).map(|(_, bias)| bias)
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
        self.down_residual(store, &residual, &down_input, inputs.probe)
    }

    /// The residual stream after the attention block at positions `from..`: `xs + attention(norm(xs))` there.
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
        let normed = rms_norm(xs, store.get(self.input_norm), config.rms_norm_eps)?;
        let attn = self.attention_from(config, store, &normed, from, inputs, cache)?;
        kept_positions(xs, from)?.f_add(&attn).ctx("attention residual")
    }

    /// The input of the MLP's down-projection, `silu(gate(norm(residual))) * up(norm(residual))`: everything of
    /// the layer that does not depend on `down_proj`.
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
        let normed = rms_norm(residual, store.get(self.post_norm), config.rms_norm_eps)?;
        let gate = apply(store, self.gate, &normed, probe)?.f_silu().ctx("silu")?;
        let up = apply(store, self.up, &normed, probe)?;
        gate.f_mul(&up).ctx("gating")
    }

    /// The layer's output from its attention residual and its down-projection's input.
    ///
    /// # Shapes
    /// `residual`: `[batch, seq, hidden]`, `down_input`: `[batch, seq, intermediate]`, returns
    /// `[batch, seq, hidden]`.
    pub fn down_residual(
        &self,
        store: &ParamStore,
        residual: &Tensor,
        down_input: &Tensor,
        probe: Option<&LinearProbe>,
    ) -> Result<Tensor> {
        let mlp = apply(store, self.down, down_input, probe)?;
        residual.f_add(&mlp).ctx("mlp residual")
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
        let heads = |t: Tensor, len: i64, count: i64| -> Result<Tensor> {
            t.f_view([b, len, count, config.head_dim])
                .ctx("splitting heads")?
                .f_transpose(1, 2)
                .ctx("heads")
        };
        let queries = kept_positions(xs, from)?;
        let (cos_q, sin_q) = if from == 0 {
            (inputs.cos.shallow_clone(), inputs.sin.shallow_clone())
        } else {
            (
                inputs.cos.f_narrow(2, from, n).ctx("query positions")?,
                inputs.sin.f_narrow(2, from, n).ctx("query positions")?,
            )
        };
        let q =
            heads(apply(store, self.q, &queries, inputs.probe)?, n, config.num_attention_heads)?;
        let k = heads(apply(store, self.k, xs, inputs.probe)?, s, config.num_key_value_heads)?;
        let v = heads(apply(store, self.v, xs, inputs.probe)?, s, config.num_key_value_heads)?;
        let q = apply_rope(&q, &cos_q, &sin_q)?;
        let k = apply_rope(&k, inputs.cos, inputs.sin)?;
        let (k, v) = match cache {
            Some(cache) => cache.append(self.index, &k, &v)?,
            None => (k, v),
        };
        let out = attend(&q, &k, &v, inputs.mask, config.kv_groups())?;
        let out = out
            .f_transpose(1, 2)
            .ctx("merging heads")?
            .f_reshape([b, n, config.num_attention_heads * config.head_dim])
            .ctx("merging heads")?;
        apply(store, self.o, &out, inputs.probe)
    }
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
        crate::config::Architecture::Qwen2 => proj != "o_proj",
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
) -> Result<Tensor> {
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
        let out = sdpa(&folded, k, v, mask.as_ref(), false)?
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
        AttentionMask::Causal => sdpa(q, &k, &v, None, seq > 1),
        AttentionMask::Dense { mask, row_valid } => {
            zero_invalid_rows(&sdpa(q, &k, &v, Some(mask), false)?, row_valid)
        }
    }
}

fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, causal: bool) -> Result<Tensor> {
    Tensor::f_scaled_dot_product_attention(q, k, v, mask, 0.0, causal, None, false)
        .ctx("scaled dot-product attention")
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
            sdpa(&q, &repeat_kv(&k, 3).unwrap(), &repeat_kv(&v, 3).unwrap(), mask, false).unwrap()
        };
        let causal = attend(&q, &k, &v, &AttentionMask::Causal, 3).unwrap();
        assert_eq!(causal.size(), [2, 6, 1, 8]);
        assert!(causal.allclose(&plain(None), 1e-6, 1e-6, false));

        // The first row is left-padded by two keys.
        let key_valid =
            Tensor::from_slice(&[false, false, true, true, true, true, true, true, true, true])
                .view([2, 5]);
        let dense = attention_mask(&key_valid, 4, 1, None).unwrap();
        let AttentionMask::Dense { mask, .. } = &dense else { unreachable!() };
        let folded = attend(&q, &k, &v, &dense, 3).unwrap();
        assert!(folded.allclose(&plain(Some(mask)), 1e-6, 1e-6, false));
        assert!(!folded.allclose(&causal, 1e-3, 1e-3, false), "the mask changed nothing");
    }
}
