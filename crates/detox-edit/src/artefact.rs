//! Method artefacts on disk: what a fit writes once into a directory and its method reads back before it edits
//! (trained deltas, MEND's hyper-network, ProFS's subspaces, steering vectors, Model Surgery's probe).
//!
//! Every artefact type implements [`Artefact`] and is saved and loaded the same way:
//! - the directory holds the artefact's own files and [`HEADER_FILE`], a small JSON header naming the artefact's
//!   kind and layout version (`{"kind": "profs", "version": 1}`);
//! - saving removes the old header, writes the files (each atomically, the description last), then writes the
//!   header atomically: a directory with a header holds a whole artefact, and an interrupted save leaves none;
//! - loading reads the header first and refuses a directory holding another kind of artefact
//!   ([`EditError::ArtefactKind`], naming the directory, the kind found and the kind expected) or a newer layout,
//!   before any tensor is read; saving refuses to write into a directory holding another kind.
//!
//! Directories written before headers existed have the same files without a header; they are recognised by their
//! description file (`training.json`, `mend_training.json`, `profs.json`, `steering.json`, `surgery.json`) and
//! load as layout version 1.
//!
//! ```no_run
//! use detox_edit::profs::ProfsFit;
//! use detox_edit::Artefact;
//! # fn run(fit: &ProfsFit) -> detox_edit::Result<()> {
//! let dir = std::path::Path::new("runs/baselines/profs");
//! fit.save(dir)?;
//! let again = ProfsFit::load(dir, tch::Device::Cpu)?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{EditError, Result};
use crate::train::checkpoint::{read_json, write_json};

/// The header of an artefact directory: its kind and layout version.
pub const HEADER_FILE: &str = "artefact.json";

/// What [`HEADER_FILE`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    kind: String,
    version: u32,
}

/// The description file of each kind of artefact written before headers existed: such a directory is of the kind
/// whose description it holds, at layout version 1.
const UNHEADED: &[(&str, &str)] = &[
    ("trained", crate::train::artefact::INFO_FILE),
    ("mend", crate::mend::TRAINING_FILE),
    ("profs", crate::profs::INFO_FILE),
    ("steering", crate::steering::INFO_FILE),
    ("surgery", crate::surgery::SURGERY_INFO_FILE),
];

/// Something a method fits once and saves to a directory, so that an evaluation can rebuild the method from the
/// directory alone. Implementors write and read their own files; [`Artefact::save`] and [`Artefact::load`] add
/// the header, the refusal of another kind's directory and the ordering that makes an interrupted save visible.
pub trait Artefact: Sized {
    /// The kind the header records: the name of the registry method whose `artefact` option reads it
    /// (`trained`, `mend`, `profs`, `steering`, `surgery`).
    const KIND: &'static str;

    /// The layout version this build writes, and the newest it reads.
    const VERSION: u32 = 1;

    /// Writes the artefact's own files into `dir`, which exists, each atomically and its description file
    /// last. Called by [`Artefact::save`]; call that instead.
    fn write_files(&self, dir: &Path) -> Result<()>;

    /// Reads the artefact's own files from `dir`, placing its tensors on `device`. Called by [`Artefact::load`]
    /// once the header says `dir` holds this kind; call that instead.
    fn read_files(dir: &Path, device: Device) -> Result<Self>;

    /// Writes the artefact into `dir` (created if needed), replacing an artefact of the same kind there.
    ///
    /// # Errors
    /// [`EditError::ArtefactKind`] when `dir` holds another kind of artefact; I/O and serialisation errors
    /// naming the file.
    fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|source| EditError::Io { path: dir.into(), source })?;
        if let Some(found) = found_kind(dir)? {
            found.expect(dir, Self::KIND)?;
        }
        // Without the header (and the description that stood for it before headers), the directory holds no
        // artefact until the new one is whole.
        remove_if_present(&dir.join(HEADER_FILE))?;
        if let Some((_, description)) = UNHEADED.iter().find(|(kind, _)| *kind == Self::KIND) {
            remove_if_present(&dir.join(description))?;
        }
        self.write_files(dir)?;
        let header = Header { kind: Self::KIND.to_string(), version: Self::VERSION };
        write_json(&dir.join(HEADER_FILE), &header)
    }

    /// Reads the artefact saved in `dir`, its tensors on `device`.
    ///
    /// # Errors
    /// [`EditError::ArtefactKind`] when `dir` holds another kind of artefact; [`EditError::Artefact`] when it
    /// holds none, a newer layout, or files that are damaged or disagree with each other, naming the file.
    fn load(dir: &Path, device: Device) -> Result<Self> {
        std::fs::metadata(dir).map_err(|source| EditError::Io { path: dir.into(), source })?;
        let found = found_kind(dir)?.ok_or_else(|| EditError::Artefact {
            path: dir.to_path_buf(),
            reason: format!("holds no artefact ({HEADER_FILE} is missing)"),
        })?;
        found.expect(dir, Self::KIND)?;
        if found.version > Self::VERSION {
            return Err(EditError::Artefact {
                path: found.file,
                reason: format!(
                    "layout version {} of a `{}` artefact is newer than this build reads (up to {})",
                    found.version,
                    Self::KIND,
                    Self::VERSION
                ),
            });
        }
        Self::read_files(dir, device)
    }
}

/// The kind of artefact a directory holds, and the file that says so.
#[derive(Debug)]
struct Found {
    kind: String,
    version: u32,
    file: PathBuf,
}

impl Found {
    /// Refuses a kind other than `expected`.
    fn expect(&self, dir: &Path, expected: &'static str) -> Result<()> {
        if self.kind == expected {
            return Ok(());
        }
        Err(EditError::ArtefactKind {
            dir: dir.to_path_buf(),
            file: self.file.clone(),
            found: self.kind.clone(),
            expected,
        })
    }
}

/// The kind of artefact in `dir`: from its header, else from the description file of a directory written before
/// headers; `None` when it holds neither.
fn found_kind(dir: &Path) -> Result<Option<Found>> {
    let file = dir.join(HEADER_FILE);
    if file.exists() {
        let header: Header = read_json(&file, "an artefact header")?;
        return Ok(Some(Found { kind: header.kind, version: header.version, file }));
    }
    Ok(UNHEADED.iter().find(|(_, description)| dir.join(description).is_file()).map(
        |(kind, description)| Found {
            kind: (*kind).to_string(),
            version: 1,
            file: dir.join(description),
        },
    ))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(EditError::Io { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-file artefact, to test the header without a model.
    #[derive(Debug, PartialEq)]
    struct Note(String);

    impl Artefact for Note {
        const KIND: &'static str = "note";

        fn write_files(&self, dir: &Path) -> Result<()> {
            write_json(&dir.join("note.json"), &self.0)
        }

        fn read_files(dir: &Path, _: Device) -> Result<Self> {
            read_json(&dir.join("note.json"), "a note").map(Note)
        }
    }

    /// The same files under another kind.
    #[derive(Debug)]
    struct Memo;

    impl Artefact for Memo {
        const KIND: &'static str = "memo";
        const VERSION: u32 = 2;

        fn write_files(&self, _: &Path) -> Result<()> {
            Ok(())
        }

        fn read_files(_: &Path, _: Device) -> Result<Self> {
            Ok(Memo)
        }
    }

    #[test]
    fn the_header_names_the_kind_and_another_kind_is_refused_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        Note("hello".into()).save(dir.path()).unwrap();
        let header = std::fs::read_to_string(dir.path().join(HEADER_FILE)).unwrap();
        assert!(
            header.contains("\"kind\": \"note\"") && header.contains("\"version\": 1"),
            "{header}"
        );
        assert_eq!(Note::load(dir.path(), Device::Cpu).unwrap(), Note("hello".into()));

        let err = Memo::load(dir.path(), Device::Cpu).unwrap_err();
        assert!(
            matches!(&err, EditError::ArtefactKind { found, expected: "memo", .. } if found == "note"),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&dir.path().display().to_string()) && text.contains(HEADER_FILE),
            "{text}"
        );
        let err = Memo.save(dir.path()).unwrap_err();
        assert!(matches!(err, EditError::ArtefactKind { .. }), "{err}");
        assert_eq!(
            Note::load(dir.path(), Device::Cpu).unwrap(),
            Note("hello".into()),
            "left as it was"
        );
    }

    #[test]
    fn a_newer_layout_an_empty_directory_and_a_damaged_header_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Note::load(dir.path(), Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("holds no artefact"), "{err}");

        std::fs::write(dir.path().join(HEADER_FILE), br#"{"kind": "note", "version": 2}"#).unwrap();
        let err = Note::load(dir.path(), Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("version 2") && err.contains(HEADER_FILE), "{err}");

        std::fs::write(dir.path().join(HEADER_FILE), b"[").unwrap();
        let err = Note::load(dir.path(), Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("not an artefact header") && err.contains(HEADER_FILE), "{err}");
    }

    #[test]
    fn an_interrupted_save_leaves_no_header() {
        struct Failing;
        impl Artefact for Failing {
            const KIND: &'static str = "note";
            fn write_files(&self, dir: &Path) -> Result<()> {
                Err(EditError::State(format!("stopped writing {}", dir.display())))
            }
            fn read_files(_: &Path, _: Device) -> Result<Self> {
                Ok(Failing)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        Note("old".into()).save(dir.path()).unwrap();
        assert!(Failing.save(dir.path()).is_err());
        assert!(!dir.path().join(HEADER_FILE).exists());
        let err = Note::load(dir.path(), Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("holds no artefact"), "{err}");
    }
}
