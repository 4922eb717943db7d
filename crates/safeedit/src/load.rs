//! Loading splits with validation that names the file, record index and id, and field of every problem.
//!
//! Files are read element by element from a buffered reader: only one record's JSON value is held at a time next
//! to the parsed records, so large files never exist twice in memory.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::category::UnsafetyCategory;
use crate::record::{NlpccRecord, SafeEditRecord};

/// What is wrong with one field of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The record is not a JSON object.
    NotAnObject,
    /// A required key is absent.
    Missing,
    /// The value has the wrong JSON type.
    WrongType {
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// The text is empty or only whitespace.
    Empty,
    /// The category names none of the nine.
    UnknownCategory(String),
    /// Another record has the same id.
    DuplicateId {
        /// Index of the first record with that id.
        first_index: usize,
    },
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::NotAnObject => write!(f, "the record is not a JSON object"),
            ProblemKind::Missing => write!(f, "missing"),
            ProblemKind::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ProblemKind::Empty => write!(f, "empty text"),
            ProblemKind::UnknownCategory(c) => write!(f, "unknown unsafety category {c:?}"),
            ProblemKind::DuplicateId { first_index } => {
                write!(f, "duplicate id (first used by record {first_index})")
            }
        }
    }
}

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or the name given for a reader).
    pub file: PathBuf,
    /// 0-based position of the record in the file's array.
    pub index: usize,
    /// The record's id, when it has a readable one.
    pub id: Option<String>,
    /// The field, with nested keys joined by `.` (e.g. `generalization test.attack_name`).
    pub field: String,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.id.as_deref().map(|id| format!(" (id {id})")).unwrap_or_default();
        write!(
            f,
            "{}: record {}{id}: field `{}`: {}",
            self.file.display(),
            self.index,
            self.field,
            self.kind
        )
    }
}

/// Errors of loading and writing files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SafeEditError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JSON array of records.
    #[error("{}: not a JSON array of records: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// Records failed validation (strict mode).
    #[error("{} problem(s) in {}:\n{}", problems.len(), path.display(), list(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// What to do with invalid records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Any problem fails the whole load, listing every problem.
    #[default]
    Strict,
    /// Invalid records are dropped and their problems returned with the valid records.
    Lenient,
}

/// Which split a file holds (it decides whether the generalisation test is required).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training split.
    Train,
    /// Validation split.
    Val,
    /// Test split: every record needs its generalisation test.
    Test,
}

/// Records that passed validation and the problems of those that did not (lenient mode).
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// Valid records in file order.
    pub records: Vec<T>,
    /// Problems of dropped records (always empty in strict mode).
    pub problems: Vec<Problem>,
}

/// Loads a SafeEdit split file.
///
/// `split` decides whether records need a `generalization test` block ([`Split::Test`]) or may omit it.
///
/// # Errors
///
/// [`SafeEditError::Io`] when the file cannot be opened or read, [`SafeEditError::Format`] when it is not a JSON
/// array, and in [`Mode::Strict`] [`SafeEditError::Invalid`] listing every problem of every record.
pub fn load_split(
    path: impl AsRef<Path>,
    split: Split,
    mode: Mode,
) -> Result<Loaded<SafeEditRecord>, SafeEditError> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|source| SafeEditError::Io { path: path.to_path_buf(), source })?;
    load_split_from_reader(BufReader::new(file), path, split, mode)
}

/// Loads a split from any reader; `origin` names it in problems.
///
/// The reader is consumed element by element; wrap unbuffered sources (files, sockets) in a
/// [`std::io::BufReader`], which [`load_split`] does.
///
/// # Errors
///
/// As [`load_split`], with `origin` in place of the file's path.
pub fn load_split_from_reader(
    reader: impl Read,
    origin: &Path,
    split: Split,
    mode: Mode,
) -> Result<Loaded<SafeEditRecord>, SafeEditError> {
    load_with(reader, origin, mode, |v, p| check_safeedit(v, p, split))
}

/// Loads the NLPCC 2024 variant (`SafeEdit_test_ALL.json`).
///
/// # Errors
///
/// As [`load_split`]: the same problems are reported. The NLPCC fields are `question` and `input`, non-empty text;
/// `response`, text that may be empty (the published submission files hold empty answers, which the classifier
/// convention scores 0.5, like `detox_metrics::Label::Empty`); and `attack name`, which may be `"None"`.
pub fn load_nlpcc(
    path: impl AsRef<Path>,
    mode: Mode,
) -> Result<Loaded<NlpccRecord>, SafeEditError> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|source| SafeEditError::Io { path: path.to_path_buf(), source })?;
    load_nlpcc_from_reader(BufReader::new(file), path, mode)
}

/// Loads the NLPCC 2024 variant from any reader; `origin` names it in problems.
///
/// # Errors
///
/// As [`load_nlpcc`], with `origin` in place of the file's path.
pub fn load_nlpcc_from_reader(
    reader: impl Read,
    origin: &Path,
    mode: Mode,
) -> Result<Loaded<NlpccRecord>, SafeEditError> {
    load_with(reader, origin, mode, check_nlpcc)
}

/// Writes records as a JSON array (4-space indented like the published files), durably (see
/// [`detox_io::write_atomic`]): a crash leaves the old file or the whole new one.
///
/// Category spellings and unknown keys are written as they were read, so a file loaded and written back holds
/// the same JSON.
///
/// # Errors
///
/// [`SafeEditError::Io`] when the file cannot be written or renamed, [`SafeEditError::Format`] when a record
/// cannot be serialised.
pub fn write_records<T: Serialize>(
    path: impl AsRef<Path>,
    records: &[T],
) -> Result<(), SafeEditError> {
    let path = path.as_ref();
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    records
        .serialize(&mut ser)
        .map_err(|e| SafeEditError::Format { path: path.to_path_buf(), reason: e.to_string() })?;
    buf.push(b'\n');
    detox_io::write_atomic(path, &buf)
        .map_err(|e| SafeEditError::Io { path: e.path, source: e.source })
}

struct Checker<'a> {
    file: &'a Path,
    index: usize,
    id: Option<String>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, field: &str, kind: ProblemKind) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            index: self.index,
            id: self.id.clone(),
            field: field.to_string(),
            kind,
        });
    }

    fn text<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        prefix: &str,
        key: &str,
        non_empty: bool,
    ) -> Option<&'v str> {
        let field = if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
        match obj.get(key) {
            None => self.report(&field, ProblemKind::Missing),
            Some(Value::String(s)) => {
                if non_empty && s.trim().is_empty() {
                    self.report(&field, ProblemKind::Empty);
                }
                return Some(s);
            }
            Some(other) => self.report(
                &field,
                ProblemKind::WrongType { expected: "a string", found: kind_of(other) },
            ),
        }
        None
    }

    fn object<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        key: &str,
        required: bool,
    ) -> Option<&'v Map<String, Value>> {
        match obj.get(key) {
            None if required => self.report(key, ProblemKind::Missing),
            None => {}
            Some(Value::Object(m)) => return Some(m),
            Some(other) => self.report(
                key,
                ProblemKind::WrongType { expected: "an object", found: kind_of(other) },
            ),
        }
        None
    }

    fn category(&mut self, obj: &Map<String, Value>) {
        if let Some(c) = self.text(obj, "", "unsafety category", true) {
            if !c.trim().is_empty() && UnsafetyCategory::parse(c).is_none() {
                self.report("unsafety category", ProblemKind::UnknownCategory(c.to_string()));
            }
        }
    }
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn check_safeedit(obj: &Map<String, Value>, c: &mut Checker<'_>, split: Split) {
    c.category(obj);
    for key in ["adversarial prompt", "question", "unsafe generation", "safe generation"] {
        c.text(obj, "", key, true);
    }
    for key in ["attack category", "attack name"] {
        c.text(obj, "", key, false);
    }
    if let Some(kc) = c.object(obj, "knowledge constrain", true) {
        c.text(kc, "knowledge constrain", "prompt", true);
        c.text(kc, "knowledge constrain", "answer", true);
    }
    if let Some(g) = c.object(obj, "generalization test", split == Split::Test) {
        for key in ["attack_category", "attack_name"] {
            c.text(g, "generalization test", key, false);
        }
        for key in [
            "test input of only harmful question",
            "test input of other attack prompt input",
            "test input of other question input",
            "test input of other questions and attack prompts",
        ] {
            c.text(g, "generalization test", key, true);
        }
    }
}

fn check_nlpcc(obj: &Map<String, Value>, c: &mut Checker<'_>) {
    c.category(obj);
    for key in ["question", "input"] {
        c.text(obj, "", key, true);
    }
    // An empty answer is an answer: the model said nothing, which the judges score as such.
    c.text(obj, "", "response", false);
    c.text(obj, "", "attack name", false);
}

fn load_with<T: DeserializeOwned>(
    reader: impl Read,
    origin: &Path,
    mode: Mode,
    check: impl Fn(&Map<String, Value>, &mut Checker<'_>),
) -> Result<Loaded<T>, SafeEditError> {
    let mut records = Vec::new();
    let mut problems = Vec::new();
    let mut ids: HashMap<u64, usize> = HashMap::new();
    let mut handle = |index: usize, value: Value| {
        let mut c = Checker { file: origin, index, id: None, problems: Vec::new() };
        let Value::Object(obj) = value else {
            c.report("<record>", ProblemKind::NotAnObject);
            problems.extend(c.problems);
            return;
        };
        match obj.get("id") {
            None => c.report("id", ProblemKind::Missing),
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                let id = n.as_u64().unwrap_or_default();
                c.id = Some(id.to_string());
                if let Some(&first_index) = ids.get(&id) {
                    c.report("id", ProblemKind::DuplicateId { first_index });
                } else {
                    ids.insert(id, index);
                }
            }
            Some(other) => c.report(
                "id",
                ProblemKind::WrongType {
                    expected: "a non-negative integer",
                    found: kind_of(other),
                },
            ),
        }
        check(&obj, &mut c);
        if c.problems.is_empty() {
            match serde_json::from_value::<T>(Value::Object(obj)) {
                Ok(record) => records.push(record),
                Err(e) => c.report(
                    "<record>",
                    ProblemKind::WrongType { expected: "a valid record", found: e.to_string() },
                ),
            }
        }
        problems.extend(c.problems);
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    de.deserialize_seq(Elements { handle: &mut handle })
        .and_then(|()| de.end())
        .map_err(|e| SafeEditError::Format { path: origin.to_path_buf(), reason: e.to_string() })?;
    if mode == Mode::Strict && !problems.is_empty() {
        return Err(SafeEditError::Invalid { path: origin.to_path_buf(), problems });
    }
    Ok(Loaded { records, problems })
}

struct Elements<'h, F: FnMut(usize, Value)> {
    handle: &'h mut F,
}

impl<'de, F: FnMut(usize, Value)> Visitor<'de> for Elements<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            (self.handle)(index, value);
            index += 1;
        }
        Ok(())
    }
}
