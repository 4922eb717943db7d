//! The choices where the paper and the reference implementation differ, as named options.

use serde::{Deserialize, Serialize};

/// What text is run through the model for each response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocateInput {
    /// The safe and the unsafe response alone, without the adversarial prompt (the reference implementation).
    #[default]
    ResponsesOnly,
    /// The adversarial prompt, a space, then the response.
    WithPrompt,
}

/// Whether padding positions count towards the distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingPositions {
    /// The distance runs over the full padded `[sequence, hidden]` states, padding included (the reference).
    #[default]
    Included,
    /// Positions where either row is padding are left out.
    Masked,
}

/// Options of the locator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LocateOptions {
    /// What text is contrasted.
    pub input: LocateInput,
    /// How padding is treated.
    pub padding: PaddingPositions,
}
