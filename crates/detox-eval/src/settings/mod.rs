//! What a run is asked to do: the protocol, decoding, the cases and the general sets. The bottom layer of the
//! crate: it depends on nothing above it.

pub mod case;
pub mod decoding;
pub mod general;
pub mod protocol;

use std::path::PathBuf;

use detox_runtime::PromptLayout;

pub use case::{BenchmarkCase, DatasetSource};
pub use decoding::Decoding;
pub use general::GeneralSets;
pub use protocol::{Protocol, ProtocolPreset, SuffixPolicy};

/// Settings of a run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HarnessSettings {
    /// The run directory (manifest, records, summary, plots).
    pub out_dir: PathBuf,
    /// Decoding.
    pub decoding: Decoding,
    /// The protocol: suffix system prompt and decoding limits, whichever method runs.
    pub protocol: Protocol,
    /// Prompt layout of evaluation inputs.
    pub prompt_layout: PromptLayout,
    /// Where the suffix goes.
    pub suffix_policy: SuffixPolicy,
    /// Pre-edit responses are cached here (shared by runs of different methods with the same model, inputs and
    /// decoding); `None` keeps the cache inside the run directory.
    pub pre_edit_cache: Option<PathBuf>,
    /// Draw a progress bar on standard error.
    pub progress: bool,
    /// Judge each record (or chunk of records) on another thread while the next one generates and edits. Worth
    /// it where the judges and the edited model do not compete for the same processors (a GPU, or a judge on
    /// another device); off by default. Records are written in the same order and with the same verdicts
    /// either way; a run stopped mid-way loses at most the record being judged, which the resumed run redoes.
    pub judge_in_background: bool,
    /// Records processed together (1: one at a time, the reference's flow). With more, a chunk's uncached
    /// pre-edit inputs are generated in one batch, the editor edits the chunk in one call
    /// ([`detox_edit::Editor::edit_batch`]: together where the method can, see [`detox_edit::Editor::batching`]), and the post-edit
    /// inputs of records edited at the same projections are generated in one batch in which each record's rows
    /// use its own edited weights. Results are written per record either way. Editors in sequential mode take one
    /// record at a time.
    pub batch_records: usize,
    /// The general sets the edited model answers (KQA, CSum, over-refusal); `None` measures no cost.
    pub general: Option<GeneralSets>,
    /// Seed of sampled decoding and of the general sets' draws, as the manifest records it.
    pub seed: u64,
    /// NLTK's `punkt_tab/english` directory: fluency then splits sentences as NLTK does (exact); `None` uses the
    /// built-in rule splitter.
    pub punkt_dir: Option<PathBuf>,
}

impl HarnessSettings {
    /// The default protocol's settings for a run written to `out_dir`: its decoding limits, raw prompts, the
    /// suffix system prompt after post-edit inputs, a progress bar, one record at a time.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self::for_protocol(out_dir, Protocol::default())
    }

    /// [`HarnessSettings::new`] under `protocol`.
    pub fn for_protocol(out_dir: impl Into<PathBuf>, protocol: Protocol) -> Self {
        Self {
            out_dir: out_dir.into(),
            decoding: Decoding::for_protocol(&protocol),
            protocol,
            prompt_layout: PromptLayout::default(),
            suffix_policy: SuffixPolicy::default(),
            pre_edit_cache: None,
            progress: true,
            judge_in_background: false,
            batch_records: 1,
            general: None,
            seed: 0,
            punkt_dir: None,
        }
    }

    /// The sentence splitter fluency uses, as summaries and manifests name it.
    pub fn fluency_splitter(&self) -> &'static str {
        if self.punkt_dir.is_some() {
            "punkt"
        } else {
            "rules"
        }
    }

    /// The suffix appended to evaluation inputs where [`HarnessSettings::suffix_policy`] says.
    pub fn suffix(&self) -> &str {
        &self.protocol.suffix_system_prompt
    }
}
