//! Chat templates of the supported model families, rendered exactly as their Hugging Face Jinja templates do.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat message.
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

/// A chat template family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ChatTemplate {
    /// Llama-2-chat: `<s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST]`.
    Llama2,
    /// Mistral-instruct (v0.1/v0.2): `<s>[INST] ... [/INST]`, no system role.
    Mistral,
    /// Llama-3 instruct: `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>`.
    Llama3,
    /// ChatML (`<|im_start|>role\n...<|im_end|>\n`), used by SmolLM2 and Qwen2, with the system prompt the
    /// template inserts when the conversation has none.
    ChatMl {
        /// The default system prompt, if the template has one.
        default_system: Option<String>,
    },
}

impl ChatTemplate {
    /// Recognises the family of a Jinja chat template (from `tokenizer_config.json` or GGUF metadata) by its
    /// markers.
    pub fn detect(source: &str) -> Result<Self> {
        if source.contains("<|im_start|>") {
            return Ok(ChatTemplate::ChatMl { default_system: chatml_default_system(source) });
        }
        if source.contains("<|start_header_id|>") {
            return Ok(ChatTemplate::Llama3);
        }
        if source.contains("<<SYS>>") {
            return Ok(ChatTemplate::Llama2);
        }
        if source.contains("[INST]") {
            return Ok(ChatTemplate::Mistral);
        }
        Err(Error::InvalidInput(
            "unrecognised chat template; name one explicitly (llama2, mistral, llama3, chatml)"
                .into(),
        ))
    }

    /// Looks a family up by name: `llama2`, `mistral`, `llama3`, `chatml`, `smollm2`, `qwen2`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "llama2" | "llama-2" => ChatTemplate::Llama2,
            "mistral" => ChatTemplate::Mistral,
            "llama3" | "llama-3" => ChatTemplate::Llama3,
            "chatml" => ChatTemplate::ChatMl { default_system: None },
            "smollm2" => ChatTemplate::ChatMl {
                default_system: Some(
                    "You are a helpful AI assistant named SmolLM, trained by Hugging Face".into(),
                ),
            },
            "qwen2" => {
                ChatTemplate::ChatMl { default_system: Some("You are a helpful assistant.".into()) }
            }
            _ => return None,
        })
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the assistant's reply begins.
    ///
    /// The result contains the family's special tokens as text (BOS included where the template writes it), so
    /// encode it without adding special tokens again.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        match self {
            ChatTemplate::Llama2 => render_llama2(messages),
            ChatTemplate::Mistral => render_mistral(messages),
            ChatTemplate::Llama3 => Ok(render_llama3(messages, add_generation_prompt)),
            ChatTemplate::ChatMl { default_system } => {
                Ok(render_chatml(messages, default_system.as_deref(), add_generation_prompt))
            }
        }
    }

    /// One user turn with the generation prompt: what an instruction-tuned model is asked.
    pub fn user_prompt(&self, user: &str) -> Result<String> {
        self.render(&[Message::user(user)], true)
    }
}

fn chatml_default_system(source: &str) -> Option<String> {
    for newline in ["\\n", "\n"] {
        let marker = format!("<|im_start|>system{newline}");
        let mut rest = source;
        while let Some(at) = rest.find(&marker) {
            let after = &rest[at + marker.len()..];
            if let Some(end) = after.find("<|im_end|>") {
                let text = &after[..end];
                // Skip the generic `message['content']` branch; keep a literal prompt.
                if !text.contains('\'') && !text.contains("{{") && !text.contains('+') {
                    return Some(text.replace("\\n", "\n"));
                }
            }
            rest = &rest[at + marker.len()..];
        }
    }
    None
}

fn split_system(messages: &[Message]) -> (Option<&str>, &[Message]) {
    match messages.first() {
        Some(m) if m.role == Role::System => (Some(m.content.as_str()), &messages[1..]),
        _ => (None, messages),
    }
}

fn check_alternation(messages: &[Message], family: &str) -> Result<()> {
    for (i, m) in messages.iter().enumerate() {
        let expected = if i % 2 == 0 { Role::User } else { Role::Assistant };
        if m.role != expected {
            return Err(Error::InvalidInput(format!(
                "{family} conversations alternate user/assistant after an optional system message; message {i} is {}",
                m.role.name()
            )));
        }
    }
    Ok(())
}

fn render_llama2(messages: &[Message]) -> Result<String> {
    let (system, rest) = split_system(messages);
    check_alternation(rest, "Llama-2")?;
    let mut out = String::new();
    for (i, m) in rest.iter().enumerate() {
        match m.role {
            Role::User => {
                let content = match (i, system) {
                    (0, Some(sys)) => format!("<<SYS>>\n{sys}\n<</SYS>>\n\n{}", m.content),
                    _ => m.content.clone(),
                };
                out.push_str(&format!("<s>[INST] {} [/INST]", content.trim()));
            }
            _ => out.push_str(&format!(" {} </s>", m.content.trim())),
        }
    }
    Ok(out)
}

fn render_mistral(messages: &[Message]) -> Result<String> {
    if messages.iter().any(|m| m.role == Role::System) {
        return Err(Error::InvalidInput("the Mistral-instruct template has no system role".into()));
    }
    check_alternation(messages, "Mistral")?;
    let mut out = String::from("<s>");
    for m in messages {
        match m.role {
            Role::User => out.push_str(&format!("[INST] {} [/INST]", m.content)),
            _ => out.push_str(&format!("{}</s>", m.content)),
        }
    }
    Ok(out)
}

fn render_llama3(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut out = String::from("<|begin_of_text|>");
    for m in messages {
        out.push_str(&format!(
            "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
            m.role.name(),
            m.content.trim()
        ));
    }
    if add_generation_prompt {
        out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    out
}

fn render_chatml(
    messages: &[Message],
    default_system: Option<&str>,
    add_generation_prompt: bool,
) -> String {
    let mut out = String::new();
    if let (Some(sys), Some(first)) = (default_system, messages.first()) {
        if first.role != Role::System {
            out.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
        }
    }
    for m in messages {
        out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role.name(), m.content));
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's published template (from its tokenizer_config.json).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn detects_families_and_the_chatml_default_system() {
        let t = ChatTemplate::detect(SMOLLM2).unwrap();
        assert_eq!(t, ChatTemplate::from_name("smollm2").unwrap());
        assert_eq!(
            ChatTemplate::detect("{{ '<<SYS>>\\n' }} [INST]").unwrap(),
            ChatTemplate::Llama2
        );
        assert_eq!(ChatTemplate::detect("{{ bos_token }}[INST]").unwrap(), ChatTemplate::Mistral);
        assert_eq!(ChatTemplate::detect("<|start_header_id|>").unwrap(), ChatTemplate::Llama3);
        assert!(ChatTemplate::detect("{{ messages }}")
            .unwrap_err()
            .to_string()
            .contains("name one explicitly"));
    }

    #[test]
    fn renders_like_the_published_templates() {
        let conv = [
            Message::user("Hi there"),
            Message::assistant("Hello!"),
            Message::user("Capital of France?"),
        ];
        assert_eq!(
            ChatTemplate::from_name("smollm2").unwrap().render(&conv[2..], true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_sys = [Message::system("Be brief."), Message::user("Hi")];
        assert_eq!(
            ChatTemplate::Llama2.render(&with_sys, true).unwrap(),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"
        );
        assert_eq!(
            ChatTemplate::Llama2.render(&conv, true).unwrap(),
            "<s>[INST] Hi there [/INST] Hello! </s><s>[INST] Capital of France? [/INST]"
        );
        assert_eq!(
            ChatTemplate::Mistral.render(&conv, true).unwrap(),
            "<s>[INST] Hi there [/INST]Hello!</s>[INST] Capital of France? [/INST]"
        );
        assert_eq!(
            ChatTemplate::Llama3.render(&with_sys, true).unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert!(ChatTemplate::Mistral.render(&with_sys, true).is_err());
    }
}
