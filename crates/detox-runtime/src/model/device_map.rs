//! Placement of a model's parts on several devices, for models that do not fit one GPU (the role of
//! `device_map` in transformers/accelerate).
//!
//! The embedding runs on the first device, each decoder layer on its own device, the final norm and the head on
//! the last one; activations move between devices at layer boundaries. With tied embeddings the head shares the
//! embedding's tensor, so it must be placed with the embedding.

use tch::{Device, Kind};

use crate::config::{Config, NormPlacement, QkNorm};
use crate::error::{Error, Result};

/// Where each part of a decoder model lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMap {
    /// `model.embed_tokens` (and the model's inputs and outputs).
    pub embed: Device,
    /// `model.layers.{i}`, one entry per decoder layer.
    pub layers: Vec<Device>,
    /// `model.norm` and `lm_head`.
    pub head: Device,
}

/// Parameter bytes of a model's parts in a dtype, as [`DeviceMap::fill`] packs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSizes {
    /// The embedding matrix.
    pub embed: u64,
    /// One decoder layer (all layers have the same shape).
    pub layer: u64,
    /// The final norm and, when untied, the head matrix.
    pub head: u64,
}

impl PartSizes {
    /// Sizes of `config`'s parts stored in `kind`.
    pub fn of(config: &Config, kind: Kind) -> Self {
        let bytes = kind.elt_size_in_bytes() as u64;
        let (h, i, v) =
            (config.hidden_size as u64, config.intermediate_size as u64, config.vocab_size as u64);
        let q = (config.num_attention_heads * config.head_dim) as u64;
        let kv = (config.num_key_value_heads * config.head_dim) as u64;
        let attention =
            q * h + 2 * kv * h + h * q + if config.attention_bias { q + 2 * kv } else { 0 };
        let mlp = 3 * h * i + if config.mlp_bias { 2 * i + h } else { 0 };
        // Gemma has a norm before and after each block; q/k norms are per head or over the projection.
        let block_norms = match config.norm_placement {
            NormPlacement::Sandwich => 4,
            _ => 2,
        };
        let qk_norms = match config.qk_norm {
            QkNorm::None => 0,
            QkNorm::PerHead => 2 * config.head_dim as u64,
            QkNorm::Whole => q + kv,
        };
        let norms = block_norms * h + qk_norms;
        let head = h + if config.tie_word_embeddings { 0 } else { v * h };
        Self { embed: v * h * bytes, layer: (attention + mlp + norms) * bytes, head: head * bytes }
    }

    /// The whole model.
    pub fn total(&self, layers: usize) -> u64 {
        self.embed + self.layer * layers as u64 + self.head
    }
}

impl DeviceMap {
    /// Everything on `device`.
    pub fn single(device: Device, layers: usize) -> Self {
        Self { embed: device, layers: vec![device; layers], head: device }
    }

    /// Layers split into contiguous, near-equal runs over `devices` in order; the embedding on the first device,
    /// the head on the last (on the first when embeddings are tied).
    pub fn balanced(config: &Config, devices: &[Device]) -> Result<Self> {
        let (first, last) = match (devices.first(), devices.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => {
                return Err(Error::InvalidSetting {
                    what: "a device map needs at least one device".into(),
                })
            }
        };
        let n = config.num_hidden_layers;
        let per = n.div_ceil(devices.len()).max(1);
        let layers = (0..n).map(|i| devices[(i / per).min(devices.len() - 1)]).collect();
        let head = if config.tie_word_embeddings { first } else { last };
        Ok(Self { embed: first, layers, head })
    }

    /// Fills the devices in order, as accelerate's sequential `device_map` does: the embedding, then as many
    /// layers as fit under each device's budget (bytes of parameters), then the head. A device's budget should
    /// leave room for activations and the KV cache.
    ///
    /// Fails, naming the bytes needed and available, when the model does not fit the budgets.
    pub fn fill(config: &Config, kind: Kind, budgets: &[(Device, u64)]) -> Result<Self> {
        let sizes = PartSizes::of(config, kind);
        let total_budget: u64 = budgets.iter().map(|(_, b)| b).sum();
        let needed = sizes.total(config.num_hidden_layers);
        let too_small = || Error::OutOfMemory {
            what: format!(
                "{} layers of {:.2} GiB plus embedding and head ({:.2} GiB in all)",
                config.num_hidden_layers,
                gib(sizes.layer),
                gib(needed)
            ),
            needed,
            available: total_budget,
        };
        let Some(&(first, _)) = budgets.first() else {
            return Err(Error::InvalidSetting {
                what: "a device map needs at least one device".into(),
            });
        };
        let mut slot = 0;
        let mut used = sizes.embed;
        if used > budgets[0].1 {
            return Err(too_small());
        }
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            while used + sizes.layer > budgets[slot].1 {
                slot += 1;
                used = 0;
                if slot == budgets.len() {
                    return Err(too_small());
                }
            }
            used += sizes.layer;
            layers.push(budgets[slot].0);
        }
        let head = if config.tie_word_embeddings {
            // The head is the embedding's tensor: it only needs its norm on the first device.
            first
        } else {
            while used + sizes.head > budgets[slot].1 {
                slot += 1;
                used = 0;
                if slot == budgets.len() {
                    return Err(too_small());
                }
            }
            budgets[slot].0
        };
        Ok(Self { embed: first, layers, head })
    }

    /// Checks the map against `config`: one device per layer, and a tied head placed with the embedding.
    pub fn check(&self, config: &Config) -> Result<()> {
        if self.layers.len() != config.num_hidden_layers {
            return Err(Error::OutOfRange {
                what: format!(
                    "the device map places {} layers but the model has {}",
                    self.layers.len(),
                    config.num_hidden_layers
                ),
            });
        }
        if config.tie_word_embeddings && self.head != self.embed {
            return Err(Error::Unsupported { what: format!(
                "the model ties its head to the embedding, so the head must be on the embedding's device \
                 ({:?}), not {:?}",
                self.embed, self.head
            ) });
        }
        Ok(())
    }

    /// The device of the parameter called `name` (a Hugging Face name).
    pub fn device_of(&self, name: &str) -> Device {
        if let Some(rest) = name.strip_prefix("model.layers.") {
            let index = rest.split('.').next().and_then(|i| i.parse::<usize>().ok());
            if let Some(device) = index.and_then(|i| self.layers.get(i)) {
                return *device;
            }
        }
        match name {
            "model.norm.weight" | "lm_head.weight" => self.head,
            _ => self.embed,
        }
    }

    /// Whether everything is on one device.
    pub fn is_single(&self) -> bool {
        self.layers.iter().all(|d| *d == self.embed) && self.head == self.embed
    }

    /// The distinct devices, in order of first use.
    pub fn devices(&self) -> Vec<Device> {
        let mut out = Vec::new();
        for d in std::iter::once(self.embed).chain(self.layers.iter().copied()).chain([self.head]) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama2_7b() -> Config {
        Config::from_json_str(
            r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
                "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false}"#,
            "llama2.json",
        )
        .unwrap()
    }

    #[test]
    fn llama2_7b_has_its_known_parameter_count() {
        let c = llama2_7b();
        let sizes = PartSizes::of(&c, Kind::BFloat16);
        // 6,738,415,616 parameters, 2 bytes each.
        assert_eq!(sizes.total(c.num_hidden_layers), 6_738_415_616 * 2);
        assert_eq!(sizes.layer, 202_383_360 * 2);
    }

    #[test]
    fn balanced_splits_layers_in_contiguous_runs() {
        let c = llama2_7b();
        let (a, b) = (Device::Cuda(0), Device::Cuda(1));
        let map = DeviceMap::balanced(&c, &[a, b]).unwrap();
        assert_eq!(map.layers[..16], [a; 16]);
        assert_eq!(map.layers[16..], [b; 16]);
        assert_eq!((map.embed, map.head), (a, b));
        assert_eq!(map.device_of("model.layers.3.mlp.down_proj.weight"), a);
        assert_eq!(map.device_of("model.layers.31.self_attn.q_proj.weight"), b);
        assert_eq!(map.device_of("lm_head.weight"), b);
        assert_eq!(map.device_of("model.embed_tokens.weight"), a);
        assert_eq!(map.devices(), vec![a, b]);
        map.check(&c).unwrap();
    }

    #[test]
    fn fill_packs_devices_in_order_and_reports_shortfalls() {
        let c = llama2_7b();
        let sizes = PartSizes::of(&c, Kind::BFloat16);
        let (a, b) = (Device::Cuda(0), Device::Cuda(1));
        // The first device takes the embedding and ten layers, the second the rest and the head.
        let first = sizes.embed + 10 * sizes.layer + sizes.layer / 2;
        let map = DeviceMap::fill(&c, Kind::BFloat16, &[(a, first), (b, u64::MAX / 4)]).unwrap();
        assert_eq!(map.layers.iter().filter(|d| **d == a).count(), 10);
        assert_eq!(map.head, b);

        let err = DeviceMap::fill(&c, Kind::BFloat16, &[(a, first), (b, first)]).unwrap_err();
        match err {
            Error::OutOfMemory { needed, available, .. } => {
                assert_eq!(needed, sizes.total(32));
                assert_eq!(available, 2 * first);
            }
            other => panic!("expected OutOfMemory, got {other}"),
        }
    }

    #[test]
    fn tied_head_must_stay_with_the_embedding() {
        let mut c = llama2_7b();
        c.tie_word_embeddings = true;
        let map = DeviceMap {
            embed: Device::Cuda(0),
            layers: vec![Device::Cuda(1); 32],
            head: Device::Cuda(1),
        };
        assert!(map.check(&c).is_err());
        let balanced = DeviceMap::balanced(&c, &[Device::Cuda(0), Device::Cuda(1)]).unwrap();
        assert_eq!(balanced.head, Device::Cuda(0));
        balanced.check(&c).unwrap();
    }
}
