//! One file: resumable download into a `.part` file, verification by size and SHA-256, atomic placement.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::hub::{check_status, network_error, Hub};
use crate::wheels::hex;

/// What the file must be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Size in bytes.
    pub size: Option<u64>,
    /// SHA-256, lowercase hex.
    pub sha256: Option<String>,
}

/// What was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the placed file.
    pub sha256: String,
    /// Bytes taken from an earlier partial download.
    pub resumed_from: u64,
}

/// Downloads `url` to `dest`. A `dest.part` left by an interrupted run is continued with an HTTP range request;
/// the finished file is checked against `expected` and then renamed into place. An existing `dest` that already
/// matches `expected.sha256` is kept without downloading.
pub fn fetch(
    hub: &Hub,
    url: &str,
    dest: &Path,
    expected: &Expected,
    what: &str,
) -> Result<Fetched> {
    if let (true, Some(sha)) = (dest.is_file(), &expected.sha256) {
        let (size, digest) = hash_file(dest)?;
        if &digest == sha {
            return Ok(Fetched { size, sha256: digest, resumed_from: size });
        }
    }
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let part = dest.with_file_name(format!(
        "{}.part",
        dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let mut have = part.metadata().map(|m| m.len()).unwrap_or(0);
    if expected.size.is_some_and(|size| have > size) {
        fs::remove_file(&part)?;
        have = 0;
    }
    let mut request = hub.authorize(hub.agent(true).get(url));
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let mut response = request.call().map_err(|e| network_error(e, url))?;
    let status = response.status().as_u16();
    if status == 416 && expected.size == Some(have) {
        // The partial file is already complete.
    } else {
        check_status(status, what, hub.token.is_some())?;
    }
    // A 206 must continue exactly where the part file ends; anything else restarts from zero.
    let continues_part = status == 206
        && response
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(&format!("bytes {have}-")));
    if status == 206 && !continues_part {
        bail!("{what}: the server answered a range request with a different range; remove {} and run the command again", part.display());
    }
    let resumed_from = if continues_part || status == 416 { have } else { 0 };
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed_from > 0)
        .truncate(resumed_from == 0)
        .open(&part)
        .with_context(|| format!("opening {}", part.display()))?;
    if status != 416 {
        let total = expected.size;
        let mut reader = response.body_mut().as_reader();
        copy_with_progress(&mut reader, &mut file, resumed_from, total, what).with_context(
            || format!("{what}: the download was interrupted; run the command again to resume"),
        )?;
    }
    file.sync_all()?;
    drop(file);
    let (size, digest) = hash_file(&part)?;
    if let Some(want) = expected.size {
        if size != want {
            bail!(
                "{what}: downloaded {size} bytes, expected {want}; run the command again to resume"
            );
        }
    }
    if let Some(want) = &expected.sha256 {
        if &digest != want {
            fs::remove_file(&part).ok();
            bail!("{what}: SHA-256 mismatch (got {digest}, expected {want}); the partial file was removed, run the command again");
        }
    }
    fs::rename(&part, dest).with_context(|| format!("moving {} into place", part.display()))?;
    sync_parent(dest);
    Ok(Fetched { size, sha256: digest, resumed_from })
}

fn copy_with_progress(
    reader: &mut dyn Read,
    file: &mut File,
    start: u64,
    total: Option<u64>,
    what: &str,
) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut done = start;
    let began = Instant::now();
    let mut last = Instant::now();
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        done += n as u64;
        if last.elapsed().as_millis() > 500 {
            last = Instant::now();
            let rate = (done - start) as f64 / began.elapsed().as_secs_f64().max(1e-3) / 1e6;
            match total {
                Some(t) => eprint!(
                    "\r  {what}: {:.1}/{:.1} MB ({rate:.1} MB/s)   ",
                    done as f64 / 1e6,
                    t as f64 / 1e6
                ),
                None => eprint!("\r  {what}: {:.1} MB ({rate:.1} MB/s)   ", done as f64 / 1e6),
            }
        }
    }
    eprintln!("\r  {what}: {:.1} MB done{:30}", done as f64 / 1e6, "");
    Ok(())
}

/// Flushes the directory entry of a renamed file so the rename survives a crash. Best effort: some platforms
/// and file systems cannot open or sync a directory, and the file's own data is already on disk.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Size and SHA-256 (hex) of a file.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher)?;
    Ok((size, hex(&hasher.finalize())))
}
