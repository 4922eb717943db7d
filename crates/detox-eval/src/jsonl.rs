//! Append-only JSON-lines files that survive interruption.
//!
//! Every record is one line, written whole and flushed to disk before the next record starts. When a run is
//! interrupted mid-write, the file ends with a partial line; [`JsonlLog::open`] detects it, truncates the file
//! back to the last complete line, and reports what it removed, so that a resumed run neither loses nor
//! duplicates records.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{EvalError, Result};

/// An append-only JSON-lines file of `T`.
#[derive(Debug)]
pub struct JsonlLog<T> {
    path: PathBuf,
    file: File,
    records: Vec<T>,
    repaired: Option<String>,
}

impl<T: Serialize + DeserializeOwned> JsonlLog<T> {
    /// Opens (or creates) `path` and reads the complete records it already holds.
    ///
    /// A final line without its newline, or one that does not parse, is the trace of an interrupted write: it is
    /// cut off and reported by [`JsonlLog::repaired`]. A malformed line before the last one is corruption this
    /// function cannot repair and is an error naming the line.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| EvalError::Io { path: path.clone(), source };
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io)?;
        let mut reader = BufReader::new(&mut file);
        let mut records = Vec::new();
        let mut good_len: u64 = 0;
        let mut repaired = None;
        let mut line = String::new();
        let mut number = 0usize;
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(io)?;
            if read == 0 {
                break;
            }
            number += 1;
            let complete = line.ends_with('\n');
            match serde_json::from_str::<T>(line.trim_end()) {
                Ok(record) if complete => {
                    records.push(record);
                    good_len += read as u64;
                }
                outcome => {
                    let mut rest = String::new();
                    reader.read_line(&mut rest).map_err(io)?;
                    if !rest.is_empty() {
                        let reason = match outcome {
                            Err(e) => e.to_string(),
                            Ok(_) => "missing newline".into(),
                        };
                        return Err(EvalError::CorruptRecord {
                            path: path.clone(),
                            line: number,
                            reason,
                        });
                    }
                    repaired = Some(format!(
                        "line {number} was an incomplete record from an interrupted write ({} bytes); removed",
                        read
                    ));
                    break;
                }
            }
        }
        drop(reader);
        if repaired.is_some() {
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Self { path, file, records, repaired })
    }

    /// [`JsonlLog::open`] for a file holding each record once: a second record with the same `key` is an error
    /// naming the id and both lines, whether the copies agree or not.
    pub fn open_unique(path: impl AsRef<Path>, key: impl Fn(&T) -> &str) -> Result<Self> {
        let log = Self::open(path)?;
        let mut lines: HashMap<&str, usize> = HashMap::with_capacity(log.records.len());
        // Every record read at open sits on its own line, in order, from the first one.
        for (index, record) in log.records.iter().enumerate() {
            if let Some(first) = lines.insert(key(record), index + 1) {
                return Err(EvalError::DuplicateRecord {
                    path: log.path.clone(),
                    id: key(record).to_string(),
                    first,
                    second: index + 1,
                });
            }
        }
        drop(lines);
        Ok(log)
    }

    /// The records read at open and appended since.
    pub fn records(&self) -> &[T] {
        &self.records
    }

    /// What [`JsonlLog::open`] repaired, if anything.
    pub fn repaired(&self) -> Option<&str> {
        self.repaired.as_deref()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and syncs it to disk.
    pub fn append(&mut self, record: T) -> Result<()> {
        let mut line = serde_json::to_string(&record).map_err(|e| EvalError::Serialize {
            what: "a run record".into(),
            reason: e.to_string(),
        })?;
        line.push('\n');
        let io = |source| EvalError::Io { path: self.path.clone(), source };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.records.push(record);
        Ok(())
    }
}

/// Writes `contents` to `path` durably (see [`detox_io::write_atomic`]), with the harness's error type.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    detox_io::write_atomic(path, contents)
        .map_err(|e| EvalError::Io { path: e.path, source: e.source })
}

/// Writes `value` to `path` as pretty JSON, durably (see [`write_atomic`]); `what` names it in a serialisation
/// error ("the run manifest").
pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize, what: &str) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| EvalError::Serialize { what: what.into(), reason: e.to_string() })?;
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Row {
        id: u32,
        text: String,
    }

    fn row(id: u32) -> Row {
        Row { id, text: format!("row {id} \u{00e9}\n") }
    }

    #[test]
    fn appends_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let mut log = JsonlLog::<Row>::open(&path).unwrap();
        log.append(row(1)).unwrap();
        log.append(row(2)).unwrap();
        drop(log);
        let log = JsonlLog::<Row>::open(&path).unwrap();
        assert_eq!(log.records(), &[row(1), row(2)]);
        assert!(log.repaired().is_none());
    }

    #[test]
    fn a_record_written_twice_is_an_error_naming_both_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let mut log = JsonlLog::<Row>::open(&path).unwrap();
        for r in [row(1), row(2), row(3), Row { id: 9, text: row(2).text }] {
            log.append(r).unwrap();
        }
        drop(log);
        // Plain opening reads all four; a file of unique records refuses the second copy of row 2's key.
        assert_eq!(JsonlLog::<Row>::open(&path).unwrap().records().len(), 4);
        match JsonlLog::<Row>::open_unique(&path, |r| &r.text) {
            Err(EvalError::DuplicateRecord { id, first: 2, second: 4, .. }) => {
                assert_eq!(id, row(2).text)
            }
            other => panic!("expected a duplicate record, got {other:?}"),
        }
        let distinct =
            JsonlLog::<Row>::open_unique(dir.path().join("other.jsonl"), |r| &r.text).unwrap();
        assert!(distinct.records().is_empty());
    }

    #[test]
    fn a_torn_last_line_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let mut log = JsonlLog::<Row>::open(&path).unwrap();
        log.append(row(1)).unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\": 2, \"te").unwrap();
        drop(f);
        let mut log = JsonlLog::<Row>::open(&path).unwrap();
        assert_eq!(log.records(), &[row(1)]);
        assert!(log.repaired().unwrap().contains("line 2"));
        log.append(row(2)).unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(JsonlLog::<Row>::open(&path).unwrap().records(), &[row(1), row(2)]);
    }

    #[test]
    fn corruption_before_the_last_line_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        std::fs::write(&path, "{\"id\":1,\"text\":\"a\"}\nnot json\n{\"id\":3,\"text\":\"c\"}\n")
            .unwrap();
        let err = JsonlLog::<Row>::open(&path).unwrap_err().to_string();
        assert!(err.contains("records.jsonl") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_failed_durable_write_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("summary.json");
        match write_atomic(&path, b"{}") {
            Err(EvalError::Io { path: failed, .. }) => {
                assert_eq!(failed, detox_io::temporary_sibling(&path))
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}
