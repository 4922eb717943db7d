//! `cargo xtask doctor`: what a user needs to know when something is off.

use std::process::Command;

use anyhow::{Context, Result};

use crate::libtorch::{read_version, TORCH_VERSION};
use crate::paths::{managed_libtorch, workspace_root};

/// Prints the libtorch in use and its version, then runs the `doctor` example, which reports what libtorch
/// itself sees (CUDA, devices, cuDNN, threads).
pub fn run() -> Result<()> {
    let libtorch = std::env::var_os("LIBTORCH").map(Into::into).unwrap_or_else(managed_libtorch);
    println!("LIBTORCH             : {}", libtorch.display());
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
        "the doctor example failed ({status}): libtorch could not be loaded"
    );
    Ok(())
}
