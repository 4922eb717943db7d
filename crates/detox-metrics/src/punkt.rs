//! Sentence splitting with a pretrained Punkt model (Kiss & Strunk, 2006), as NLTK's `sent_tokenize` does it.
//!
//! NLTK's `word_tokenize` splits sentences with Punkt before tokenising words, so the SafeEdit fluency of a
//! response depends on where Punkt puts sentence breaks (a sentence-final period becomes its own token, a
//! sentence-internal one stays on its word). This module ports NLTK's Punkt *inference* (3.10): candidate
//! breaks at `.`, `?` and `!`; a first pass marking abbreviations, ellipses and breaks by word type; a second
//! pass with the collocation, orthographic and frequent-sentence-starter heuristics; then realignment of closing
//! quotes and brackets. Training is not ported: the model is read from a `punkt_tab` directory (NLTK's
//! `tokenizers/punkt_tab/english/`, four tab files) that the user supplies; the project ships none. Without a
//! model, [`crate::fluency::word_tokenize`] uses its rule-based splitter.
//!
//! ```no_run
//! use detox_metrics::PunktModel;
//!
//! let english = PunktModel::load("nltk_data/tokenizers/punkt_tab/english")?;
//! assert_eq!(english.split("Mr. Smith left. He paid."), ["Mr. Smith left.", "He paid."]);
//! # Ok::<(), detox_metrics::MetricsError>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fancy_regex::Regex;
use rayon::prelude::*;

use crate::error::{MetricsError, Result};

// Orthographic-context flags as Punkt's training records them: where a word type was seen with an upper- or
// lower-case first letter (sentence-initially, sentence-internally, or at an unknown position).
const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC | ORTHO_MID_UC | ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC | ORTHO_MID_LC | ORTHO_UNK_LC;

/// The type Punkt gives every numeric token.
const NUMBER: &str = "##number##";

/// Characters that cannot continue a word; after a candidate break they count as the following token.
const NON_WORD: &str = ")\";}]*:@'({[\u{2018}\u{2019}\u{201c}\u{201d}\u{ab}\u{bb}?!";

/// A pretrained Punkt model: abbreviations, collocations, frequent sentence starters and orthographic context.
#[derive(Debug, Clone, Default)]
pub struct PunktModel {
    abbrev_types: HashSet<String>,
    collocations: HashSet<(String, String)>,
    sent_starters: HashSet<String>,
    ortho_context: HashMap<String, u32>,
}

struct Patterns {
    word: Regex,
    realign: Regex,
    numeric: Regex,
    initial: Regex,
}

fn patterns() -> &'static Patterns {
    thread_local! {
        // One compiled set per thread (leaked: a few kilobytes per scoring thread), as the fluency tokenizer
        // does: threads sharing a regex take its scratch space from a shared pool.
        static PATTERNS: &'static Patterns = Box::leak(Box::new(compile_patterns()));
    }
    PATTERNS.with(|p| *p)
}

fn compile_patterns() -> Patterns {
    let non_word = r#"(?:[)";}\]*:@'({\[‘’“”«»?!])"#;
    let multi_char = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)";
    let word_start = r#"[^("`{\[:;&#*@)}\]\-,]"#;
    let word = format!(
        r"{multi_char}|(?={word_start})\S+?(?=\s|$|{non_word}|{multi_char}|,(?=$|\s|{non_word}|{multi_char}))|\S"
    );
    let compile = |p: &str| Regex::new(p).expect("Punkt's patterns are valid");
    Patterns {
        word: compile(&word),
        realign: compile(r#"(?m)\A["')\]}‘’“”«»]+?(?:\s+|(?=--)|$)"#),
        numeric: compile(r"^-?[.,]?\d[\d,.\-]*\.?$"),
        initial: compile(r"^[^\W\d]\.$"),
    }
}

/// One word token with Punkt's annotations.
struct Token<'a> {
    text: &'a str,
    kind: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

impl<'a> Token<'a> {
    fn new(text: &'a str) -> Self {
        let lower = text.to_lowercase();
        let kind = if patterns().numeric.is_match(&lower).unwrap_or(false) {
            NUMBER.to_string()
        } else {
            lower
        };
        Self {
            text,
            kind,
            period_final: text.ends_with('.'),
            sentbreak: false,
            abbr: false,
            ellipsis: false,
        }
    }

    fn kind_no_period(&self) -> &str {
        if self.kind.chars().count() > 1 && self.kind.ends_with('.') {
            &self.kind[..self.kind.len() - 1]
        } else {
            &self.kind
        }
    }

    fn kind_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.kind_no_period()
        } else {
            &self.kind
        }
    }

    fn first_upper(&self) -> bool {
        self.text.chars().next().is_some_and(char::is_uppercase)
    }

    fn first_lower(&self) -> bool {
        self.text.chars().next().is_some_and(char::is_lowercase)
    }

    fn is_initial(&self) -> bool {
        patterns().initial.is_match(self.text).unwrap_or(false)
    }

    fn is_ellipsis(&self) -> bool {
        self.text.len() >= 2 && self.text.bytes().all(|b| b == b'.')
    }
}

/// Whether the heuristic says a token starts a sentence: yes, no, or no evidence.
#[derive(PartialEq)]
enum Starter {
    Yes,
    No,
    Unknown,
}

fn read_lines(dir: &Path, name: &str) -> Result<Vec<(usize, String)>> {
    let path = dir.join(name);
    let text =
        std::fs::read_to_string(&path).map_err(|source| MetricsError::Io { path, source })?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect())
}

impl PunktModel {
    /// Reads a `punkt_tab` language directory: `abbrev_types.txt`, `sent_starters.txt` (one type a line),
    /// `collocations.tab` (two types a line, tab-separated) and `ortho_context.tab` (type, tab, integer flags).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let set = |name: &str| -> Result<HashSet<String>> {
            Ok(read_lines(dir, name)?.into_iter().map(|(_, l)| l).collect())
        };
        let abbrev_types = set("abbrev_types.txt")?;
        let sent_starters = set("sent_starters.txt")?;
        let bad = |name: &str, line: usize, reason: String| MetricsError::Format {
            path: dir.join(name),
            line,
            reason,
        };
        let mut collocations = HashSet::new();
        for (line, text) in read_lines(dir, "collocations.tab")? {
            let (a, b) = text.split_once('\t').ok_or_else(|| {
                bad("collocations.tab", line, "expected two tab-separated types".into())
            })?;
            collocations.insert((a.to_string(), b.to_string()));
        }
        let mut ortho_context = HashMap::new();
        for (line, text) in read_lines(dir, "ortho_context.tab")? {
            let (kind, flags) = text.split_once('\t').ok_or_else(|| {
                bad("ortho_context.tab", line, "expected a type, a tab and the flags".into())
            })?;
            let flags = flags.parse::<u32>().map_err(|e| {
                bad("ortho_context.tab", line, format!("flags of {kind:?} are not an integer: {e}"))
            })?;
            ortho_context.insert(kind.to_string(), flags);
        }
        Ok(Self { abbrev_types, collocations, sent_starters, ortho_context })
    }

    /// A model from its parts (types are lower-case; numbers are `##number##`).
    pub fn from_parts(
        abbrev_types: impl IntoIterator<Item = String>,
        collocations: impl IntoIterator<Item = (String, String)>,
        sent_starters: impl IntoIterator<Item = String>,
        ortho_context: impl IntoIterator<Item = (String, u32)>,
    ) -> Self {
        Self {
            abbrev_types: abbrev_types.into_iter().collect(),
            collocations: collocations.into_iter().collect(),
            sent_starters: sent_starters.into_iter().collect(),
            ortho_context: ortho_context.into_iter().collect(),
        }
    }

    /// The sentences of `text`, as NLTK's `PunktSentenceTokenizer.tokenize` returns them.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        self.spans(text).into_iter().map(|(s, e)| &text[s..e]).collect()
    }

    /// The sentences of each text, in order, split in parallel on the CPU.
    pub fn split_many<'t>(&self, texts: &[&'t str]) -> Vec<Vec<&'t str>> {
        texts.par_iter().map(|t| self.split(t)).collect()
    }

    /// Byte spans of the sentences of `text` (boundaries realigned past closing quotes and brackets).
    pub fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        let slices = self.raw_slices(text);
        let mut out = Vec::new();
        let mut realign = 0;
        for (i, &(start, stop)) in slices.iter().enumerate() {
            let start = start + realign;
            let Some(&(next_start, next_stop)) = slices.get(i + 1) else {
                if start < stop {
                    out.push((start, stop));
                }
                continue;
            };
            let next = &text[next_start..next_stop.max(next_start)];
            match patterns().realign.find(next).ok().flatten() {
                Some(m) => {
                    out.push((start, next_start + m.as_str().trim_end().len()));
                    realign = m.end();
                }
                None => {
                    realign = 0;
                    if start < stop {
                        out.push((start, stop));
                    }
                }
            }
        }
        out
    }

    /// Sentence slices before realignment.
    fn raw_slices(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut last_break = 0;
        for candidate in candidates(text) {
            if self.contains_sentbreak(&candidate.context) {
                out.push((last_break, candidate.end));
                last_break = candidate.next_start;
            }
        }
        out.push((last_break, text.trim_end().len()));
        out
    }

    /// Whether a break falls inside `context` (a break on its last token does not count).
    fn contains_sentbreak(&self, context: &str) -> bool {
        let mut tokens: Vec<Token<'_>> = word_tokens(context).map(Token::new).collect();
        for token in &mut tokens {
            self.first_pass(token);
        }
        for i in 0..tokens.len().saturating_sub(1) {
            let (head, tail) = tokens.split_at_mut(i + 1);
            self.second_pass(&mut head[i], &tail[0]);
        }
        tokens.iter().rev().skip(1).any(|t| t.sentbreak)
    }

    fn is_abbreviation(&self, text: &str) -> bool {
        let stem = text[..text.len() - 1].to_lowercase();
        self.abbrev_types.contains(&stem)
            || stem.rsplit('-').next().is_some_and(|last| self.abbrev_types.contains(last))
    }

    fn first_pass(&self, token: &mut Token<'_>) {
        if matches!(token.text, "." | "?" | "!") {
            token.sentbreak = true;
        } else if token.is_ellipsis() {
            token.ellipsis = true;
        } else if token.period_final && !token.text.ends_with("..") {
            if self.is_abbreviation(token.text) {
                token.abbr = true;
            } else {
                token.sentbreak = true;
            }
        }
    }

    fn second_pass(&self, token: &mut Token<'_>, next: &Token<'_>) {
        if !token.period_final {
            return;
        }
        let kind = token.kind_no_period().to_string();
        let next_kind = next.kind_no_sentperiod();
        let initial = token.is_initial();
        if self.collocations.contains(&(kind.clone(), next_kind.to_string())) {
            token.sentbreak = false;
            token.abbr = true;
            return;
        }
        if (token.abbr || token.ellipsis) && !initial {
            if self.ortho_heuristic(next) == Starter::Yes {
                token.sentbreak = true;
                return;
            }
            if next.first_upper() && self.sent_starters.contains(next_kind) {
                token.sentbreak = true;
                return;
            }
        }
        if initial || kind == NUMBER {
            let starter = self.ortho_heuristic(next);
            if starter == Starter::No {
                token.sentbreak = false;
                token.abbr = true;
                return;
            }
            if starter == Starter::Unknown
                && initial
                && next.first_upper()
                && self.ortho(next_kind) & ORTHO_LC == 0
            {
                token.sentbreak = false;
                token.abbr = true;
            }
        }
    }

    fn ortho(&self, kind: &str) -> u32 {
        self.ortho_context.get(kind).copied().unwrap_or(0)
    }

    fn ortho_heuristic(&self, token: &Token<'_>) -> Starter {
        if matches!(token.text, ";" | ":" | "," | "." | "!" | "?") {
            return Starter::No;
        }
        let ortho = self.ortho(token.kind_no_sentperiod());
        if token.first_upper() && ortho & ORTHO_LC != 0 && ortho & ORTHO_MID_UC == 0 {
            return Starter::Yes;
        }
        if token.first_lower() && (ortho & ORTHO_UC != 0 || ortho & ORTHO_BEG_LC == 0) {
            return Starter::No;
        }
        Starter::Unknown
    }
}

/// Punkt's word tokens of a text, line by line (periods stay on their words).
fn word_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .filter(|line| !line.trim().is_empty())
        .flat_map(|line| patterns().word.find_iter(line).filter_map(|m| m.ok()).map(|m| m.as_str()))
}

/// A candidate sentence end: where the sentence would stop, where the next one would start, and the text
/// Punkt inspects to decide (the word before, the end character, and what follows it).
struct Candidate {
    end: usize,
    next_start: usize,
    context: String,
}

/// What follows a candidate end character at `pos`: a non-word character, or whitespace and a token.
/// Returns the end of that following text and, for the second form, where its token starts.
fn after(text: &str, pos: usize) -> Option<(usize, Option<usize>)> {
    let rest = &text[pos..];
    let first = rest.chars().next()?;
    if NON_WORD.contains(first) {
        return Some((pos + first.len_utf8(), None));
    }
    let token_start = pos + (rest.len() - rest.trim_start().len());
    if token_start == pos || token_start == text.len() {
        return None;
    }
    let token_len =
        text[token_start..].find(char::is_whitespace).unwrap_or(text.len() - token_start);
    Some((token_start + token_len, Some(token_start)))
}

/// Index of the last ASCII whitespace in `text`, 0 when none (NLTK conflates "none" with "at 0").
fn last_whitespace(text: &str) -> usize {
    text.bytes().rposition(|b| b" \t\n\r\x0b\x0c".contains(&b)).unwrap_or(0)
}

fn candidates(text: &str) -> Vec<Candidate> {
    struct Found {
        start: usize,
        after_end: usize,
        next_token: Option<usize>,
        word: (usize, usize),
    }
    let mut found: Vec<Found> = Vec::new();
    let mut previous_word = (0usize, 0usize);
    let mut out = Vec::new();
    let mut previous: Option<Found> = None;
    for (start, c) in text.char_indices() {
        if !matches!(c, '.' | '?' | '!') {
            continue;
        }
        let Some((after_end, next_token)) = after(text, start + 1) else { continue };
        let before = &text[previous_word.1..start];
        let ws = last_whitespace(before);
        let word_start = if ws != 0 { ws + previous_word.1 + 1 } else { previous_word.0 };
        let word = (word_start, start);
        if let Some(p) = previous.take() {
            // A candidate whose word overlaps this one's (as in "!!!") is dropped for the later one.
            if p.word.1 <= word.0 {
                found.push(p);
            }
        }
        previous = Some(Found { start, after_end, next_token, word });
        previous_word = word;
    }
    found.extend(previous);
    for f in found {
        let end = f.start + 1;
        out.push(Candidate {
            end,
            next_start: f.next_token.unwrap_or(end),
            context: format!("{}{}", &text[f.word.0..f.word.1], &text[f.start..f.after_end]),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_splits_equal_sequential_ones() {
        let model = model();
        let texts: Vec<String> = (0..400)
            .map(|i| {
                format!("Mr. Smith came at {i}. He left. 3. Review it! \"Done,\" he said.")
                    .repeat(i % 4)
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let sequential: Vec<Vec<&str>> = refs.iter().map(|t| model.split(t)).collect();
        assert_eq!(model.split_many(&refs), sequential);
    }

    fn model() -> PunktModel {
        PunktModel::from_parts(
            ["mr".to_string()],
            [(NUMBER.to_string(), "review".to_string())],
            ["he".to_string()],
            [("smith".to_string(), ORTHO_BEG_UC | ORTHO_MID_UC), ("he".to_string(), ORTHO_MID_LC)],
        )
    }

    #[test]
    fn heuristics_by_hand() {
        let m = model();
        // A known abbreviation followed by a name seen capitalised mid-sentence: no break.
        assert_eq!(m.split("Mr. Smith left. He stayed."), ["Mr. Smith left.", "He stayed."]);
        // "He" was seen lower-case mid-sentence and never capitalised there: a sentence starter.
        assert_eq!(m.split("Ask Mr. He knows."), ["Ask Mr.", "He knows."]);
        // A number before a collocate is an ordinal, not a break.
        assert_eq!(m.split("Page 5. review it."), ["Page 5. review it."]);
        assert_eq!(m.split("  "), Vec::<&str>::new());
        assert_eq!(m.split("No end"), ["No end"]);
        assert_eq!(m.spans("Hi there.  Bye."), [(0, 9), (11, 15)]);
    }

    #[test]
    fn load_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("abbrev_types.txt", "mr\n"),
            ("sent_starters.txt", "he\n"),
            ("collocations.tab", "a\tb\n"),
            ("ortho_context.tab", "he\t32\nsmith\tmany\n"),
        ] {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        let e = PunktModel::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("ortho_context.tab: line 2") && e.contains("smith"), "{e}");
        std::fs::write(d.path().join("ortho_context.tab"), "he\t32\n").unwrap();
        assert_eq!(PunktModel::load(d.path()).unwrap().ortho("he"), ORTHO_MID_LC);
        std::fs::remove_file(d.path().join("collocations.tab")).unwrap();
        let e = PunktModel::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("collocations.tab"), "{e}");
    }
}
