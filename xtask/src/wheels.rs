//! Python wheels without a Python environment beyond pip: downloading them, finding them, and extracting the
//! files a build needs, each checked against the SHA-256 the wheel's own RECORD lists.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::torch_build::{destination, Wheel, TORCH_VERSION};

/// The first of `python3` / `python` whose pip works.
pub(crate) fn find_pip_python() -> Result<&'static str> {
    ["python3", "python"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-m", "pip", "--version"])
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .context(
            "neither `python3 -m pip` nor `python -m pip` works on this machine: install Python 3 with pip \
             (e.g. `apt-get install python3-pip`)",
        )
}

pub(crate) fn download_wheels(wheels: &[Wheel], dir: &Path) -> Result<()> {
    let python = find_pip_python()
        .context("libtorch is downloaded with pip; alternatively point LIBTORCH at an existing libtorch 2.11.0")?;
    fs::create_dir_all(dir)?;
    let mut command = Command::new(python);
    command.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
    ]);
    // pip matches platform tags exactly, and the NVIDIA wheels use several glibc baselines.
    for glibc_minor in (12..=28).rev() {
        command.args(["--platform", &format!("manylinux_2_{glibc_minor}_x86_64")]);
    }
    command.args(["--platform", "manylinux2014_x86_64", "--platform", "manylinux2010_x86_64"]);
    command.arg("--dest").arg(dir);
    command.args(wheels.iter().map(|wheel| wheel.requirement));
    let status = command.status().context("running pip")?;
    if !status.success() {
        bail!(
            "pip could not download the libtorch wheels ({}); check that this machine reaches PyPI (proxy, \
             network), then run `cargo xtask setup` again, or point LIBTORCH at an existing libtorch {TORCH_VERSION}",
            wheels.iter().map(|wheel| wheel.requirement).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

pub(crate) fn find_wheel(dir: &Path, wheel: &Wheel) -> Result<PathBuf> {
    fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(wheel.file_prefix) && name.ends_with(".whl"))
        })
        .with_context(|| {
            format!(
                "pip reported success but no {}*.whl is in {}",
                wheel.file_prefix,
                dir.display()
            )
        })
}

/// One extracted file and its stamp line (`<sha256 hex> <size> <relative path>`).
pub(crate) struct Extracted {
    pub(crate) path: PathBuf,
    pub(crate) stamp_line: String,
}

pub(crate) fn extract_wheel(path: &Path, wheel: &Wheel, out: &Path) -> Result<Vec<Extracted>> {
    let mut extracted = Vec::new();
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
        .with_context(|| format!("{} is not a valid wheel; delete it and retry", path.display()))?;
    let record = read_record(&mut archive)
        .with_context(|| format!("reading RECORD of {}", path.display()))?;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index)?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_owned();
        let Some(relative) = destination(wheel, &name) else { continue };
        let expected = record
            .get(&name)
            .with_context(|| format!("{name} is not listed in the RECORD of {}", path.display()))?;
        let dest = out.join(&relative);
        if dest.exists() {
            bail!(
                "{name} of {} would overwrite {} from another wheel",
                path.display(),
                relative.display()
            );
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut writer = HashingWriter {
            inner: io::BufWriter::new(fs::File::create(&dest)?),
            hasher: Sha256::new(),
            bytes: 0,
        };
        io::copy(&mut entry, &mut writer).with_context(|| format!("extracting {name}"))?;
        writer.inner.flush()?;
        let digest = writer.hasher.finalize();
        if digest.as_slice() != expected.as_slice() {
            bail!("{name} in {} does not match the SHA-256 its RECORD lists; delete the wheel and retry", path.display());
        }
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o777))?;
        }
        let stamp_line = format!("{} {} {}\n", hex(&digest), writer.bytes, relative.display());
        extracted.push(Extracted { path: dest, stamp_line });
    }
    Ok(extracted)
}

/// The wheel's RECORD: member name -> SHA-256 digest.
pub(crate) fn read_record<R: Read + io::Seek>(
    archive: &mut zip::ZipArchive<R>,
) -> Result<HashMap<String, Vec<u8>>> {
    let record_name = archive
        .file_names()
        .find(|name| name.ends_with(".dist-info/RECORD"))
        .context("no .dist-info/RECORD")?
        .to_owned();
    let mut text = String::new();
    archive.by_name(&record_name)?.read_to_string(&mut text)?;
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut fields = line.rsplitn(3, ',');
        let (_size, hash, name) = (fields.next(), fields.next(), fields.next());
        let (Some(hash), Some(name)) = (hash, name) else { continue };
        let Some(encoded) = hash.strip_prefix("sha256=") else { continue };
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .with_context(|| format!("bad digest for {name}"))?;
        map.insert(name.to_owned(), digest);
    }
    Ok(map)
}

pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn sha256_file(path: &Path) -> Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().to_vec())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
