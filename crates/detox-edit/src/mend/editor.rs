//! The MEND editor: one forward/backward pass for the gradient factors, one pass of the trained network, and the
//! resulting low-rank edit applied to the weights.

use std::time::Instant;

use detox_runtime::{CausalLm, LinearProbe, PromptLayout};

use super::network::MendNetwork;
use super::tokens::{edit_factors, encode_input};
use crate::delta::{add_in_fp32, Delta};
use crate::editor::{EditInput, EditOutcome, EditTimings, Editor, PromptEncoder};
use crate::error::Result;
use crate::ledger::{EditLedger, EditMode};
use crate::precision::refuse_half;

/// Edits with a trained [`MendNetwork`].
#[derive(Debug)]
pub struct MendEditor {
    network: MendNetwork,
    format: PromptLayout,
    max_length: usize,
    mode: EditMode,
    ledger: EditLedger,
}

impl MendEditor {
    /// An editor with `network`; prompts are formatted as in training (a loaded
    /// [`super::MendArtefact`]'s network, with its `training.config`'s `prompt_layout` and `max_length`).
    pub fn new(
        network: MendNetwork,
        format: PromptLayout,
        max_length: usize,
        mode: EditMode,
    ) -> Self {
        Self { network, format, max_length, mode, ledger: EditLedger::new() }
    }

    /// The network.
    pub fn network(&self) -> &MendNetwork {
        &self.network
    }
}

impl Editor for MendEditor {
    fn method(&self) -> &'static str {
        "MEND"
    }

    fn mode(&self) -> EditMode {
        self.mode
    }

    fn edit(
        &mut self,
        model: &mut CausalLm,
        encoder: &dyn PromptEncoder,
        input: &EditInput,
    ) -> Result<EditOutcome> {
        refuse_half(model, "MEND")?;
        let started = Instant::now();
        let names: Vec<String> =
            self.network.layout().weights.iter().map(|(n, _)| n.clone()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.ledger.begin(model, self.mode, &refs)?;
        let tokens = encode_input(encoder, input, self.format, self.max_length)?;
        let probe = LinearProbe::new(names.iter().cloned());
        let (factors, _) = edit_factors(model, &probe, &tokens, encoder.pad_id())?;
        let _guard = tch::no_grad_guard();
        let edits = self.network.edits(&factors)?;
        let mut delta = Delta::new();
        let kind = model.kind();
        for (name, edit) in names.iter().zip(&edits) {
            let current = model.parameter(name)?;
            let edited = add_in_fp32(current, edit, kind)?;
            delta.add(name, edit)?;
            drop(model.replace_parameter(name, edited)?);
        }
        model.freeze_all()?;
        Ok(EditOutcome::new("MEND", delta)
            .with_timings(EditTimings { locate: 0.0, edit: started.elapsed().as_secs_f64() }))
    }

    fn restore(&mut self, model: &mut CausalLm) -> Result<()> {
        self.ledger.restore(model)
    }
}
