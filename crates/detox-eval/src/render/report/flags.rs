//! Marks on single responses, drawn next to them in the report.

use detox_metrics::degeneration::{Degeneration, DegenerationThresholds};

use crate::record::JudgedResponse;

/// Something about a response a reader should notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// Short name shown on the mark.
    pub name: &'static str,
    /// Why it was raised (the mark's tooltip).
    pub why: String,
}

/// The flags of one response: empty (nothing but whitespace), truncated (generation stopped at the token limit)
/// and, where the record carries its degeneration measures, repetitive or echoing the suffix prompt or the edit
/// target under [`DegenerationThresholds::default`] (the thresholds the summary counts with).
pub fn response_flags(response: &JudgedResponse, degeneration: Option<&Degeneration>) -> Vec<Flag> {
    let mut flags = Vec::new();
    if response.response.trim().is_empty() {
        flags.push(Flag { name: "empty", why: "the response is empty or only whitespace".into() });
    }
    if response.finish == "length" {
        flags.push(Flag {
            name: "truncated",
            why: format!("generation stopped at the limit of {} new tokens", response.tokens),
        });
    }
    if let Some(d) = degeneration {
        let t = DegenerationThresholds::default();
        if d.is_repetitive_under(&t) {
            flags.push(Flag {
                name: "repetitive",
                why: format!(
                    "{:.0}% of its trigrams repeat; longest repeated run {} words",
                    100.0 * d.repeated_ngram_share,
                    d.longest_repeated_span
                ),
            });
        }
        if d.echoes_suffix_under(&t) {
            flags.push(Flag {
                name: "echoes suffix",
                why: format!(
                    "repeats {} words in a row of the suffix system prompt",
                    d.suffix_echo_span
                ),
            });
        }
        if d.echoes_target_under(&t) {
            flags.push(Flag {
                name: "echoes target",
                why: format!("repeats {} words in a row of the edit target", d.target_echo_span),
            });
        }
    }
    flags
}
