//! Decoding settings of the evaluation's generations.

use detox_runtime::{Sampling, Truncation};
use serde::{Deserialize, Serialize};

use crate::settings::protocol::Protocol;

/// Decoding settings, explicit so that runs are reproducible (the reference leaves them to the checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decoding {
    /// Most new tokens per response (the protocol's `max_output_length`, 600).
    pub max_new_tokens: usize,
    /// Longest input in tokens; a longer one is cut as `truncation` says. `None` leaves inputs unbounded, as the
    /// default protocol does: only the model's context less `max_new_tokens` bounds them then.
    pub max_input_tokens: Option<usize>,
    /// Which tokens of an over-long input are kept: the last ones by default, as the reference does
    /// ([`Truncation::KeepFirst`] is the tokenizer-style alternative).
    #[serde(default)]
    pub truncation: Truncation,
    /// Greedy (default) or sampling.
    pub sampling: Sampling,
    /// How many inputs are generated together (rows; with more inputs, rows are refilled as responses end).
    pub batch_size: usize,
}

impl Default for Decoding {
    /// The default protocol's limits, greedy, five rows (a SafeEdit record's five inputs in one batch).
    fn default() -> Self {
        Self::for_protocol(&Protocol::default())
    }
}

impl Decoding {
    /// Greedy decoding of five rows within `protocol`'s limits.
    pub fn for_protocol(protocol: &Protocol) -> Self {
        Self {
            max_new_tokens: protocol.max_output_length,
            max_input_tokens: protocol.input_bound(),
            truncation: protocol.truncation,
            sampling: Sampling::Greedy,
            batch_size: 5,
        }
    }

    /// The input bound in effect for a model whose context holds `context_len` positions: the set bound, or
    /// the context less the new tokens when inputs are unbounded (at least 1).
    pub fn input_bound(&self, context_len: usize) -> usize {
        self.max_input_tokens
            .unwrap_or_else(|| context_len.saturating_sub(self.max_new_tokens))
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::protocol::ProtocolPreset;

    #[test]
    fn the_limits_follow_the_protocol() {
        let current = Decoding::default();
        assert_eq!((current.max_new_tokens, current.max_input_tokens), (600, None));
        assert_eq!(current.input_bound(8192), 8192 - 600);
        let first = Decoding::for_protocol(&ProtocolPreset::EasyEdit2024_03.protocol());
        assert_eq!(first.max_input_tokens, Some(400));
        assert_eq!(first.input_bound(8192), 400);
    }

    #[test]
    fn decoding_written_before_the_truncation_field_reads_as_keep_last() {
        let mut old = serde_json::to_value(Decoding {
            truncation: Truncation::KeepFirst,
            ..Decoding::default()
        })
        .unwrap();
        old.as_object_mut().unwrap().remove("truncation");
        let read: Decoding = serde_json::from_value(old).unwrap();
        assert_eq!(read, Decoding::default());
    }
}
