//! What a libtorch build is, below everything that provisions, selects or prunes one: the version, the two
//! builds and their folders, the wheels they come from and which members of those wheels are kept, and the
//! stamp a provisioned folder carries. [`crate::libtorch`], [`crate::active`] and [`crate::cuda_libs`] all
//! depend on this module and it on none of them, so the dependencies point one way.

use std::path::{Path, PathBuf};

/// The libtorch version tch 0.24 is built for.
pub const TORCH_VERSION: &str = "2.11.0";

/// A wheel to fetch and the members of it to keep: (prefix inside the wheel, destination folder, what to keep).
pub(crate) struct Wheel {
    pub(crate) requirement: &'static str,
    pub(crate) file_prefix: &'static str,
    pub(crate) members: &'static [(&'static str, &'static str, Keep)],
}

/// Which members under a wheel prefix are extracted.
#[derive(Clone, Copy)]
pub(crate) enum Keep {
    /// Exactly these files, directly under the prefix.
    Files(&'static [&'static str]),
    /// The whole subtree.
    Tree,
    /// Every shared library directly under the prefix; the CUDA set-up later keeps only those the loader needs.
    Libraries,
}

/// Written last into a provisioned folder: one line per file, `<sha256 hex> <size> <relative path>`.
pub(crate) const STAMP: &str = ".provisioned";

/// The libtorch builds `cargo xtask setup` provisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// The small CPU-only build (about 0.5 GB).
    Cpu,
    /// The CUDA 13 build; it also runs on a machine without a GPU, on the CPU.
    Cuda,
}

impl Build {
    /// Both builds.
    pub const ALL: [Build; 2] = [Build::Cpu, Build::Cuda];

    /// The folder, relative to the workspace root, the build is provisioned into.
    pub fn folder_name(self) -> &'static str {
        match self {
            Build::Cpu => ".libtorch-cpu",
            Build::Cuda => ".libtorch-cuda",
        }
    }

    /// How the build is named to the user.
    pub fn describe(self) -> &'static str {
        match self {
            Build::Cpu => "CPU-only",
            Build::Cuda => "CUDA 13",
        }
    }
}

/// Where a wheel member goes inside the libtorch folder, or `None` if it is not kept.
pub(crate) fn destination(wheel: &Wheel, name: &str) -> Option<PathBuf> {
    wheel.members.iter().find_map(|(prefix, folder, keep)| {
        let rest = name.strip_prefix(prefix)?;
        let kept = match keep {
            Keep::Files(files) => files.contains(&rest),
            Keep::Tree => true,
            Keep::Libraries => {
                !rest.contains('/') && rest.starts_with("lib") && rest.contains(".so")
            }
        };
        kept.then(|| Path::new(folder).join(rest))
    })
}
