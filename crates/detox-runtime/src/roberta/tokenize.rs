//! Text to classifier input: the model's own `tokenizer.json` (byte-level BPE with `<s> ... </s>`), or, for
//! directories saved with only the original files, the same tokenizer rebuilt from `vocab.json` and
//! `merges.txt` the way transformers converts a `RobertaTokenizer`; truncated and padded the way the SafeEdit evaluation calls the Hugging Face tokenizer (`padding=True,
//! truncation=True, max_length=512`): each text is cut to `max_length` tokens counting the special tokens, and
//! the batch is right-padded with `pad_token_id` to its longest member.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer, TruncationParams};

use super::error::{Result, RobertaError, TorchContext};

/// A tokenised, right-padded batch.
#[derive(Debug)]
pub struct EncodedBatch {
    /// Token ids, [b, s] Int64, padded with the pad id.
    pub input_ids: Tensor,
    /// 1 for real tokens, 0 for padding, [b, s] Int64.
    pub attention_mask: Tensor,
    /// Number of real tokens per text, after truncation.
    pub lengths: Vec<usize>,
}

/// The classifier's tokenizer with its truncation length and pad id.
pub struct ClassifierTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    max_length: usize,
    pad_id: i64,
}

impl std::fmt::Debug for ClassifierTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifierTokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl ClassifierTokenizer {
    /// Loads `tokenizer.json`, truncating to `max_length` tokens (special tokens included) and padding with
    /// `pad_id`. Padding or truncation settings stored in the file are replaced by these.
    pub fn from_file(path: impl AsRef<Path>, max_length: usize, pad_id: i64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| RobertaError::Tokenizer { path: path.clone(), reason: e.to_string() })?;
        let mut this = Self { tokenizer, path, max_length: 0, pad_id };
        this.set_max_length(max_length)?;
        Ok(this)
    }

    /// Rebuilds a RoBERTa byte-level BPE tokenizer from `vocab.json` and `merges.txt` with RoBERTa's special
    /// tokens (`<s>`, `<pad>`, `</s>`, `<unk>`, `<mask>`), no prefix space, and `<s> text </s>` framing: what
    /// `RobertaTokenizer.from_pretrained` builds from those two files.
    pub fn from_vocab_merges(
        vocab: impl AsRef<Path>,
        merges: impl AsRef<Path>,
        max_length: usize,
        pad_id: i64,
    ) -> Result<Self> {
        let vocab = vocab.as_ref().to_path_buf();
        let merges = merges.as_ref();
        let fail = |path: &Path, reason: String| RobertaError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let (vocab_str, merges_str) = match (vocab.to_str(), merges.to_str()) {
            (Some(v), Some(m)) => (v, m),
            _ => return Err(fail(&vocab, "path is not valid UTF-8".into())),
        };
        let bpe = BPE::from_file(vocab_str, merges_str)
            .build()
            .map_err(|e| fail(&vocab, format!("with {}: {e}", merges.display())))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| {
                fail(&vocab, format!("special token `{token}` is not in the vocabulary"))
            })
        };
        let (cls, sep) = (id("<s>")?, id("</s>")?);
        for token in ["<pad>", "<unk>", "<mask>"] {
            id(token)?;
        }
        tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new(("</s>".into(), sep), ("<s>".into(), cls))
                .trim_offsets(true)
                .add_prefix_space(false),
        ));
        tokenizer
            .add_special_tokens([
                AddedToken::from("<s>", true),
                AddedToken::from("<pad>", true),
                AddedToken::from("</s>", true),
                AddedToken::from("<unk>", true),
                // RoBERTa's mask token absorbs the space before it.
                AddedToken::from("<mask>", true).lstrip(true),
            ])
            .map_err(|e| fail(&vocab, format!("adding the special tokens: {e}")))?;
        let mut this = Self { tokenizer, path: vocab, max_length: 0, pad_id };
        this.set_max_length(max_length)?;
        Ok(this)
    }

    /// The tokenizer of a model directory: `tokenizer.json` if present, else `vocab.json` with `merges.txt`;
    /// `None` when the directory has neither.
    pub fn from_dir(dir: impl AsRef<Path>, max_length: usize, pad_id: i64) -> Result<Option<Self>> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_file(json, max_length, pad_id).map(Some);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_merges(vocab, merges, max_length, pad_id).map(Some);
        }
        Ok(None)
    }

    /// The file the tokenizer was read from (`tokenizer.json` or `vocab.json`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The truncation length, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Changes the truncation length.
    pub fn set_max_length(&mut self, max_length: usize) -> Result<()> {
        if max_length < 2 {
            return Err(RobertaError::Input {
                reason: format!(
                    "max_length {max_length} leaves no room for the text between <s> and </s>"
                ),
            });
        }
        let params = TruncationParams { max_length, ..TruncationParams::default() };
        self.tokenizer.with_truncation(Some(params)).map_err(|e| RobertaError::Tokenizer {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        self.tokenizer.with_padding(None);
        self.max_length = max_length;
        Ok(())
    }

    /// The token ids of one text, special tokens included, after truncation.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| RobertaError::Tokenizer {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }

    /// Tokenises `texts` into one right-padded batch on `device`.
    ///
    /// # Shapes
    /// `input_ids` and `attention_mask` are [texts.len(), longest] Int64, where longest <= `max_length`.
    pub fn encode_batch(&self, texts: &[&str], device: Device) -> Result<EncodedBatch> {
        if texts.is_empty() {
            return Err(RobertaError::Input { reason: "no texts to encode".into() });
        }
        let rows = texts.iter().map(|t| self.encode(t)).collect::<Result<Vec<_>>>()?;
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * longest);
        let mut mask = Vec::with_capacity(rows.len() * longest);
        for row in &rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.pad_id, longest - row.len()));
            mask.extend(std::iter::repeat_n(1i64, row.len()));
            mask.extend(std::iter::repeat_n(0i64, longest - row.len()));
        }
        let shape = [rows.len() as i64, longest as i64];
        let to_tensor = |data: &[i64]| {
            Tensor::f_from_slice(data)
                .and_then(|t| t.f_view(shape))
                .and_then(|t| t.f_to_device_(device, Kind::Int64, false, false))
                .ctx("building the token batch")
        };
        Ok(EncodedBatch {
            input_ids: to_tensor(&ids)?,
            attention_mask: to_tensor(&mask)?,
            lengths: rows.iter().map(Vec::len).collect(),
        })
    }
}
