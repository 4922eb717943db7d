//! # detox-io
//!
//! Durable file output for the detox workspace. A file is written to a temporary sibling (`.<name>.partial` in
//! the same directory), flushed to disk, renamed over its final path and the directory entry is flushed too, so
//! that a crash leaves either the old file or the complete new one, never a truncated one. The crate needs no
//! libtorch and depends on no other crate of the workspace; each caller maps [`Error`] into its own error type.
//!
//! A directory that one process writes over a long time (a run directory, a training artefact) is guarded by a
//! [`DirLock`]: one writer at a time, released by the operating system when the writer dies.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("summary.json");
//! detox_io::write_atomic(&path, b"{}")?;
//! assert_eq!(std::fs::read(&path)?, b"{}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

mod lock;
pub use lock::{DirLock, LockError, LOCK_FILE};

/// A failed file operation, with the path it concerned.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct Error {
    /// What was being done (`"writing"`, `"renaming into"`, ...).
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: std::io::Error,
}

impl Error {
    fn at<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self { action, path: path.to_path_buf(), source }
    }
}

/// Writes `bytes` to `path` durably: the file holds either its previous contents or all of `bytes`.
///
/// # Errors
/// [`Error`] naming the temporary file or `path` when a step fails; the temporary file is removed then.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic_with(path, |tmp| {
        let mut file = File::create(tmp).map_err(Error::at("creating", tmp))?;
        file.write_all(bytes).map_err(Error::at("writing", tmp))
    })
}

/// Like [`write_atomic`], for writers that only take a path (a serialiser that creates its own file): `fill`
/// writes the whole contents to the temporary path it is given, then the file is synced and renamed over `path`.
///
/// # Errors
/// `fill`'s error as it returned it, or an [`Error`] (converted into `E`) when syncing or renaming fails; the
/// temporary file is removed on either.
pub fn write_atomic_with<E: From<Error>>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temporary_sibling(path);
    let result = fill(&tmp).and_then(|()| commit(&tmp, path).map_err(E::from));
    if result.is_err() {
        // The error being returned says what went wrong; a leftover temporary file would only confuse a rerun.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The temporary file `path` is first written to: a hidden sibling, so that the rename stays within one
/// directory (and one file system) and a listing of the directory does not show half-written files.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".partial");
    path.with_file_name(name)
}

/// Syncs `tmp`, renames it over `path` and syncs the directory so the rename itself survives a crash.
fn commit(tmp: &Path, path: &Path) -> Result<(), Error> {
    File::open(tmp).and_then(|f| f.sync_all()).map_err(Error::at("syncing", tmp))?;
    std::fs::rename(tmp, path).map_err(Error::at("renaming into", path))?;
    sync_directory(path)
}

#[cfg(unix)]
fn sync_directory(path: &Path) -> Result<(), Error> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::at("syncing the directory", dir))
}

/// Directories cannot be opened as files off Unix; the rename is as durable as the platform makes it.
#[cfg(not(unix))]
fn sync_directory(_path: &Path) -> Result<(), Error> {
    Ok(())
}
