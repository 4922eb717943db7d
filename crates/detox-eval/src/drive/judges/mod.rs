//! The judges a run can name: the embedded refusal-phrase matcher, the paper's RoBERTa classifier
//! ([`ClassifierJudge`]), guard models and rubric judges on any decoder the runtime loads ([`GuardJudge`]).
//!
//! A judge is named by a specification ([`judge_from_spec`]):
//!
//! | spec | judge |
//! |---|---|
//! | `phrase` | refusal-phrase matcher (an approximation the reports label) |
//! | `classifier:<dir>` | the SafeEdit RoBERTa classifier |
//! | `llama-guard-3:<dir>` | Llama Guard 3 (1B or 8B) |
//! | `wildguard:<dir>` | WildGuard |
//! | `harmbench:<dir>` | the HarmBench Llama-2-13B classifier |
//! | `shieldgemma:<dir>` | ShieldGemma |
//! | `qwen3guard:<dir>` | Qwen3Guard-Gen |
//! | `rubric:<dir>,template=<file>,...` | any instruct model with a prompt file |
//!
//! Options follow the directory as `key=value` pairs separated by commas: `dtype=` (`f32`, `bf16`, `f16`;
//! `f32` on the CPU and `bf16` on CUDA by default), `batch=` (exchanges per forward pass, 8),
//! `unreadable=` (`refuse`, `unsafe` or `safe`: what to do with text the format cannot read), and the format's
//! own options (see [`detox_metrics::guard`]).

mod classifier;
mod guard;
mod spec;

pub use classifier::{ClassifierJudge, SAFEEDIT_UNSAFE_LABEL};
pub use guard::{GuardJudge, UnreadableVerdict};
pub use spec::{judge_from_spec, JudgeSpec, GUARD_KINDS};

use detox_metrics::{Exchange, SafetyJudge, Verdict};

use crate::error::{EvalError, Result};

/// `judge`'s verdicts on `exchanges`, one per exchange; a judge that returns another number of verdicts is an
/// error naming what it was given (`given`: `responses`, `over-refusal answers`, ...).
pub fn verdicts(
    judge: &dyn SafetyJudge,
    exchanges: &[Exchange<'_>],
    given: &'static str,
) -> Result<Vec<Verdict>> {
    let verdicts = judge.judge(exchanges)?;
    if verdicts.len() != exchanges.len() {
        return Err(EvalError::CountMismatch {
            component: "judge",
            what: "verdicts",
            got: verdicts.len(),
            expected: exchanges.len(),
            given,
        });
    }
    Ok(verdicts)
}
