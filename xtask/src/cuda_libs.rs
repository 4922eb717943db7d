//! The CUDA 13 build of libtorch 2.11.0: which wheels it comes from and which of their libraries to keep.
//!
//! PyPI's `torch==2.11.0` wheel for Linux x86-64 is the CUDA 13.0 build; its METADATA pins the NVIDIA wheels
//! below (through `cuda-toolkit[...]==13.0.2` and four direct pins). Every shared library of those wheels is
//! extracted, then only the ones the loader reaches from libtorch's own libraries are kept: `DT_NEEDED`
//! entries, and library names spelled out in `.rodata` (what a library `dlopen`s later, such as cuDNN's
//! sub-libraries and `libtorch_cuda_linalg.so`). A pinned wheel that contributes nothing is an error, so the list
//! stays exact when the pins move.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::elf;
use crate::torch_build::{Keep, Wheel};

/// An NVIDIA wheel whose `lib/` folder (`prefix`) holds libraries the CUDA build may need.
macro_rules! nvidia {
    ($requirement:literal, $file_prefix:literal, $prefix:literal) => {
        Wheel {
            requirement: $requirement,
            file_prefix: $file_prefix,
            members: &[($prefix, "lib", Keep::Libraries)],
        }
    };
}

/// The wheels of the CUDA build, pinned to the versions torch 2.11.0's METADATA requires.
pub(crate) const WHEELS: &[Wheel] = &[
    Wheel {
        requirement: "torch==2.11.0",
        file_prefix: "torch-2.11.0-",
        members: &[
            ("torch/lib/", "lib", Keep::Libraries),
            ("torch/include/", "include", Keep::Tree),
            ("torch/share/", "share", Keep::Tree),
        ],
    },
    nvidia!("nvidia-cuda-runtime==13.0.96", "nvidia_cuda_runtime-13.0.96-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-cuda-cupti==13.0.85", "nvidia_cuda_cupti-13.0.85-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-cublas==13.1.0.3", "nvidia_cublas-13.1.0.3-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-cufft==12.0.0.61", "nvidia_cufft-12.0.0.61-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-cufile==1.15.1.6", "nvidia_cufile-1.15.1.6-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-curand==10.4.0.35", "nvidia_curand-10.4.0.35-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-cusolver==12.0.4.66", "nvidia_cusolver-12.0.4.66-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-cusparse==12.6.3.3", "nvidia_cusparse-12.6.3.3-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-nvjitlink==13.0.88", "nvidia_nvjitlink-13.0.88-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-cuda-nvrtc==13.0.88", "nvidia_cuda_nvrtc-13.0.88-", "nvidia/cu13/lib/"),
    nvidia!("nvidia-cudnn-cu13==9.19.0.56", "nvidia_cudnn_cu13-9.19.0.56-", "nvidia/cudnn/lib/"),
    nvidia!(
        "nvidia-cusparselt-cu13==0.8.0",
        "nvidia_cusparselt_cu13-0.8.0-",
        "nvidia/cusparselt/lib/"
    ),
    nvidia!("nvidia-nccl-cu13==2.28.9", "nvidia_nccl_cu13-2.28.9-", "nvidia/nccl/lib/"),
    nvidia!("nvidia-nvshmem-cu13==3.4.5", "nvidia_nvshmem_cu13-3.4.5-", "nvidia/nvshmem/lib/"),
];

/// Where the walk starts: what the Rust programs link (the CPU set) and what `backend::init` opens.
pub(crate) const ROOTS: &[&str] = &[
    "libtorch_cpu.so",
    "libc10.so",
    "libtorch.so",
    "libgomp.so.1",
    "libtorch_cuda.so",
    "libc10_cuda.so",
];

/// Libraries the operating system or the NVIDIA driver provides; no wheel ships them.
const FROM_THE_SYSTEM: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "libanl.so.1",
    "libstdc++.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "libcuda.so.1",
    "libnvidia-ml.so.1",
];

/// The libraries in `lib_dir` the loader reaches from [`ROOTS`], each with the reason it is kept.
///
/// A load-time dependency (a `DT_NEEDED` chain from a root) that is neither in `lib_dir` nor provided by the
/// system is an error: the folder would not load. Names found in `.rodata` are kept when present; they are
/// optional `dlopen` targets, so what they need in turn may come from the machine (e.g. cuFile's RDMA plugin
/// needs the Mellanox driver) and is reported rather than required.
pub(crate) fn needed_libraries(lib_dir: &Path) -> Result<BTreeMap<String, String>> {
    let present = library_files(lib_dir)?;
    let mut keep = BTreeMap::new();
    let mut queue = VecDeque::new();
    for root in ROOTS {
        if !lib_dir.join(root).exists() {
            bail!("the torch wheel did not provide {root}");
        }
        keep.insert((*root).to_owned(), "linked or opened by detox".to_owned());
        queue.push_back(((*root).to_owned(), false));
    }
    while let Some((library, optional)) = queue.pop_front() {
        let path = lib_dir.join(&library);
        for name in elf::needed(&path)? {
            if keep.contains_key(&name) || FROM_THE_SYSTEM.contains(&name.as_str()) {
                continue;
            }
            if !lib_dir.join(&name).exists() {
                if optional {
                    keep.entry(library.clone()).and_modify(|why| {
                        why.push_str(&format!("; loads only where the machine provides {name}"))
                    });
                    continue;
                }
                bail!(
                    "{library} needs {name} (DT_NEEDED), which none of the pinned wheels provides; the pins in \
                     xtask/src/cuda_libs.rs no longer match torch {}",
                    crate::torch_build::TORCH_VERSION
                );
            }
            keep.insert(name.clone(), format!("DT_NEEDED of {library}"));
            queue.push_back((name, optional));
        }
        for named in elf::library_names_in_rodata(&path)? {
            let Some(name) = resolve(&present, &named) else { continue };
            if keep.contains_key(&name) {
                continue;
            }
            keep.insert(name.clone(), format!("opened by name in {library}"));
            queue.push_back((name, true));
        }
    }
    Ok(keep)
}

/// The regular files in `lib_dir`.
fn library_files(lib_dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(lib_dir).with_context(|| format!("listing {}", lib_dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The present file a `dlopen` name refers to: the name itself, or for a name without a version suffix
/// (cuDNN opens `libcudnn_ops.so` and appends its major version) the one versioned file of that name.
fn resolve(present: &[String], named: &str) -> Option<String> {
    if present.iter().any(|file| file == named) {
        return Some(named.to_owned());
    }
    if !named.ends_with(".so") {
        return None;
    }
    let mut versioned = present.iter().filter(|file| {
        file.strip_prefix(named).and_then(|rest| rest.strip_prefix('.')).is_some_and(|version| {
            version
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        })
    });
    match (versioned.next(), versioned.next()) {
        (Some(only), None) => Some(only.clone()),
        _ => None,
    }
}

/// Removes the extracted libraries the loader does not need; returns their names.
pub(crate) fn prune(lib_dir: &Path, keep: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(lib_dir).with_context(|| format!("listing {}", lib_dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && !keep.contains_key(&name) {
            fs::remove_file(entry.path())?;
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torch_build::destination;

    #[test]
    fn wheels_keep_libraries_directly_under_their_lib_folder() {
        let cudnn = WHEELS.iter().find(|w| w.requirement.starts_with("nvidia-cudnn")).unwrap();
        assert_eq!(
            destination(cudnn, "nvidia/cudnn/lib/libcudnn_ops.so.9"),
            Some("lib/libcudnn_ops.so.9".into())
        );
        assert_eq!(destination(cudnn, "nvidia/cudnn/include/cudnn.h"), None);
        let torch = &WHEELS[0];
        assert_eq!(
            destination(torch, "torch/lib/libtorch_cuda.so"),
            Some("lib/libtorch_cuda.so".into())
        );
        assert_eq!(destination(torch, "torch/lib/libshm/libshm.h"), None);
    }

    #[test]
    fn a_missing_needed_library_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let needs = elf::needed(&exe).unwrap();
        let missing = needs.iter().find(|name| !FROM_THE_SYSTEM.contains(&name.as_str()));
        for root in ROOTS {
            fs::copy(&exe, dir.path().join(root)).unwrap();
        }
        match missing {
            // The test binary needs only system libraries: the walk keeps exactly the roots.
            None => {
                let keep = needed_libraries(dir.path()).unwrap();
                assert_eq!(keep.len(), ROOTS.len(), "{keep:?}");
            }
            Some(name) => {
                let message = format!("{:#}", needed_libraries(dir.path()).unwrap_err());
                assert!(message.contains(name.as_str()), "{message}");
            }
        }
    }

    #[test]
    fn a_name_without_version_resolves_to_the_one_versioned_file() {
        let present: Vec<String> =
            ["libcudnn_ops.so.9", "libnvrtc.so.13", "libnvrtc.alt.so.13", "libx.so.1", "libx.so.2"]
                .map(str::to_owned)
                .to_vec();
        assert_eq!(resolve(&present, "libcudnn_ops.so").as_deref(), Some("libcudnn_ops.so.9"));
        assert_eq!(resolve(&present, "libnvrtc.so.13").as_deref(), Some("libnvrtc.so.13"));
        assert_eq!(resolve(&present, "libnvrtc.so").as_deref(), Some("libnvrtc.so.13"));
        assert_eq!(resolve(&present, "libx.so"), None, "two versions: ambiguous");
        assert_eq!(resolve(&present, "libmissing.so.1"), None);
    }

    #[test]
    fn pruning_removes_only_what_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["liba.so", "libb.so.1"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let keep = BTreeMap::from([("liba.so".to_owned(), "root".to_owned())]);
        assert_eq!(prune(dir.path(), &keep).unwrap(), vec!["libb.so.1".to_owned()]);
        assert!(dir.path().join("liba.so").exists() && !dir.path().join("libb.so.1").exists());
    }
}
