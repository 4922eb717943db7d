//! Text to classifier input with the runtime's [`Tokenizer`]: the model's own `tokenizer.json` (byte-level BPE
//! with `<s> ... </s>`), or, for directories saved with only the original files, the same tokenizer rebuilt from
//! `vocab.json` and `merges.txt` the way transformers converts a `RobertaTokenizer`; truncated and padded the way
//! the SafeEdit evaluation calls the Hugging Face tokenizer (`padding=True, truncation=True, max_length=512`):
//! each text is cut to `max_length` tokens counting the special tokens ([`Tokenizer::with_truncation`]), and the
//! batch is right-padded with the pad id to its longest member.

use std::path::Path;

use tch::{Device, Kind, Tensor};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::AddedToken;

use crate::error::{Error, Result, TorchContext};
use crate::tokenizer::Tokenizer;

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

/// Rebuilds a RoBERTa byte-level BPE tokenizer from `vocab.json` and `merges.txt` with RoBERTa's special tokens
/// (`<s>`, `<pad>`, `</s>`, `<unk>`, `<mask>`), no prefix space, and `<s> text </s>` framing: what
/// `RobertaTokenizer.from_pretrained` builds from those two files. The pad id is `<pad>`'s.
pub fn roberta_tokenizer_from_vocab_merges(
    vocab: impl AsRef<Path>,
    merges: impl AsRef<Path>,
) -> Result<Tokenizer> {
    let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
    let fail = |reason: String| Error::Malformed { what: format!("{}: {reason}", vocab.display()) };
    let (vocab_str, merges_str) = match (vocab.to_str(), merges.to_str()) {
        (Some(v), Some(m)) => (v, m),
        _ => return Err(fail("path is not valid UTF-8".into())),
    };
    // Without the word cache `tokenizers` keeps per thread and never frees (see `without_word_cache` in
    // `tokenizer.rs`).
    let bpe = BPE::from_file(vocab_str, merges_str)
        .cache_capacity(0)
        .build()
        .map_err(|e| fail(format!("with {}: {e}", merges.display())))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| fail(format!("special token `{token}` is not in the vocabulary")))
    };
    let (cls, sep, pad) = (id("<s>")?, id("</s>")?, id("<pad>")?);
    for token in ["<unk>", "<mask>"] {
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
        .map_err(|e| fail(format!("adding the special tokens: {e}")))?;
    Ok(Tokenizer::new(tokenizer).with_bos(Some(i64::from(cls))).with_pad(Some(i64::from(pad))))
}

/// The tokenizer of a classifier directory, truncating to `max_length`: `tokenizer.json` if present, else
/// `vocab.json` with `merges.txt`; `None` when the directory has neither.
pub(crate) fn from_dir(dir: &Path, max_length: usize) -> Result<Option<Tokenizer>> {
    let json = dir.join("tokenizer.json");
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    let tokenizer = if json.is_file() {
        Tokenizer::from_file(json)?
    } else if vocab.is_file() && merges.is_file() {
        roberta_tokenizer_from_vocab_merges(vocab, merges)?
    } else {
        return Ok(None);
    };
    truncated(tokenizer, max_length).map(Some)
}

/// `tokenizer` cutting at `max_length` tokens, which must leave room for text between `<s>` and `</s>`.
pub(crate) fn truncated(tokenizer: Tokenizer, max_length: usize) -> Result<Tokenizer> {
    if max_length < 2 {
        return Err(Error::InvalidSetting {
            what: format!(
                "max_length {max_length} leaves no room for the text between <s> and </s>"
            ),
        });
    }
    tokenizer.with_truncation(Some(max_length))
}

/// Tokenises `texts` (special tokens added, truncated as `tokenizer` is set) into one batch right-padded with
/// `pad_id`, on `device`.
///
/// # Shapes
/// `input_ids` and `attention_mask` are [texts.len(), longest] Int64, where longest is at most the truncation
/// length.
pub(crate) fn encode_batch(
    tokenizer: &Tokenizer,
    texts: &[&str],
    pad_id: i64,
    device: Device,
) -> Result<EncodedBatch> {
    if texts.is_empty() {
        return Err(Error::EmptyInput { what: "no texts to encode".into() });
    }
    let rows = tokenizer.encode_batch(texts, true)?;
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * longest);
    let mut mask = Vec::with_capacity(rows.len() * longest);
    for row in &rows {
        ids.extend_from_slice(row);
        ids.extend(std::iter::repeat_n(pad_id, longest - row.len()));
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
