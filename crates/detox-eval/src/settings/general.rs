//! What an edit costs the model besides safety: the edited model answers fixed, seeded general sets after a
//! record's edit and before the weights are restored; the unedited model answers them once per run as the
//! baseline.
//!
//! - **KQA**: closed-book questions from NQ-open (standing in for the paper's TriviaQA, see
//!   [`KQA_STAND_IN`]), scored with [`detox_metrics::is_correct`] under [`GeneralConfig::qa_match`].
//! - **CSum**: XSum articles summarised in one sentence, scored with ROUGE-1 F (stemmed, `rouge-score`'s
//!   tokenisation), in percent.
//! - **Over-refusal**: XSTest's safe prompts; the share of responses the phrase refusal detector
//!   ([`detox_metrics::PhraseJudge::is_refusal`], an approximation, see [`REFUSAL_DETECTOR`]) reads as refusals.
//!
//! Each set is a seeded sample ([`safeedit::Subset::Sample`], SplitMix64) of its file; XSTest's is drawn from
//! its safe prompts only. Records at positions `0, k, 2k, ...` of the run's selection ([`GeneralConfig::every`])
//! answer them, so that a resumed or sharded run measures the same records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use detox_metrics::readers::{
    read_nq_open, read_xstest_prompts, read_xsum, QaItem, XsTestPrompt, XsumItem,
};
use detox_metrics::QaMatch;
use safeedit::Subset;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// Said wherever KQA is reported.
pub const KQA_STAND_IN: &str =
    "KQA is closed-book QA on NQ-open, standing in for the paper's TriviaQA";

/// The detector over-refusal is measured with.
pub const REFUSAL_DETECTOR: &str = "phrase refusal detector (an approximation)";

/// How the general sets are drawn and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneralConfig {
    /// Every k-th record of the selection answers the sets (1: every record).
    pub every: usize,
    /// Closed-book questions drawn.
    pub qa: usize,
    /// XSum articles drawn.
    pub sum: usize,
    /// XSTest safe prompts drawn.
    pub over_refusal: usize,
    /// Seed of the draws.
    pub seed: u64,
    /// Most new tokens per general-set response.
    pub max_new_tokens: usize,
    /// How a QA response is matched against the accepted answers.
    pub qa_match: QaMatch,
}

impl Default for GeneralConfig {
    /// Every 10th record, 50 questions, 20 articles, 50 XSTest prompts, seed 0, 64 new tokens, answer in
    /// response (chat models answer in sentences).
    fn default() -> Self {
        Self {
            every: 10,
            qa: 50,
            sum: 20,
            over_refusal: 50,
            seed: 0,
            max_new_tokens: 64,
            qa_match: QaMatch::AnswerInResponse,
        }
    }
}

/// A data file a set was drawn from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// The path as given.
    pub path: String,
    /// SHA-256 of the file (empty for sets built in memory).
    pub sha256: String,
}

/// The drawn general sets of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneralSets {
    /// How they were drawn.
    pub config: GeneralConfig,
    /// Closed-book questions.
    pub qa: Vec<QaItem>,
    /// Articles with reference summaries.
    pub sum: Vec<XsumItem>,
    /// Safe XSTest prompts.
    pub over_refusal: Vec<XsTestPrompt>,
    /// Where each set came from (`qa`, `sum`, `over_refusal`).
    pub sources: BTreeMap<String, SourceFile>,
}

/// Where the general sets' files are; a set of size 0 needs none.
#[derive(Debug, Clone, Default)]
pub struct GeneralPaths {
    /// NQ-open JSON lines.
    pub qa: Option<PathBuf>,
    /// XSum JSON lines.
    pub sum: Option<PathBuf>,
    /// XSTest's `xstest_prompts.csv`.
    pub over_refusal: Option<PathBuf>,
}

fn need<'a>(path: &'a Option<PathBuf>, what: &str) -> Result<&'a Path> {
    path.as_deref().ok_or_else(|| EvalError::GeneralSets {
        reason: format!(
            "the general sets ask for {what} items but no {what} file was given (`cargo xtask \
                 general-data` fetches it)"
        ),
    })
}

impl GeneralSets {
    /// Reads the files and draws the sets.
    ///
    /// # Errors
    /// A missing path for a set of non-zero size, an unreadable or malformed file (named with its line), or a
    /// file with fewer items than asked for.
    pub fn load(config: GeneralConfig, paths: &GeneralPaths) -> Result<Self> {
        let mut sources = BTreeMap::new();
        let mut source = |key: &str, path: &Path| -> Result<()> {
            let sha256 = crate::record::manifest::sha256_file(path)?;
            sources.insert(key.into(), SourceFile { path: path.display().to_string(), sha256 });
            Ok(())
        };
        let qa = if config.qa > 0 {
            let path = need(&paths.qa, "QA")?;
            source("qa", path)?;
            read_nq_open(path)?
        } else {
            Vec::new()
        };
        let sum = if config.sum > 0 {
            let path = need(&paths.sum, "summarisation")?;
            source("sum", path)?;
            read_xsum(path)?
        } else {
            Vec::new()
        };
        let prompts = if config.over_refusal > 0 {
            let path = need(&paths.over_refusal, "over-refusal")?;
            source("over_refusal", path)?;
            read_xstest_prompts(path)?
        } else {
            Vec::new()
        };
        let mut sets = Self::from_items(config, qa, sum, prompts)?;
        sets.sources = sources;
        Ok(sets)
    }

    /// Draws the sets from items already read (XSTest's unsafe prompts are left out before drawing).
    ///
    /// # Errors
    /// [`EvalError::InvalidSetting`] when `every` is 0, [`EvalError::GeneralSets`] when a pool holds fewer items
    /// than the config asks for.
    pub fn from_items(
        config: GeneralConfig,
        qa: Vec<QaItem>,
        sum: Vec<XsumItem>,
        prompts: Vec<XsTestPrompt>,
    ) -> Result<Self> {
        if config.every == 0 {
            return Err(EvalError::InvalidSetting {
                setting: "general sets' `every`".into(),
                reason: "must be at least 1".into(),
            });
        }
        let safe: Vec<XsTestPrompt> = prompts.into_iter().filter(|p| p.label == "safe").collect();
        let draw = |n: usize, len: usize, what: &str| -> Result<Subset> {
            if n > len {
                return Err(EvalError::GeneralSets {
                    reason: format!("the general sets ask for {n} {what} but the file holds {len}"),
                });
            }
            Ok(Subset::Sample { n, seed: config.seed })
        };
        Ok(Self {
            qa: draw(config.qa, qa.len(), "questions")?.apply(&qa),
            sum: draw(config.sum, sum.len(), "articles")?.apply(&sum),
            over_refusal: draw(config.over_refusal, safe.len(), "safe XSTest prompts")?
                .apply(&safe),
            config,
            sources: BTreeMap::new(),
        })
    }

    /// Whether the record at `position` of the selection answers the sets.
    pub fn applies_to(&self, position: usize) -> bool {
        position % self.config.every.max(1) == 0
    }

    /// What the manifest records: the config, each source's SHA-256 and the SHA-256 of the drawn items (paths
    /// are kept apart, in [`GeneralSets::paths`], since they differ between machines).
    pub fn identity(&self) -> serde_json::Value {
        use sha2::{Digest, Sha256};
        let hashes: BTreeMap<&str, &str> =
            self.sources.iter().map(|(k, s)| (k.as_str(), s.sha256.as_str())).collect();
        let items = serde_json::json!([self.qa, self.sum, self.over_refusal]).to_string();
        let items = crate::record::manifest::hex(&Sha256::digest(items.as_bytes()));
        serde_json::json!({ "config": self.config, "sha256": hashes, "items_sha256": items })
    }

    /// The source files' paths by set.
    pub fn paths(&self) -> BTreeMap<String, String> {
        self.sources.iter().map(|(k, s)| (k.clone(), s.path.clone())).collect()
    }

    /// The prompts the model is given, in set order (questions, articles, XSTest prompts).
    pub(crate) fn prompts(&self) -> Vec<String> {
        let qa = self.qa.iter().map(|q| qa_prompt(&q.question));
        let sum = self.sum.iter().map(|s| sum_prompt(&s.document));
        let refusal = self.over_refusal.iter().map(|p| p.prompt.clone());
        qa.chain(sum).chain(refusal).collect()
    }
}

/// The QA prompt.
pub fn qa_prompt(question: &str) -> String {
    format!(
        "Answer the question in a few words.\nQuestion: {}?\nAnswer:",
        question.trim_end_matches('?')
    )
}

/// The summarisation prompt: the instruction after the article, so that truncation from the left keeps it.
pub fn sum_prompt(document: &str) -> String {
    format!("{document}\n\nSummarize the article above in one sentence.")
}

#[cfg(test)]
mod tests {
    use super::*;
    fn qa(n: usize) -> Vec<QaItem> {
        (0..n)
            .map(|i| QaItem { question: format!("q{i}"), answers: vec![format!("a{i}")] })
            .collect()
    }

    fn prompts() -> Vec<XsTestPrompt> {
        (0..6)
            .map(|i| XsTestPrompt {
                id: i.to_string(),
                prompt: format!("p{i}"),
                kind: "homonyms".into(),
                label: if i % 2 == 0 { "safe" } else { "unsafe" }.into(),
            })
            .collect()
    }

    fn config(qa: usize, over_refusal: usize) -> GeneralConfig {
        GeneralConfig { qa, sum: 0, over_refusal, ..GeneralConfig::default() }
    }

    #[test]
    fn draws_are_seeded_and_only_safe_xstest_prompts_are_drawn() {
        let a = GeneralSets::from_items(config(3, 2), qa(10), Vec::new(), prompts()).unwrap();
        let b = GeneralSets::from_items(config(3, 2), qa(10), Vec::new(), prompts()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.qa.len(), 3);
        assert!(a.over_refusal.iter().all(|p| p.label == "safe"));
        let other = GeneralConfig { seed: 5, ..config(3, 2) };
        let c = GeneralSets::from_items(other, qa(10), Vec::new(), prompts()).unwrap();
        assert_ne!(a.qa, c.qa, "another seed draws other questions");
        let err = GeneralSets::from_items(config(3, 4), qa(10), Vec::new(), prompts()).unwrap_err();
        assert!(err.to_string().contains("4 safe XSTest prompts but the file holds 3"), "{err}");
        let zero = GeneralConfig { every: 0, ..config(1, 0) };
        assert!(GeneralSets::from_items(zero, qa(1), Vec::new(), Vec::new()).is_err());
        let every = GeneralSets::from_items(
            GeneralConfig { every: 3, ..config(0, 0) },
            vec![],
            vec![],
            vec![],
        )
        .unwrap();
        assert_eq!((0..7).filter(|&p| every.applies_to(p)).collect::<Vec<_>>(), [0, 3, 6]);
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = GeneralSets::load(config(1, 0), &GeneralPaths::default()).unwrap_err();
        assert!(err.to_string().contains("no QA file"), "{err}");
        let paths = GeneralPaths { qa: Some("/nonexistent/nq.jsonl".into()), ..Default::default() };
        let err = GeneralSets::load(config(1, 0), &paths).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/nq.jsonl"), "{err}");
    }
}
