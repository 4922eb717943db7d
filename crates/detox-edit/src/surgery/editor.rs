//! The Model Surgery editor: the fitted shift applied to every evaluated record.

use std::time::Instant;

use detox_runtime::CausalLm;
use tch::Tensor;

use super::probe::Probe;
use super::select::{surgery_delta, SelectedRow};
use crate::delta::Delta;
use crate::editor::{EditInput, EditOutcome, Editor, PromptEncoder};
use crate::error::{torch, EditError, Result};
use crate::ledger::EditLedger;
use crate::trained::apply_fixed_delta;

/// Shifts the selected `gate_proj` rows by `alpha` times the probe's toxic direction. The edit does not depend
/// on the record (the model is edited once, as in the paper); each record is evaluated on the original model
/// plus the shift, and restore is bit-exact.
#[derive(Debug)]
pub struct SurgeryEditor {
    direction: Tensor,
    rows: Vec<SelectedRow>,
    alpha: f64,
    delta: Option<Delta>,
    ledger: EditLedger,
}

impl SurgeryEditor {
    /// An editor shifting `rows` along `probe`'s toxic direction with strength `alpha` (a loaded
    /// [`super::SurgeryFit`]'s probe and rows, with its `info.config.alpha` unless another is asked for).
    pub fn new(probe: &Probe, rows: Vec<SelectedRow>, alpha: f64) -> Result<Self> {
        if rows.is_empty() {
            return Err(EditError::EmptyInput { what: "Model Surgery's rows".into() });
        }
        if !alpha.is_finite() {
            return Err(EditError::InvalidConfig {
                method: "Model Surgery".into(),
                reason: format!("alpha {alpha} is not finite"),
            });
        }
        let direction = probe.toxic_direction()?.f_detach().map_err(torch("probe direction"))?;
        Ok(Self { direction, rows, alpha, delta: None, ledger: EditLedger::new() })
    }

    /// The shifted rows, best first.
    pub fn rows(&self) -> &[SelectedRow] {
        &self.rows
    }

    /// The shift strength.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl Editor for SurgeryEditor {
    fn method(&self) -> &'static str {
        super::METHOD
    }

    fn edit(
        &mut self,
        model: &mut CausalLm,
        _encoder: &dyn PromptEncoder,
        _input: &EditInput,
    ) -> Result<EditOutcome> {
        let started = Instant::now();
        let delta = match &self.delta {
            Some(delta) => delta.shallow_clone(),
            None => {
                let delta = surgery_delta(model, &self.direction, &self.rows, self.alpha)?;
                self.delta = Some(delta.shallow_clone());
                delta
            }
        };
        apply_fixed_delta(&mut self.ledger, model, super::METHOD, delta, started)
    }

    fn restore(&mut self, model: &mut CausalLm) -> Result<()> {
        self.ledger.restore(model)
    }
}
