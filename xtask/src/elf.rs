//! Just enough of ELF64 to learn which shared libraries a library needs at load time.
//!
//! The CUDA libtorch is assembled from many wheels; which of their libraries to keep is decided by the
//! libraries themselves: their `DT_NEEDED` entries (what the loader resolves at start-up) and the library file
//! names their read-only data holds (what they `dlopen` later, e.g. cuDNN's sub-libraries).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

const SHT_DYNAMIC: u32 = 6;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

/// One section header, reduced to what we read.
struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

/// An opened ELF64 little-endian file and its section headers.
struct Elf {
    file: File,
    sections: Vec<Section>,
    names_index: usize,
}

impl Elf {
    fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut header = [0u8; 64];
        file.read_exact(&mut header)
            .with_context(|| format!("{} is too short to be an ELF file", path.display()))?;
        ensure!(&header[..4] == b"\x7fELF", "{} is not an ELF file", path.display());
        ensure!(
            header[4] == 2 && header[5] == 1,
            "{} is not a 64-bit little-endian ELF file",
            path.display()
        );
        let shoff = u64_at(&header, 0x28);
        let shentsize = u16_at(&header, 0x3a) as usize;
        let shnum = u16_at(&header, 0x3c) as usize;
        let shstrndx = u16_at(&header, 0x3e) as usize;
        ensure!(
            shentsize >= 64 && shnum > 0 && shstrndx < shnum,
            "{} has no usable section headers",
            path.display()
        );
        let mut table = vec![0u8; shentsize * shnum];
        file.seek(SeekFrom::Start(shoff))?;
        file.read_exact(&mut table)
            .with_context(|| format!("reading the section headers of {}", path.display()))?;
        let sections = table
            .chunks_exact(shentsize)
            .map(|entry| Section {
                name: u32_at(entry, 0x00),
                kind: u32_at(entry, 0x04),
                offset: u64_at(entry, 0x18),
                size: u64_at(entry, 0x20),
                link: u32_at(entry, 0x28),
            })
            .collect();
        Ok(Self { file, sections, names_index: shstrndx })
    }

    fn read(&mut self, index: usize) -> Result<Vec<u8>> {
        let section = self.sections.get(index).context("section index out of range")?;
        let mut bytes = vec![0u8; usize::try_from(section.size)?];
        self.file.seek(SeekFrom::Start(section.offset))?;
        self.file.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    fn section_named(&mut self, wanted: &str) -> Result<Option<usize>> {
        let names = self.read(self.names_index)?;
        Ok(self
            .sections
            .iter()
            .position(|section| c_str(&names, section.name as usize) == Some(wanted)))
    }
}

/// The `DT_NEEDED` entries of a shared library or executable, in order.
pub fn needed(path: &Path) -> Result<Vec<String>> {
    let mut elf = Elf::open(path)?;
    let Some(dynamic) = elf.sections.iter().position(|section| section.kind == SHT_DYNAMIC) else {
        return Ok(Vec::new());
    };
    let strings_index = elf.sections[dynamic].link as usize;
    let entries = elf.read(dynamic)?;
    let strings = elf.read(strings_index)?;
    let mut out = Vec::new();
    for entry in entries.chunks_exact(16) {
        match u64_at(entry, 0) {
            DT_NULL => break,
            DT_NEEDED => {
                let offset = usize::try_from(u64_at(entry, 8))?;
                let Some(name) = c_str(&strings, offset) else {
                    bail!("{}: DT_NEEDED points outside its string table", path.display());
                };
                out.push(name.to_owned());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Shared-library file names (`libX.so`, `libX.so.N...`) spelled out as strings in `.rodata`: the libraries a
/// library may `dlopen` by name.
pub fn library_names_in_rodata(path: &Path) -> Result<Vec<String>> {
    let mut elf = Elf::open(path)?;
    let Some(index) = elf.section_named(".rodata")? else { return Ok(Vec::new()) };
    let bytes = elf.read(index)?;
    let mut names: Vec<String> = bytes
        .split(|&byte| byte == 0)
        .filter_map(|run| std::str::from_utf8(run).ok())
        .filter(|text| is_library_name(text))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// `libfoo.so`, `libfoo-bar.so.9`, `libfoo.so.1.2`: no path, no spaces, no format placeholders.
fn is_library_name(text: &str) -> bool {
    let Some(stem) = text.strip_prefix("lib") else { return false };
    let Some((base, version)) = stem.split_once(".so") else { return false };
    !base.is_empty()
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'+')
        && (version.is_empty()
            || version.strip_prefix('.').is_some_and(|v| {
                v.split('.')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            }))
}

fn c_str(bytes: &[u8], offset: usize) -> Option<&str> {
    let rest = bytes.get(offset..)?;
    let end = rest.iter().position(|&byte| byte == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_needs_the_c_library() {
        let exe = std::env::current_exe().unwrap();
        let needed = needed(&exe).unwrap();
        assert!(needed.iter().any(|name| name.starts_with("libc.so")), "{needed:?}");
    }

    #[test]
    fn a_non_elf_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libfake.so");
        std::fs::write(&path, vec![b'x'; 128]).unwrap();
        let message = format!("{:#}", needed(&path).unwrap_err());
        assert!(message.contains("libfake.so is not an ELF file"), "{message}");
    }

    #[test]
    fn library_names_are_recognised_strictly() {
        for good in
            ["libcudnn_ops.so.9", "libc10.so", "libnvrtc-builtins.so.13.0", "libcublasLt.so.13"]
        {
            assert!(is_library_name(good), "{good}");
        }
        for bad in [
            "libcudnn_%s.so.9",
            "/usr/lib/libc.so.6",
            "libfoo.so.",
            "lib.so",
            "libx.so.1a",
            "libx.sox",
        ] {
            assert!(!is_library_name(bad), "{bad}");
        }
    }
}
