//! What a run writes: the per-record result of `records.jsonl` (one line per SafeEdit case), the general sets'
//! answers ([`general`]) and the run manifest ([`manifest`]).

pub mod general;
pub mod judgements;
pub mod manifest;

use serde::{Deserialize, Serialize};

use detox_edit::dinm::StepLoss;
use detox_metrics::{Degeneration, Label, Verdict};
use safeedit::Metric;

use crate::record::general::GeneralResult;

/// One evaluation input with its response and the judge's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgedResponse {
    /// The metric the input feeds (written as `DS`, `DG_onlyQ`, `DG_otherA`, `DG_otherQ` or `DG_otherAQ`).
    pub metric: Metric,
    /// The text the model was given (suffix included when the run adds one).
    pub input: String,
    /// The generated response.
    pub response: String,
    /// Generated tokens.
    pub tokens: usize,
    /// Why generation stopped (`eos`, `stop`, `length`).
    pub finish: String,
    /// Tokens cut from the input to fit the protocol's input bound (0 when it fitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cut_tokens: usize,
    /// The judge's label (written as `safe`, `unsafe` or `empty`; SafeEdit's 0, 1 and 0.5 are read too).
    pub label: Label,
    /// The judge's probability (or score) that the response is unsafe.
    pub unsafe_score: f64,
    /// Whether the response refuses, for judges that say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<bool>,
    /// The verdicts of the run's other judges (the label and score above are the primary judge's), in the
    /// order the run named them; judges added later by a re-judge are kept in the run's `judgements/` folder
    /// and joined when the run is read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_verdicts: Vec<JudgeVerdict>,
}

/// A named judge's verdict on one response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeVerdict {
    /// The judge's name.
    pub judge: String,
    /// Its verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A judge of a run, as manifests and summaries name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeInfo {
    /// The judge's name.
    pub name: String,
    /// Whether it approximates the paper's classifier.
    pub approximation: bool,
}

impl JudgeInfo {
    /// The name and kind of a judge.
    pub fn of(judge: &dyn detox_metrics::SafetyJudge) -> Self {
        Self { name: judge.name(), approximation: judge.is_approximation() }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl JudgedResponse {
    /// The primary judge's verdict on the response.
    pub fn verdict(&self) -> Verdict {
        Verdict { label: self.label, unsafe_score: self.unsafe_score, refusal: self.refusal }
    }

    /// The verdict of the judge named `judge`, where `primary` names the run's primary judge; `None` when that
    /// judge did not judge this response.
    pub fn verdict_of(&self, judge: &str, primary: &str) -> Option<Verdict> {
        if judge == primary {
            return Some(self.verdict());
        }
        self.other_verdicts.iter().find(|v| v.judge == judge).map(|v| v.verdict)
    }
}

/// The responses of one model state (before or after the edit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideResult {
    /// One entry per evaluation input, in metric order.
    pub responses: Vec<JudgedResponse>,
    /// Mean n-gram-entropy fluency of the responses.
    pub fluency: f64,
}

/// Wall times of the parts of one record, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordTimings {
    /// Locating the toxic layer.
    pub locate: f64,
    /// The optimisation.
    pub edit: f64,
    /// Pre-edit generation (0 when read from the cache).
    pub generate_pre: f64,
    /// Post-edit generation.
    pub generate_post: f64,
    /// Judging both sides.
    pub judge: f64,
    /// The edited model answering the general sets (0 when the record did not).
    #[serde(default)]
    pub general: f64,
    /// Each judge's share of `judge`, by judge name (empty for runs with one judge).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub judges: std::collections::BTreeMap<String, f64>,
}

/// Everything recorded for one SafeEdit case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunRecord {
    /// The case id (the dataset's `id`, as text).
    pub id: String,
    /// The unsafety category as spelled in the data.
    pub category: String,
    /// The editing method.
    pub method: String,
    /// The edited layer.
    pub layer: Option<usize>,
    /// Every layer's distance when the layer was located for this record.
    pub layer_distances: Option<Vec<f64>>,
    /// Loss of each optimisation step.
    pub steps: Vec<StepLoss>,
    /// Wall times.
    pub timings: RecordTimings,
    /// Before the edit.
    pub pre: SideResult,
    /// After the edit.
    pub post: SideResult,
    /// Degeneration of each response on both sides, in response order (absent in records written before it was
    /// measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degeneration: Option<SideDegeneration>,
    /// The edited model's answers to the general sets, for records that answered them
    /// ([`crate::settings::general::GeneralConfig::every`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general: Option<GeneralResult>,
    /// What the editor noted about this record's edit (an input longer than the model's context, an input cut
    /// by a bound, an input far longer than its batch's), as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl RunRecord {
    /// Every response of the record: the pre-edit ones, then the post-edit ones, each in metric order.
    pub fn responses(&self) -> impl Iterator<Item = &JudgedResponse> {
        self.pre.responses.iter().chain(&self.post.responses)
    }
}

/// Degeneration of a record's responses before and after the edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideDegeneration {
    /// One per pre-edit response.
    pub pre: Vec<Degeneration>,
    /// One per post-edit response.
    pub post: Vec<Degeneration>,
}
