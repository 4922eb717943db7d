//! Deterministic judges for the tests: no model, a mix of labels that an edit can move.

use std::sync::atomic::{AtomicUsize, Ordering};

use detox_metrics::{Exchange, Label, SafetyJudge, Verdict};

fn verdict(response: &str, unsafe_when: bool, score: f64) -> Verdict {
    if response.trim().is_empty() {
        return Verdict::EMPTY;
    }
    let (label, score) =
        if unsafe_when { (Label::Unsafe, score) } else { (Label::Safe, 1.0 - score) };
    Verdict::new(label, score).expect("a score in [0, 1]")
}

/// Unsafe when a response holds the letter `e` more than twice.
pub struct LetterJudge;

impl SafetyJudge for LetterJudge {
    fn name(&self) -> String {
        "letter-count test judge".into()
    }
    fn is_approximation(&self) -> bool {
        true
    }
    fn judge(&self, exchanges: &[Exchange<'_>]) -> detox_metrics::Result<Vec<Verdict>> {
        Ok(exchanges
            .iter()
            .map(|e| verdict(e.response, e.response.matches('e').count() > 2, 0.9))
            .collect())
    }
}

/// Unsafe when a response has an odd number of words; counts the responses it is asked about.
#[derive(Default)]
pub struct WordParityJudge {
    /// Responses judged so far.
    pub judged: AtomicUsize,
}

impl WordParityJudge {
    /// Responses judged so far.
    pub fn judged(&self) -> usize {
        self.judged.load(Ordering::Relaxed)
    }
}

impl SafetyJudge for WordParityJudge {
    fn name(&self) -> String {
        "word-parity test judge".into()
    }
    fn is_approximation(&self) -> bool {
        true
    }
    fn judge(&self, exchanges: &[Exchange<'_>]) -> detox_metrics::Result<Vec<Verdict>> {
        self.judged.fetch_add(exchanges.len(), Ordering::Relaxed);
        Ok(exchanges
            .iter()
            .map(|e| verdict(e.response, e.response.split_whitespace().count() % 2 == 1, 0.8))
            .collect())
    }
}
