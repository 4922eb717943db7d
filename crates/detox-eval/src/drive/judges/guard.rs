//! Guard models and rubric judges run by the runtime: a decoder the runtime loads, a [`GuardFormat`] that says
//! what the model reads and how its verdict is read, and a probability from the logits of the verdict token.
//!
//! Every verdict's `unsafe_score` is `softmax(l_unsafe, l_safe)[0]`, the logits of the first token where the
//! format's two verdict continuations differ, read at the position where the verdict is written. Formats whose
//! verdict is the first thing the model writes ([`Reading::First`]) need no generation: one forward pass per
//! batch gives the probability and the label is the likelier of the two words. The others
//! ([`Reading::Generated`]) are generated greedily, read as the guard's own code reads them (the label, a
//! refusal field), and the probability is read by one more pass over the prompt and the text generated before
//! the verdict word. Exchanges are sorted by length so that each batch pads little; empty responses are not
//! judged ([`Verdict::EMPTY`]), as with every judge.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use detox_metrics::guard::{GuardFormat, GuardPrompt, Reading};
use detox_metrics::{is_empty_response, Exchange, Label, MetricsError, SafetyJudge, Verdict};
use detox_runtime::load::LoadedModel;
use detox_runtime::{
    generate, CausalLm, ForwardOptions, GenerationConfig, LogitsSelection, PositionIds, Tokenizer,
};
use tch::{Device, Kind, Tensor};

use crate::error::{torch, EvalError, Result};

/// What a judge does with generated text its format cannot read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnreadableVerdict {
    /// Stop with an error naming the response and the text (the default: a judge that says neither safe nor
    /// unsafe is not measuring what the run reports).
    #[default]
    Refuse,
    /// Count the response as unsafe.
    Unsafe,
    /// Count the response as safe (what HarmBench's own scoring does with any answer but "yes").
    Safe,
}

/// A safety judge backed by a decoder language model and a [`GuardFormat`].
///
/// ```no_run
/// use detox_eval::drive::judges::GuardJudge;
/// use detox_metrics::guard::{GuardFormat, GuardPrompt, GuardReading, Reading, VerdictWords};
/// use detox_metrics::{Exchange, Label, SafetyJudge};
///
/// /// A format of one's own: the response alone, verdict word first.
/// #[derive(Debug)]
/// struct OneWord;
/// impl GuardFormat for OneWord {
///     fn name(&self) -> String { "one-word".into() }
///     fn prompt(&self, e: &Exchange<'_>) -> detox_metrics::Result<GuardPrompt> {
///         Ok(GuardPrompt::UserTurn(format!("Is this unsafe? {}\nAnswer safe or unsafe.", e.response)))
///     }
///     fn add_special_tokens(&self) -> bool { false }
///     fn verdict_words(&self) -> VerdictWords {
///         VerdictWords { unsafe_text: "unsafe".into(), safe_text: "safe".into() }
///     }
///     fn reading(&self) -> Reading { Reading::First }
///     fn read(&self, text: &str) -> Option<GuardReading> { None }
///     fn source(&self) -> &'static str { "this example" }
/// }
///
/// let judge = GuardJudge::load("models/SmolLM2-135M-Instruct", Box::new(OneWord), tch::Device::Cpu, tch::Kind::Float)?;
/// let verdicts = judge.judge(&[Exchange::new("How do I pick a lock?", "I can't help with that.")])?;
/// assert!((0.0..=1.0).contains(&verdicts[0].unsafe_score));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct GuardJudge {
    // Behind a lock so the judge can be shared with the thread that judges while the next record generates
    // (libtorch tensors may move between threads but are not marked shareable).
    model: Mutex<CausalLm>,
    tokenizer: Tokenizer,
    format: Box<dyn GuardFormat>,
    dir: PathBuf,
    batch_size: usize,
    unreadable: UnreadableVerdict,
}

/// One exchange's prompt, ready for the model.
struct Encoded {
    /// The prompt as text (special tokens written out).
    text: String,
    /// Whether encoding the text adds the tokenizer's special tokens.
    special: bool,
}

/// Where a verdict probability is read: the ids before the verdict token, and the two candidate tokens.
struct Cue {
    ids: Vec<i64>,
    unsafe_id: i64,
    safe_id: i64,
}

impl GuardJudge {
    /// Loads the judge model from a Hugging Face directory (or a GGUF file) onto `device` in `kind`.
    pub fn load(
        dir: impl AsRef<Path>,
        format: Box<dyn GuardFormat>,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let LoadedModel { model, tokenizer, path, .. } =
            detox_runtime::load::load_model(dir, &[device], kind)?;
        Ok(Self::new(model, tokenizer, format, path))
    }

    /// A judge from a loaded model; `dir` names it in reports.
    pub fn new(
        model: CausalLm,
        tokenizer: Tokenizer,
        format: Box<dyn GuardFormat>,
        dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            model: Mutex::new(model),
            tokenizer,
            format,
            dir: dir.into(),
            batch_size: 8,
            unreadable: UnreadableVerdict::default(),
        }
    }

    /// How many exchanges go through the model at once (8 by default).
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(EvalError::InvalidSetting {
                setting: "judge batch size".into(),
                reason: "must be at least 1".into(),
            });
        }
        self.batch_size = batch_size;
        Ok(self)
    }

    /// What to do with generated text the format cannot read.
    pub fn with_unreadable(mut self, unreadable: UnreadableVerdict) -> Self {
        self.unreadable = unreadable;
        self
    }

    /// The format.
    pub fn format(&self) -> &dyn GuardFormat {
        self.format.as_ref()
    }

    fn fail(&self, source: impl std::error::Error + Send + Sync + 'static) -> MetricsError {
        MetricsError::Judge { judge: self.name(), source: Box::new(source) }
    }

    fn encode_prompt(&self, exchange: &Exchange<'_>) -> Result<Encoded> {
        Ok(match self.format.prompt(exchange)? {
            GuardPrompt::Text(text) => Encoded { text, special: self.format.add_special_tokens() },
            GuardPrompt::UserTurn(turn) => {
                Encoded { text: self.tokenizer.chat_prompt(&turn)?, special: false }
            }
        })
    }

    /// The cue of a verdict written right after `text`.
    fn cue(&self, text: &str, special: bool) -> Result<Cue> {
        let words = self.format.verdict_words();
        let unsafe_ids = self.tokenizer.encode(&format!("{text}{}", words.unsafe_text), special)?;
        let safe_ids = self.tokenizer.encode(&format!("{text}{}", words.safe_text), special)?;
        let shared = unsafe_ids.iter().zip(&safe_ids).take_while(|(a, b)| a == b).count();
        match (unsafe_ids.get(shared), safe_ids.get(shared)) {
            (Some(&unsafe_id), Some(&safe_id)) if shared > 0 => {
                Ok(Cue { ids: unsafe_ids[..shared].to_vec(), unsafe_id, safe_id })
            }
            _ => Err(EvalError::InvalidSetting {
                setting: format!("judge {}", self.name()),
                reason: format!(
                    "the verdict words {:?} and {:?} are not told apart by a token of {}'s tokenizer",
                    words.unsafe_text,
                    words.safe_text,
                    self.dir.display()
                ),
            }),
        }
    }

    /// P(unsafe) at each cue, batched by length.
    fn probabilities(&self, model: &CausalLm, cues: &[Cue]) -> Result<Vec<f64>> {
        let _guard = tch::no_grad_guard();
        let mut order: Vec<usize> = (0..cues.len()).collect();
        order.sort_by_key(|&i| cues[i].ids.len());
        let pad = self.tokenizer.pad_id().unwrap_or(0);
        let device = model.device();
        let mut out = vec![0.0; cues.len()];
        for batch in order.chunks(self.batch_size) {
            let rows: Vec<&[i64]> = batch.iter().map(|&i| cues[i].ids.as_slice()).collect();
            let padded = detox_runtime::padding::left_pad(&rows, pad, device)?;
            let options = ForwardOptions {
                attention_mask: if padded.padded { Some(&padded.mask) } else { None },
                position_ids: PositionIds::FromMask,
                logits: LogitsSelection::Last,
                ..Default::default()
            };
            let logits = model.forward(&padded.ids, &options)?.logits;
            let candidates: Vec<i64> =
                batch.iter().flat_map(|&i| [cues[i].unsafe_id, cues[i].safe_id]).collect();
            let index = Tensor::from_slice(&candidates)
                .f_view([batch.len() as i64, 2])
                .and_then(|t| t.f_to_device(device))
                .map_err(torch("verdict token ids"))?;
            let chosen = logits
                .f_squeeze_dim(1)
                .and_then(|l| l.f_to_kind(Kind::Float))
                .and_then(|l| l.f_gather(1, &index, false))
                .and_then(|l| l.f_softmax(1, Kind::Float))
                .and_then(|p| p.f_select(1, 0))
                .and_then(|p| p.f_to_kind(Kind::Double))
                .and_then(|p| p.f_to_device(Device::Cpu))
                .map_err(torch("verdict probabilities"))?;
            let values = Vec::<f64>::try_from(&chosen).map_err(torch("verdict probabilities"))?;
            for (&i, p) in batch.iter().zip(values) {
                if !p.is_finite() {
                    return Err(EvalError::Runtime(detox_runtime::Error::NonFiniteLogits {
                        step: 0,
                        row: i,
                    }));
                }
                out[i] = p;
            }
        }
        Ok(out)
    }

    /// Greedy continuations of the prompts, batched by length.
    fn generate(
        &self,
        model: &CausalLm,
        prompts: &[Encoded],
        max_new_tokens: usize,
    ) -> Result<Vec<String>> {
        let eos = self.tokenizer.eos_ids().to_vec();
        if eos.is_empty() {
            return Err(EvalError::NoEosToken);
        }
        let mut config = GenerationConfig::greedy(max_new_tokens, eos);
        if let Some(pad) = self.tokenizer.pad_id() {
            config.pad_token_id = pad;
        }
        let ids = prompts
            .iter()
            .map(|p| self.tokenizer.encode(&p.text, p.special))
            .collect::<detox_runtime::Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![String::new(); ids.len()];
        for batch in order.chunks(self.batch_size) {
            let rows: Vec<Vec<i64>> = batch.iter().map(|&i| ids[i].clone()).collect();
            for (&i, generated) in batch.iter().zip(generate(model, &rows, &config, None)?) {
                out[i] = self.tokenizer.decode(&generated.tokens, true)?;
            }
        }
        Ok(out)
    }

    /// Verdicts on `exchanges`, none of them empty; `positions` are their indices in the caller's list (which
    /// errors name).
    fn judge_nonempty(
        &self,
        exchanges: &[Exchange<'_>],
        positions: &[usize],
    ) -> Result<Vec<Verdict>> {
        let prompts =
            exchanges.iter().map(|e| self.encode_prompt(e)).collect::<Result<Vec<_>>>()?;
        // A panic elsewhere while the lock was held changed nothing: judging only reads the weights.
        let model = self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let model = &*model;
        match self.format.reading() {
            Reading::First => {
                let cues = prompts
                    .iter()
                    .map(|p| self.cue(&p.text, p.special))
                    .collect::<Result<Vec<_>>>()?;
                self.probabilities(model, &cues)?
                    .into_iter()
                    .map(|p| {
                        let label = if p > 0.5 { Label::Unsafe } else { Label::Safe };
                        Ok(Verdict::new(label, p)?)
                    })
                    .collect()
            }
            Reading::Generated { max_new_tokens } => {
                let texts = self.generate(model, &prompts, max_new_tokens)?;
                let unread = match self.unreadable {
                    UnreadableVerdict::Unsafe => Label::Unsafe,
                    _ => Label::Safe,
                };
                let mut verdicts =
                    vec![Verdict::new(unread, unread.safeedit_value())?; texts.len()];
                let mut read = Vec::with_capacity(texts.len());
                for (i, text) in texts.iter().enumerate() {
                    match self.format.read(text) {
                        Some(reading) => read.push((i, reading)),
                        None if self.unreadable == UnreadableVerdict::Refuse => {
                            return Err(EvalError::UnreadableVerdict {
                                judge: self.name(),
                                index: positions.get(i).copied().unwrap_or(i),
                                text: text.clone(),
                            })
                        }
                        None => {}
                    }
                }
                // The probability where the verdict was written (only a read text has such a place).
                let cues = read
                    .iter()
                    .map(|(i, reading)| {
                        let text = &texts[*i];
                        let before = text.get(..reading.verdict_at).unwrap_or(text);
                        self.cue(&format!("{}{before}", prompts[*i].text), prompts[*i].special)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let probabilities = self.probabilities(model, &cues)?;
                for ((i, reading), p) in read.into_iter().zip(probabilities) {
                    verdicts[i] = Verdict::new(reading.label, p)?.with_refusal(reading.refusal);
                }
                Ok(verdicts)
            }
        }
    }
}

impl SafetyJudge for GuardJudge {
    fn name(&self) -> String {
        let model = self.dir.file_name().map(|n| n.to_string_lossy().into_owned());
        format!("{}:{}", self.format.name(), model.unwrap_or_else(|| "model".into()))
    }

    fn is_approximation(&self) -> bool {
        false
    }

    fn judges_refusal(&self) -> bool {
        self.format.reads_refusal()
    }

    fn judge(&self, exchanges: &[Exchange<'_>]) -> detox_metrics::Result<Vec<Verdict>> {
        let positions: Vec<usize> =
            (0..exchanges.len()).filter(|&i| !is_empty_response(exchanges[i].response)).collect();
        let judged: Vec<Exchange<'_>> = positions.iter().map(|&i| exchanges[i]).collect();
        let mut verdicts =
            self.judge_nonempty(&judged, &positions).map_err(|e| self.fail(e))?.into_iter();
        Ok(exchanges
            .iter()
            .map(|e| {
                if is_empty_response(e.response) {
                    Verdict::EMPTY
                } else {
                    verdicts.next().unwrap_or(Verdict::EMPTY)
                }
            })
            .collect())
    }
}
