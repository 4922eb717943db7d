//! Judge specifications: `phrase`, `classifier:<dir>`, `<guard>:<dir>[,key=value...]`.

use std::path::PathBuf;

use detox_metrics::guard::GuardFormat;
use detox_metrics::SafetyJudge;
use tch::{Device, Kind};

use super::{ClassifierJudge, GuardJudge, UnreadableVerdict};
use crate::error::{EvalError, Result};

/// The guard kinds a specification can name, with the rubric judge.
pub const GUARD_KINDS: [&str; 6] =
    ["llama-guard-3", "wildguard", "harmbench", "shieldgemma", "qwen3guard", "rubric"];

/// A parsed judge specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeSpec {
    /// `phrase`, `classifier` or a guard kind.
    pub kind: String,
    /// The model directory (or GGUF file), for every kind but `phrase`.
    pub model: Option<PathBuf>,
    /// `key=value` options, in order.
    pub options: Vec<(String, String)>,
}

impl JudgeSpec {
    /// Parses `kind[:path[,key=value...]]`.
    ///
    /// ```
    /// use detox_eval::drive::judges::JudgeSpec;
    ///
    /// let spec = JudgeSpec::parse("wildguard:models/wildguard,dtype=bf16,batch=16")?;
    /// assert_eq!(spec.kind, "wildguard");
    /// assert_eq!(spec.model.as_deref(), Some(std::path::Path::new("models/wildguard")));
    /// assert_eq!(spec.options, [("dtype".into(), "bf16".into()), ("batch".into(), "16".into())]);
    /// # Ok::<(), detox_eval::EvalError>(())
    /// ```
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        let (kind, rest) = match spec.split_once(':') {
            Some((kind, rest)) => (kind.trim(), Some(rest)),
            None => (spec, None),
        };
        if kind == "phrase" && rest.is_none() {
            return Ok(Self { kind: kind.into(), model: None, options: Vec::new() });
        }
        if kind != "classifier" && !GUARD_KINDS.contains(&kind) {
            return Err(unknown(spec));
        }
        let mut parts = rest.unwrap_or("").split(',');
        let model = parts.next().map(str::trim).filter(|p| !p.is_empty()).ok_or_else(|| {
            EvalError::InvalidSetting {
                setting: "judge".into(),
                reason: format!(
                    "`{kind}:` names no model directory (expected `phrase`, `classifier:<dir>` or \
                     `<guard>:<dir>[,key=value...]`)"
                ),
            }
        })?;
        let options = parts
            .filter(|p| !p.trim().is_empty())
            .map(|part| match part.split_once('=') {
                Some((key, value)) => Ok((key.trim().to_string(), value.trim().to_string())),
                None => Err(EvalError::InvalidSetting {
                    setting: format!("judge {kind}"),
                    reason: format!("option `{part}` is not `key=value`"),
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { kind: kind.into(), model: Some(PathBuf::from(model)), options })
    }
}

fn unknown(spec: &str) -> EvalError {
    EvalError::UnknownJudge { spec: spec.to_string(), guards: GUARD_KINDS.join(", ") }
}

/// Options of a judge specification, each consumed once; those left over are refused.
struct Options {
    kind: String,
    pairs: Vec<(String, String)>,
}

impl Options {
    fn take(&mut self, key: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(at).1)
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> EvalError {
        EvalError::InvalidSetting { setting: format!("judge {} option `{key}`", self.kind), reason: reason.into() }
    }

    fn finish(self) -> Result<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some((key, _)) => Err(EvalError::InvalidSetting {
                setting: format!("judge {} option `{key}`", self.kind),
                reason: "not an option of this judge".into(),
            }),
        }
    }
}

/// Builds the judge a user names (see [the module table](super)), placing its model on `device`.
pub fn judge_from_spec(spec: &str, device: Device) -> Result<Box<dyn SafetyJudge>> {
    let parsed = JudgeSpec::parse(spec)?;
    let mut options = Options { kind: parsed.kind.clone(), pairs: parsed.options };
    let Some(model) = parsed.model else {
        return Ok(Box::new(detox_metrics::PhraseJudge::default()));
    };
    if parsed.kind == "classifier" {
        let mut judge = ClassifierJudge::load(&model, device)?;
        if let Some(batch) = options.take("batch") {
            let batch = batch.parse().map_err(|_| options.invalid("batch", "not a whole number"))?;
            judge = judge.with_batch_size(batch)?;
        }
        options.finish()?;
        return Ok(Box::new(judge));
    }
    let kind = match options.take("dtype") {
        Some(name) => detox_runtime::load::parse_kind(&name)?,
        None if device.is_cuda() => Kind::BFloat16,
        None => Kind::Float,
    };
    let batch = match options.take("batch") {
        Some(batch) => batch.parse().map_err(|_| options.invalid("batch", "not a whole number"))?,
        None => 8,
    };
    let unreadable = match options.take("unreadable").as_deref() {
        None | Some("refuse") => UnreadableVerdict::Refuse,
        Some("unsafe") => UnreadableVerdict::Unsafe,
        Some("safe") => UnreadableVerdict::Safe,
        Some(other) => {
            return Err(options.invalid("unreadable", format!("`{other}` is not refuse, unsafe or safe")))
        }
    };
    let format = guard_format(&parsed.kind, &mut options)?;
    options.finish()?;
    let judge = GuardJudge::load(&model, format, device, kind)?
        .with_batch_size(batch)?
        .with_unreadable(unreadable);
    Ok(Box::new(judge))
}

/// The format of a guard kind, from its options.
fn guard_format(kind: &str, _options: &mut Options) -> Result<Box<dyn GuardFormat>> {
    Err(unknown(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_are_named_by_spec_and_unknown_specs_say_what_is_expected() {
        let phrase = judge_from_spec("phrase", Device::Cpu).unwrap();
        assert!(phrase.is_approximation());
        for bad in ["classifier:", "classifier:  ", "wildguard:", "roberta", "", "phrase:x"] {
            let err = judge_from_spec(bad, Device::Cpu).err().unwrap().to_string();
            assert!(err.contains("`classifier:<dir>`"), "{bad:?}: {err}");
        }
        let err = judge_from_spec("classifier:/nonexistent", Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("/nonexistent"), "{err}");
        let err = JudgeSpec::parse("rubric:m,template").unwrap_err().to_string();
        assert!(err.contains("`template` is not `key=value`"), "{err}");
    }
}
