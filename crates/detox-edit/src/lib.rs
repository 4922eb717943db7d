//! # detox-edit
//!
//! Knowledge-editing algorithms for detoxification behind one `Editor` interface: DINM (Detoxifying with
//! Intraoperative Neural Monitoring, Wang et al., ACL 2024) first, then the baselines its paper compares with.
//! Every edit can be restored bit-exactly and exported as a delta in safetensors.
#![deny(missing_docs)]

pub mod adam;
pub mod delta;
pub mod dinm;
pub mod editor;
pub mod error;
pub mod ext_sub;
pub mod ftl;
pub mod ledger;
pub mod mend;
pub mod registry;
pub mod reminder;
pub mod train;
pub mod trained;

pub use delta::Delta;
pub use dinm::StepLoss;
pub use editor::{
    Batching, EditDetails, EditInput, EditOutcome, EditTimings, Editor, PromptEncoder,
};
pub use error::{EditError, Result};
pub use ftl::{FtlEditor, FtlHyperParams};
pub use ledger::{EditLedger, EditMode};
pub use reminder::{SelfReminder, SelfReminderEditor};
pub use trained::TrainedDeltaEditor;
