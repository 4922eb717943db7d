//! `cargo xtask doctor`: what a user needs to know when something is off.

use std::process::Command;

use anyhow::{Context, Result};

use crate::libtorch::read_version;
use crate::paths::{managed_libtorch, workspace_root};
use crate::torch_build::TORCH_VERSION;

/// Prints the libtorch in use and its version, then runs the `doctor` example, which reports what libtorch
/// itself sees (CUDA, devices, cuDNN, threads).
pub fn run() -> Result<()> {
    let libtorch = std::env::var_os("LIBTORCH").map(Into::into).unwrap_or_else(managed_libtorch);
    println!("LIBTORCH             : {}", libtorch.display());
    if let Ok(target) = std::fs::read_link(&libtorch) {
        println!("  links to           : {}", target.display());
    }
    let build = if libtorch.join("lib/libtorch_cuda.so").exists() { "CUDA 13" } else { "CPU-only" };
    println!("libtorch build       : {build} (by its files; the runtime's view follows)");
    println!(
        "NVIDIA driver        : {}",
        crate::nvidia::driver()
            .unwrap_or_else(|| "none found (no nvidia-smi, no /proc/driver/nvidia)".to_owned())
    );
    match read_version(&libtorch) {
        Ok(version) if version == TORCH_VERSION => {
            println!("libtorch version     : {version} (as required)")
        }
        Ok(version) => println!(
            "libtorch version     : {version} (detox needs {TORCH_VERSION}: this will not build)"
        ),
        Err(error) => {
            println!("libtorch version     : not found ({error:#})");
            println!("Run `cargo xtask setup` to provision libtorch {TORCH_VERSION}.");
            return Ok(());
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "--package", "detox-examples", "--example", "doctor"])
        .current_dir(workspace_root())
        .status()
        .context("running the doctor example")?;
    anyhow::ensure!(
        status.success(),
        "the doctor example failed ({status}): libtorch could not be loaded, or an attention check failed (see above)"
    );
    Ok(())
}
