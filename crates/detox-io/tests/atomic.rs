//! Durable writes replace whole files, leave nothing behind and name the path on failure.

use std::path::Path;

use detox_io::{temporary_sibling, write_atomic, write_atomic_with, Error};

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn replaces_whole_files_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    write_atomic(&path, b"a much longer first version").unwrap();
    write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    assert_eq!(entries(dir.path()), ["out.json"]);
}

#[test]
fn the_temporary_is_a_hidden_sibling() {
    assert_eq!(
        temporary_sibling(Path::new("runs/a/summary.json")),
        Path::new("runs/a/.summary.json.partial")
    );
    assert_eq!(temporary_sibling(Path::new("x.bin")), Path::new(".x.bin.partial"));
}

#[test]
fn a_missing_directory_is_an_error_naming_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent").join("out.json");
    let err = write_atomic(&path, b"x").unwrap_err();
    assert_eq!(err.path, temporary_sibling(&path));
    assert_eq!(err.action, "creating");
    assert!(err.to_string().contains("out.json.partial"), "{err}");
}

#[derive(Debug)]
enum Custom {
    Io(Error),
    Serialiser(String),
}

impl From<Error> for Custom {
    fn from(e: Error) -> Self {
        Custom::Io(e)
    }
}

/// Writes `old`, then runs `fill` through [`write_atomic_with`] and returns its result with what `path` holds.
fn replace_with(
    fill: impl FnOnce(&Path) -> Result<(), Custom>,
) -> (Result<(), Custom>, Vec<u8>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.bin");
    write_atomic(&path, b"old").unwrap();
    let result = write_atomic_with(&path, |tmp: &Path| {
        assert_eq!(tmp, temporary_sibling(&path));
        fill(tmp)
    });
    (result, std::fs::read(&path).unwrap(), entries(dir.path()))
}

#[test]
fn a_path_writer_fills_the_temporary_then_commits() {
    let (result, contents, names) = replace_with(|tmp| {
        std::fs::write(tmp, b"new").map_err(|e| Custom::Serialiser(e.to_string()))
    });
    result.unwrap();
    assert_eq!(contents, b"new");
    assert_eq!(names, ["weights.bin"]);
}

#[test]
fn a_failing_writer_keeps_the_old_file_and_cleans_up() {
    let (result, contents, names) = replace_with(|tmp| {
        std::fs::write(tmp, b"half").unwrap();
        Err(Custom::Serialiser("out of space".into()))
    });
    assert!(matches!(result, Err(Custom::Serialiser(ref m)) if m == "out of space"), "{result:?}");
    assert_eq!(contents, b"old");
    assert_eq!(names, ["weights.bin"]);
}

#[test]
fn a_writer_that_writes_nothing_is_a_sync_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never.bin");
    let err = write_atomic_with(&path, |_: &Path| Ok::<(), Custom>(())).unwrap_err();
    match err {
        Custom::Io(e) => {
            assert_eq!(e.action, "syncing");
            assert_eq!(e.path, temporary_sibling(&path));
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(!path.exists());
}
