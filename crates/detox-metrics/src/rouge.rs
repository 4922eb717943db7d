//! ROUGE-1 as the widely used `rouge-score` package computes it (CSum in the SafeEdit paper).
//!
//! Tokenisation: lowercase, every character outside `[a-z0-9]` becomes a space, split on whitespace; with
//! stemming, tokens longer than three characters go through NLTK's Porter stemmer in its default mode (the 1980
//! algorithm with NLTK's extensions), which is what `rouge-score` constructs.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Precision, recall and F-measure of unigram overlap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rouge1 {
    /// Overlap / prediction tokens.
    pub precision: f64,
    /// Overlap / reference tokens.
    pub recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub fmeasure: f64,
}

/// `rouge-score`'s tokens of `text`.
pub fn tokenize(text: &str, stem: bool) -> Vec<String> {
    let lowered = text.to_lowercase();
    let cleaned: String = lowered
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { ' ' })
        .collect();
    cleaned
        .split_whitespace()
        .map(|t| if stem && t.len() > 3 { porter_stem(t) } else { t.to_string() })
        .collect()
}

/// ROUGE-1 of `prediction` against `reference`.
pub fn rouge1(reference: &str, prediction: &str, stem: bool) -> Rouge1 {
    let count = |tokens: Vec<String>| {
        let mut m: HashMap<String, usize> = HashMap::new();
        for t in tokens {
            *m.entry(t).or_default() += 1;
        }
        m
    };
    let r = count(tokenize(reference, stem));
    let p = count(tokenize(prediction, stem));
    let overlap: usize = r.iter().map(|(t, &c)| c.min(p.get(t).copied().unwrap_or(0))).sum();
    let (nr, np) = (r.values().sum::<usize>(), p.values().sum::<usize>());
    let precision = if np == 0 { 0.0 } else { overlap as f64 / np as f64 };
    let recall = if nr == 0 { 0.0 } else { overlap as f64 / nr as f64 };
    let fmeasure = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Rouge1 { precision, recall, fmeasure }
}

/// [`rouge1`] of each `(reference, prediction)` pair, in order, computed in parallel on the CPU.
///
/// ```
/// use detox_metrics::{rouge1, rouge1_many};
///
/// let pairs = [("the cat sat", "a cat sat down"), ("no overlap", "none")];
/// let sequential: Vec<_> = pairs.iter().map(|(r, p)| rouge1(r, p, true)).collect();
/// assert_eq!(rouge1_many(&pairs, true), sequential);
/// ```
pub fn rouge1_many(pairs: &[(&str, &str)], stem: bool) -> Vec<Rouge1> {
    pairs.par_iter().map(|(r, p)| rouge1(r, p, stem)).collect()
}

/// Mean ROUGE-1 F-measure over `(reference, prediction)` pairs, scored with [`rouge1_many`] (0 for none).
pub fn mean_rouge1_f(pairs: &[(&str, &str)], stem: bool) -> f64 {
    if pairs.is_empty() {
        return 0.0;
    }
    rouge1_many(pairs, stem).iter().map(|r| r.fmeasure).sum::<f64>() / pairs.len() as f64
}

fn is_consonant(w: &[u8], i: usize) -> bool {
    match w[i] {
        b'a' | b'e' | b'i' | b'o' | b'u' => false,
        b'y' => i == 0 || !is_consonant(w, i - 1),
        _ => true,
    }
}

/// Porter's measure m of `w` (the number of vowel-consonant sequences).
fn measure(w: &[u8]) -> usize {
    let mut m = 0;
    let mut prev_vowel = false;
    for i in 0..w.len() {
        let c = is_consonant(w, i);
        if c && prev_vowel {
            m += 1;
        }
        prev_vowel = !c;
    }
    m
}

fn has_vowel(w: &[u8]) -> bool {
    (0..w.len()).any(|i| !is_consonant(w, i))
}

fn ends_double_consonant(w: &[u8]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], b'w' | b'x' | b'y'))
        // NLTK's extension: a two-letter vowel-consonant word also counts.
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

type Condition<'a> = &'a dyn Fn(&[u8]) -> bool;

/// NLTK's rule application: the first rule (in list order) whose suffix matches decides; it fires only when its
/// condition holds on the stem, and no later rule is tried either way.
fn apply_rules(w: &mut Vec<u8>, rules: &[(&str, &str, Condition<'_>)]) {
    for (suffix, replacement, condition) in rules {
        if w.ends_with(suffix.as_bytes()) {
            let stem_len = w.len() - suffix.len();
            if condition(&w[..stem_len]) {
                w.truncate(stem_len);
                w.extend_from_slice(replacement.as_bytes());
            }
            return;
        }
    }
}

/// Irregular forms NLTK maps directly.
const POOL: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// The Porter stemmer as NLTK's `PorterStemmer()` runs it by default (mode `NLTK_EXTENSIONS`), which is what
/// `rouge-score` uses; for lowercase ASCII words.
pub fn porter_stem(word: &str) -> String {
    if let Some((_, stem)) = POOL.iter().find(|(w, _)| *w == word) {
        return stem.to_string();
    }
    if word.len() <= 2 {
        return word.to_string();
    }
    let mut w = word.as_bytes().to_vec();
    let always: Condition<'_> = &|_| true;
    let positive: Condition<'_> = &|s| measure(s) > 0;
    // Step 1a.
    if w.len() == 4 && w.ends_with(b"ies") {
        w.truncate(1);
        w.extend_from_slice(b"ie");
    } else {
        apply_rules(
            &mut w,
            &[
                ("sses", "ss", always),
                ("ies", "i", always),
                ("ss", "ss", always),
                ("s", "", always),
            ],
        );
    }
    // Step 1b.
    if w.ends_with(b"ied") {
        let keep = if w.len() == 4 { "ie" } else { "i" };
        w.truncate(w.len() - 3);
        w.extend_from_slice(keep.as_bytes());
    } else if w.ends_with(b"eed") {
        if measure(&w[..w.len() - 3]) > 0 {
            w.pop();
        }
    } else {
        let mut removed = false;
        for suffix in [&b"ed"[..], &b"ing"[..]] {
            if w.ends_with(suffix) {
                if has_vowel(&w[..w.len() - suffix.len()]) {
                    w.truncate(w.len() - suffix.len());
                    removed = true;
                }
                break;
            }
        }
        if removed {
            if w.ends_with(b"at") || w.ends_with(b"bl") || w.ends_with(b"iz") {
                w.push(b'e');
            } else if ends_double_consonant(&w) {
                if !matches!(w[w.len() - 1], b'l' | b's' | b'z') {
                    w.pop();
                }
            } else if measure(&w) == 1 && ends_cvc(&w) {
                w.push(b'e');
            }
        }
    }
    // Step 1c: y -> i after a consonant that is not the whole stem.
    if w.ends_with(b"y") {
        let stem = &w[..w.len() - 1];
        if stem.len() > 1 && is_consonant(stem, stem.len() - 1) {
            let n = w.len();
            w[n - 1] = b'i';
        }
    }
    // Step 2 (NLTK applies `alli -> al` first and re-runs the step).
    step2(&mut w);
    // Step 3.
    apply_rules(
        &mut w,
        &[
            ("icate", "ic", positive),
            ("ative", "", positive),
            ("alize", "al", positive),
            ("iciti", "ic", positive),
            ("ical", "ic", positive),
            ("ful", "", positive),
            ("ness", "", positive),
        ],
    );
    // Step 4.
    let gt1: Condition<'_> = &|s| measure(s) > 1;
    let ion: Condition<'_> = &|s| measure(s) > 1 && matches!(s.last(), Some(b's' | b't'));
    apply_rules(
        &mut w,
        &[
            ("al", "", gt1),
            ("ance", "", gt1),
            ("ence", "", gt1),
            ("er", "", gt1),
            ("ic", "", gt1),
            ("able", "", gt1),
            ("ible", "", gt1),
            ("ant", "", gt1),
            ("ement", "", gt1),
            ("ment", "", gt1),
            ("ent", "", gt1),
            ("ion", "", ion),
            ("ou", "", gt1),
            ("ism", "", gt1),
            ("ate", "", gt1),
            ("iti", "", gt1),
            ("ous", "", gt1),
            ("ive", "", gt1),
            ("ize", "", gt1),
        ],
    );
    // Step 5a.
    if w.ends_with(b"e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            w.pop();
        }
    }
    // Step 5b.
    if w.ends_with(b"ll") && measure(&w[..w.len() - 1]) > 1 {
        w.pop();
    }
    String::from_utf8(w).unwrap_or_else(|_| word.to_string())
}

fn step2(w: &mut Vec<u8>) {
    let positive: Condition<'_> = &|s| measure(s) > 0;
    if w.ends_with(b"alli") && measure(&w[..w.len() - 4]) > 0 {
        w.truncate(w.len() - 2);
        return step2(w);
    }
    let word_len = w.len();
    let snapshot = w.clone();
    // `logi -> log` keeps the `l` with the stem for its condition.
    let logi: Condition<'_> = &|_| word_len >= 3 && measure(&snapshot[..word_len - 3]) > 0;
    apply_rules(
        w,
        &[
            ("ational", "ate", positive),
            ("tional", "tion", positive),
            ("enci", "ence", positive),
            ("anci", "ance", positive),
            ("izer", "ize", positive),
            ("bli", "ble", positive),
            ("alli", "al", positive),
            ("entli", "ent", positive),
            ("eli", "e", positive),
            ("ousli", "ous", positive),
            ("ization", "ize", positive),
            ("ation", "ate", positive),
            ("ator", "ate", positive),
            ("alism", "al", positive),
            ("iveness", "ive", positive),
            ("fulness", "ful", positive),
            ("ousness", "ous", positive),
            ("aliti", "al", positive),
            ("iviti", "ive", positive),
            ("biliti", "ble", positive),
            ("fulli", "ful", positive),
            ("logi", "log", logi),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_scores_equal_sequential_ones() {
        let texts = crate::fluency::tests::many_texts(400);
        let pairs: Vec<(&str, &str)> =
            texts.iter().zip(texts.iter().rev()).map(|(a, b)| (a.as_str(), b.as_str())).collect();
        for stem in [false, true] {
            let sequential: Vec<Rouge1> = pairs.iter().map(|(r, p)| rouge1(r, p, stem)).collect();
            assert_eq!(rouge1_many(&pairs, stem), sequential);
            let mean = sequential.iter().map(|r| r.fmeasure).sum::<f64>() / pairs.len() as f64;
            assert_eq!(mean_rouge1_f(&pairs, stem), mean);
        }
        assert_eq!(mean_rouge1_f(&[], true), 0.0);
    }

    #[test]
    fn porter_examples_from_the_paper() {
        for (w, s) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("cats", "cat"),
            ("feed", "feed"),
            ("agreed", "agre"),
            ("dying", "die"),
            ("ties", "tie"),
            ("flies", "fli"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("enjoy", "enjoy"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("adoption", "adopt"),
            ("controlling", "control"),
            ("rolling", "roll"),
        ] {
            assert_eq!(porter_stem(w), s, "{w}");
        }
    }

    #[test]
    fn rouge1_by_hand() {
        let r = rouge1("the cat sat", "the cat ran away", false);
        assert!((r.precision - 0.5).abs() < 1e-12 && (r.recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(rouge1("", "anything", true).fmeasure, 0.0);
        assert_eq!(rouge1("Running dogs!", "run dog", true).fmeasure, 1.0);
        assert_eq!(tokenize("Héllo, World-42", false), ["h", "llo", "world", "42"]);
    }
}
