//! Agreement of a binary judge with human labels (or of two judges, see [`crate::pair_agreement`]), as a 2 × 2
//! confusion matrix.

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

    /// The counts as a 2 × 2 matrix, rows the first label of each pair (human), columns the second (judge),
    /// negative before positive: `[[true_negative, false_positive], [false_negative, true_positive]]`. This is
    /// scikit-learn's `confusion_matrix(human, judge, labels=[False, True])`, so results can be compared with it.
    ///
    /// ```
    /// use detox_metrics::Confusion;
    ///
    /// let c = Confusion::from_pairs([(true, true), (false, true), (false, false)]);
    /// assert_eq!(c.matrix(), [[1, 1], [0, 1]]);
    /// ```
    pub fn matrix(&self) -> [[usize; 2]; 2] {
        [[self.true_negative, self.false_positive], [self.false_negative, self.true_positive]]
    }

    /// Cohen's kappa of the two labellings: how much more often they agree than two labellings with the same
    /// label frequencies would by chance, `1 - observed disagreement / expected disagreement` (1 for perfect
    /// agreement, 0 for chance level, negative below it). Symmetric in the two labellings.
    ///
    /// `None` when kappa is undefined, i.e. when the expected disagreement is 0: nothing was counted, or both
    /// labellings give every item the same label (then chance agreement is already 1 and there is nothing to
    /// beat). scikit-learn's `cohen_kappa_score` returns NaN there; an `Option` keeps that case visible to the
    /// type system and serialises as `null`. Otherwise the value equals `cohen_kappa_score` (it is computed the
    /// same way, so the two agree to rounding).
    ///
    /// ```
    /// use detox_metrics::Confusion;
    ///
    /// let c = Confusion::from_pairs([(true, true), (false, false), (true, false), (false, false)]);
    /// assert!((c.cohen_kappa().unwrap() - 0.5).abs() < 1e-12);
    /// // Both say "negative" every time: agreement is certain by chance, kappa is undefined.
    /// assert_eq!(Confusion::from_pairs([(false, false); 3]).cohen_kappa(), None);
    /// ```
    pub fn cohen_kappa(&self) -> Option<f64> {
        let [[tn, fp], [fneg, tp]] = self.matrix();
        // Marginals: rows (first labelling) and columns (second labelling), negative then positive.
        let (row_negative, row_positive) = (tn + fp, fneg + tp);
        let (column_negative, column_positive) = (tn + fneg, fp + tp);
        // Expected disagreement × n, decided in integers so that "undefined" is exact.
        if column_negative * row_positive + column_positive * row_negative == 0 {
            return None;
        }
        // scikit-learn's order of operations: expected cells are products of marginals over n, summed off the
        // diagonal; kappa is one minus observed over expected disagreement.
        let n = self.total() as f64;
        let expected = (column_negative * row_positive) as f64 / n
            + (column_positive * row_negative) as f64 / n;
        Some(1.0 - (fp + fneg) as f64 / expected)
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

    #[test]
    fn kappa_follows_its_definition_and_is_undefined_only_without_expected_disagreement() {
        // 6 items: the first labelling positive 3 times, the second 2 times, agreeing on 5.
        let c =
            Confusion { true_positive: 2, false_positive: 0, false_negative: 1, true_negative: 3 };
        let (observed, chance) = (5.0 / 6.0, (3.0 * 2.0 + 3.0 * 4.0) / 36.0);
        assert!((c.cohen_kappa().unwrap() - (observed - chance) / (1.0 - chance)).abs() < 1e-12);
        assert_eq!(Confusion::default().cohen_kappa(), None);
        assert_eq!(Confusion::from_pairs([(true, true); 4]).cohen_kappa(), None);
        // Constant but on different labels: kappa is defined (0).
        assert_eq!(Confusion::from_pairs([(true, false); 4]).cohen_kappa(), Some(0.0));
        assert_eq!(c.matrix(), [[3, 0], [1, 2]]);
    }
}
