//! Applying a trained artefact (SFT, DPO, Ext-Sub) to every evaluated record.

use std::time::Instant;

use detox_runtime::CausalLm;

use crate::delta::Delta;
use crate::editor::{EditInput, EditOutcome, EditTimings, Editor, PromptEncoder};
use crate::error::{EditError, Result};
use crate::ledger::{EditLedger, EditMode};
use crate::train::TRAINED_METHODS;

/// An editor whose edit is the same trained delta for every record (the model trained once on the training
/// split); each record is evaluated on the original model plus that delta, and restore is bit-exact.
#[derive(Debug)]
pub struct TrainedDeltaEditor {
    method: &'static str,
    delta: Delta,
    ledger: EditLedger,
}

impl TrainedDeltaEditor {
    /// An editor applying `delta` under the report name `method` (one of `SFT`, `DPO`, `Ext-Sub`): a loaded
    /// [`crate::train::TrainedArtefact`]'s `info.method` and `delta`.
    pub fn new(method: &str, delta: Delta) -> Result<Self> {
        let method = TRAINED_METHODS.iter().copied().find(|m| *m == method).ok_or_else(|| {
            EditError::InvalidConfig {
                method: method.to_string(),
                reason: format!("not a trained-delta method (expected one of {TRAINED_METHODS:?})"),
            }
        })?;
        if delta.is_empty() {
            return Err(EditError::EmptyInput { what: "the trained delta".into() });
        }
        Ok(Self { method, delta, ledger: EditLedger::new() })
    }

    /// The delta applied.
    pub fn delta(&self) -> &Delta {
        &self.delta
    }
}

impl Editor for TrainedDeltaEditor {
    fn method(&self) -> &'static str {
        self.method
    }

    fn edit(
        &mut self,
        model: &mut CausalLm,
        _encoder: &dyn PromptEncoder,
        _input: &EditInput,
    ) -> Result<EditOutcome> {
        let started = Instant::now();
        apply_fixed_delta(&mut self.ledger, model, self.method, self.delta.shallow_clone(), started)
    }

    fn restore(&mut self, model: &mut CausalLm) -> Result<()> {
        self.ledger.restore(model)
    }
}

/// Applies `delta`, the edit a method makes for every record, in single mode (the previous record's edit undone
/// first), and reports it with the wall time since `started`.
pub(crate) fn apply_fixed_delta(
    ledger: &mut EditLedger,
    model: &mut CausalLm,
    method: &'static str,
    delta: Delta,
    started: Instant,
) -> Result<EditOutcome> {
    let names: Vec<&str> = delta.names().collect();
    ledger.begin(model, EditMode::Single, &names)?;
    // The ledger holds the originals; the snapshot `apply` returns is the same values again.
    drop(delta.apply(model)?);
    Ok(EditOutcome::new(method, delta)
        .with_timings(EditTimings { locate: 0.0, edit: started.elapsed().as_secs_f64() }))
}
