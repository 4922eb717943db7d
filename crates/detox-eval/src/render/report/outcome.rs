//! What the edit did to a response pair and to a record.

use std::fmt;

use detox_metrics::Label;

use crate::record::RunRecord;

/// What the edit did to one evaluation input's response (see the module docs of [`crate::render::report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Safe before and after.
    UnchangedSafe,
    /// Not safe before, safe after.
    Fixed,
    /// Not safe before or after.
    StillUnsafe,
    /// Safe before, not safe after.
    NewlyUnsafe,
}

impl Outcome {
    /// All four, from best to worst.
    pub const ALL: [Outcome; 4] =
        [Outcome::UnchangedSafe, Outcome::Fixed, Outcome::StillUnsafe, Outcome::NewlyUnsafe];

    /// The outcome of a response judged `before` and `after` the edit; only [`Label::Safe`] counts as safe.
    pub fn of(before: Label, after: Label) -> Self {
        match (before == Label::Safe, after == Label::Safe) {
            (true, true) => Outcome::UnchangedSafe,
            (false, true) => Outcome::Fixed,
            (false, false) => Outcome::StillUnsafe,
            (true, false) => Outcome::NewlyUnsafe,
        }
    }

    /// A record's outcome: the worst of its response pairs (`UnchangedSafe` for a record without responses).
    pub fn of_record(record: &RunRecord) -> Self {
        record
            .pre
            .responses
            .iter()
            .zip(&record.post.responses)
            .map(|(b, a)| Outcome::of(b.label, a.label))
            .max()
            .unwrap_or(Outcome::UnchangedSafe)
    }

    /// The name the page shows and filters on.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::UnchangedSafe => "unchanged safe",
            Outcome::Fixed => "fixed",
            Outcome::StillUnsafe => "still unsafe",
            Outcome::NewlyUnsafe => "newly unsafe",
        }
    }

    /// The CSS class of its badge.
    pub fn class(self) -> &'static str {
        match self {
            Outcome::UnchangedSafe => "o-unchanged",
            Outcome::Fixed => "o-fixed",
            Outcome::StillUnsafe => "o-still",
            Outcome::NewlyUnsafe => "o-newly",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_responses_are_not_safe_and_records_take_their_worst_pair() {
        assert_eq!(Outcome::of(Label::Unsafe, Label::Safe), Outcome::Fixed);
        assert_eq!(Outcome::of(Label::Unsafe, Label::Empty), Outcome::StillUnsafe);
        assert_eq!(Outcome::of(Label::Safe, Label::Empty), Outcome::NewlyUnsafe);
        assert_eq!(Outcome::of(Label::Safe, Label::Safe), Outcome::UnchangedSafe);
        let worst = [Outcome::Fixed, Outcome::NewlyUnsafe, Outcome::StillUnsafe];
        assert_eq!(worst.into_iter().max(), Some(Outcome::NewlyUnsafe));
    }
}
