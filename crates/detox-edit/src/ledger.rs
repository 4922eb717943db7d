//! Bookkeeping of applied edits so that any number of them can be undone bit-exactly.

use detox_runtime::{CausalLm, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Whether edits accumulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditMode {
    /// Each record is edited on the original model: the previous edit is undone before the next one (the
    /// SafeEdit protocol).
    #[default]
    Single,
    /// Edits accumulate on one model; restore undoes all of them.
    Sequential,
}

/// The original values of every parameter an editor has touched since the last restore.
#[derive(Debug, Default)]
pub struct EditLedger {
    originals: Vec<Snapshot>,
}

impl EditLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prepares the model for a new edit of `names`: in single mode undoes the previous edit first; then saves the
    /// values of the names not saved yet.
    pub fn begin(&mut self, model: &mut CausalLm, mode: EditMode, names: &[&str]) -> Result<()> {
        if mode == EditMode::Single {
            self.restore(model)?;
        }
        let fresh: Vec<&str> =
            names.iter().copied().filter(|n| !self.originals.iter().any(|s| s.covers(n))).collect();
        if !fresh.is_empty() {
            self.originals.push(model.snapshot(&fresh)?);
        }
        Ok(())
    }

    /// Whether any edit is applied.
    pub fn is_dirty(&self) -> bool {
        !self.originals.is_empty()
    }

    /// Puts every saved parameter back, bit-exactly, and forgets them.
    pub fn restore(&mut self, model: &mut CausalLm) -> Result<()> {
        for snapshot in self.originals.drain(..).rev() {
            model.restore(&snapshot)?;
        }
        model.freeze_all()?;
        Ok(())
    }
}
