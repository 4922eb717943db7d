//! Debian's `slurm-wlm` and `munge`: the Slurm test (`examples/tests/slurm`) starts a single-node cluster with
//! them, so the test command installs them when they are missing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The programs the test runs, where Debian's packages put them.
const PROGRAMS: [&str; 8] = [
    "/usr/sbin/munged",
    "/usr/sbin/mungekey",
    "/usr/sbin/slurmctld",
    "/usr/sbin/slurmd",
    "/usr/bin/sbatch",
    "/usr/bin/squeue",
    "/usr/bin/scancel",
    "/usr/bin/sinfo",
];

/// Makes sure Slurm and munge are installed: installs Debian's `slurm-wlm` and `munge` with apt-get when one of
/// their programs is missing and this runs as root, and fails saying what to do otherwise.
pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = PROGRAMS.iter().copied().filter(|p| !Path::new(p).is_file()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if !root {
        bail!(
            "{} missing: the Slurm test runs a single-node Slurm cluster, as root. Install Debian's packages \
             (`sudo apt-get install -y slurm-wlm munge`) and run again as root",
            missing.join(", ")
        );
    }
    println!("==> installing Debian's slurm-wlm and munge (the Slurm test needs them)");
    let install = ["install", "-y", "--no-install-recommends", "slurm-wlm", "munge"];
    for args in [&["update"][..], &install[..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!(
                "`apt-get {}` failed ({status}); install slurm-wlm and munge by hand",
                args.join(" ")
            );
        }
    }
    let still: Vec<&str> = PROGRAMS.iter().copied().filter(|p| !Path::new(p).is_file()).collect();
    if !still.is_empty() {
        bail!("apt-get installed slurm-wlm and munge but {} is still missing", still.join(", "));
    }
    Ok(())
}
