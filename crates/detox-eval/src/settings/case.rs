//! One SafeEdit case as a run needs it, and where a run's cases come from.

use std::path::PathBuf;

use detox_edit::EditInput;
use safeedit::{Metric, Subset};
use serde::{Deserialize, Serialize};

/// One SafeEdit case as the harness needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchmarkCase {
    /// The record id, as text.
    pub id: String,
    /// The unsafety category as spelled in the data.
    pub category: String,
    /// The texts of the edit.
    pub edit: EditInput,
    /// `(metric, input text)` for the evaluation inputs, in metric order.
    pub eval_inputs: Vec<(Metric, String)>,
}

impl BenchmarkCase {
    /// The case of a SafeEdit test record; `None` when the record has no generalisation test.
    pub fn from_record(record: &safeedit::SafeEditRecord) -> Option<Self> {
        let inputs = record.eval_inputs()?;
        Some(Self {
            id: record.id.to_string(),
            category: record.category.spelling().to_string(),
            edit: EditInput::from(&record.edit_request()),
            eval_inputs: inputs.iter().map(|i| (i.metric, i.text.to_string())).collect(),
        })
    }
}

/// Where a run's cases come from, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSource {
    /// The dataset file.
    pub path: PathBuf,
    /// Which of its records the run covers.
    pub selection: Subset,
}

impl DatasetSource {
    /// `selection` of the records in the file at `path`.
    pub fn new(path: impl Into<PathBuf>, selection: Subset) -> Self {
        Self { path: path.into(), selection }
    }
}
