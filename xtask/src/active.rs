//! Which provisioned libtorch the build uses: `.libtorch` is a link to `.libtorch-cpu` or `.libtorch-cuda`.
//!
//! `.cargo/config.toml` sets `LIBTORCH=.libtorch`, and torch-sys rebuilds its C++ only when the *value* of
//! `LIBTORCH` changes (its build script declares `rerun-if-env-changed` on it and watches no file of the
//! folder). Switching the link therefore changes nothing cargo sees, and programs find libtorch through the
//! rpath `.libtorch/lib`, resolved when they start. One direction needs care: torch-sys adds `-ltorch_cuda`
//! when its build script saw `libtorch_cuda.so`; that cached flag breaks the next link against the CPU-only
//! folder, so switching from CUDA to CPU cleans torch-sys once, and says so.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::{managed_libtorch, workspace_root};
use crate::torch_build::{Build, STAMP};

/// The build `.libtorch` points at, or `None` when there is no `.libtorch` yet.
///
/// A `.libtorch` folder from before the two builds coexisted (a provisioned CPU folder) is moved to
/// `.libtorch-cpu` and replaced by the link; anything else setup did not make is refused.
pub fn current() -> Result<Option<Build>> {
    let link = managed_libtorch();
    let meta = match fs::symlink_metadata(&link) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("reading {}", link.display())),
        Ok(meta) => meta,
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&link)?;
        return Build::ALL
            .into_iter()
            .find(|build| target == Path::new(build.folder_name()))
            .map(Some)
            .with_context(|| {
                format!(
                    "{} is a link to {}, which `cargo xtask setup` does not manage: remove the link (setup then \
                     points it at the build it provisions) or export LIBTORCH={}",
                    link.display(),
                    target.display(),
                    target.display()
                )
            });
    }
    if meta.is_dir() && link.join(STAMP).exists() {
        let cpu = folder(Build::Cpu);
        if cpu.exists() {
            bail!(
                "both {} (an earlier set-up) and {} exist: delete one of them and run `cargo xtask setup` again",
                link.display(),
                cpu.display()
            );
        }
        fs::rename(&link, &cpu)
            .with_context(|| format!("moving {} to {}", link.display(), cpu.display()))?;
        point_at(Build::Cpu)?;
        println!(
            "moved the CPU-only libtorch to {} and made {} a link to it",
            cpu.display(),
            link.display()
        );
        return Ok(Some(Build::Cpu));
    }
    bail!(
        "{} exists but was not provisioned by `cargo xtask setup`: move it away, or export LIBTORCH={} to use it",
        link.display(),
        link.display()
    )
}

/// The folder a build is provisioned into.
pub fn folder(build: Build) -> PathBuf {
    workspace_root().join(build.folder_name())
}

/// Points `.libtorch` at `to`, explaining what the switch means for the next build.
pub fn switch(from: Option<Build>, to: Build) -> Result<()> {
    if from == Some(to) {
        return Ok(());
    }
    point_at(to)?;
    let link = managed_libtorch();
    match from {
        None => println!("{} -> {} ({} build)", link.display(), to.folder_name(), to.describe()),
        Some(Build::Cpu) => println!(
            "switched {} to the {} build: nothing is rebuilt, programs load libtorch_cuda.so through \
             .libtorch/lib when they start",
            link.display(),
            to.describe()
        ),
        Some(Build::Cuda) => {
            println!("switched {} to the {} build", link.display(), to.describe());
            let profiles = profiles_linking_torch_cuda();
            if profiles.is_empty() {
                println!("nothing is rebuilt: torch-sys was built without libtorch_cuda");
            } else {
                println!(
                    "torch-sys was built against the CUDA folder and links libtorch_cuda.so, which the CPU-only \
                     build lacks: cleaning it now, so the next cargo build recompiles its C++ once (a few minutes)"
                );
                clean_torch_sys(&profiles)?;
            }
        }
    }
    Ok(())
}

/// Replaces the link in one rename, so a concurrent build sees either the old or the new target.
fn point_at(build: Build) -> Result<()> {
    let link = managed_libtorch();
    let staging = workspace_root().join(".libtorch.link-new");
    fs::remove_file(&staging).ok();
    std::os::unix::fs::symlink(build.folder_name(), &staging)
        .with_context(|| format!("creating {}", staging.display()))?;
    fs::rename(&staging, &link).with_context(|| format!("replacing {}", link.display()))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { workspace_root().join(dir) })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The cargo profiles (`debug`, `release`, ...) whose cached torch-sys build links libtorch_cuda.
fn profiles_linking_torch_cuda() -> Vec<String> {
    let Ok(profiles) = fs::read_dir(target_dir()) else { return Vec::new() };
    let mut found = Vec::new();
    for profile in profiles.flatten() {
        let Ok(builds) = fs::read_dir(profile.path().join("build")) else { continue };
        let links = builds.flatten().any(|build| {
            build.file_name().to_string_lossy().starts_with("torch-sys-")
                && fs::read_to_string(build.path().join("output")).is_ok_and(|output| {
                    output.lines().any(|line| line.ends_with("rustc-link-lib=torch_cuda"))
                })
        });
        if links {
            found.push(profile.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

fn clean_torch_sys(profiles: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    for profile in profiles {
        let mut command = Command::new(&cargo);
        command.args(["clean", "--package", "torch-sys"]).current_dir(workspace_root());
        if profile != "debug" {
            let name = if profile == "release" { "release" } else { profile.as_str() };
            command.args(["--profile", name]);
        }
        let status = command.status().context("running cargo clean")?;
        if !status.success() {
            bail!("`cargo clean --package torch-sys` failed ({status}); run `cargo clean` by hand");
        }
    }
    Ok(())
}
