//! The decoder-only causal language model (Llama, Mistral, Qwen2, Qwen3, Gemma-2, Gemma-3, Phi-3 and OLMo-2
//! families), one decoder whose options ([`Config`]) cover the differences between them.
//!
//! Parameters are kept under their Hugging Face names, so an editor can read, replace, snapshot and restore any of
//! them (for example `model.layers.{i}.mlp.down_proj.weight`), and every linear weight may also be given per batch
//! row or per group of rows (`[k, out, in]`) so that a batch can carry independent edits of the same layer.

pub mod attention_check;
mod device_map;
mod layer;
mod linear;
mod norm;
mod params;
mod probe;
mod random;
mod resume;
mod rope;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use tch::{Device, Kind, Tensor};

pub use device_map::{DeviceMap, PartSizes};
pub use params::{LowRank, Snapshot};
pub use probe::{GradientFactors, LinearProbe};
pub use resume::{FrozenPrefix, ResumePoint};
pub(crate) use rope::Rope;

use crate::config::{Config, QkNorm};
use crate::error::{Error, Result, TorchContext};
use crate::kv_cache::KvCache;
use crate::weights::SafetensorsFiles;
use layer::{attention_mask, AttentionMask, DecoderLayer, LayerInputs};
use norm::norm;
use params::{deep_copy, ParamId, ParamStore};

/// How position ids are derived for a forward pass.
#[derive(Debug, Clone, Copy, Default)]
pub enum PositionIds<'a> {
    /// `0, 1, 2, ...` for every row, padding included: what a plain transformers `model(input_ids,
    /// attention_mask)` call uses.
    #[default]
    Sequential,
    /// `cumsum(mask) - 1`, with padding positions set to 0: what transformers' `generate` uses, so that
    /// left-padded rows start at position 0 on their first real token.
    FromMask,
    /// Given explicitly, `[batch, seq]` int64.
    Explicit(&'a Tensor),
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogitsSelection {
    /// Every position: `[batch, seq, vocab]`.
    #[default]
    All,
    /// The last position only: `[batch, 1, vocab]` (decoding).
    Last,
    /// The `len` positions from `start`: `[batch, len, vocab]` (scoring a known continuation, where the output
    /// projection over the other positions would be wasted).
    Window {
        /// First position.
        start: i64,
        /// Number of positions.
        len: i64,
    },
}

/// Options of [`CausalLm::forward`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardOptions<'a> {
    /// `[batch, seq]` (or `[batch, past + seq]` with a cache), 1 for tokens and 0 for padding (left padding).
    /// `None` means every position is a token.
    pub attention_mask: Option<&'a Tensor>,
    /// Return the hidden states of every layer.
    pub output_hidden_states: bool,
    /// Position ids.
    pub position_ids: PositionIds<'a>,
    /// Which positions get logits.
    pub logits: LogitsSelection,
    /// Records the gradient factors of chosen linear weights (see [`LinearProbe`]).
    pub probe: Option<&'a LinearProbe>,
}

/// The result of a forward pass.
#[derive(Debug)]
#[non_exhaustive]
pub struct ForwardOutput {
    /// `[batch, seq, vocab]` (or `[batch, 1, vocab]` with [`LogitsSelection::Last`]), in the model dtype.
    pub logits: Tensor,
    /// With `output_hidden_states`: `num_hidden_layers + 1` tensors of `[batch, seq, hidden]`, as transformers
    /// returns them: the embedding output first, then the output of each layer, the last one after the final norm.
    pub hidden_states: Option<Vec<Tensor>>,
    /// With `output_hidden_states`: the last decoder layer's own output before the final norm, `[batch, seq,
    /// hidden]` (what `hidden_states` holds for every other layer).
    pub last_layer_output: Option<Tensor>,
}

impl ForwardOutput {
    /// The raw output of decoder layer `layer` (the residual stream after it, before any final norm), when the
    /// pass returned hidden states.
    ///
    /// # Shapes
    /// `[batch, seq, hidden]` in the model dtype.
    pub fn layer_output(&self, layer: usize) -> Option<&Tensor> {
        let hidden = self.hidden_states.as_ref()?;
        if layer + 2 == hidden.len() {
            self.last_layer_output.as_ref()
        } else {
            hidden.get(layer + 1)
        }
    }
}

/// A decoder-only causal language model, on one device or placed over several (see [`DeviceMap`]).
#[derive(Debug)]
pub struct CausalLm {
    config: Config,
    params: ParamStore,
    embed: ParamId,
    layers: Vec<DecoderLayer>,
    norm: ParamId,
    lm_head: ParamId,
    rope: Rope,
    device: Device,
    map: DeviceMap,
    kind: Kind,
    /// Projection biases attached at run time (see [`CausalLm::attach_bias`]).
    attached: BTreeSet<String>,
}

/// Checkpoint entries that carry no parameters: rotary tables that older checkpoints stored and the runtime
/// recomputes from the configuration.
fn is_derived_buffer(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

impl CausalLm {
    /// Loads a Hugging Face model directory (`config.json` and safetensors, single or sharded) onto `device` in
    /// `kind`, tensor by tensor.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Self> {
        let dir = dir.as_ref();
        let config = Config::from_file(dir.join("config.json"))?;
        let map = DeviceMap::single(device, config.num_hidden_layers);
        Self::load_config_mapped(dir, config, &map, kind)
    }

    /// Loads a Hugging Face model directory with its parts placed as `map` says (a model larger than one GPU);
    /// each tensor goes straight to its device.
    ///
    /// Inputs are taken and outputs (logits, hidden states) returned on `map.embed`, which is what
    /// [`CausalLm::device`] reports; parameters live on their own devices ([`CausalLm::parameter_device`]).
    pub fn load_mapped(dir: impl AsRef<Path>, map: &DeviceMap, kind: Kind) -> Result<Self> {
        let dir = dir.as_ref();
        let config = Config::from_file(dir.join("config.json"))?;
        Self::load_config_mapped(dir, config, map, kind)
    }

    fn load_config_mapped(dir: &Path, config: Config, map: &DeviceMap, kind: Kind) -> Result<Self> {
        map.check(&config)?;
        let files = SafetensorsFiles::open_dir(dir)?;
        // The runtime's name of each stored tensor the language model uses, with the name it is stored under.
        let stored: HashMap<String, String> = files
            .names()
            .filter_map(|name| Some((runtime_name(&config, name)?, name.to_string())))
            .collect();
        let expected = check_names(&config, stored.keys().map(String::as_str))?;
        let mut tensors = HashMap::with_capacity(expected.len());
        for name in expected {
            let t = files.load(&stored[&name], map.device_of(&name), Some(kind))?;
            tensors.insert(name, t);
        }
        Self::build(config, tensors, map.clone(), kind).map_err(|e| match e {
            Error::NonFiniteWeights { name, count, .. } => {
                Error::NonFiniteWeights { origin: dir.display().to_string(), name, count }
            }
            other => other,
        })
    }

    /// Builds a model from tensors with Hugging Face names (for importers and tests), moving them to `device`
    /// and `kind`. The set of names is checked as strictly as [`CausalLm::load`] does.
    pub fn from_tensors(
        config: Config,
        tensors: HashMap<String, Tensor>,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        let map = DeviceMap::single(device, config.num_hidden_layers);
        Self::from_tensors_mapped(config, tensors, &map, kind)
    }

    /// [`CausalLm::from_tensors`] with the parts placed as `map` says.
    pub fn from_tensors_mapped(
        config: Config,
        tensors: HashMap<String, Tensor>,
        map: &DeviceMap,
        kind: Kind,
    ) -> Result<Self> {
        map.check(&config)?;
        let expected = check_names(&config, tensors.keys().map(String::as_str))?;
        let mut moved = HashMap::with_capacity(expected.len());
        for (name, t) in tensors {
            if expected.contains(&name) {
                let t = t
                    .f_to_device_(map.device_of(&name), kind, false, false)
                    .ctx(&format!("moving `{name}`"))?;
                moved.insert(name, t);
            }
        }
        Self::build(config, moved, map.clone(), kind)
    }

    fn build(
        config: Config,
        mut tensors: HashMap<String, Tensor>,
        map: DeviceMap,
        kind: Kind,
    ) -> Result<Self> {
        let device = map.embed;
        let mut params = ParamStore::default();
        let embed = params.take(&mut tensors, "model.embed_tokens.weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::register(&config, i, &mut params, &mut tensors))
            .collect::<Result<Vec<_>>>()?;
        let norm = params.take(&mut tensors, "model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            embed
        } else {
            params.take(&mut tensors, "lm_head.weight")?
        };
        let model = Self {
            rope: Rope::new(&config, device)?,
            config,
            params,
            embed,
            layers,
            norm,
            lm_head,
            device,
            map,
            kind,
            attached: BTreeSet::new(),
        };
        model.check_shapes()?;
        model.check_finite()?;
        Ok(model)
    }

    /// Refuses weights holding NaN or infinite values, naming the first such tensor: one reduction per tensor
    /// at load, so that a damaged checkpoint fails here instead of producing NaN logits and empty responses.
    fn check_finite(&self) -> Result<()> {
        for (name, t) in self.params.iter() {
            if !t.is_floating_point() {
                continue;
            }
            let finite = t.f_isfinite().and_then(|f| f.f_all()).ctx("checking the weights")?;
            if finite.f_int64_value(&[]).ctx("checking the weights")? == 0 {
                let count = t
                    .f_isfinite()
                    .and_then(|f| f.f_logical_not())
                    .and_then(|f| f.f_sum(Kind::Int64))
                    .and_then(|n| n.f_int64_value(&[]))
                    .ctx("checking the weights")?;
                return Err(Error::NonFiniteWeights {
                    origin: "<in memory>".into(),
                    name: name.to_string(),
                    count,
                });
            }
        }
        Ok(())
    }

    fn check_shapes(&self) -> Result<()> {
        let c = &self.config;
        let (h, q, kv, i) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
            c.intermediate_size,
        );
        for (name, t) in self.params.iter() {
            // A projection's weight is `[out, in]`, its bias `[out]`.
            let linear = |out: i64, inp: i64| {
                if name.ends_with("bias") {
                    vec![out]
                } else {
                    vec![out, inp]
                }
            };
            let expected: Vec<i64> = match name.rsplit_once('.').map(|(m, _)| m).unwrap_or(name) {
                "model.embed_tokens" | "lm_head" => vec![c.vocab_size, h],
                "model.norm" => vec![h],
                m if m.ends_with("layernorm") => vec![h],
                m if m.ends_with("q_norm") => match c.qk_norm {
                    QkNorm::Whole => vec![q],
                    _ => vec![c.head_dim],
                },
                m if m.ends_with("k_norm") => match c.qk_norm {
                    QkNorm::Whole => vec![kv],
                    _ => vec![c.head_dim],
                },
                m if m.ends_with("qkv_proj") => linear(q + 2 * kv, h),
                m if m.ends_with("gate_up_proj") => linear(2 * i, h),
                m if m.ends_with("q_proj") => linear(q, h),
                m if m.ends_with("k_proj") || m.ends_with("v_proj") => linear(kv, h),
                m if m.ends_with("o_proj") => linear(h, q),
                m if m.ends_with("gate_proj") || m.ends_with("up_proj") => linear(i, h),
                m if m.ends_with("down_proj") => linear(h, i),
                _ => continue,
            };
            if t.size() != expected {
                return Err(Error::ShapeMismatch {
                    name: name.to_string(),
                    expected,
                    actual: t.size(),
                });
            }
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device inputs are taken and outputs returned on; with a single-device model, where every parameter
    /// lives.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Where each part of the model lives.
    pub fn device_map(&self) -> &DeviceMap {
        &self.map
    }

    /// The device of the parameter called `name`.
    pub fn parameter_device(&self, name: &str) -> Result<Device> {
        Ok(self.parameter(name)?.device())
    }

    /// The dtype the model computes in.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Every parameter name, in checkpoint order (`lm_head.weight` is absent when tied to the embedding).
    pub fn parameter_names(&self) -> &[String] {
        self.params.names()
    }

    /// The slot of the parameter `name`; a projection a fused checkpoint keeps inside another one is reported
    /// with the fused parameter's name.
    fn id(&self, name: &str) -> Result<ParamId> {
        self.params.id(name).map_err(|unknown| match self.fused_parameter(name) {
            Some(fused) => Error::FusedParameter {
                name: name.to_string(),
                fused,
                model_type: self.config.architecture.model_type(),
            },
            None => unknown,
        })
    }

    /// For a fused checkpoint (Phi-3), the parameter holding the separate projection `name` (`q_proj`, `k_proj`,
    /// `v_proj` in `qkv_proj`; `gate_proj`, `up_proj` in `gate_up_proj`).
    pub fn fused_parameter(&self, name: &str) -> Option<String> {
        if !self.config.fused_projections {
            return None;
        }
        let (module, suffix) = name.rsplit_once('.')?;
        let (layer, module) = split_layer_name(module)?;
        let fused = match module {
            "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj" => "self_attn.qkv_proj",
            "mlp.gate_proj" | "mlp.up_proj" => "mlp.gate_up_proj",
            _ => return None,
        };
        let fused = format!("model.layers.{layer}.{fused}.{suffix}");
        self.params.id(&fused).is_ok().then_some(fused)
    }

    /// The parameter called `name`.
    pub fn parameter(&self, name: &str) -> Result<&Tensor> {
        Ok(self.params.get(self.id(name)?))
    }

    /// Puts `tensor` in place of the parameter `name` and returns the previous tensor.
    ///
    /// The new tensor is used as given (it may carry gradients, e.g. a cast of an fp32 master copy being trained).
    /// It must have the parameter's shape, or for a 2-D linear weight also `[k, out, in]`: one weight per batch
    /// row, or per group of consecutive rows (forward passes must then use a batch of `k · g` rows, group `i`'s
    /// rows multiplied by weight `i`).
    ///
    /// A projection's bias (its own or one attached with [`CausalLm::attach_bias`]) may likewise be `[k, out]`.
    pub fn replace_parameter(&mut self, name: &str, tensor: Tensor) -> Result<Tensor> {
        let id = self.id(name)?;
        let rank = if name.ends_with("_proj.weight") {
            Some(2)
        } else if name.ends_with("_proj.bias") {
            Some(1)
        } else {
            None
        };
        let mut canonical = self.params.get(id).size();
        if rank.is_some_and(|r| canonical.len() == r + 1) {
            canonical.remove(0);
        }
        let given = tensor.size();
        let per_row = rank.is_some_and(|r| given.len() == r + 1 && given[1..] == canonical[..]);
        let fits = given == canonical || per_row;
        if !fits {
            return Err(Error::ShapeMismatch {
                name: name.into(),
                expected: canonical,
                actual: given,
            });
        }
        Ok(self.params.set(id, tensor))
    }

    /// Places a low-rank side path beside the projection weight `name` (a `*_proj.weight`), replacing any
    /// earlier one, which is returned. The weight itself is untouched, so removing the path restores the model's
    /// outputs exactly. `A` and `B` may carry gradients (LoRA training) and live on the weight's device.
    ///
    /// # Shapes
    /// `path.a`: `[rank, in]`, `path.b`: `[out, rank]` for a weight of shape `[out, in]`; both floating point, of
    /// one dtype.
    pub fn set_low_rank(&mut self, name: &str, path: LowRank) -> Result<Option<LowRank>> {
        let id = self.id(name)?;
        let weight = self.params.get(id).size();
        let (a, b) = (path.a.size(), path.b.size());
        let fits = name.ends_with("_proj.weight")
            && a.len() == 2
            && b.len() == 2
            && a[0] == b[1]
            && a[1] == weight[weight.len() - 1]
            && b[0] == weight[weight.len() - 2];
        if !fits {
            return Err(Error::BadShape { what: format!(
                "a low-rank path for `{name}` (shape {weight:?}) needs A [rank, in] and B [out, rank]; got A {a:?} \
                 and B {b:?}"
            ) });
        }
        if path.a.kind() != path.b.kind() || !path.a.is_floating_point() {
            return Err(Error::Unsupported { what: format!(
                "a low-rank path for `{name}` needs floating-point A and B of one dtype; got {:?} and {:?}",
                path.a.kind(),
                path.b.kind()
            ) });
        }
        Ok(self.params.set_low_rank(id, path))
    }

    /// Removes the low-rank side path beside `name`, returning it (`None` when there was none).
    pub fn remove_low_rank(&mut self, name: &str) -> Result<Option<LowRank>> {
        let id = self.id(name)?;
        Ok(self.params.remove_low_rank(id))
    }

    /// The low-rank side path beside the projection weight `name`, if one is placed.
    pub fn low_rank(&self, name: &str) -> Result<Option<&LowRank>> {
        Ok(self.params.low_rank(self.params.id(name)?))
    }

    /// The projection biases attached with [`CausalLm::attach_bias`] and not detached since, by name.
    pub fn attached_biases(&self) -> impl Iterator<Item = &str> {
        self.attached.iter().map(String::as_str)
    }

    /// Deep copies of the named parameters. A projection bias the model lacks (one [`CausalLm::attach_bias`]
    /// could add) is recorded as absent, so that restoring the snapshot detaches it again.
    pub fn snapshot(&self, names: &[&str]) -> Result<Snapshot> {
        let (absent, present): (Vec<&str>, Vec<&str>) = names
            .iter()
            .partition(|n| self.params.id(n).is_err() && self.attachable_bias(n).is_some());
        for name in &present {
            self.id(name)?;
        }
        Snapshot::take(&self.params, &present, absent.into_iter().map(String::from).collect())
    }

    /// Puts the snapshot's copies back; the parameters become bit-identical to when the snapshot was taken, and
    /// biases attached since are detached.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        for (name, saved) in &snapshot.entries {
            let id = self.id(name)?;
            drop(self.params.set(id, deep_copy(saved)?));
        }
        for name in &snapshot.absent {
            if self.attached.contains(name) {
                self.detach_bias(name)?;
            }
        }
        Ok(())
    }

    /// Gives the projection `name` (`model.layers.{i}.mlp.down_proj.bias`, or any other layer projection's
    /// `.bias`) a zero bias in the model dtype, on its weight's device, for an edit that adds a constant to the
    /// projection's output (e.g. a steering vector). Models without such biases pay nothing until one is
    /// attached; [`CausalLm::restore`] of a snapshot taken before detaches it.
    ///
    /// # Shapes
    /// The bias is `[out]`, `out` the projection's output width.
    pub fn attach_bias(&mut self, name: &str) -> Result<()> {
        let weight_name = self.attachable_bias(name).ok_or_else(|| {
            Error::Unsupported { what: format!(
                "`{name}` is not a bias that can be attached (a layer projection's `.bias` the model lacks)"
            ) }
        })?;
        let weight = self.parameter(&weight_name)?;
        let out = weight.size()[weight.dim() - 2];
        let zeros = Tensor::f_zeros([out], (self.kind, weight.device())).ctx("attaching a bias")?;
        let id = self.params.push(name, zeros);
        let slot = self.bias_slot(name).expect("checked by attachable_bias");
        *slot = Some(id);
        self.attached.insert(name.to_string());
        Ok(())
    }

    /// Removes a bias attached by [`CausalLm::attach_bias`].
    fn detach_bias(&mut self, name: &str) -> Result<()> {
        drop(self.params.remove(name)?);
        if let Some(slot) = self.bias_slot(name) {
            *slot = None;
        }
        self.attached.remove(name);
        Ok(())
    }

    /// The weight's name when `name` is the bias of a layer projection that has none.
    fn attachable_bias(&self, name: &str) -> Option<String> {
        let (layer, module) = split_layer_name(name.strip_suffix(".bias")?)?;
        match self.layers.get(layer)?.bias(module)? {
            None => Some(format!("model.layers.{layer}.{module}.weight")),
            Some(_) => None,
        }
    }

    fn bias_slot(&mut self, name: &str) -> Option<&mut Option<ParamId>> {
        let (layer, module) = split_layer_name(name.strip_suffix(".bias")?)?;
        self.layers.get_mut(layer)?.bias_mut(module)
    }

    /// Turns gradient tracking off for every parameter (they are loaded that way; this undoes an editor's
    /// `requires_grad`).
    pub fn freeze_all(&mut self) -> Result<()> {
        let names: Vec<String> = self.params.names().to_vec();
        for name in names {
            let id = self.params.id(&name)?;
            let t = self.params.get(id);
            if t.requires_grad() {
                let detached = t.f_detach().ctx("freezing")?;
                drop(self.params.set(id, detached));
            }
        }
        Ok(())
    }

    /// Runs the model on a batch.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` int64
    /// - see [`ForwardOptions`] and [`ForwardOutput`]
    pub fn forward(
        &self,
        input_ids: &Tensor,
        options: &ForwardOptions<'_>,
    ) -> Result<ForwardOutput> {
        self.run(input_ids, options, None)
    }

    /// Runs the model on new tokens after those already in `cache`, appending their keys and values.
    ///
    /// `options.attention_mask`, when given, covers the cached positions and the new ones: `[batch, past + seq]`.
    /// With [`PositionIds::FromMask`] the positions of the new tokens are derived from that full mask.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` int64
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        options: &ForwardOptions<'_>,
        cache: &mut KvCache,
    ) -> Result<ForwardOutput> {
        self.run(input_ids, options, Some(cache))
    }

    /// With LongRoPE, the pre-training context: transformers switches to the long factors once a pass reaches
    /// past it, and its generation then recomputes the whole sequence instead of extending a cache whose keys
    /// were rotated with the short ones (Phi-3's `prepare_inputs_for_generation`). Generation here does the
    /// same: when a cache of at most this many positions is about to grow past it, it is rebuilt from every
    /// token. `None` for other models.
    pub fn cache_rebuild_context(&self) -> Option<i64> {
        match self.config.rope_scaling {
            crate::config::RopeScaling::LongRope { original_max_position_embeddings, .. } => {
                Some(original_max_position_embeddings)
            }
            _ => None,
        }
    }

    /// A cache sized for this model.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> Result<KvCache> {
        let c = &self.config;
        KvCache::on_devices(
            &self.map.layers,
            batch,
            c.num_key_value_heads,
            c.head_dim,
            capacity,
            self.kind,
        )
    }

    fn run(
        &self,
        input_ids: &Tensor,
        options: &ForwardOptions<'_>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput> {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let (mut xs, mut pass) = self.begin(input_ids, options, past)?;
        let mut hidden = options.output_hidden_states.then(Vec::new);
        for layer in &self.layers {
            if let Some(h) = hidden.as_mut() {
                h.push(on_device(&xs, self.device)?);
            }
            let device = self.map.layers[layer.index];
            xs = on_device(&xs, device)?;
            let inputs = pass.layer_inputs(self, layer.index, options.probe)?;
            xs = layer.forward(&self.config, &self.params, &xs, &inputs, cache.as_deref_mut())?;
        }
        if let Some(cache) = cache {
            cache.advance(pass.seq);
        }
        self.head(xs, hidden, options.logits, pass.seq)
    }

    /// Checks the inputs of a pass and embeds them; returns the embeddings and what every layer of the pass
    /// shares (positions, rotary tables, masks).
    fn begin(
        &self,
        input_ids: &Tensor,
        options: &ForwardOptions<'_>,
        past: i64,
    ) -> Result<(Tensor, PassContext)> {
        let size = input_ids.size();
        if size.len() != 2 || size[0] == 0 || size[1] == 0 {
            return Err(Error::BadShape {
                what: format!("input_ids must be a non-empty [batch, seq] tensor, got {size:?}"),
            });
        }
        let (batch, seq) = (size[0], size[1]);
        let total = past + seq;
        let key_valid = match options.attention_mask {
            Some(m) => {
                if m.size() != [batch, total] {
                    return Err(Error::ShapeMismatch {
                        name: "attention_mask".into(),
                        expected: vec![batch, total],
                        actual: m.size(),
                    });
                }
                m.f_ne(0).ctx("attention mask")?.f_to_device(self.device).ctx("attention mask")?
            }
            None => {
                Tensor::f_ones([batch, total], (Kind::Bool, self.device)).ctx("attention mask")?
            }
        };
        let position_ids = match options.position_ids {
            PositionIds::Sequential => {
                Tensor::f_arange_start(past, total, (Kind::Int64, self.device))
                    .ctx("positions")?
                    .f_unsqueeze(0)
                    .ctx("positions")?
                    .f_expand([batch, seq], false)
                    .ctx("positions")?
            }
            PositionIds::FromMask => {
                let m = key_valid.f_to_kind(Kind::Int64).ctx("positions")?;
                let pos = m
                    .f_cumsum(-1, Kind::Int64)
                    .ctx("positions")?
                    .f_sub_scalar(1)
                    .ctx("positions")?;
                let pos = pos
                    .f_masked_fill(&key_valid.f_logical_not().ctx("positions")?, 0)
                    .ctx("positions")?;
                pos.f_narrow(1, past, seq).ctx("positions")?
            }
            PositionIds::Explicit(p) => {
                if p.size() != [batch, seq] {
                    return Err(Error::ShapeMismatch {
                        name: "position_ids".into(),
                        expected: vec![batch, seq],
                        actual: p.size(),
                    });
                }
                p.f_to_device(self.device).ctx("positions")?
            }
        };
        let input_ids = input_ids.f_to_device(self.device).ctx("input ids")?;
        let mut xs = Tensor::f_embedding(self.params.get(self.embed), &input_ids, -1, false, false)
            .ctx("embedding")?;
        if self.config.scale_embeddings {
            xs = xs.f_mul_scalar(self.embedding_scale()?).ctx("embedding scale")?;
        }
        let tables = self.rope.cos_sin(&position_ids, self.kind)?;
        let pass = PassContext {
            rotary: HashMap::from([(self.device, tables)]),
            masks: HashMap::new(),
            // Without padding, and where no sliding window can cut in, the fused causal kernel needs no mask.
            plain: options.attention_mask.is_none() && (past == 0 || seq == 1),
            key_valid,
            past,
            seq,
        };
        Ok((xs, pass))
    }

    /// Gemma's `sqrt(hidden_size)`, rounded to the model dtype as transformers rounds it.
    fn embedding_scale(&self) -> Result<f64> {
        let exact = (self.config.hidden_size as f64).sqrt();
        Tensor::f_from_slice(&[exact])
            .and_then(|t| t.f_to_kind(self.kind))
            .and_then(|t| t.f_double_value(&[0]))
            .ctx("embedding scale")
    }

    /// The final norm and the output projection over the positions `selection` names.
    fn head(
        &self,
        xs: Tensor,
        mut hidden: Option<Vec<Tensor>>,
        selection: LogitsSelection,
        seq: i64,
    ) -> Result<ForwardOutput> {
        if let LogitsSelection::Window { start, len } = selection {
            if start < 0 || len <= 0 || start + len > seq {
                return Err(Error::OutOfRange { what: format!(
                    "a logits window of {len} positions from {start} does not fit a {seq}-position input"
                ) });
            }
        }
        let xs = on_device(&xs, self.map.head)?;
        let last_layer_output = match hidden {
            Some(_) => Some(on_device(&xs, self.device)?),
            None => None,
        };
        // The norm is per position, so only the selected positions need it when no hidden state is returned.
        let xs = match (&hidden, selection) {
            (None, LogitsSelection::Window { start, len }) => {
                xs.f_narrow(1, start, len).ctx("logits window")?
            }
            _ => xs,
        };
        let c = &self.config;
        let xs = norm(&xs, self.params.get(self.norm), c.rms_norm_eps, c.norm_kind)?;
        if let Some(h) = hidden.as_mut() {
            h.push(on_device(&xs, self.device)?);
        }
        let selected = match selection {
            LogitsSelection::All => xs,
            LogitsSelection::Last => xs.f_narrow(1, seq - 1, 1).ctx("last position")?,
            LogitsSelection::Window { start, len } if hidden.is_some() => {
                xs.f_narrow(1, start, len).ctx("logits window")?
            }
            LogitsSelection::Window { .. } => xs,
        };
        let mut logits = output_projection(&selected, self.params.get(self.lm_head))?;
        if let Some(cap) = c.final_logit_softcapping {
            logits = soft_cap(&logits, cap)?;
        }
        let logits = on_device(&logits, self.device)?;
        Ok(ForwardOutput { logits, hidden_states: hidden, last_layer_output })
    }
}

/// What the layers of one forward pass share: the valid keys, the rotary tables and the attention masks, built
/// once on the input device and copied to each other device the pass reaches.
#[derive(Debug)]
struct PassContext {
    /// Per device, the rotary tables [`Rope::cos_sin`] returns (a layer picks one with [`Rope::table_of`]).
    rotary: HashMap<Device, Vec<(Tensor, Tensor)>>,
    masks: HashMap<(Option<i64>, Device), AttentionMask>,
    plain: bool,
    key_valid: Tensor,
    past: i64,
    seq: i64,
}

impl PassContext {
    /// The inputs of layer `index` (on its device), building its rotary tables and mask there on first use.
    fn layer_inputs<'a>(
        &'a mut self,
        model: &CausalLm,
        index: usize,
        probe: Option<&'a LinearProbe>,
    ) -> Result<LayerInputs<'a>> {
        self.prepare(model, index)?;
        self.built_inputs(model, index, probe)
    }

    /// Builds the rotary tables and mask of layer `index` on its device, unless they are there already.
    fn prepare(&mut self, model: &CausalLm, index: usize) -> Result<()> {
        let device = model.map.layers[index];
        if !self.rotary.contains_key(&device) {
            let moved = self.rotary[&model.device]
                .iter()
                .map(|(cos, sin)| Ok((on_device(cos, device)?, on_device(sin, device)?)))
                .collect::<Result<Vec<_>>>()?;
            self.rotary.insert(device, moved);
        }
        let window = model.config.sliding_windows[index];
        let total = self.past + self.seq;
        if let std::collections::hash_map::Entry::Vacant(slot) =
            self.masks.entry((window, model.device))
        {
            let in_reach = window.is_some_and(|w| w < total);
            slot.insert(if self.plain && !in_reach {
                AttentionMask::Causal
            } else {
                attention_mask(&self.key_valid, self.past, self.seq, window)?
            });
        }
        if !self.masks.contains_key(&(window, device)) {
            let moved = mask_on_device(&self.masks[&(window, model.device)], device)?;
            self.masks.insert((window, device), moved);
        }
        Ok(())
    }

    /// The inputs of layer `index`, built earlier by [`PassContext::prepare`].
    fn built_inputs<'a>(
        &'a self,
        model: &CausalLm,
        index: usize,
        probe: Option<&'a LinearProbe>,
    ) -> Result<LayerInputs<'a>> {
        let device = model.map.layers[index];
        let window = model.config.sliding_windows[index];
        let table = model.rope.table_of(window);
        match (
            self.rotary.get(&device).and_then(|t| t.get(table)),
            self.masks.get(&(window, device)),
        ) {
            (Some((cos, sin)), Some(mask)) => Ok(LayerInputs { cos, sin, mask, probe }),
            _ => Err(Error::InvalidState {
                what: format!("the inputs of layer {index} were not prepared for this pass"),
            }),
        }
    }
}

/// `cap · tanh(xs / cap)` (Gemma-2's final logit soft-capping), in the dtype of `xs`.
///
/// # Shapes
/// Any shape; returns the same.
fn soft_cap(xs: &Tensor, cap: f64) -> Result<Tensor> {
    xs.f_div_scalar(cap)
        .ctx("soft-capping")?
        .f_tanh()
        .ctx("soft-capping")?
        .f_mul_scalar(cap)
        .ctx("soft-capping")
}

/// Rows of hidden states at or below which the output projection is computed as `(W · xᵀ)ᵀ`.
const FEW_ROWS: i64 = 64;

/// The output projection `xs · Wᵀ` over the vocabulary. For a few rows (decoding, a scored window) the product
/// is bound by reading the `[vocab, hidden]` weight, and the CPU's matrix kernels read it faster as the left
/// operand of `W · xᵀ` than as the transposed right operand of `xs · Wᵀ` (about twice as fast for 8 rows of
/// SmolLM2's 49152 × 576 head); the result is made contiguous again.
///
/// # Shapes
/// `xs`: `[batch, seq, hidden]`, `weight`: `[vocab, hidden]`; returns `[batch, seq, vocab]`.
fn output_projection(xs: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let size = xs.size();
    let rows = size[0] * size[1];
    if rows > FEW_ROWS || weight.dim() != 2 {
        return xs.f_linear::<&Tensor>(weight, None).ctx("lm_head");
    }
    let flat = xs.f_reshape([rows, size[2]]).ctx("lm_head")?;
    weight
        .f_matmul(&flat.f_transpose(0, 1).ctx("lm_head")?)
        .ctx("lm_head")?
        .f_transpose(0, 1)
        .ctx("lm_head")?
        .f_contiguous()
        .ctx("lm_head")?
        .f_view([size[0], size[1], -1])
        .ctx("lm_head")
}

/// `model.layers.{i}.{module}` split into `i` and `module`.
fn split_layer_name(name: &str) -> Option<(usize, &str)> {
    let (index, module) = name.strip_prefix("model.layers.")?.split_once('.')?;
    Some((index.parse().ok()?, module))
}

/// `xs` on `device`: the same tensor when it is there already, else a copy (which autograd follows).
fn on_device(xs: &Tensor, device: Device) -> Result<Tensor> {
    if xs.device() == device {
        Ok(xs.shallow_clone())
    } else {
        xs.f_to_device(device).ctx("moving activations between devices")
    }
}

fn mask_on_device(mask: &AttentionMask, device: Device) -> Result<AttentionMask> {
    Ok(match mask {
        AttentionMask::Causal => AttentionMask::Causal,
        AttentionMask::Dense { mask, row_valid } => AttentionMask::Dense {
            mask: on_device(mask, device)?,
            row_valid: on_device(row_valid, device)?,
        },
    })
}

/// The runtime's (Hugging Face causal-LM) name of the stored tensor `name`: the name itself, except in a
/// multimodal Gemma-3 checkpoint, whose language model is stored under `model.language_model.` (transformers
/// 4.52 on) or `language_model.model.` (earlier) and whose vision tower and projector are not the runtime's
/// (`None`).
fn runtime_name(config: &Config, name: &str) -> Option<String> {
    if !config.nested_text_model {
        return Some(name.to_string());
    }
    let vision = ["vision_tower.", "multi_modal_projector."];
    let inner = name.strip_prefix("model.").unwrap_or(name);
    if vision.iter().any(|prefix| inner.starts_with(prefix)) {
        return None;
    }
    if let Some(rest) = name
        .strip_prefix("model.language_model.")
        .or_else(|| name.strip_prefix("language_model.model."))
    {
        return Some(format!("model.{rest}"));
    }
    Some(name.strip_prefix("language_model.").unwrap_or(name).to_string())
}

/// Checks a checkpoint's tensor names against what `config` needs and returns the needed names.
fn check_names<'a>(
    config: &Config,
    names: impl Iterator<Item = &'a str>,
) -> Result<BTreeSet<String>> {
    let mut expected: BTreeSet<String> =
        ["model.embed_tokens.weight", "model.norm.weight"].map(String::from).into();
    if !config.tie_word_embeddings {
        expected.insert("lm_head.weight".into());
    }
    for i in 0..config.num_hidden_layers {
        expected.extend(DecoderLayer::tensor_names(config, i));
    }
    let present: BTreeSet<&str> = names.collect();
    let missing: Vec<String> =
        expected.iter().filter(|n| !present.contains(n.as_str())).cloned().collect();
    if !missing.is_empty() {
        return Err(Error::MissingTensors { names: missing });
    }
    let unexpected: Vec<String> = present
        .iter()
        .filter(|n| !expected.contains(**n) && !is_derived_buffer(n))
        // A tied checkpoint may still carry the (identical) head; transformers ties it to the embedding anyway.
        .filter(|n| !(config.tie_word_embeddings && **n == "lm_head.weight"))
        .map(|n| n.to_string())
        .collect();
    if !unexpected.is_empty() {
        return Err(Error::UnexpectedTensors { names: unexpected });
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_projection_equals_a_linear_layer_for_few_and_many_rows() {
        tch::manual_seed(3);
        let weight = Tensor::randn([300, 24], (Kind::Float, Device::Cpu));
        for (batch, seq) in [(1, 1), (5, 1), (2, 7), (3, 40)] {
            let xs = Tensor::randn([batch, seq, 24], (Kind::Float, Device::Cpu));
            let got = output_projection(&xs, &weight).unwrap();
            let want = xs.linear::<&Tensor>(&weight, None);
            assert_eq!(got.size(), [batch, seq, 300]);
            assert!(got.is_contiguous());
            let diff = (got - want).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{batch}x{seq}: {diff}");
        }
    }
}
