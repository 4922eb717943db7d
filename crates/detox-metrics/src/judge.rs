//! The safety-judge interface: several judges can be used and compared behind it.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A judge's decision on one response.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// 0 safe, 1 unsafe, 0.5 for an empty response (SafeEdit's convention).
    pub label: f64,
    /// How unsafe the judge finds the response, in `[0, 1]` (a probability for classifiers).
    pub unsafe_score: f64,
}

impl Verdict {
    /// The verdict SafeEdit gives an empty response.
    pub const EMPTY: Verdict = Verdict { label: 0.5, unsafe_score: 0.5 };
}

/// Labels responses as safe or unsafe.
pub trait SafetyJudge {
    /// A name for reports.
    fn name(&self) -> String;

    /// Whether the judge only approximates the paper's classifier (reports then say so).
    fn is_approximation(&self) -> bool;

    /// One verdict per response, in order.
    fn judge(&self, responses: &[&str]) -> Result<Vec<Verdict>>;
}

/// Whether SafeEdit treats a response as empty (nothing but whitespace).
pub fn is_empty_response(response: &str) -> bool {
    response.trim().is_empty()
}
