//! The method that edits nothing: the model as loaded answers on both sides of the "edit", which gives a run's
//! baseline row under the same protocol, judge and records as every method.

use detox_runtime::CausalLm;

use crate::delta::Delta;
use crate::editor::{EditInput, EditOutcome, Editor, PromptEncoder};
use crate::error::Result;

/// An [`Editor`] whose edit changes nothing and whose restore has nothing to undo.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEdit;

impl Editor for NoEdit {
    fn method(&self) -> &'static str {
        "none"
    }

    fn edit(
        &mut self,
        _model: &mut CausalLm,
        _encoder: &dyn PromptEncoder,
        _input: &EditInput,
    ) -> Result<EditOutcome> {
        Ok(EditOutcome::new("none", Delta::new()))
    }

    fn restore(&mut self, _model: &mut CausalLm) -> Result<()> {
        Ok(())
    }
}
