//! A method's named options as given (`key=value` pairs on a command line, or a file), read by the method into
//! its own typed settings.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{EditError, Result};

/// One option a method declares: its name, the default it takes when absent (as text), and a line of help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// The option's name (`lr`, `artefact`, ...).
    pub name: &'static str,
    /// The value used when the option is absent, as text (`-` when there is none: absent means unset).
    pub default: &'static str,
    /// What the option sets.
    pub help: &'static str,
}

/// Options given to a method, by name; values are text until the method reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodArgs {
    values: BTreeMap<String, String>,
}

impl MethodArgs {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` (a later value replaces an earlier one).
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.values.insert(normalise(key), value.to_string());
        self
    }

    /// Parses `key=value` pairs, as `--method-arg` gives them.
    ///
    /// # Errors
    /// [`EditError::InvalidOption`] for a pair without `=` or with an empty key.
    pub fn parse_pairs<S: AsRef<str>>(method: &str, pairs: &[S]) -> Result<Self> {
        let mut args = Self::new();
        for pair in pairs {
            let pair = pair.as_ref();
            match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    args = args.set(key.trim(), value.trim());
                }
                _ => {
                    return Err(EditError::InvalidOption {
                        method: method.into(),
                        option: pair.split('=').next().unwrap_or_default().into(),
                        value: pair.into(),
                        reason: "expected `key=value`".into(),
                    })
                }
            }
        }
        Ok(args)
    }

    /// Reads options from a YAML or JSON file holding one mapping of option names to values (numbers, strings,
    /// booleans, or lists written as comma-separated text).
    ///
    /// # Errors
    /// [`EditError::Io`] when the file cannot be read, [`EditError::HyperParams`] naming the file when it is not
    /// such a mapping.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| EditError::Io { path: path.to_path_buf(), source })?;
        let invalid = |reason: String| EditError::HyperParams { path: path.to_path_buf(), reason };
        let mapping: BTreeMap<String, serde_norway::Value> =
            serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut args = Self::new();
        for (key, value) in mapping {
            let text = match value {
                serde_norway::Value::String(s) => s,
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Bool(b) => b.to_string(),
                serde_norway::Value::Sequence(items) => items
                    .iter()
                    .map(|item| match item {
                        serde_norway::Value::String(s) => Ok(s.clone()),
                        serde_norway::Value::Number(n) => Ok(n.to_string()),
                        _ => Err(invalid(format!("{key}: list items must be numbers or text"))),
                    })
                    .collect::<Result<Vec<_>>>()?
                    .join(","),
                _ => {
                    return Err(invalid(format!(
                        "{key}: expected a number, text, a boolean or a list"
                    )))
                }
            };
            args = args.set(&key, text);
        }
        Ok(args)
    }

    /// These options with `later`'s on top (a command line over a file).
    pub fn overridden_by(mut self, later: MethodArgs) -> Self {
        self.values.extend(later.values);
        self
    }

    /// The option names given.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Whether no option was given.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The raw text of `key`, if given.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.values.get(&normalise(key)).map(String::as_str)
    }

    /// `key` read as a `T`, `None` when absent.
    ///
    /// # Errors
    /// [`EditError::InvalidOption`] naming `method`, the option and the value when it does not parse.
    pub fn get<T>(&self, method: &str, key: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.text(key)
            .map(|text| {
                text.parse::<T>().map_err(|e| EditError::InvalidOption {
                    method: method.into(),
                    option: key.into(),
                    value: text.into(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// `key` read as a comma-separated list of `T`, `None` when absent. An empty entry (`3,,5`, a trailing
    /// comma, an empty value) is refused: in a list of layers or modules it is more likely a typo than an intent.
    ///
    /// # Errors
    /// [`EditError::InvalidOption`] for an empty entry and, as [`MethodArgs::get`], for the first item that does
    /// not parse.
    pub fn get_list<T>(&self, method: &str, key: &str) -> Result<Option<Vec<T>>>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some(text) = self.text(key) else { return Ok(None) };
        text.split(',')
            .map(|item| match item.trim() {
                "" => Err(invalid(method, key, text, "empty entry")),
                item => item
                    .parse::<T>()
                    .map_err(|e| invalid(method, key, text, format!("`{item}`: {e}"))),
            })
            .collect::<Result<Vec<T>>>()
            .map(Some)
    }

    /// `key` as a whole number of at least `least`, `None` when absent.
    ///
    /// # Errors
    /// As [`MethodArgs::get`], and [`EditError::InvalidOption`] for a number below `least`.
    pub fn get_count(&self, method: &str, key: &str, least: usize) -> Result<Option<usize>> {
        let value = self.get::<usize>(method, key)?;
        match value {
            Some(v) if v < least => {
                Err(invalid(method, key, v, format!("must be at least {least}")))
            }
            _ => Ok(value),
        }
    }

    /// `key` as a positive, finite number, `None` when absent.
    ///
    /// # Errors
    /// As [`MethodArgs::get`], and [`EditError::InvalidOption`] for zero, a negative number, NaN or an infinity.
    pub fn get_positive(&self, method: &str, key: &str) -> Result<Option<f64>> {
        let value = self.get::<f64>(method, key)?;
        match value {
            Some(v) if !(v.is_finite() && v > 0.0) => {
                Err(invalid(method, key, v, "must be a positive number"))
            }
            _ => Ok(value),
        }
    }

    /// `key` as a finite number, `None` when absent.
    ///
    /// # Errors
    /// As [`MethodArgs::get`], and [`EditError::InvalidOption`] for NaN or an infinity.
    pub fn get_finite(&self, method: &str, key: &str) -> Result<Option<f64>> {
        let value = self.get::<f64>(method, key)?;
        match value {
            Some(v) if !v.is_finite() => Err(invalid(method, key, v, "must be a finite number")),
            _ => Ok(value),
        }
    }

    /// Refuses any option `specs` does not declare, listing the declared ones.
    ///
    /// # Errors
    /// [`EditError::UnknownOption`].
    pub fn check_known(&self, method: &str, specs: &[OptionSpec]) -> Result<()> {
        match self.keys().find(|key| !specs.iter().any(|s| s.name == *key)) {
            None => Ok(()),
            Some(option) => Err(EditError::UnknownOption {
                method: method.into(),
                option: option.into(),
                known: if specs.is_empty() {
                    "none".into()
                } else {
                    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                },
            }),
        }
    }
}

/// The error of an option's value `value` that parses but is refused.
pub(crate) fn invalid(
    method: &str,
    key: &str,
    value: impl Display,
    reason: impl Into<String>,
) -> EditError {
    EditError::InvalidOption {
        method: method.into(),
        option: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Option names are written with `_`; `-` is read as `_`, so `prompt-layout` and `prompt_layout` are one option.
fn normalise(key: &str) -> String {
    key.trim().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[OptionSpec] = &[
        OptionSpec { name: "lr", default: "5e-4", help: "learning rate" },
        OptionSpec { name: "layers", default: "-", help: "layers" },
    ];

    #[test]
    fn pairs_parse_into_typed_values() {
        let args = MethodArgs::parse_pairs("dinm", &["lr=1e-4", "layers = 3, 5"]).unwrap();
        assert_eq!(args.get::<f64>("dinm", "lr").unwrap(), Some(1e-4));
        assert_eq!(args.get_list::<usize>("dinm", "layers").unwrap(), Some(vec![3, 5]));
        assert_eq!(args.get::<f64>("dinm", "absent").unwrap(), None);
        for typo in ["layers=3,,5", "layers=3,", "layers="] {
            let typed = MethodArgs::parse_pairs("dinm", &[typo]).unwrap();
            let err = typed.get_list::<usize>("dinm", "layers").unwrap_err().to_string();
            assert!(err.contains("empty entry"), "{typo}: {err}");
        }
        let bounded = MethodArgs::parse_pairs("ft", &["lr=0", "steps=0", "w=inf"]).unwrap();
        assert!(bounded.get_positive("ft", "lr").unwrap_err().to_string().contains("positive"));
        assert!(bounded
            .get_count("ft", "steps", 1)
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        assert!(bounded.get_finite("ft", "w").unwrap_err().to_string().contains("finite"));
        assert_eq!(bounded.get_finite("ft", "lr").unwrap(), Some(0.0));
        args.check_known("dinm", SPECS).unwrap();
    }

    #[test]
    fn bad_pairs_values_and_names_are_refused_by_name() {
        let err = MethodArgs::parse_pairs("dinm", &["lr"]).unwrap_err();
        assert!(err.to_string().contains("expected `key=value`"), "{err}");
        let args = MethodArgs::new().set("lr", "fast");
        let err = args.get::<f64>("dinm", "lr").unwrap_err();
        assert!(matches!(&err, EditError::InvalidOption { option, .. } if option == "lr"), "{err}");
        let err = MethodArgs::new().set("steps", 3).check_known("dinm", SPECS).unwrap_err();
        assert!(err.to_string().contains("(its options: lr, layers)"), "{err}");
        let err = MethodArgs::new().set("x", 1).check_known("none", &[]).unwrap_err();
        assert!(err.to_string().contains("its options: none"), "{err}");
    }

    #[test]
    fn a_file_is_read_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("args.yaml");
        std::fs::write(&path, "lr: 1.0e-5\nlayers: [2, 4]\nprompt-layout: chat\n").unwrap();
        let file = MethodArgs::from_file(&path).unwrap();
        assert_eq!(file.get_list::<usize>("m", "layers").unwrap(), Some(vec![2, 4]));
        assert_eq!(file.text("prompt_layout"), Some("chat"));
        let merged = file.overridden_by(MethodArgs::new().set("lr", "3e-4"));
        assert_eq!(merged.get::<f64>("m", "lr").unwrap(), Some(3e-4));
        std::fs::write(&path, "- 1\n- 2\n").unwrap();
        let err = MethodArgs::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("args.yaml"), "{err}");
    }
}
