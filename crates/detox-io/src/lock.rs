//! One writer per directory: an exclusive advisory lock on a file inside it, held for as long as the
//! [`DirLock`] lives and released by the operating system when the process ends, however it ends (a `kill -9`
//! leaves no stale lock that would block the resume).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// The file inside a locked directory that carries the lock and the holder's process id.
pub const LOCK_FILE: &str = ".detox.lock";

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "{} is in use by another process ({}); wait for it to finish or use another directory",
        dir.display(),
        holder.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    Held {
        /// The directory (or the shared file).
        dir: PathBuf,
        /// The holder's process id, as it wrote it into the lock file (absent while it is still writing it).
        holder: Option<u32>,
    },
    /// Creating the directory or the lock file, or locking it, failed.
    #[error(transparent)]
    Io(#[from] Error),
}

/// An exclusive lock on a directory; dropping it (or the process ending) releases it.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let lock = detox_io::DirLock::acquire(dir.path())?;
/// assert!(matches!(
///     detox_io::DirLock::acquire(dir.path()),
///     Err(detox_io::LockError::Held { holder: Some(pid), .. }) if pid == std::process::id()
/// ));
/// drop(lock);
/// detox_io::DirLock::acquire(dir.path())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DirLock {
    // Held open for the lock's life: closing the last descriptor of the open file releases the lock.
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it exclusively without waiting, then records this process's id in
    /// [`LOCK_FILE`] so that a refused process can name the holder.
    ///
    /// Locks are per open file, not per process: a second `acquire` of the same directory in the same process is
    /// refused too.
    ///
    /// # Errors
    /// [`LockError::Held`] naming the directory and the holder's pid when another lock is held;
    /// [`LockError::Io`] when the directory or the lock file cannot be created or locked.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        std::fs::create_dir_all(dir).map_err(Error::at("creating", dir))?;
        Self::lock(&dir.join(LOCK_FILE), dir)
    }

    /// Locks one file shared between runs (e.g. a cache of pre-edit responses) through a sibling lock file,
    /// `<name>.lock`, in the same way: exclusive, without waiting, released when the holder ends. The file's
    /// directory must exist; the file itself need not.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let cache = dir.path().join("cache.jsonl");
    /// let lock = detox_io::DirLock::acquire_file(&cache)?;
    /// let refused = detox_io::DirLock::acquire_file(&cache).unwrap_err().to_string();
    /// assert!(refused.starts_with(&format!("{} is in use", cache.display())));
    /// drop(lock);
    /// detox_io::DirLock::acquire_file(&cache)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`DirLock::acquire`], naming the file.
    pub fn acquire_file(file: &Path) -> Result<Self, LockError> {
        let mut name = file.file_name().unwrap_or(file.as_os_str()).to_os_string();
        name.push(".lock");
        Self::lock(&file.with_file_name(name), file)
    }

    /// Locks `path` (created if needed) on behalf of `subject`, the directory or file errors name.
    fn lock(path: &Path, subject: &Path) -> Result<Self, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(Error::at("opening", path))?;
        if !try_lock_exclusive(&file).map_err(Error::at("locking", path))? {
            let mut text = String::new();
            // The holder may be between locking and writing its pid: an unreadable pid is reported as unknown.
            let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            return Err(LockError::Held { dir: subject.to_path_buf(), holder });
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(Error::at("writing", path))?;
        Ok(Self { _file: file, dir: subject.to_path_buf() })
    }

    /// The locked directory (or file, for [`DirLock::acquire_file`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `Ok(false)` when another open file holds the lock.
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor number, which `file` keeps open for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Without flock there is no lock that the operating system releases when a process dies; refuse rather than
/// pretend to lock.
#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<bool> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "directory locks need flock (Unix)"))
}
