//! Build-script support for crates that link libtorch through the detox libraries.
//!
//! libtorch is a set of shared libraries outside the system's search path. Without help, every program, test
//! executable and example that links it needs `LD_LIBRARY_PATH` to start. [`link_libtorch_rpath`], called from a
//! build script, records libtorch's `lib` folder as an rpath in the package's own binaries, tests, examples and
//! benchmarks instead (Cargo applies a build script's link arguments to the package's targets only, which is why
//! every package that has such targets calls it).
//!
//! # Use from your crate
//!
//! The crates are not on a registry: depend on them by git (or by path, from a clone).
//!
//! ```toml
//! [dependencies]
//! # Directly, even if only another detox crate is called: detox-runtime tells this helper where libtorch is.
//! detox-runtime = { git = "https://github.com/detox-rs/detox" }
//!
//! [build-dependencies]
//! detox-build = { git = "https://github.com/detox-rs/detox" }
//! ```
//!
//! ```no_run
//! // The whole of build.rs's `main`:
//! detox_build::link_libtorch_rpath();
//! ```
//!
//! The folder is found, in this order, from:
//! 1. `DEP_TCH_LIBTORCH_LIB`: set by `torch-sys` for crates that depend on it directly;
//! 2. `DEP_DETOX_RUNTIME_LIBTORCH_LIB`: `detox-runtime` passes the same folder on to crates that depend on it
//!    directly (its `links` key), so dependents need no `torch-sys` dependency of their own;
//! 3. `LIBTORCH_LIB` or `LIBTORCH`, followed by `/lib`, as `torch-sys` reads them.
//!
//! When none names an existing folder nothing is recorded: this is expected in a `doc-only` build (docs.rs,
//! or documentation built without libtorch); otherwise a Cargo warning says that `LD_LIBRARY_PATH` will be
//! needed. This crate has no dependencies and never fails a build.
#![deny(missing_docs)]

use std::path::PathBuf;

/// The variables consulted, most specific first, and whether each names libtorch's `lib` folder itself (true)
/// or a libtorch installation whose `lib` sub-folder is meant (false).
const SOURCES: [(&str, bool); 4] = [
    ("DEP_TCH_LIBTORCH_LIB", true),
    ("DEP_DETOX_RUNTIME_LIBTORCH_LIB", true),
    ("LIBTORCH_LIB", false),
    ("LIBTORCH", false),
];

/// The libtorch `lib` folder the calling package links against, if one of the [sources](crate#use-from-your-crate)
/// names an existing folder. Tells Cargo to rerun the build script when any of those variables change.
pub fn libtorch_lib_dir() -> Option<PathBuf> {
    let mut found = None;
    for (name, is_lib_dir) in SOURCES {
        println!("cargo::rerun-if-env-changed={name}");
        if found.is_some() {
            continue;
        }
        let Some(value) = std::env::var_os(name).filter(|v| !v.is_empty()) else { continue };
        let dir = if is_lib_dir { PathBuf::from(value) } else { PathBuf::from(value).join("lib") };
        if dir.is_dir() {
            found = Some(dir);
        }
    }
    found
}

/// Records libtorch's `lib` folder as an rpath of the calling package's binaries, tests, examples and benchmarks,
/// and returns it. Call it from `build.rs`; see the [crate documentation](crate) for the set-up.
///
/// Returns `None`, recording nothing, when the folder is not found (with a Cargo warning unless the package
/// is built with its `doc-only` feature) or when the target has no rpaths (Windows).
pub fn link_libtorch_rpath() -> Option<PathBuf> {
    if std::env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|family| family != "unix") {
        return None;
    }
    let Some(dir) = libtorch_lib_dir() else {
        if std::env::var_os("CARGO_FEATURE_DOC_ONLY").is_none() {
            println!(
                "cargo::warning=libtorch's lib folder was not found (none of {} names one); programs built \
                 here will need LD_LIBRARY_PATH to start",
                SOURCES.map(|(name, _)| name).join(", ")
            );
        }
        return None;
    };
    println!("cargo::rustc-link-arg=-Wl,-rpath,{}", dir.display());
    Some(dir)
}
