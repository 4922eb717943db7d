//! How long an edit's inputs are, against the model's context and against the other records of a batch.
//!
//! The reference edits every input whole, however long: a long input costs memory in proportion to its length
//! (and its attention to the square of it, see `docs/robustness.md`) and, past `max_position_embeddings`, runs at
//! positions the model never saw. The editors keep that behaviour by default and report it as
//! [`EditNote`]s; a bound, where the caller sets one, cuts an input to its last tokens, which is what the
//! reference's evaluation does with its prompts (left truncation), so the scored response stays whole.

use crate::editor::EditNote;
use crate::error::{EditError, Result};

/// An input this many times longer than its batch's median is reported.
pub(crate) const FAR_LONGER_FACTOR: usize = 4;

/// Checks `tokens` (the input called `input`, whose last `scored` tokens are the scored answer) against the
/// model's `context` and cuts it to its last `bound` tokens when a bound is set and exceeded. A bound that would
/// cut into the scored tokens (or the position before them, whose prediction scores the first) is refused.
pub(crate) fn bound_input(
    input: &str,
    tokens: Vec<i64>,
    scored: usize,
    context: usize,
    bound: Option<usize>,
) -> Result<(Vec<i64>, Vec<EditNote>)> {
    let mut notes = Vec::new();
    if tokens.len() > context {
        notes.push(EditNote::LongerThanContext {
            input: input.into(),
            tokens: tokens.len(),
            context,
        });
    }
    let Some(bound) = bound.filter(|&b| tokens.len() > b) else { return Ok((tokens, notes)) };
    if bound <= scored {
        return Err(EditError::InputLength { what: format!(
            "the {input} has {} tokens, of which the last {scored} are scored: a bound of {bound} tokens would cut \
             into them (it needs at least {})",
            tokens.len(),
            scored + 1
        ) });
    }
    notes.push(EditNote::Truncated { input: input.into(), tokens: tokens.len(), kept: bound });
    Ok((tokens[tokens.len() - bound..].to_vec(), notes))
}

/// For each of a batch's input `lengths`, a note when it is over [`FAR_LONGER_FACTOR`] times the batch's median
/// (the lower middle value, so that in a batch of two the longer is compared with the shorter).
pub(crate) fn far_longer_than_batch(lengths: &[usize]) -> Vec<Option<EditNote>> {
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len().saturating_sub(1) / 2).copied().unwrap_or(0);
    lengths
        .iter()
        .map(|&tokens| {
            (lengths.len() > 1 && tokens > FAR_LONGER_FACTOR * median)
                .then_some(EditNote::FarLongerThanBatch { tokens, median })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_within_context_and_bound_is_kept_without_notes() {
        let (kept, notes) = bound_input("edit input", vec![1, 2, 3], 1, 3, Some(3)).unwrap();
        assert_eq!(kept, [1, 2, 3]);
        assert!(notes.is_empty());
    }

    #[test]
    fn an_input_longer_than_the_context_is_noted_and_kept_whole_without_a_bound() {
        let (kept, notes) = bound_input("edit input", (0..10).collect(), 2, 8, None).unwrap();
        assert_eq!(kept.len(), 10);
        assert_eq!(
            notes,
            [EditNote::LongerThanContext { input: "edit input".into(), tokens: 10, context: 8 }]
        );
    }

    #[test]
    fn a_bound_keeps_the_last_tokens_and_refuses_to_cut_the_scored_ones() {
        let (kept, notes) = bound_input("edit input", (0..10).collect(), 3, 100, Some(4)).unwrap();
        assert_eq!(kept, [6, 7, 8, 9]);
        assert_eq!(
            notes,
            [EditNote::Truncated { input: "edit input".into(), tokens: 10, kept: 4 }]
        );
        let err = bound_input("edit input", (0..10).collect(), 4, 100, Some(4)).unwrap_err();
        assert!(err.to_string().contains("at least 5"), "{err}");
    }

    #[test]
    fn only_inputs_far_longer_than_the_median_are_noted() {
        // Median 12: 60 is over 4 times it, 40 is not.
        let notes = far_longer_than_batch(&[10, 12, 60, 11, 40]);
        assert_eq!(
            notes,
            [None, None, Some(EditNote::FarLongerThanBatch { tokens: 60, median: 12 }), None, None]
        );
        assert_eq!(
            far_longer_than_batch(&[10, 50]),
            [None, Some(EditNote::FarLongerThanBatch { tokens: 50, median: 10 })]
        );
        assert_eq!(far_longer_than_batch(&[500]), [None]);
    }
}
