//! Agreement between two safety judges over the same responses: percent agreement, Cohen's kappa, the 2 × 2
//! table behind them, and which responses the two judges disagree on.
//!
//! When a run is judged by several judges, each pair of judges is compared with [`pair_agreement`]; the
//! responses to look at are given by [`disagreements`]. Both take the two judges' labels of the same responses,
//! in the same order.
//!
//! The choice made about empty responses, and the serialised form, are documented on [`PairAgreement`].

use serde::{Deserialize, Serialize};

use crate::confusion::Confusion;
use crate::error::{MetricsError, Result};
use crate::judge::Label;

/// How far two judges agree on the responses both of them judged, as [`pair_agreement`] computes it.
///
/// Built on [`Confusion`] with the first judge in the place of the human labels and "unsafe" as the positive
/// label; it serialises as a flat record (`kappa` is `null` when undefined) for run summaries.
///
/// # Empty responses are excluded
///
/// An empty response gets [`Label::Empty`] from every judge without being judged, so counting it would inflate
/// agreement with pairs that say nothing about the judges. Agreement is therefore computed over the responses
/// *both* judges judged: a response is left out when either judge says [`Label::Empty`], and how many were left
/// out is reported ([`PairAgreement::excluded_empty`]). The remaining labels are binary (safe or unsafe), and
/// Cohen's kappa is the binary one, as scikit-learn's `cohen_kappa_score` computes it on those responses.
///
/// ```
/// use detox_metrics::{disagreements, pair_agreement, Label};
///
/// let (s, u, e) = (Label::Safe, Label::Unsafe, Label::Empty);
/// let first = [s, s, u, u, e, s];
/// let second = [s, u, u, u, e, s];
/// let pair = pair_agreement(&first, &second)?;
/// assert_eq!((pair.judged, pair.excluded_empty, pair.agree), (5, 1, 4));
/// assert!((pair.percent - 80.0).abs() < 1e-12);
/// // Rows: the first judge safe, unsafe; columns: the second judge safe, unsafe.
/// assert_eq!(pair.confusion, [[2, 1], [0, 2]]);
/// assert!((pair.kappa.unwrap() - 0.6153846153846154).abs() < 1e-12);
/// assert_eq!(disagreements(&first, &second)?, vec![1]);
/// // Judges of different runs (different lengths) cannot be compared.
/// assert!(pair_agreement(&first, &second[..5]).is_err());
/// # Ok::<(), detox_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairAgreement {
    /// Responses both judges judged (neither said [`Label::Empty`]); the denominator of [`Self::percent`].
    pub judged: usize,
    /// Responses left out because at least one judge said [`Label::Empty`].
    pub excluded_empty: usize,
    /// Judged responses both judges gave the same label.
    pub agree: usize,
    /// `agree` as a percentage of `judged`; 0 when nothing was judged (then `judged` is 0 and `kappa` is
    /// `None`, which tells that case apart from complete disagreement).
    pub percent: f64,
    /// Cohen's kappa over the judged responses, see [`Confusion::cohen_kappa`]. `None` when it is undefined:
    /// nothing was judged, or both judges gave every judged response the same label (chance agreement is then
    /// 1; scikit-learn returns NaN there).
    pub kappa: Option<f64>,
    /// `confusion[i][j]`: judged responses the first judge labelled `i` and the second `j`, with 0 for safe
    /// and 1 for unsafe. Row sums are the first judge's counts of safe and unsafe, column sums the second's.
    pub confusion: [[usize; 2]; 2],
}

impl PairAgreement {
    /// Judged responses the two judges label differently (`judged - agree`), the length of
    /// [`disagreements`]' answer.
    ///
    /// ```
    /// use detox_metrics::{pair_agreement, Label};
    ///
    /// let pair = pair_agreement(&[Label::Safe, Label::Unsafe], &[Label::Unsafe, Label::Unsafe])?;
    /// assert_eq!(pair.disagree(), 1);
    /// # Ok::<(), detox_metrics::MetricsError>(())
    /// ```
    pub fn disagree(&self) -> usize {
        self.judged - self.agree
    }
}

/// Agreement of two judges' labels of the same responses: counts, percent agreement, Cohen's kappa and the
/// 2 × 2 table, over the responses neither judge labelled [`Label::Empty`] (see [`PairAgreement`] for why).
///
/// Symmetric except for the table, which is transposed when the judges are swapped. Labels of different
/// lengths are a [`MetricsError::LabelLengthMismatch`].
///
/// ```
/// use detox_metrics::{pair_agreement, Label};
///
/// let labels = [Label::Safe, Label::Unsafe, Label::Safe];
/// let pair = pair_agreement(&labels, &labels)?;
/// assert_eq!((pair.percent, pair.kappa), (100.0, Some(1.0)));
/// // Both judges call everything safe: full agreement, but kappa is undefined.
/// let safe = [Label::Safe; 3];
/// assert_eq!(pair_agreement(&safe, &safe)?.kappa, None);
/// # Ok::<(), detox_metrics::MetricsError>(())
/// ```
pub fn pair_agreement(first: &[Label], second: &[Label]) -> Result<PairAgreement> {
    let judged = judged_pairs(first, second)?;
    let confusion = Confusion::from_pairs(judged.map(|(_, first, second)| (first, second)));
    let judged = confusion.total();
    Ok(PairAgreement {
        judged,
        excluded_empty: first.len() - judged,
        agree: confusion.true_positive + confusion.true_negative,
        percent: confusion.accuracy_percent(),
        kappa: confusion.cohen_kappa(),
        confusion: confusion.matrix(),
    })
}

/// Indices (into the label slices, in increasing order) of the responses both judges judged and labelled
/// differently: the ones to read when two judges disagree. A response one judge calls empty is not among them,
/// as it is not counted by [`pair_agreement`] either.
///
/// ```
/// use detox_metrics::{disagreements, Label};
///
/// let (s, u, e) = (Label::Safe, Label::Unsafe, Label::Empty);
/// assert_eq!(disagreements(&[s, u, e, u], &[u, u, e, s])?, vec![0, 3]);
/// # Ok::<(), detox_metrics::MetricsError>(())
/// ```
pub fn disagreements(first: &[Label], second: &[Label]) -> Result<Vec<usize>> {
    Ok(judged_pairs(first, second)?
        .filter(|(_, first, second)| first != second)
        .map(|(index, _, _)| index)
        .collect())
}

/// The responses both judges judged, as (index, first judge says unsafe, second judge says unsafe): the one
/// place where empty responses are left out.
fn judged_pairs<'a>(
    first: &'a [Label],
    second: &'a [Label],
) -> Result<impl Iterator<Item = (usize, bool, bool)> + 'a> {
    if first.len() != second.len() {
        return Err(MetricsError::LabelLengthMismatch { first: first.len(), second: second.len() });
    }
    Ok(first.iter().zip(second).enumerate().filter_map(|(index, (&first, &second))| {
        (first != Label::Empty && second != Label::Empty).then_some((
            index,
            first == Label::Unsafe,
            second == Label::Unsafe,
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Label = Label::Safe;
    const U: Label = Label::Unsafe;
    const E: Label = Label::Empty;

    #[test]
    fn empty_on_either_side_is_excluded_and_counted() {
        let pair = pair_agreement(&[E, S, U, E], &[E, E, U, S]).unwrap();
        assert_eq!((pair.judged, pair.excluded_empty, pair.agree), (1, 3, 1));
        assert_eq!(pair.confusion, [[0, 0], [0, 1]]);
        assert_eq!(pair.kappa, None);
        assert_eq!(disagreements(&[E, S, U, E], &[E, E, U, S]).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn nothing_judged_reads_zero_percent_and_no_kappa() {
        let pair = pair_agreement(&[E, E], &[E, E]).unwrap();
        assert_eq!((pair.judged, pair.excluded_empty, pair.percent, pair.kappa), (0, 2, 0.0, None));
        let none = pair_agreement(&[], &[]).unwrap();
        assert_eq!((none.judged, none.excluded_empty, none.kappa), (0, 0, None));
    }

    #[test]
    fn swapping_judges_transposes_the_table_only() {
        let (a, b) = ([S, U, U, S, U, E], [S, S, U, U, U, S]);
        let (ab, ba) = (pair_agreement(&a, &b).unwrap(), pair_agreement(&b, &a).unwrap());
        assert_eq!(ab.confusion, [[1, 1], [1, 2]]);
        assert_eq!(
            ba.confusion,
            [[ab.confusion[0][0], ab.confusion[1][0]], [ab.confusion[0][1], ab.confusion[1][1]]]
        );
        assert_eq!(
            (ab.judged, ab.agree, ab.percent, ab.kappa),
            (ba.judged, ba.agree, ba.percent, ba.kappa)
        );
        assert_eq!(disagreements(&a, &b).unwrap(), disagreements(&b, &a).unwrap());
    }

    #[test]
    fn serialises_as_a_flat_record_with_null_kappa() {
        let pair = pair_agreement(&[S, S], &[S, S]).unwrap();
        let json = serde_json::to_value(pair).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"judged": 2, "excluded_empty": 0, "agree": 2, "percent": 100.0,
                               "kappa": null, "confusion": [[2, 0], [0, 0]]})
        );
        assert_eq!(serde_json::from_value::<PairAgreement>(json).unwrap(), pair);
    }
}
