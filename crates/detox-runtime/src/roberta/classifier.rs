//! `RobertaForSequenceClassification`: the encoder, then a head on the `<s>` (first) token's final hidden
//! state: dense, tanh, projection to the class logits.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::checkpoint;
use super::config::RobertaConfig;
use super::embeddings::Embeddings;
use super::encoder::{additive_attention_mask, Encoder};
use super::tokenize::{self, EncodedBatch};
use crate::error::{Error, Result, TorchContext};
use crate::tokenizer::Tokenizer;
use crate::weights::SafetensorsFiles;

/// The truncation length of the SafeEdit evaluation (`max_length=512`, special tokens included).
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// The number of texts per forward pass in [`RobertaClassifier::classify`] unless changed (the SafeEdit
/// evaluation's default batch size).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// The decision for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierOutput {
    /// The arg-max class index (ties go to the lower index, as `torch.max` does).
    pub label: usize,
    /// Softmax over the logits, one per class, summing to 1.
    pub probabilities: Vec<f32>,
}

/// A RoBERTa sequence classifier loaded from a Hugging Face model directory.
///
/// ```no_run
/// use detox_runtime::roberta::RobertaClassifier;
/// use tch::{Device, Kind};
///
/// let judge = RobertaClassifier::load("models/SafeEdit-Safety-Classifier", Device::Cpu, Kind::Float)?
///     .with_batch_size(16)?;
/// let outputs = judge.classify(&["I can't help with that.", "Sure, here is how."])?;
/// println!("{:?}", outputs[0].probabilities);
/// # Ok::<(), detox_runtime::Error>(())
/// ```
pub struct RobertaClassifier {
    config: RobertaConfig,
    dir: PathBuf,
    device: Device,
    kind: Kind,
    embeddings: Embeddings,
    encoder: Encoder,
    head_dense: (Tensor, Tensor),
    head_out: (Tensor, Tensor),
    tokenizer: Option<Tokenizer>,
    batch_size: usize,
}

impl std::fmt::Debug for RobertaClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobertaClassifier")
            .field("dir", &self.dir)
            .field("device", &self.device)
            .field("kind", &self.kind)
            .field("layers", &self.config.num_hidden_layers)
            .field("labels", &self.config.labels())
            .field("tokenizer", &self.tokenizer)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl RobertaClassifier {
    /// Loads `config.json`, `model.safetensors` and (when present) the tokenizer from `dir` (`tokenizer.json`,
    /// else `vocab.json` with `merges.txt`), placing the
    /// weights on `device` as `kind` (a float kind; `Kind::Float` reproduces the reference).
    ///
    /// The checkpoint must hold exactly the tensors the config implies (see
    /// [`expected_tensors`](super::expected_tensors) and [`IGNORED_TENSORS`](super::IGNORED_TENSORS)); a
    /// directory with only `pytorch_model.bin` is refused with a pointer to `cargo xtask convert-bin`.
    /// Without a tokenizer the model still runs through [`RobertaClassifier::forward`], but
    /// [`RobertaClassifier::classify`] refuses.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
            return Err(Error::Unsupported {
                what: format!("weights need a float kind, got {kind:?}"),
            });
        }
        let config = RobertaConfig::from_file(dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() && dir.join("pytorch_model.bin").is_file() {
            return Err(Error::Safetensors {
                path: weights,
                reason: "absent; the directory has only pytorch_model.bin: convert it once with \
                         `cargo xtask convert-bin <dir>`"
                    .into(),
            });
        }
        let ckpt = SafetensorsFiles::open_dir(&dir)?;
        checkpoint::check(&ckpt, &config)?;
        let embeddings = Embeddings::load(&ckpt, &config, device, kind)?;
        let encoder = Encoder::load(&ckpt, &config, device, kind)?;
        let head_dense = (
            ckpt.load("classifier.dense.weight", device, Some(kind))?,
            ckpt.load("classifier.dense.bias", device, Some(kind))?,
        );
        let head_out = (
            ckpt.load("classifier.out_proj.weight", device, Some(kind))?,
            ckpt.load("classifier.out_proj.bias", device, Some(kind))?,
        );
        let max_length = DEFAULT_MAX_LENGTH.min(config.max_input_tokens() as usize);
        let tokenizer = tokenize::from_dir(&dir, max_length)?;
        Ok(Self {
            config,
            dir,
            device,
            kind,
            embeddings,
            encoder,
            head_dense,
            head_out,
            tokenizer,
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// Sets how many texts [`RobertaClassifier::classify`] runs per forward pass.
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::InvalidSetting { what: "batch size must be at least 1".into() });
        }
        self.batch_size = batch_size;
        Ok(self)
    }

    /// Sets the truncation length in tokens, special tokens included. The default is 512, or fewer when the
    /// position table is smaller; a length beyond the position table is refused.
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        let limit = self.config.max_input_tokens() as usize;
        if max_length > limit {
            return Err(Error::OutOfRange { what: format!(
                    "max_length {max_length} exceeds the {limit} positions of max_position_embeddings {}",
                    self.config.max_position_embeddings
                ) });
        }
        let tokenizer = self.tokenizer.take().ok_or_else(|| self.no_tokenizer())?;
        self.tokenizer = Some(tokenize::truncated(tokenizer, max_length)?);
        Ok(self)
    }

    /// The model's configuration.
    pub fn config(&self) -> &RobertaConfig {
        &self.config
    }

    /// The model directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The dtype of the weights.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The texts per forward pass of [`RobertaClassifier::classify`].
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The tokenizer of the model directory, if it had one, truncating at [`RobertaClassifier::max_length`].
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The truncation length in tokens, special tokens included (`None` without a tokenizer).
    pub fn max_length(&self) -> Option<usize> {
        self.tokenizer.as_ref().and_then(Tokenizer::truncation)
    }

    fn no_tokenizer(&self) -> Error {
        Error::Unsupported {
            what: format!(
                "{}: no tokenizer.json (nor vocab.json with merges.txt); tokenising needs one",
                self.dir.display()
            ),
        }
    }

    /// Tokenises `texts` as the classifier reads them: special tokens added, each truncated to
    /// [`RobertaClassifier::max_length`], the batch right-padded with `pad_token_id` to its longest text.
    ///
    /// # Shapes
    /// `input_ids` and `attention_mask` are [texts.len(), longest] Int64 on the model's device.
    pub fn encode(&self, texts: &[&str]) -> Result<EncodedBatch> {
        let tokenizer = self.tokenizer.as_ref().ok_or_else(|| self.no_tokenizer())?;
        tokenize::encode_batch(tokenizer, texts, self.config.pad_token_id, self.device)
    }

    /// Class logits of a batch, without gradients.
    ///
    /// # Arguments
    /// * `input_ids` - token ids, right-padded with `pad_token_id` (positions are counted over non-pad tokens,
    ///   so left padding works too).
    /// * `attention_mask` - 1 for tokens to attend to, 0 for padding.
    ///
    /// # Shapes
    /// `input_ids` [b, s] and `attention_mask` [b, s] (any integer kind, any device; moved to the model's)
    /// -> logits [b, num_labels] in the model's kind, on its device. `s` may not exceed
    /// `max_position_embeddings - pad_token_id - 1`.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.forward_inner(input_ids, attention_mask))
    }

    fn forward_inner(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let ids_shape = input_ids.size();
        let [_, seq] = ids_shape.as_slice() else {
            return Err(Error::BadShape {
                what: format!("input_ids must be [batch, seq], got {ids_shape:?}"),
            });
        };
        if attention_mask.size() != ids_shape {
            return Err(Error::BadShape {
                what: format!(
                    "attention_mask shape {:?} differs from input_ids shape {ids_shape:?}",
                    attention_mask.size()
                ),
            });
        }
        if *seq < 1 || *seq > self.config.max_input_tokens() {
            return Err(Error::OutOfRange {
                what: format!(
                    "sequence length {seq} is outside 1..={} (the position table)",
                    self.config.max_input_tokens()
                ),
            });
        }
        let ids = input_ids
            .f_to_device_(self.device, Kind::Int64, false, false)
            .ctx("moving input_ids")?;
        self.check_vocabulary(&ids)?;
        let mask = attention_mask.f_to_device(self.device).ctx("moving attention_mask")?;
        let additive = additive_attention_mask(&mask, self.kind)?;
        let xs = self.embeddings.forward(&ids)?;
        let xs = self.encoder.forward(&xs, &additive)?;
        let first = xs.f_select(1, 0).ctx("taking the <s> state")?;
        first
            .f_linear(&self.head_dense.0, Some(&self.head_dense.1))
            .and_then(|h| h.f_tanh())
            .and_then(|h| h.f_linear(&self.head_out.0, Some(&self.head_out.1)))
            .ctx("running the classification head")
    }

    /// An out-of-range id would abort inside a CUDA kernel; refuse it with a clear error instead.
    fn check_vocabulary(&self, ids: &Tensor) -> Result<()> {
        let lowest = ids.f_min().and_then(|t| t.f_int64_value(&[])).ctx("checking token ids")?;
        let highest = ids.f_max().and_then(|t| t.f_int64_value(&[])).ctx("checking token ids")?;
        if lowest < 0 || highest >= self.config.vocab_size {
            return Err(Error::OutOfRange {
                what: format!(
                    "token ids span {lowest}..={highest}, outside the vocabulary 0..{}",
                    self.config.vocab_size
                ),
            });
        }
        Ok(())
    }

    /// Tokenises and classifies `texts` in batches of [`RobertaClassifier::batch_size`], each truncated to
    /// the maximum length and right-padded to its batch's longest text. Returns one output per text, in order;
    /// an empty slice gives an empty vector.
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<ClassifierOutput>> {
        let mut outputs = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size) {
            let batch = self.encode(chunk)?;
            let logits = self.forward(&batch.input_ids, &batch.attention_mask)?;
            outputs.extend(decisions(&logits)?);
        }
        Ok(outputs)
    }
}

/// Softmax probabilities and arg-max labels of a logits batch.
///
/// # Shapes
/// `logits` [b, num_labels] (any float kind, any device) -> b outputs.
pub fn decisions(logits: &Tensor) -> Result<Vec<ClassifierOutput>> {
    let size = logits.size();
    let [rows, labels] = size.as_slice() else {
        return Err(Error::BadShape {
            what: format!("logits must be [batch, labels], got {size:?}"),
        });
    };
    let probs = logits
        .f_softmax(-1, Kind::Float)
        .and_then(|p| p.f_to_device(Device::Cpu))
        .and_then(|p| p.f_flatten(0, -1))
        .ctx("computing class probabilities")?;
    let flat = Vec::<f32>::try_from(&probs).ctx("reading class probabilities")?;
    Ok(flat
        .chunks(*labels as usize)
        .take(*rows as usize)
        .map(|row| {
            // First maximum wins, as with torch.max / argmax.
            let label = row
                .iter()
                .enumerate()
                .fold(0, |best, (i, &p)| if p > row[best] { i } else { best });
            ClassifierOutput { label, probabilities: row.to_vec() }
        })
        .collect())
}
