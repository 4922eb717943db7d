//! Device memory: what is free, what a generation row needs, and how many items fit, so that batch sizes are
//! chosen from free memory and a batch that cannot fit is refused with [`Error::OutOfMemory`] before any
//! allocation fails.

use std::ffi::c_int;

use tch::{Device, Kind};

use crate::config::Config;
use crate::error::{Error, Result};

/// Free and total memory of a device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes free now (memory held by libtorch's caching allocator counts as used).
    pub free: u64,
    /// Bytes in total.
    pub total: u64,
}

/// The memory of `device` as the CUDA runtime reports it (`cudaMemGetInfo`); `None` for the CPU, or when the
/// CUDA runtime library is not loaded in this process (a CPU-only libtorch).
pub fn device_memory(device: Device) -> Option<DeviceMemory> {
    match device {
        Device::Cuda(index) => cuda::mem_get_info(index),
        _ => None,
    }
}

/// Bytes of one row's KV cache for `positions` positions: keys and values of every layer.
pub fn kv_cache_row_bytes(config: &Config, kind: Kind, positions: usize) -> u64 {
    2 * config.num_hidden_layers as u64
        * config.num_key_value_heads as u64
        * config.head_dim as u64
        * positions as u64
        * kind.elt_size_in_bytes() as u64
}

/// An upper estimate of the bytes one generation row needs: its KV cache for `prompt + new` positions, the
/// prefill's transient activations (one layer's attention and MLP intermediates over the prompt, which the
/// caching allocator keeps) and fp32 logits of one position.
pub fn generation_row_bytes(config: &Config, kind: Kind, prompt: usize, new: usize) -> u64 {
    let elt = kind.elt_size_in_bytes() as u64;
    let prefill =
        prompt as u64 * (4 * config.hidden_size as u64 + 3 * config.intermediate_size as u64) * elt;
    let attention = config.num_attention_heads as u64 * (prompt as u64).pow(2) * elt;
    kv_cache_row_bytes(config, kind, prompt + new)
        + prefill
        + attention
        + 4 * config.vocab_size as u64
}

/// How many items of `per_item` bytes fit into `available` bytes after keeping `reserve` (a fraction, e.g. 0.1)
/// free, at most `cap`; [`Error::OutOfMemory`] naming `what` when not even one does.
pub fn fit_count(
    what: &str,
    per_item: u64,
    available: u64,
    reserve: f64,
    cap: usize,
) -> Result<usize> {
    let usable = (available as f64 * (1.0 - reserve.clamp(0.0, 1.0))) as u64;
    let n = usable.checked_div(per_item).unwrap_or(u64::MAX);
    if n == 0 {
        return Err(Error::OutOfMemory {
            what: what.to_string(),
            needed: per_item,
            available: usable,
        });
    }
    Ok((n as usize).min(cap.max(1)))
}

/// The CUDA runtime's memory query, reached through the library libtorch already loaded.
mod cuda {
    use super::*;
    use crate::dynlib::{self, symbol};

    type SetDevice = unsafe extern "C" fn(device: c_int) -> c_int;
    type GetDevice = unsafe extern "C" fn(device: *mut c_int) -> c_int;
    type MemGetInfo = unsafe extern "C" fn(free: *mut usize, total: *mut usize) -> c_int;

    pub(super) fn mem_get_info(index: usize) -> Option<DeviceMemory> {
        let path = dynlib::loaded_library(crate::backend::is_cudart)?;
        // RTLD_NOLOAD: only the copy libtorch already loaded, never a second runtime.
        let handle = dynlib::open(path.to_str()?, libc::RTLD_NOW | libc::RTLD_NOLOAD)?;
        let set: SetDevice = symbol(handle, "cudaSetDevice")?;
        let get: GetDevice = symbol(handle, "cudaGetDevice")?;
        let info: MemGetInfo = symbol(handle, "cudaMemGetInfo")?;
        let (mut previous, mut free, mut total) = (0 as c_int, 0usize, 0usize);
        // SAFETY: documented runtime API calls with valid out-pointers; the thread's device is put back.
        let ok = unsafe {
            get(&mut previous) == 0 && set(index as c_int) == 0 && {
                let status = info(&mut free, &mut total);
                set(previous);
                status == 0
            }
        };
        ok.then_some(DeviceMemory { free: free as u64, total: total as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama2_7b() -> Config {
        let json = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
            "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
            "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"
        });
        Config::from_json_str(&json.to_string(), "llama2-7b.json").unwrap()
    }

    #[test]
    fn a_llama2_7b_row_caches_half_a_mebibyte_per_position() {
        let c = llama2_7b();
        assert_eq!(kv_cache_row_bytes(&c, Kind::BFloat16, 1), 512 * 1024);
        assert_eq!(kv_cache_row_bytes(&c, Kind::BFloat16, 1000), 1000 * 512 * 1024);
        assert!(
            generation_row_bytes(&c, Kind::BFloat16, 400, 600)
                > kv_cache_row_bytes(&c, Kind::BFloat16, 1000)
        );
    }

    #[test]
    fn fit_count_keeps_the_reserve_caps_and_refuses_what_cannot_fit() {
        assert_eq!(fit_count("rows", 10, 1000, 0.1, 1000).unwrap(), 90);
        assert_eq!(fit_count("rows", 10, 1000, 0.1, 16).unwrap(), 16);
        let err = fit_count("generation rows", 2000, 1000, 0.1, 16).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { needed: 2000, available: 900, .. }), "{err}");
        assert!(err.to_string().contains("generation rows"), "{err}");
    }

    #[test]
    fn the_cpu_reports_no_device_memory() {
        assert_eq!(device_memory(Device::Cpu), None);
    }
}
