//! Where things live in the repository.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The libtorch folder `cargo xtask setup` manages (must match `.cargo/config.toml`).
pub fn managed_libtorch() -> PathBuf {
    workspace_root().join(".libtorch")
}
