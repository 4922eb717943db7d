//! [`ChatTemplate`]: a model's Jinja chat template, compiled once, rendered per conversation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, Value};
use minijinja::{Environment, ErrorKind};
use serde_json::Value as Json;

use super::clock::Clock;
use super::json::tojson;
use super::Message;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The special-token attributes transformers passes to every template (its `special_tokens_map`).
pub const SPECIAL_TOKEN_NAMES: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

const TEMPLATE_NAME: &str = "chat_template";

/// A model's chat template with the special tokens it reads (`bos_token`, `eos_token`, ...), rendered as
/// transformers' `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` renders it.
///
/// ```
/// use detox_runtime::chat::{ChatTemplate, Message};
///
/// let source = "{% for m in messages %}{{ bos_token }}[{{ m.role }}] {{ m.content.strip() }}\n{% endfor %}\
///               {% if add_generation_prompt %}[assistant]{% endif %}";
/// let template = ChatTemplate::new(source, "example")?.with_special_token("bos_token", "<s>");
/// assert_eq!(template.render(&[Message::user(" Hi ")], true)?, "<s>[user] Hi\n[assistant]");
/// # Ok::<(), detox_runtime::Error>(())
/// ```
#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    origin: String,
    special_tokens: BTreeMap<String, String>,
    variables: BTreeMap<String, Json>,
    clock: Clock,
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("special_tokens", &self.special_tokens)
            .field("variables", &self.variables)
            .field("clock", &self.clock)
            .field("source", &self.source)
            .finish()
    }
}

impl PartialEq for ChatTemplate {
    fn eq(&self, other: &Self) -> bool {
        (&self.source, &self.special_tokens, &self.variables, &self.clock)
            == (&other.source, &other.special_tokens, &other.variables, &other.clock)
    }
}

/// What `raise_exception` raises; found again in the render error's source chain.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(Raised(message)))
}

fn strftime_now(clock: Clock) -> impl Fn(&str) -> std::result::Result<String, minijinja::Error> {
    move |format| {
        clock
            .now()
            .and_then(|now| now.strftime(format))
            .map_err(|reason| minijinja::Error::new(ErrorKind::InvalidOperation, reason))
    }
}

impl ChatTemplate {
    /// Compiles `source`; `origin` names where it came from (a file, a GGUF key) in errors.
    ///
    /// The environment is transformers': `trim_blocks` and `lstrip_blocks` on, trailing newline dropped,
    /// `break`/`continue`, `raise_exception`, `strftime_now` on the local clock, Python's `json.dumps` as
    /// `tojson`, and Python's string, list and dict methods (`.strip()`, `.title()`, `.items()`, ...).
    pub fn new(source: impl Into<String>, origin: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let origin = origin.into();
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| Error::ChatTemplate { origin: origin.clone(), reason: describe(&e) })?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now(Clock::Local));
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| Error::ChatTemplate { origin: origin.clone(), reason: describe(&e) })?;
        Ok(Self {
            source,
            origin,
            special_tokens: BTreeMap::new(),
            variables: BTreeMap::new(),
            clock: Clock::Local,
            env: Arc::new(env),
        })
    }

    /// Sets a variable such as `bos_token` to the token's text.
    pub fn with_special_token(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.special_tokens.insert(name.into(), text.into());
        self
    }

    /// Sets a variable the template reads beyond the conversation: a keyword argument of transformers'
    /// `apply_chat_template`, such as Qwen3's `enable_thinking` (`false` asks for an empty `<think>` block after
    /// the generation prompt). As there, it takes the place of a special token of the same name; `messages`,
    /// `add_generation_prompt`, `tools` and `documents` are always the render's own.
    pub fn with_variable(mut self, name: impl Into<String>, value: Json) -> Self {
        self.variables.insert(name.into(), value);
        self
    }

    /// The variables set with [`ChatTemplate::with_variable`], by name.
    pub fn variables(&self) -> &BTreeMap<String, Json> {
        &self.variables
    }

    /// Reads `strftime_now` from `clock` (a fixed instant makes dated templates reproducible).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        let mut env = (*self.env).clone();
        env.add_function("strftime_now", strftime_now(clock));
        self.env = Arc::new(env);
        self.clock = clock;
        self
    }

    /// The template of a `tokenizer_config.json` (already parsed; `path` names it in errors): its `chat_template`,
    /// a string or a list of `{"name", "template"}` of which the one named `default` is used, with the special
    /// tokens of [`SPECIAL_TOKEN_NAMES`] the file sets. `None` when the file has no template.
    pub fn from_tokenizer_config(config: &Json, path: &Path) -> Result<Option<Self>> {
        let field_err = |field: &str, reason: &str| Error::Config {
            path: path.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        };
        let source = match config.get("chat_template") {
            None | Some(Json::Null) => return Ok(None),
            Some(Json::String(s)) => s.clone(),
            Some(Json::Array(named)) => {
                let default = named
                    .iter()
                    .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                    .ok_or_else(|| {
                        field_err(
                            "chat_template",
                            "a list of named templates without one named `default`",
                        )
                    })?;
                default
                    .get("template")
                    .and_then(Json::as_str)
                    .ok_or_else(|| {
                        field_err("chat_template", "the `default` entry has no string `template`")
                    })?
                    .to_string()
            }
            Some(_) => {
                return Err(field_err(
                    "chat_template",
                    "neither a string nor a list of named templates",
                ))
            }
        };
        let template = Self::new(source, format!("{} (chat_template)", path.display()))?;
        Ok(Some(template.with_config_tokens(config, path)?))
    }

    /// Adds the special tokens of [`SPECIAL_TOKEN_NAMES`] a `tokenizer_config.json` sets: strings, or AddedTokens
    /// written as `{"content": "..."}`.
    fn with_config_tokens(mut self, config: &Json, path: &Path) -> Result<Self> {
        for name in SPECIAL_TOKEN_NAMES {
            match config.get(name) {
                None | Some(Json::Null) => {}
                Some(v) => {
                    let text = v
                        .as_str()
                        .or_else(|| v.get("content").and_then(Json::as_str))
                        .ok_or_else(|| Error::Config {
                            path: path.to_path_buf(),
                            field: name.into(),
                            reason: "neither a string nor {\"content\": ...}".into(),
                        })?;
                    self = self.with_special_token(name, text);
                }
            }
        }
        Ok(self)
    }

    /// The template of a Hugging Face model directory: `tokenizer_config.json`'s, replaced by the text of
    /// `chat_template.jinja` where that file exists (as transformers loads it). `None` when neither has one.
    pub fn from_model_dir(dir: &Path) -> Result<Option<Self>> {
        let config_path = dir.join("tokenizer_config.json");
        let config = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|source| Error::Json { path: config_path.clone(), source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Json::Object(Default::default()),
            Err(source) => return Err(Error::Io { path: config_path, source }),
        };
        let jinja_path = dir.join("chat_template.jinja");
        match std::fs::read_to_string(&jinja_path) {
            Ok(text) => {
                let template = Self::new(text, jinja_path.display().to_string())?;
                Ok(Some(template.with_config_tokens(&config, &config_path)?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::from_tokenizer_config(&config, &config_path)
            }
            Err(source) => Err(Error::Io { path: jinja_path, source }),
        }
    }

    /// The template of a GGUF file's `tokenizer.chat_template`, with the file's special tokens
    /// ([`crate::gguf::special_tokens`]). `None` when the file has no template.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<Self>> {
        let key = "tokenizer.chat_template";
        let source = match file.get(key) {
            None => return Ok(None),
            Some(v) => v.as_str().ok_or_else(|| Error::Config {
                path: file.path().to_path_buf(),
                field: key.into(),
                reason: "not a string".into(),
            })?,
        };
        let mut template = Self::new(source, format!("{} ({key})", file.path().display()))?;
        for (name, text) in crate::gguf::special_tokens(file)? {
            template = template.with_special_token(name, text);
        }
        Ok(Some(template))
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from, as errors name it.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The special tokens the template sees, by attribute name (`bos_token` -> `<s>`).
    pub fn special_tokens(&self) -> &BTreeMap<String, String> {
        &self.special_tokens
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the assistant's reply begins.
    ///
    /// The template sees `messages`, `add_generation_prompt`, `tools` and `documents` (both none), the special
    /// tokens and the [variables](ChatTemplate::with_variable), exactly as transformers passes them. The result
    /// holds special tokens as text (BOS included where the template writes it), so encode it without adding
    /// special tokens again. A template that calls `raise_exception` gives [`Error::TemplateRaised`] with its
    /// message.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut ctx: BTreeMap<&str, Value> = self
            .special_tokens
            .iter()
            .map(|(k, v)| (k.as_str(), Value::from(v.as_str())))
            .collect();
        for (name, value) in &self.variables {
            ctx.insert(name.as_str(), Value::from(Serde(value)));
        }
        ctx.insert("messages", Value::from(Serde(messages)));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        ctx.insert("tools", Value::from(()));
        ctx.insert("documents", Value::from(()));
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| self.render_error(&e))?;
        template.render(ctx).map_err(|e| self.render_error(&e))
    }

    /// One user turn with the generation prompt: what an instruction-tuned model is asked.
    pub fn user_prompt(&self, user: &str) -> Result<String> {
        self.render(&[Message::user(user)], true)
    }

    fn render_error(&self, e: &minijinja::Error) -> Error {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cause {
            if let Some(Raised(message)) = c.downcast_ref::<Raised>() {
                return Error::TemplateRaised {
                    origin: self.origin.clone(),
                    message: message.clone(),
                };
            }
            cause = c.source();
        }
        Error::ChatTemplate { origin: self.origin.clone(), reason: describe(e) }
    }
}

/// A minijinja error with its line, as one string.
fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{} (line {line})", e.detail().unwrap_or(&e.kind().to_string())),
        None => e.detail().map_or_else(|| e.kind().to_string(), str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::DateTime;

    #[test]
    fn python_methods_loop_controls_and_the_clock() {
        let source = "{% for m in messages %}{% if loop.index0 == 1 %}{% break %}{% endif %}\
                      {{ m.content.strip().title() }}|{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}\
                      {% endfor %}{{ strftime_now('%d %b %Y') }}";
        let t = ChatTemplate::new(source, "test")
            .unwrap()
            .with_clock(Clock::Fixed(DateTime::date(2024, 7, 26)));
        let out =
            t.render(&[Message::user(" hello world "), Message::user("never")], false).unwrap();
        assert_eq!(out, "Hello World|a=126 Jul 2024");
    }

    #[test]
    fn errors_name_the_template_and_what_it_raised() {
        let t = ChatTemplate::new("{{ raise_exception('No system role!') }}", "my.json").unwrap();
        match t.render(&[], true).unwrap_err() {
            Error::TemplateRaised { origin, message } => {
                assert_eq!((origin.as_str(), message.as_str()), ("my.json", "No system role!"))
            }
            e => panic!("unexpected error {e}"),
        }
        let e = ChatTemplate::new("{% for %}", "bad.jinja").unwrap_err();
        assert!(
            matches!(e, Error::ChatTemplate { ref origin, .. } if origin == "bad.jinja"),
            "{e}"
        );
        let e = ChatTemplate::new("{{ strftime_now('%Q') }}", "t")
            .unwrap()
            .render(&[], true)
            .unwrap_err();
        assert!(e.to_string().contains("%Q"), "{e}");
    }

    #[test]
    fn tokenizer_configs_give_the_default_template_and_the_special_tokens() {
        let path = Path::new("tokenizer_config.json");
        let config = serde_json::json!({
            "chat_template": [
                {"name": "tool_use", "template": "tools"},
                {"name": "default", "template": "{{ bos_token }}{{ eos_token }}{{ pad_token is defined }}"},
            ],
            "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "</s>",
            "pad_token": null,
        });
        let t = ChatTemplate::from_tokenizer_config(&config, path).unwrap().unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "<s></s>False");
        assert!(ChatTemplate::from_tokenizer_config(&serde_json::json!({}), path)
            .unwrap()
            .is_none());
        let e = ChatTemplate::from_tokenizer_config(
            &serde_json::json!({"chat_template": [{"name": "rag", "template": "x"}]}),
            path,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`default`"), "{e}");
    }
}
