//! Judge specifications: `phrase`, `classifier:<dir>`, `<guard>:<dir>[,key=value...]`.

use std::path::{Path, PathBuf};

use detox_metrics::guard::{
    Controversial, GuardFormat, HarmBench, LlamaGuard3, LlamaGuard3Size, LlamaGuard3Template,
    Qwen3Guard, RubricFormat, ShieldGemma, ShieldGemmaHarm, ShieldGemmaPolicies, WildGuard,
};
use detox_metrics::SafetyJudge;
use detox_runtime::load::LoadedModel;
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
        let mut options = Vec::new();
        while let Some(part) = parts.next() {
            if part.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(EvalError::InvalidSetting {
                    setting: format!("judge {kind}"),
                    reason: format!("option `{part}` is not `key=value`"),
                });
            };
            let key = key.trim().to_string();
            if key == "regex" {
                // A regular expression may hold commas: it takes the rest of the specification.
                let rest: Vec<&str> = std::iter::once(value).chain(parts.by_ref()).collect();
                options.push((key, rest.join(",")));
                break;
            }
            options.push((key, value.trim().to_string()));
        }
        Ok(Self { kind: kind.into(), model: Some(PathBuf::from(model)), options })
    }
}

fn unknown(spec: &str) -> EvalError {
    EvalError::UnknownJudge { spec: spec.to_string(), guards: GUARD_KINDS.join(", ") }
}

/// The options each kind takes (besides the model), checked before anything is loaded.
fn known_options(kind: &str) -> &'static [&'static str] {
    const MODEL: [&str; 3] = ["dtype", "batch", "unreadable"];
    match kind {
        "classifier" => &["batch"],
        "llama-guard-3" => &["dtype", "batch", "unreadable", "size", "template", "exclude"],
        "shieldgemma" => &["dtype", "batch", "unreadable", "policy"],
        "qwen3guard" => &["dtype", "batch", "unreadable", "controversial"],
        "rubric" => &[
            "dtype",
            "batch",
            "unreadable",
            "template",
            "labels",
            "first",
            "max_new_tokens",
            "name",
            "regex",
        ],
        _ => &MODEL,
    }
}

/// Options of a judge specification, each taken once by the part of the judge that reads it.
struct Options {
    kind: String,
    pairs: Vec<(String, String)>,
}

impl Options {
    /// The options of `kind`; one it does not take is refused, listing those it does.
    fn new(kind: &str, pairs: Vec<(String, String)>) -> Result<Self> {
        let known = known_options(kind);
        if let Some((key, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(EvalError::InvalidSetting {
                setting: format!("judge {kind} option `{key}`"),
                reason: format!("not an option of this judge (it takes {})", known.join(", ")),
            });
        }
        Ok(Self { kind: kind.into(), pairs })
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(at).1)
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> EvalError {
        EvalError::InvalidSetting {
            setting: format!("judge {} option `{key}`", self.kind),
            reason: reason.into(),
        }
    }
}

/// Builds the judge a user names (see [the module table](super)), placing its model on `device`.
pub fn judge_from_spec(spec: &str, device: Device) -> Result<Box<dyn SafetyJudge>> {
    let parsed = JudgeSpec::parse(spec)?;
    let mut options = Options::new(&parsed.kind, parsed.options)?;
    let Some(model) = parsed.model else {
        return Ok(Box::new(detox_metrics::PhraseJudge::default()));
    };
    if parsed.kind == "classifier" {
        let mut judge = ClassifierJudge::load(&model, device)?;
        if let Some(batch) = options.take("batch") {
            let batch =
                batch.parse().map_err(|_| options.invalid("batch", "not a whole number"))?;
            judge = judge.with_batch_size(batch)?;
        }
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
            return Err(
                options.invalid("unreadable", format!("`{other}` is not refuse, unsafe or safe"))
            )
        }
    };
    // Llama Guard 3's size, when not given, is read from the model, so the model is loaded first there.
    let mut loaded = None;
    let mut layers = || -> Result<usize> {
        let model = match loaded.take() {
            Some(model) => model,
            None => detox_runtime::load::load_model(&model, &[device], kind)?,
        };
        let layers = model.model.config().num_hidden_layers;
        loaded = Some(model);
        Ok(layers)
    };
    let format = guard_format(&parsed.kind, &model, &mut options, &mut layers)?;
    let LoadedModel { model: lm, tokenizer, path, .. } = match loaded {
        Some(loaded) => loaded,
        None => detox_runtime::load::load_model(&model, &[device], kind)?,
    };
    let judge = GuardJudge::new(lm, tokenizer, format, path)
        .with_batch_size(batch)?
        .with_unreadable(unreadable);
    Ok(Box::new(judge))
}

/// The format of a guard kind, from its options. Llama Guard 3's size, unless `size=` says, is read from the
/// model at `model` (`layers` loads it and counts its layers: 16 for 1B, 32 for 8B).
fn guard_format(
    kind: &str,
    model: &Path,
    options: &mut Options,
    layers: &mut dyn FnMut() -> Result<usize>,
) -> Result<Box<dyn GuardFormat>> {
    Ok(match kind {
        "llama-guard-3" => {
            let template = match options.take("template").as_deref() {
                None | Some("chat") => LlamaGuard3Template::ChatTemplate,
                Some("cookbook") => LlamaGuard3Template::Cookbook,
                Some(other) => {
                    return Err(
                        options.invalid("template", format!("`{other}` is not chat or cookbook"))
                    )
                }
            };
            let excluded = options.take("exclude");
            // Read last: without `size=` it loads the model, so the other options are checked first.
            let size = match options.take("size").as_deref() {
                Some("1b" | "1B") => LlamaGuard3Size::B1,
                Some("8b" | "8B") => LlamaGuard3Size::B8,
                Some(other) => {
                    return Err(options.invalid("size", format!("`{other}` is not 1b or 8b")))
                }
                None => match layers()? {
                    16 => LlamaGuard3Size::B1,
                    32 => LlamaGuard3Size::B8,
                    n => {
                        return Err(options.invalid(
                            "size",
                            format!(
                            "{} has {n} layers, neither Llama Guard 3 1B's 16 nor 8B's 32: give \
                                 `size=1b` or `size=8b`",
                            model.display()
                        ),
                        ))
                    }
                },
            };
            let mut guard = LlamaGuard3::new(size).with_template(template);
            if let Some(excluded) = excluded {
                guard = guard
                    .excluding(excluded.split('/').map(str::trim).filter(|k| !k.is_empty()))?;
            }
            Box::new(guard)
        }
        "wildguard" => Box::new(WildGuard::new()),
        "harmbench" => Box::new(HarmBench::new()),
        "shieldgemma" => {
            let policies = match options.take("policy").as_deref() {
                None | Some("all") => ShieldGemmaPolicies::All,
                Some(name) => {
                    let harm = ShieldGemmaHarm::ALL.into_iter().find(|h| harm_key(*h) == name);
                    match harm {
                        Some(harm) => ShieldGemmaPolicies::One(harm),
                        None => {
                            return Err(options.invalid(
                                "policy",
                                format!(
                                    "`{name}` is not all, dangerous, hate, sexual or harassment"
                                ),
                            ))
                        }
                    }
                }
            };
            Box::new(ShieldGemma::with_policies(policies))
        }
        "qwen3guard" => {
            let controversial = match options.take("controversial").as_deref() {
                None | Some("unsafe") => Controversial::Unsafe,
                Some("safe") => Controversial::Safe,
                Some(other) => {
                    return Err(options
                        .invalid("controversial", format!("`{other}` is not unsafe or safe")))
                }
            };
            Box::new(Qwen3Guard::new().with_controversial(controversial))
        }
        "rubric" => {
            let template = options.take("template").ok_or_else(|| {
                options.invalid(
                    "template",
                    "a rubric judge needs `template=<file>` with {prompt} and {response}",
                )
            })?;
            // The rubric's own keys, `regex` last since it takes the rest.
            let mut spec: Vec<String> = Vec::new();
            for key in ["labels", "first", "max_new_tokens", "name", "regex"] {
                if let Some(value) = options.take(key) {
                    spec.push(format!("{key}={value}"));
                }
            }
            Box::new(RubricFormat::from_file(&template, &spec.join(","))?)
        }
        other => return Err(unknown(other)),
    })
}

/// The `policy=` value of a ShieldGemma harm.
fn harm_key(harm: ShieldGemmaHarm) -> &'static str {
    match harm {
        ShieldGemmaHarm::Dangerous => "dangerous",
        ShieldGemmaHarm::Hate => "hate",
        ShieldGemmaHarm::Sexual => "sexual",
        ShieldGemmaHarm::Harassment => "harassment",
    }
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
        let err =
            judge_from_spec("classifier:/nonexistent", Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("/nonexistent"), "{err}");
        let err = JudgeSpec::parse("rubric:m,template").unwrap_err().to_string();
        assert!(err.contains("`template` is not `key=value`"), "{err}");
        // An option the judge does not take is refused before its model is looked for.
        for (spec, key) in [
            ("harmbench:/nonexistent,policy=hate", "policy"),
            ("classifier:/nonexistent,dtype=bf16", "dtype"),
            ("llama-guard-3:/nonexistent,controversial=safe", "controversial"),
        ] {
            let err = judge_from_spec(spec, Device::Cpu).err().unwrap().to_string();
            assert!(err.contains(&format!("option `{key}`")) && err.contains("it takes"), "{err}");
            assert!(!err.contains("/nonexistent"), "{err}");
        }
    }
}
