//! Prints what the libtorch backend offers this process: where libtorch was loaded from, CUDA and cuDNN
//! availability, the GPUs and the CPU thread count, then which fused attention kernel each of the runtime's
//! attention calls runs on (CPU, and each GPU in bf16 and fp32) and whether its gradients are finite. Exits
//! non-zero when a gradient is not. `cargo xtask doctor` runs it after its own checks.
use anyhow::{bail, Result};
use detox_runtime::attention_check::check_attention;
use detox_runtime::backend::BackendReport;
use tch::{Device, Kind};

fn main() -> Result<()> {
    let report = BackendReport::probe();
    println!("{report}");
    let mut devices = vec![(Device::Cpu, Kind::Float)];
    for gpu in &report.gpus {
        devices.push((Device::Cuda(gpu.index), Kind::BFloat16));
        devices.push((Device::Cuda(gpu.index), Kind::Float));
    }
    // Llama-2-7B's head size; Qwen2 and Llama-3 use the same.
    let head_dim = 128;
    println!("attention kernels (head size {head_dim}):");
    let mut broken = 0;
    for (device, kind) in devices {
        for check in check_attention(device, kind, head_dim)? {
            println!("  attention {check}");
            broken += usize::from(!check.finite);
        }
    }
    if broken > 0 {
        bail!("{broken} attention case(s) gave non-finite values or gradients: edits on that device are not safe");
    }
    Ok(())
}
