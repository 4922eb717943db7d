//! Chat templates: the model's own Jinja template (`tokenizer_config.json` or GGUF metadata) rendered as
//! transformers' `apply_chat_template(..., tokenize=False)` renders it, with `minijinja` in the environment
//! transformers sets up (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now`, a
//! `tojson` that writes like Python's `json.dumps`, and Python string methods such as `.strip()`).

mod clock;
mod json;
mod template;

use serde::{Deserialize, Serialize};

pub use clock::{Clock, DateTime};
pub use template::{ChatTemplate, SPECIAL_TOKEN_NAMES};

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One chat message, as the `messages` a template iterates over (`{"role": ..., "content": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The speaker.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: Role::User, content: content.into() }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: Role::System, content: content.into() }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: content.into() }
    }
}

/// How a prompt is laid out before it is encoded: the benchmark's raw text, or one user turn of the model's chat
/// template. Editors, training data and evaluation prompts all take this one setting, so the layout an edit was
/// made with and the layout it is evaluated with are named the same way in manifests and artefacts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptLayout {
    /// The text as it is, encoded with the tokenizer's own special tokens (the SafeEdit reference's layout).
    #[default]
    #[serde(alias = "raw_reference", alias = "plain")]
    Raw,
    /// The text as the single user turn of the model's chat template, followed by the generation prompt.
    #[serde(alias = "chat")]
    ChatTemplate,
}

impl PromptLayout {
    /// The name used on command lines and in manifests: `raw` or `chat_template`.
    pub fn name(self) -> &'static str {
        match self {
            PromptLayout::Raw => "raw",
            PromptLayout::ChatTemplate => "chat_template",
        }
    }
}

impl std::fmt::Display for PromptLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PromptLayout {
    type Err = String;

    /// `raw` (also `plain`, `raw_reference`) or `chat_template` (also `chat`); `-` and `_` alike.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "raw" | "plain" | "raw_reference" => Ok(PromptLayout::Raw),
            "chat_template" | "chat" => Ok(PromptLayout::ChatTemplate),
            _ => Err(format!("unknown prompt layout `{s}`: expected `raw` or `chat_template`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_read_the_names_earlier_manifests_and_command_lines_used() {
        for (text, layout) in [
            ("raw", PromptLayout::Raw),
            ("raw_reference", PromptLayout::Raw),
            ("plain", PromptLayout::Raw),
            ("chat_template", PromptLayout::ChatTemplate),
            ("chat", PromptLayout::ChatTemplate),
        ] {
            let json: PromptLayout = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!((json, text.parse::<PromptLayout>().unwrap()), (layout, layout));
        }
        assert_eq!("chat-template".parse::<PromptLayout>().unwrap(), PromptLayout::ChatTemplate);
        assert_eq!(
            serde_json::to_string(&PromptLayout::ChatTemplate).unwrap(),
            "\"chat_template\""
        );
        assert!("jinja".parse::<PromptLayout>().unwrap_err().contains("jinja"));
    }
}
