//! Provisioning of libtorch 2.11.0 from PyPI wheels, without a Python environment.
//!
//! Two builds coexist: the CPU-only one in `.libtorch-cpu/` and the CUDA 13 one in `.libtorch-cuda/`; the
//! link `.libtorch`, which the build uses, points at one of them (see [`crate::active`]; what a build is: [`crate::torch_build`]). The `torch` wheel
//! carries the C++ libraries and headers; libtorch_cpu also needs the CUDA runtime and CUPTI libraries from two
//! small NVIDIA wheels, even on a CPU-only machine. The CUDA build adds the torch wheel's CUDA libraries and
//! the NVIDIA libraries they need ([`crate::cuda_libs`]). We download the wheels with pip, extract only what
//! linking and running need, check every extracted file against the SHA-256 the wheel's own RECORD lists, and
//! place the result atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::active;
use crate::paths::{managed_libtorch, workspace_root};
use crate::torch_build::{Build, Keep, Wheel, STAMP, TORCH_VERSION};
use crate::wheels::{download_wheels, extract_wheel, find_wheel, hex, sha256_file};

/// The wheels of the CPU-only build.
const CPU_WHEELS: &[Wheel] = &[
    Wheel {
        requirement: "torch==2.11.0",
        file_prefix: "torch-2.11.0-",
        members: &[
            (
                "torch/lib/",
                "lib",
                Keep::Files(&["libtorch_cpu.so", "libc10.so", "libgomp.so.1", "libtorch.so"]),
            ),
            ("torch/include/", "include", Keep::Tree),
            ("torch/share/", "share", Keep::Tree),
        ],
    },
    Wheel {
        requirement: "nvidia-cuda-runtime==13.0.96",
        file_prefix: "nvidia_cuda_runtime-13.0.96-",
        members: &[("nvidia/cu13/lib/", "lib", Keep::Files(&["libcudart.so.13"]))],
    },
    Wheel {
        requirement: "nvidia-cuda-cupti==13.0.85",
        file_prefix: "nvidia_cuda_cupti-13.0.85-",
        members: &[("nvidia/cu13/lib/", "lib", Keep::Files(&["libcupti.so.13"]))],
    },
];

/// The libraries a usable CPU-only libtorch folder must hold.
const REQUIRED_LIBS: &[&str] = &[
    "libtorch_cpu.so",
    "libc10.so",
    "libtorch.so",
    "libgomp.so.1",
    "libcudart.so.13",
    "libcupti.so.13",
];

/// The wheels a build is made of.
fn wheels(build: Build) -> &'static [Wheel] {
    match build {
        Build::Cpu => CPU_WHEELS,
        Build::Cuda => crate::cuda_libs::WHEELS,
    }
}

/// What provisioning a build downloads and occupies, as told to the user.
fn sizes(build: Build) -> &'static str {
    match build {
        Build::Cpu => "about 545 MB of wheels from PyPI, 0.5 GB on disk",
        Build::Cuda => "about 2.5 GB of wheels from PyPI, 3.4 GB on disk",
    }
}

/// Which build `cargo xtask setup` provisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The build `.libtorch` points at; on a fresh checkout, as [`Choice::Detect`].
    Keep,
    /// CUDA when an NVIDIA driver is installed; otherwise the build in use, or CPU-only on a fresh checkout.
    Detect,
    /// The CPU-only build.
    Cpu,
    /// The CUDA 13 build.
    Cuda,
}

/// Makes sure a libtorch 2.11.0 is available and returns its folder: the build in use, or on a fresh checkout
/// the one this machine wants.
///
/// With `LIBTORCH` naming a folder other than the managed one, that folder is checked and used as it is.
pub fn ensure(verify: bool) -> Result<PathBuf> {
    ensure_build(Choice::Keep, verify)
}

/// Provisions (or checks) the build `choice` selects and points `.libtorch` at it.
pub fn ensure_build(choice: Choice, verify: bool) -> Result<PathBuf> {
    let managed = managed_libtorch();
    if let Some(user) = user_libtorch(&managed) {
        if matches!(choice, Choice::Cpu | Choice::Cuda) {
            bail!(
                "LIBTORCH={} is exported, so the build would ignore the folder `--cpu`/`--cuda` provisions: unset \
                 LIBTORCH to let `cargo xtask setup` manage libtorch",
                user.display()
            );
        }
        check_user_libtorch(&user)?;
        println!("libtorch {TORCH_VERSION} at {} (from LIBTORCH)", user.display());
        return Ok(user);
    }
    let current = active::current()?;
    let build = match (choice, current) {
        (Choice::Cpu, _) => Build::Cpu,
        (Choice::Cuda, _) => Build::Cuda,
        (Choice::Keep, Some(build)) => build,
        (Choice::Keep | Choice::Detect, _) => detect(current),
    };
    let folder = active::folder(build);
    if folder.join(STAMP).exists() {
        check_stamp(&folder, verify)?;
        println!(
            "libtorch {TORCH_VERSION} ({} build) already provisioned at {}",
            build.describe(),
            folder.display()
        );
    } else {
        provision(build, &folder)?;
    }
    active::switch(current, build)?;
    Ok(managed)
}

/// The build this machine wants: CUDA with an NVIDIA driver, else the one in use, else CPU-only.
fn detect(current: Option<Build>) -> Build {
    if let Some(driver) = crate::nvidia::driver() {
        println!(
            "NVIDIA driver found ({driver}): using the CUDA 13 build of libtorch; `cargo xtask setup --cpu` \
             selects the small CPU-only build instead"
        );
        return Build::Cuda;
    }
    match current {
        Some(build) => build,
        None => {
            println!(
                "no NVIDIA driver found: using the CPU-only build of libtorch; `cargo xtask setup --cuda` \
                 provisions the CUDA 13 build"
            );
            Build::Cpu
        }
    }
}

/// `LIBTORCH` as the user set it, unless it is the managed folder `.cargo/config.toml` points at.
fn user_libtorch(managed: &Path) -> Option<PathBuf> {
    let value = std::env::var_os("LIBTORCH")?;
    let path = PathBuf::from(value);
    let same = match (path.canonicalize(), managed.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => path == managed,
    };
    (!same).then_some(path)
}

fn check_user_libtorch(dir: &Path) -> Result<()> {
    let version = read_version(dir).with_context(|| {
        format!(
            "LIBTORCH={} does not look like a libtorch folder; unset LIBTORCH to let `cargo xtask setup` \
             provision libtorch {TORCH_VERSION} into {}",
            dir.display(),
            managed_libtorch().display()
        )
    })?;
    if version != TORCH_VERSION {
        bail!(
            "LIBTORCH={} holds libtorch {version}, but detox needs libtorch {TORCH_VERSION} (tch 0.24); point \
             LIBTORCH at a {TORCH_VERSION} build or unset it to let `cargo xtask setup` provision one",
            dir.display()
        );
    }
    for lib in ["libtorch_cpu.so", "libc10.so", "libtorch.so"] {
        if !dir.join("lib").join(lib).exists() {
            bail!("LIBTORCH={} lacks lib/{lib}", dir.display());
        }
    }
    Ok(())
}

/// The libtorch version a folder holds, from its headers (`2.11.0`, without a local build tag).
pub fn read_version(dir: &Path) -> Result<String> {
    let candidates = [
        dir.join("include/torch/headeronly/version.h"),
        dir.join("include/torch/csrc/api/include/torch/version.h"),
    ];
    for header in &candidates {
        let Ok(text) = fs::read_to_string(header) else { continue };
        let field = |name: &str| {
            text.lines().find_map(|line| {
                let rest = line.trim().strip_prefix("#define ")?.strip_prefix(name)?;
                rest.trim().parse::<u32>().ok()
            })
        };
        if let (Some(major), Some(minor), Some(patch)) = (
            field("TORCH_VERSION_MAJOR"),
            field("TORCH_VERSION_MINOR"),
            field("TORCH_VERSION_PATCH"),
        ) {
            return Ok(format!("{major}.{minor}.{patch}"));
        }
    }
    bail!("no libtorch version header under {}/include", dir.display())
}

fn check_stamp(dir: &Path, rehash: bool) -> Result<()> {
    let stamp = fs::read_to_string(dir.join(STAMP))?;
    let mut problems = Vec::new();
    for line in stamp.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(hash), Some(size), Some(rel)) = (parts.next(), parts.next(), parts.next()) else {
            problems.push(format!("malformed stamp line {line:?}"));
            continue;
        };
        let path = dir.join(rel);
        match fs::metadata(&path) {
            Err(_) => problems.push(format!("{rel} is missing")),
            Ok(meta) if meta.len().to_string() != size => {
                problems.push(format!("{rel} has {} bytes, expected {size}", meta.len()))
            }
            Ok(_) if rehash => {
                if hex(&sha256_file(&path)?) != hash {
                    problems.push(format!("{rel} does not match its SHA-256"));
                }
            }
            Ok(_) => {}
        }
    }
    if !problems.is_empty() {
        bail!(
            "the libtorch at {} is damaged ({}); delete that folder and run `cargo xtask setup` again (with \
             `--cuda` for the CUDA build)",
            dir.display(),
            problems.join("; ")
        );
    }
    Ok(())
}

fn provision(build: Build, target: &Path) -> Result<()> {
    let root = workspace_root();
    let name = build.folder_name();
    let wheels_dir = root.join(format!("{name}.wheels"));
    let partial = root.join(format!("{name}.partial"));
    println!(
        "Provisioning the {} build of libtorch {TORCH_VERSION} into {} ({})",
        build.describe(),
        target.display(),
        sizes(build)
    );
    download_wheels(wheels(build), &wheels_dir)?;
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial)?;
    let mut extracted = Vec::new();
    for wheel in wheels(build) {
        let path = find_wheel(&wheels_dir, wheel)?;
        println!("  extracting {}", path.file_name().unwrap_or_default().to_string_lossy());
        let files = extract_wheel(&path, wheel, &partial)?;
        extracted.push((wheel, files));
    }
    let lib = partial.join("lib");
    match build {
        Build::Cpu => {
            for name in REQUIRED_LIBS {
                if !lib.join(name).exists() {
                    bail!(
                        "the wheels did not provide lib/{name}; delete {} and retry",
                        wheels_dir.display()
                    );
                }
            }
        }
        Build::Cuda => {
            let keep = crate::cuda_libs::needed_libraries(&lib)?;
            let removed = crate::cuda_libs::prune(&lib, &keep)?;
            println!("  kept {} libraries the loader needs:", keep.len());
            for (name, why) in &keep {
                println!("    {name:<34} {why}");
            }
            println!(
                "  left out {} libraries nothing needs: {}",
                removed.len(),
                removed.join(", ")
            );
            for (wheel, files) in &mut extracted {
                files.retain(|file| file.path.exists());
                if files.is_empty() {
                    bail!(
                        "no library of {} is needed by torch {TORCH_VERSION}: remove it from the pins in \
                         xtask/src/cuda_libs.rs",
                        wheel.requirement
                    );
                }
            }
        }
    }
    let version = read_version(&partial)?;
    if version != TORCH_VERSION {
        bail!("the torch wheel holds libtorch {version}, expected {TORCH_VERSION}");
    }
    // torch-sys checks this file against the version it was built for.
    fs::write(partial.join("build-version"), format!("{TORCH_VERSION}\n"))?;
    let stamp: String = extracted
        .iter()
        .flat_map(|(_, files)| files)
        .map(|file| file.stamp_line.as_str())
        .collect();
    let mut file = fs::File::create(partial.join(STAMP))?;
    file.write_all(stamp.as_bytes())?;
    file.sync_all()?;
    if target.exists() {
        fs::remove_dir_all(target).with_context(|| format!("removing {}", target.display()))?;
    }
    fs::rename(&partial, target)
        .with_context(|| format!("moving {} to {}", partial.display(), target.display()))?;
    fs::remove_dir_all(&wheels_dir).ok();
    println!("libtorch {TORCH_VERSION} ({} build) ready at {}", build.describe(), target.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torch_build::destination;
    use sha2::{Digest, Sha256};

    fn fake_libtorch(version: (u32, u32, u32), libs: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let header = dir.path().join("include/torch/headeronly");
        fs::create_dir_all(&header).unwrap();
        let (major, minor, patch) = version;
        fs::write(
            header.join("version.h"),
            format!(
                "#define TORCH_VERSION_MAJOR {major}\n#define TORCH_VERSION_MINOR {minor}\n\
                 #define TORCH_VERSION_PATCH {patch}\n"
            ),
        )
        .unwrap();
        fs::create_dir_all(dir.path().join("lib")).unwrap();
        for lib in libs {
            fs::write(dir.path().join("lib").join(lib), b"").unwrap();
        }
        dir
    }

    #[test]
    fn reads_the_version_from_the_headers() {
        let dir = fake_libtorch((2, 11, 0), &[]);
        assert_eq!(read_version(dir.path()).unwrap(), "2.11.0");
    }

    #[test]
    fn a_different_version_is_refused_naming_both() {
        let dir = fake_libtorch((2, 10, 1), &["libtorch_cpu.so", "libc10.so", "libtorch.so"]);
        let message = format!("{:#}", check_user_libtorch(dir.path()).unwrap_err());
        assert!(message.contains("2.10.1") && message.contains(TORCH_VERSION), "{message}");
    }

    #[test]
    fn a_folder_without_headers_or_libraries_is_refused() {
        let empty = tempfile::tempdir().unwrap();
        let message = format!("{:#}", check_user_libtorch(empty.path()).unwrap_err());
        assert!(message.contains("does not look like a libtorch folder"), "{message}");
        let no_libs = fake_libtorch((2, 11, 0), &["libc10.so"]);
        let message = format!("{:#}", check_user_libtorch(no_libs.path()).unwrap_err());
        assert!(message.contains("lib/libtorch_cpu.so"), "{message}");
    }

    #[test]
    fn a_damaged_provisioned_folder_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("lib")).unwrap();
        fs::write(dir.path().join("lib/libc10.so"), b"abc").unwrap();
        let good = format!("{} 3 lib/libc10.so\n", hex(&Sha256::digest(b"abc")));
        fs::write(dir.path().join(STAMP), &good).unwrap();
        check_stamp(dir.path(), true).unwrap();
        fs::write(dir.path().join("lib/libc10.so"), b"abd").unwrap();
        let message = format!("{:#}", check_stamp(dir.path(), true).unwrap_err());
        assert!(message.contains("does not match its SHA-256"), "{message}");
        fs::remove_file(dir.path().join("lib/libc10.so")).unwrap();
        let message = format!("{:#}", check_stamp(dir.path(), false).unwrap_err());
        assert!(message.contains("lib/libc10.so is missing"), "{message}");
    }

    #[test]
    fn only_the_listed_members_are_kept() {
        let torch = &CPU_WHEELS[0];
        assert_eq!(destination(torch, "torch/lib/libc10.so"), Some(PathBuf::from("lib/libc10.so")));
        assert_eq!(destination(torch, "torch/lib/libtorch_cuda.so"), None);
        assert_eq!(
            destination(torch, "torch/include/ATen/ATen.h"),
            Some(PathBuf::from("include/ATen/ATen.h"))
        );
        assert_eq!(destination(torch, "torch/_C.so"), None);
    }
}
