//! # detox-edit
//!
//! Knowledge-editing algorithms for detoxification behind one [`Editor`] interface: DINM (Detoxifying with
//! Intraoperative Neural Monitoring, Wang et al., ACL 2024) first, then the baselines its paper compares with
//! (FT-L, SFT, DPO, Ext-Sub, MEND, Self-Reminder), and methods published since: ProFS's toxic-subspace
//! projection ([`profs`]), activation steering ([`steering`]) and Model Surgery ([`surgery`], a toxicity probe's
//! direction added to the `gate_proj` rows most anti-aligned with it). Every edit can be restored bit-exactly and
//! exported as a [`Delta`] in safetensors.
//!
//! Methods are built by name through a [`registry::Registry`], which also loads the artefacts a method was
//! trained into; every artefact type is saved and loaded through [`Artefact`], whose header names its kind so that
//! a directory of another method's artefact is refused by name. A method of your own implements [`Editor`]: `method`, `edit` and `restore`; batches of records,
//! input wrapping and resumption have defaults. Registered with a name, its options and a constructor
//! ([`registry::MethodSpec`]), it runs by name through the same harness as the built-in ones. What a method
//! learns once from a training split (adapters, MEND's hyper-network, ProFS's subspaces, steering vectors, Model
//! Surgery's probe) is a fit, run by name from a [`registry::FitRegistry`] the same way. The timings the
//! benchmark programs print are functions of [`mod@bench`].
//!
//! ```no_run
//! use detox_edit::{Delta, EditInput, EditLedger, EditMode, EditOutcome, Editor, PromptEncoder, Result};
//! use detox_runtime::CausalLm;
//!
//! /// Scales one layer's down projection: a toy edit with an exact restore.
//! struct Damp {
//!     ledger: EditLedger,
//! }
//!
//! impl Editor for Damp {
//!     fn method(&self) -> &'static str {
//!         "damp"
//!     }
//!
//!     fn edit(&mut self, model: &mut CausalLm, _: &dyn PromptEncoder, _: &EditInput) -> Result<EditOutcome> {
//!         let name = "model.layers.0.mlp.down_proj.weight";
//!         self.ledger.begin(model, EditMode::Single, &[name])?;
//!         let weight = model.parameter(name)?.shallow_clone();
//!         let mut delta = Delta::new();
//!         delta.add(name, &(&weight * -0.1))?;
//!         drop(delta.apply(model)?);
//!         Ok(EditOutcome::new("damp", delta).at_layer(0))
//!     }
//!
//!     fn restore(&mut self, model: &mut CausalLm) -> Result<()> {
//!         self.ledger.restore(model)
//!     }
//! }
//! ```
#![deny(missing_docs)]

mod activations;
mod adam;
mod artefact;
pub mod bench;
mod delta;
pub mod dinm;
mod editor;
mod error;
pub mod ext_sub;
mod ftl;
mod input_length;
mod ledger;
pub mod mend;
pub mod none;
mod precision;
pub mod profs;
pub mod registry;
mod reminder;
pub mod steering;
pub mod surgery;
pub mod train;
mod trained;

pub use artefact::{Artefact, HEADER_FILE};
pub use delta::Delta;
pub use dinm::StepLoss;
pub use editor::{
    Batching, EditDetails, EditInput, EditNote, EditOutcome, EditTimings, Editor, PromptEncoder,
};
pub use error::{EditError, Result};
pub use ftl::{FtlEditor, FtlHyperParams};
pub use ledger::{EditLedger, EditMode};
pub use reminder::{SelfReminder, SelfReminderEditor};
pub use trained::TrainedDeltaEditor;
