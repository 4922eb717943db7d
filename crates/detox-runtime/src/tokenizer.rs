//! Tokenizers from Hugging Face `tokenizer.json`, with the special tokens and chat template of the model.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::ModelWrapper;

use crate::chat::ChatTemplate;
use crate::error::{Error, Result};

/// Which end of an over-long token sequence is kept.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Keep the last tokens, dropping from the left (a leading BOS included): what the SafeEdit evaluation does
    /// with an input over its budget (`input_ids[:, -budget:]`), because the harmful question ends the
    /// adversarial prompt. The default.
    #[default]
    KeepLast,
    /// Keep the first tokens, dropping from the right: a Hugging Face tokenizer called with `truncation=True`
    /// and its default `truncation_side="right"`.
    KeepFirst,
}

impl Truncation {
    /// Shortens `ids` to at most `max_len` tokens, keeping the end this variant names.
    ///
    /// ```
    /// use detox_runtime::Truncation;
    /// let mut ids = vec![1, 2, 3, 4, 5];
    /// Truncation::KeepLast.apply(&mut ids, 3);
    /// assert_eq!(ids, [3, 4, 5]);
    /// Truncation::KeepFirst.apply(&mut ids, 2);
    /// assert_eq!(ids, [3, 4]);
    /// ```
    pub fn apply(self, ids: &mut Vec<i64>, max_len: usize) {
        if ids.len() <= max_len {
            return;
        }
        match self {
            Truncation::KeepFirst => ids.truncate(max_len),
            Truncation::KeepLast => {
                ids.drain(..ids.len() - max_len);
            }
        }
    }
}

/// A tokenizer plus what the model directory says about its special tokens and chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<i64>,
    eos_ids: Vec<i64>,
    pad_id: Option<i64>,
    chat_template: Option<ChatTemplate>,
    /// The file it was read from, named by the errors of encoding and decoding.
    source_file: Option<PathBuf>,
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Malformed { what: format!("{}: {e}", path.display()) }
}

/// A special token as `tokenizer_config.json` writes it: a string or `{"content": "..."}`.
fn token_text(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("content").and_then(Value::as_str))
}

impl Tokenizer {
    /// Wraps a `tokenizers` tokenizer; special tokens and template are set with the `with_*` methods.
    ///
    /// A BPE model keeps the word cache `tokenizers` gave it, which that crate does not free when the model is
    /// dropped; [`Tokenizer::from_file`] and the other readers here build it without one.
    pub fn new(mut inner: tokenizers::Tokenizer) -> Self {
        // Batches are padded by the runtime itself (left padding with an explicit mask), and inputs are cut by
        // the caller's [`Truncation`]: a length stored in `tokenizer.json` would otherwise cut every encoding on
        // the right, which transformers does not do unless asked (`truncation=True`).
        inner.with_padding(None);
        // Clearing the truncation cannot fail: only new parameters are validated.
        let _ = inner.with_truncation(None);
        Self {
            inner,
            bos_id: None,
            eos_ids: Vec::new(),
            pad_id: None,
            chat_template: None,
            source_file: None,
        }
    }

    /// Reads a `tokenizer.json` file alone.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer file not found",
                ),
            });
        }
        let bytes =
            std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        // The JSON is parsed before `tokenizers` sees it: its decoder deserialiser panics (an `expect`) on a
        // syntax error inside the `decoder` object, where a parsed value cannot have one. The syntax error
        // names the line and column here.
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| tokenizer_error(path, e))?;
        let mut tokenizer = Self::from_json(json).map_err(|e| tokenizer_error(path, e))?;
        tokenizer.source_file = Some(path.to_path_buf());
        Ok(tokenizer)
    }

    /// Reads a parsed `tokenizer.json`; the error says what is wrong, the caller where.
    pub(crate) fn from_json(json: Value) -> std::result::Result<Self, String> {
        check_bpe_merges(&json)?;
        // Read from a borrowed value: the model's JSON is needed again for its merges.
        let mut inner = <tokenizers::Tokenizer as serde::Deserialize>::deserialize(&json)
            .map_err(|e| e.to_string())?;
        if let (ModelWrapper::BPE(bpe), Some(model_json)) = (inner.get_model(), json.get("model")) {
            let uncached = without_word_cache(bpe, model_json)?;
            inner.with_model(ModelWrapper::BPE(uncached));
        }
        Ok(Self::new(inner))
    }

    /// Reads a Hugging Face model directory: `tokenizer.json`, and when present `tokenizer_config.json` (BOS,
    /// EOS and pad tokens, chat template), `chat_template.jinja` and `config.json` / `generation_config.json`
    /// (EOS ids).
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut tok = Self::from_file(dir.join("tokenizer.json"))?;
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        if let Some(cfg) = &config {
            tok.bos_id = cfg.get("bos_token").and_then(token_text).and_then(|t| tok.token_id(t));
            if let Some(eos) =
                cfg.get("eos_token").and_then(token_text).and_then(|t| tok.token_id(t))
            {
                tok.eos_ids.push(eos);
            }
            tok.pad_id = cfg.get("pad_token").and_then(token_text).and_then(|t| tok.token_id(t));
        }
        tok.chat_template = ChatTemplate::from_model_dir(dir)?;
        for file in ["generation_config.json", "config.json"] {
            if let Some(cfg) = read_json(&dir.join(file))? {
                match cfg.get("eos_token_id") {
                    Some(Value::Array(ids)) => {
                        ids.iter().filter_map(Value::as_i64).for_each(|id| tok.add_eos(id))
                    }
                    Some(v) => {
                        if let Some(id) = v.as_i64() {
                            tok.add_eos(id)
                        }
                    }
                    None => {}
                }
                if tok.bos_id.is_none() {
                    tok.bos_id = cfg.get("bos_token_id").and_then(Value::as_i64);
                }
            }
        }
        Ok(tok)
    }

    fn add_eos(&mut self, id: i64) {
        if !self.eos_ids.contains(&id) {
            self.eos_ids.push(id);
        }
    }

    /// Sets the BOS id.
    pub fn with_bos(mut self, id: Option<i64>) -> Self {
        self.bos_id = id;
        self
    }

    /// Sets the EOS ids.
    pub fn with_eos(mut self, ids: Vec<i64>) -> Self {
        self.eos_ids = ids;
        self
    }

    /// Sets the padding id.
    pub fn with_pad(mut self, id: Option<i64>) -> Self {
        self.pad_id = id;
        self
    }

    /// Sets the chat template.
    pub fn with_chat_template(mut self, template: Option<ChatTemplate>) -> Self {
        self.chat_template = template;
        self
    }

    /// The token ids of `text`; with `add_special_tokens` the tokenizer's post-processor adds its special tokens
    /// (e.g. BOS for Llama-2), as calling a Hugging Face tokenizer on the text does.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.use_error(format!("cannot tokenise text: {e}")))?;
        Ok(enc.get_ids().iter().map(|&id| id as i64).collect())
    }

    /// Encodes several texts (in parallel).
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<i64>>> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), add_special_tokens)
            .map_err(|e| self.use_error(format!("cannot tokenise texts: {e}")))?;
        Ok(encs.iter().map(|e| e.get_ids().iter().map(|&id| id as i64).collect()).collect())
    }

    /// The text of `ids`; with `skip_special_tokens` special tokens are left out.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&id| {
                u32::try_from(id).map_err(|_| Error::OutOfRange {
                    what: format!("token id {id} is out of range"),
                })
            })
            .collect::<Result<_>>()?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| self.use_error(format!("cannot decode: {e}")))
    }

    /// The id of a token string.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The BOS id, if known.
    pub fn bos_id(&self) -> Option<i64> {
        self.bos_id
    }

    /// The EOS ids (generation stops at any of them).
    pub fn eos_ids(&self) -> &[i64] {
        &self.eos_ids
    }

    /// The padding id: the configured pad token, else the first EOS id (what the SafeEdit reference uses).
    pub fn pad_id(&self) -> Option<i64> {
        self.pad_id.or_else(|| self.eos_ids.first().copied())
    }

    /// The chat template, if the model has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// `user` as the single user turn of the chat template, with the generation prompt
    /// ([`ChatTemplate::user_prompt`]); an error when the model has no template.
    pub fn chat_prompt(&self, user: &str) -> Result<String> {
        self.chat_template
            .as_ref()
            .ok_or_else(|| Error::Unsupported {
                what: "the chat-template prompt layout needs a tokenizer with a chat template"
                    .into(),
            })?
            .user_prompt(user)
    }

    /// A stop check for [`generate`](crate::generate::generate): true once a row's decoded continuation contains any of `stops`.
    pub fn stop_strings<'a>(&'a self, stops: &'a [String]) -> impl Fn(usize, &[i64]) -> bool + 'a {
        move |_, ids| match self.decode(ids, true) {
            Ok(text) => stops.iter().any(|s| !s.is_empty() && text.contains(s.as_str())),
            Err(_) => false,
        }
    }

    /// `text` up to (not including) the first occurrence of any of `stops`.
    pub fn cut_at_stop<'t>(text: &'t str, stops: &[String]) -> &'t str {
        let end =
            stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min();
        &text[..end.unwrap_or(text.len())]
    }

    /// An error met while encoding or decoding, naming the tokenizer's file when it was read from one: a model
    /// the file describes can fail only on some texts (a Unigram model without `unk_id` meeting an unknown
    /// character).
    fn use_error(&self, message: String) -> Error {
        match &self.source_file {
            Some(path) => tokenizer_error(path, message),
            None => Error::Unsupported { what: message },
        }
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Cuts every encoding to `max_length` tokens, the special tokens the post-processor adds included (what a
    /// Hugging Face tokenizer called with `truncation=True, max_length=...` does); `None` turns truncation off.
    pub fn with_truncation(mut self, max_length: Option<usize>) -> Result<Self> {
        let params = max_length
            .map(|max_length| tokenizers::TruncationParams { max_length, ..Default::default() });
        self.inner.with_truncation(params).map_err(|e| Error::Unsupported {
            what: format!("cannot truncate to {max_length:?}: {e}"),
        })?;
        Ok(self)
    }

    /// The truncation length set by [`Tokenizer::with_truncation`] (or stored in `tokenizer.json`).
    pub fn truncation(&self) -> Option<usize> {
        self.inner.get_truncation().map(|t| t.max_length)
    }
}

/// Refuses a BPE merge `tokenizers` would panic on while building its merge table.
///
/// `tokenizers` (0.23, `BpeBuilder::build`) writes each merge's result, `a` followed by `b` without its first
/// `continuing_subword_prefix.len()` bytes, into a buffer as long as the longest vocabulary entry, unchecked: a
/// result longer than every entry, or a `b` shorter than the prefix, panics before the result is looked up.
/// Such a merge is one `tokenizers` refuses anyway (its result is not in the vocabulary), so this checks exactly
/// that, first, and names the merge.
/// The merges of a BPE model's JSON as `tokenizers` reads them: `[a, b]` pairs, or `"a b"` lines (a `#version`
/// line skipped). Entries `tokenizers` would refuse are left out; the caller has them refused there.
fn bpe_merge_pairs(model: &Value) -> Option<Vec<(&str, &str)>> {
    let merges = model.get("merges").and_then(Value::as_array)?;
    let legacy = merges.iter().filter_map(Value::as_str).filter(|l| !l.starts_with("#version"));
    Some(if merges.iter().all(Value::is_string) {
        legacy.filter_map(|line| line.split_once(' ')).collect()
    } else {
        merges
            .iter()
            .filter_map(|m| match m.as_array().map(Vec::as_slice) {
                Some([Value::String(a), Value::String(b)]) => Some((a.as_str(), b.as_str())),
                _ => None,
            })
            .collect()
    })
}

/// `bpe` rebuilt without its cache of tokenised words.
///
/// `tokenizers` 0.23 keeps that cache in a thread-local map keyed by each model's id and never removes a
/// dropped model's entries, so a process that loads tokenizers again and again (a sweep over models, a test
/// suite, a fuzzer) grows without bound. The cache only memoises `merge_word`: encodings are unchanged.
/// `model_json` is the JSON `bpe` was read from; its merges are not readable back from `bpe`.
fn without_word_cache(bpe: &BPE, model_json: &Value) -> std::result::Result<BPE, String> {
    let merges = bpe_merge_pairs(model_json)
        .ok_or("model.merges: missing")?
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(bpe.get_vocab().into_iter().collect::<Vocab>(), merges)
        .cache_capacity(0)
        .fuse_unk(bpe.fuse_unk)
        .byte_fallback(bpe.byte_fallback)
        .ignore_merges(bpe.ignore_merges);
    if let Some(dropout) = bpe.dropout {
        builder = builder.dropout(dropout);
    }
    if let Some(unk) = &bpe.unk_token {
        builder = builder.unk_token(unk.clone());
    }
    if let Some(prefix) = &bpe.continuing_subword_prefix {
        builder = builder.continuing_subword_prefix(prefix.clone());
    }
    if let Some(suffix) = &bpe.end_of_word_suffix {
        builder = builder.end_of_word_suffix(suffix.clone());
    }
    builder.build().map_err(|e| e.to_string())
}

fn check_bpe_merges(json: &Value) -> std::result::Result<(), String> {
    let Some(model) = json.get("model") else { return Ok(()) };
    // An untagged model with a vocabulary map and merges is read as BPE too.
    if !matches!(model.get("type").and_then(Value::as_str), None | Some("BPE")) {
        return Ok(());
    }
    let (Some(vocab), Some(pairs)) =
        (model.get("vocab").and_then(Value::as_object), bpe_merge_pairs(model))
    else {
        return Ok(());
    };
    let prefix_len =
        model.get("continuing_subword_prefix").and_then(Value::as_str).map_or(0, str::len);
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        if !vocab.contains_key(a) || !vocab.contains_key(b) {
            continue; // refused by `tokenizers` before it builds anything
        }
        let merged = b.get(prefix_len..).map(|rest| format!("{a}{rest}"));
        if !merged.as_deref().is_some_and(|m| vocab.contains_key(m)) {
            return Err(format!(
                "model.merges[{i}]: merging {a:?} and {b:?} gives {}, which is not in the vocabulary",
                merged.map_or_else(|| "no valid token".to_string(), |m| format!("{m:?}"))
            ));
        }
    }
    Ok(())
}

fn read_json(path: &PathBuf) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.clone(), source })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| Error::Json { path: path.clone(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::TruncationParams;

    #[test]
    fn a_bpe_model_read_without_its_word_cache_encodes_as_tokenizers_does() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/roberta/model/tokenizer.json");
        let ours = Tokenizer::from_file(&path).unwrap();
        let reference = tokenizers::Tokenizer::from_file(&path).unwrap();
        for text in [
            "How do I stay safe online?",
            "  leading spaces, trailing spaces  and numbers 12345 67",
            "I'm sorry, but I can't help with that request.",
        ] {
            let expected: Vec<i64> = reference
                .encode(text, true)
                .unwrap()
                .get_ids()
                .iter()
                .map(|&id| id as i64)
                .collect();
            // Twice: the second encoding of a text is where a word cache would answer.
            assert_eq!(ours.encode(text, true).unwrap(), expected, "{text:?}");
            assert_eq!(ours.encode(text, true).unwrap(), expected, "{text:?}");
            assert_eq!(
                ours.decode(&expected, false).unwrap(),
                reference
                    .decode(&expected.iter().map(|&id| id as u32).collect::<Vec<_>>(), false)
                    .unwrap()
            );
        }
    }

    #[test]
    fn an_encoding_error_names_the_tokenizer_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        // A Unigram model without `unk_id` loads, and fails on the first character it does not know.
        std::fs::write(&path, r#"{"model": {"vocab": [["a", -1.0]]}}"#).unwrap();
        let tokenizer = Tokenizer::from_file(&path).unwrap();
        assert_eq!(tokenizer.encode("aa", false).unwrap().len(), 2);
        let err = tokenizer.encode("Hello", false).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("cannot tokenise"),
            "{err}"
        );
    }

    #[test]
    fn a_bpe_merge_longer_than_every_token_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let write = |vocab: &str, merges: &str, prefix: &str| {
            let json = format!(
                r#"{{"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":null,
                "post_processor":null,"decoder":null,"truncation":null,"padding":null,
                "model":{{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":{prefix},
                "end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"vocab":{vocab},
                "merges":{merges}}}}}"#
            );
            std::fs::write(&path, json).unwrap();
        };
        write(r#"{"a":0,"b":1,"ab":2}"#, r#"[["a","b"]]"#, "null");
        Tokenizer::from_file(&path).expect("a consistent BPE model is read");
        write(r#"{"a":0,"b":1,"ab":2}"#, r#"["a b"]"#, "null");
        Tokenizer::from_file(&path).expect("legacy merges are read");
        // "ab" + "b" is longer than any entry: `tokenizers` alone panics here.
        for merges in [r#"[["a","b"],["ab","b"]]"#, r#"["a b","ab b"]"#] {
            write(r#"{"a":0,"b":1,"ab":2}"#, merges, "null");
            let err = Tokenizer::from_file(&path).unwrap_err().to_string();
            assert!(err.contains("tokenizer.json") && err.contains("model.merges[1]"), "{err}");
            assert!(err.contains(r#"gives "abb""#), "{err}");
        }
        // A second part shorter than the continuing-subword prefix.
        write(r#"{"a":0,"b":1,"@@ab":2}"#, r#"[["a","b"]]"#, r#""@@""#);
        let err = Tokenizer::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("model.merges[0]") && err.contains("no valid token"), "{err}");
    }

    #[test]
    fn a_truncation_stored_in_the_file_does_not_cut_encodings() {
        let vocab = [("<unk>", 0), ("a", 1), ("b", 2), ("c", 3)]
            .into_iter()
            .map(|(t, i)| (t.to_string(), i))
            .collect();
        let model = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().unwrap();
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(Whitespace {}));
        inner
            .with_truncation(Some(TruncationParams { max_length: 2, ..Default::default() }))
            .unwrap();
        assert_eq!(inner.encode("a b c a", false).unwrap().get_ids().len(), 2);
        let tok = Tokenizer::new(inner);
        let mut ids = tok.encode("a b c a", false).unwrap();
        assert_eq!(ids, [1, 2, 3, 1]);
        Truncation::KeepLast.apply(&mut ids, 3);
        assert_eq!(ids, [2, 3, 1]);
        Truncation::KeepFirst.apply(&mut ids, 5);
        assert_eq!(ids, [2, 3, 1], "shorter sequences are kept whole");
    }
}
