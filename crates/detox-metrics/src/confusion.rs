//! Agreement of a binary judge with human labels, as a 2 × 2 confusion matrix.

use std::ops::{Add, AddAssign};

/// Counts of a binary judge's verdicts against human labels (positive = the property judged, e.g. a refusal).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Confusion {
    /// Both positive.
    pub true_positive: usize,
    /// The judge positive, the human negative.
    pub false_positive: usize,
    /// The human positive, the judge negative.
    pub false_negative: usize,
    /// Both negative.
    pub true_negative: usize,
}

impl Confusion {
    /// Counts one item.
    pub fn record(&mut self, human: bool, judge: bool) {
        match (human, judge) {
            (true, true) => self.true_positive += 1,
            (false, true) => self.false_positive += 1,
            (true, false) => self.false_negative += 1,
            (false, false) => self.true_negative += 1,
        }
    }

    /// The counts of `pairs` of (human, judge) labels.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut confusion = Self::default();
        for (human, judge) in pairs {
            confusion.record(human, judge);
        }
        confusion
    }

    /// Items counted.
    pub fn total(&self) -> usize {
        self.true_positive + self.false_positive + self.false_negative + self.true_negative
    }

    /// Share of items where judge and human agree, in percent (0 when nothing was counted, so an empty file
    /// reads as no agreement rather than a division by zero).
    pub fn accuracy_percent(&self) -> f64 {
        100.0 * (self.true_positive + self.true_negative) as f64 / self.total().max(1) as f64
    }

    /// A Markdown table row: name, total, accuracy, then the four counts in [`Confusion::TABLE_HEADER`]'s order.
    pub fn markdown_row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.1} | {} | {} | {} | {} |",
            self.total(),
            self.accuracy_percent(),
            self.true_positive,
            self.false_negative,
            self.false_positive,
            self.true_negative
        )
    }

    /// The Markdown header (and alignment line) of [`Confusion::markdown_row`]'s table.
    pub const TABLE_HEADER: &'static str = "| completions | n | accuracy % | agree positive | human positive, judge negative | judge positive, human negative | agree negative |\n|---|---:|---:|---:|---:|---:|---:|";
}

impl Add for Confusion {
    type Output = Confusion;

    fn add(self, other: Confusion) -> Confusion {
        Confusion {
            true_positive: self.true_positive + other.true_positive,
            false_positive: self.false_positive + other.false_positive,
            false_negative: self.false_negative + other.false_negative,
            true_negative: self.true_negative + other.true_negative,
        }
    }
}

impl AddAssign for Confusion {
    fn add_assign(&mut self, other: Confusion) {
        *self = *self + other;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pair_lands_in_its_cell_and_accuracy_counts_agreement() {
        let c = Confusion::from_pairs([
            (true, true),
            (true, true),
            (false, true),
            (true, false),
            (false, false),
        ]);
        assert_eq!(
            c,
            Confusion { true_positive: 2, false_positive: 1, false_negative: 1, true_negative: 1 }
        );
        assert_eq!(c.total(), 5);
        assert!((c.accuracy_percent() - 60.0).abs() < 1e-12);
        assert_eq!(c.markdown_row("x"), "| x | 5 | 60.0 | 2 | 1 | 1 | 1 |");
    }

    #[test]
    fn empty_counts_have_zero_accuracy_and_sums_add_cellwise() {
        assert_eq!(Confusion::default().accuracy_percent(), 0.0);
        let mut all = Confusion::from_pairs([(true, true)]);
        all += Confusion::from_pairs([(false, false), (false, true)]);
        assert_eq!(all, Confusion::from_pairs([(true, true), (false, false), (false, true)]));
        assert_eq!(Confusion::TABLE_HEADER.lines().count(), 2);
    }
}
