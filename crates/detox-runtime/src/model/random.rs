//! Models with random weights, for benchmarks and tests that need a model's shape but not its knowledge: built
//! in place on the device from the tensor names the loader expects of the config, never read from disk.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::{check_names, CausalLm};
use crate::config::Config;
use crate::error::{Error, Result, TorchContext};

/// The standard deviation of the random matrices: transformers' `initializer_range` default, so activations keep
/// the scale a freshly initialised checkpoint has.
const INIT_STD: f64 = 0.02;

/// How a tensor of the model is initialised.
enum Init {
    /// Normal, mean 0, std [`INIT_STD`] (matrices).
    Normal,
    /// Ones (norm scales, so that a norm starts as the identity scaling).
    Ones,
    /// Zeros (biases, as transformers initialises them).
    Zeros,
}

/// The shape and initialisation of `name` in a model of `config`, derived from its role in the name.
fn layout(config: &Config, name: &str) -> Result<(Vec<i64>, Init)> {
    let (h, i, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let q = config.num_attention_heads * config.head_dim;
    let kv = config.num_key_value_heads * config.head_dim;
    let role = match name.strip_prefix("model.layers.") {
        // `model.layers.{i}.` is followed by the tensor's role inside the layer.
        Some(rest) => rest.split_once('.').map_or(rest, |(_, role)| role),
        None => name,
    };
    let (out, inp) = match role {
        "model.embed_tokens.weight" | "lm_head.weight" => return Ok((vec![v, h], Init::Normal)),
        "model.norm.weight" | "input_layernorm.weight" | "post_attention_layernorm.weight" => {
            return Ok((vec![h], Init::Ones))
        }
        _ => match role.rsplit_once('.').map(|(module, _)| module) {
            Some("self_attn.q_proj") => (q, h),
            Some("self_attn.k_proj" | "self_attn.v_proj") => (kv, h),
            Some("self_attn.o_proj") => (h, q),
            Some("mlp.gate_proj" | "mlp.up_proj") => (i, h),
            Some("mlp.down_proj") => (h, i),
            _ => return Err(Error::NoRandomInit { name: name.into() }),
        },
    };
    match role.rsplit_once('.').map(|(_, kind)| kind) {
        Some("weight") => Ok((vec![out, inp], Init::Normal)),
        Some("bias") => Ok((vec![out], Init::Zeros)),
        _ => Err(Error::NoRandomInit { name: name.into() }),
    }
}

/// Every tensor name a checkpoint of `config` must hold, as the loader checks them, so that a random model has
/// exactly the tensors a loaded one would (an empty checkpoint is refused listing them all).
fn expected_names(config: &Config) -> Result<Vec<String>> {
    match check_names(config, std::iter::empty()) {
        Err(Error::MissingTensors { names }) => Ok(names),
        Err(other) => Err(other),
        Ok(names) => Ok(names.into_iter().collect()),
    }
}

impl CausalLm {
    /// A model of `config` with random weights created directly on `device` in `kind`: matrices normal with
    /// std 0.02, norm scales one, biases zero (transformers' initialisation). The same `seed` gives the same
    /// weights on the same device.
    ///
    /// It reseeds libtorch's global generator with `seed` (as `torch.manual_seed` does), since tch offers no
    /// per-call generator; tensors are drawn in name order, so the weights do not depend on hash order. Calls in
    /// one process draw one at a time, so that two threads building random models cannot interleave their draws.
    ///
    /// # Errors
    /// [`Error::NoRandomInit`] for a tensor of the config whose shape is not known here, and libtorch's errors
    /// (out of memory on the device among them).
    pub fn random(config: &Config, device: Device, kind: Kind, seed: i64) -> Result<Self> {
        let mut names = expected_names(config)?;
        names.sort();
        // The generator is global: a second thread reseeding it between this call's draws would change them.
        static DRAWING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _drawing = DRAWING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(seed);
        let mut tensors = HashMap::with_capacity(names.len());
        for name in names {
            let (shape, init) = layout(config, &name)?;
            let context = || format!("initialising `{name}` at random");
            let tensor = match init {
                Init::Normal => Tensor::f_randn(shape.as_slice(), (kind, device))
                    .and_then(|t| t.f_mul_scalar(INIT_STD))
                    .ctx(&context())?,
                Init::Ones => Tensor::f_ones(shape.as_slice(), (kind, device)).ctx(&context())?,
                Init::Zeros => Tensor::f_zeros(shape.as_slice(), (kind, device)).ctx(&context())?,
            };
            tensors.insert(name, tensor);
        }
        Self::from_tensors(config.clone(), tensors, device, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(extra: serde_json::Value) -> Config {
        let mut json = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
            "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        });
        if let (Some(json), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
            json.extend(extra.clone());
        }
        Config::from_json_str(&json.to_string(), "<tiny>").unwrap()
    }

    #[test]
    fn biases_are_zero_and_norms_one() {
        let config = tiny(serde_json::json!({"attention_bias": true, "mlp_bias": true}));
        let model = CausalLm::random(&config, Device::Cpu, Kind::Float, 0).unwrap();
        let bias = model.parameter("model.layers.1.self_attn.o_proj.bias").unwrap();
        assert_eq!(bias.size(), [16]);
        assert_eq!(bias.abs().sum(Kind::Float).double_value(&[]), 0.0);
        let norm = model.parameter("model.layers.0.input_layernorm.weight").unwrap();
        assert_eq!(norm.sum(Kind::Float).double_value(&[]), 16.0);
        let k = model.parameter("model.layers.0.self_attn.k_proj.weight").unwrap();
        assert_eq!(k.size(), [8, 16]);
    }
}
