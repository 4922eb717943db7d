//! Debian packages the test command needs on the machine (Chromium for the report test, Slurm and munge for the
//! cluster test): installed with apt-get when missing and running as root, else a clear refusal.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Makes sure every file of `files` exists, installing Debian's `packages` with apt-get when one is missing and
/// this runs as root; `why` says what needs them (it ends the refusal and the install message).
pub fn ensure_packages(packages: &[&str], files: &[&str], why: &str) -> Result<()> {
    let missing = |files: &[&str]| -> Vec<String> {
        files.iter().filter(|f| !Path::new(f).is_file()).map(|f| f.to_string()).collect()
    };
    let absent = missing(files);
    if absent.is_empty() {
        return Ok(());
    }
    let names = packages.join(" ");
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if !root {
        bail!(
            "{} missing: {why}. Install Debian's packages as root (`sudo apt-get install -y {names}`) and run \
             again",
            absent.join(", ")
        );
    }
    println!("==> installing Debian's {names} ({why})");
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    for args in [&["update"][..], &install[..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("`apt-get {}` failed ({status}); install {names} by hand", args.join(" "));
        }
    }
    let still = missing(files);
    if !still.is_empty() {
        bail!("apt-get installed {names} but {} is still missing", still.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_files_need_no_package() {
        // A package name apt-get would refuse: reaching apt-get at all would fail the test.
        ensure_packages(&["no-such-package-detox"], &["/bin/sh"], "a test").unwrap();
    }
}
