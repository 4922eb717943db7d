//! Chat templates against transformers' `apply_chat_template(..., tokenize=False)` on the published templates of
//! Llama-2-chat, Llama-3.1/3.2-Instruct, Mistral-7B-Instruct-v0.2, Qwen2-Instruct, SmolLM2-Instruct, Qwen3 (with
//! `enable_thinking` true and false), Gemma-2-it, Gemma-3-it, Phi-3-mini-, Phi-3.5-mini- and Phi-4-mini-instruct, and
//! OLMo-2-Instruct (`tests/fixtures/chat_templates/generate.py`).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use detox_runtime::chat::{Clock, DateTime};
use detox_runtime::{ChatTemplate, Error, Message};

const TEMPLATES: [&str; 14] = [
    "llama-2-chat",
    "llama-3.1-instruct",
    "llama-3.2-instruct",
    "mistral-instruct-v0.2",
    "qwen2-instruct",
    "smollm2-instruct",
    "qwen3-thinking",
    "qwen3-no-thinking",
    "gemma-2-it",
    "gemma-3-it",
    "phi-3-mini-instruct",
    "phi-3.5-mini-instruct",
    "phi-4-mini-instruct",
    "olmo-2-instruct",
];

/// The conversations every fixture renders, in order (the generator's CONVERSATIONS); some add more after them.
const SHARED_CASES: [&str; 7] = [
    "user turn",
    "user turn without generation prompt",
    "system and user",
    "multi-turn",
    "multi-turn ending with the assistant",
    "surrounding whitespace",
    "roles that do not alternate",
];

fn fixture(name: &str) -> Result<(PathBuf, serde_json::Value)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chat_templates")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok((path.clone(), serde_json::from_str(&text).with_context(|| path.display().to_string())?))
}

/// The generator's fixed `datetime.now()`, e.g. `2025-03-07T14:05:09`.
fn fixed_clock(iso: &str) -> Result<Clock> {
    let n: Vec<u32> = iso.split(['-', 'T', ':']).map(str::parse).collect::<Result<_, _>>()?;
    ensure!(n.len() == 6, "bad timestamp {iso}");
    let t = DateTime {
        year: n[0] as i32,
        month: n[1],
        day: n[2],
        hour: n[3],
        minute: n[4],
        second: n[5],
    };
    t.validate().map_err(anyhow::Error::msg)?;
    Ok(Clock::Fixed(t))
}

#[test]
fn renders_exactly_as_transformers_apply_chat_template() -> Result<()> {
    for name in TEMPLATES {
        let (path, fx) = fixture(name)?;
        let mut template = ChatTemplate::from_tokenizer_config(&fx["tokenizer_config"], &path)?
            .context("the fixture has a chat_template")?
            .with_clock(fixed_clock(fx["now"].as_str().context("now")?)?);
        // apply_chat_template's keyword arguments, such as Qwen3's enable_thinking.
        if let Some(kwargs) = fx.get("kwargs") {
            for (k, v) in kwargs.as_object().context("kwargs")? {
                template = template.with_variable(k, v.clone());
            }
        }
        let cases = fx["cases"].as_array().context("cases")?;
        let titles: Vec<&str> = cases.iter().filter_map(|c| c["title"].as_str()).collect();
        ensure!(
            titles.starts_with(&SHARED_CASES),
            "{name}: the shared cases, in order: {titles:?}"
        );
        for case in cases {
            let title = case["title"].as_str().context("title")?;
            let messages: Vec<Message> = serde_json::from_value(case["messages"].clone())?;
            let add_generation_prompt = case["add_generation_prompt"].as_bool().context("flag")?;
            let rendered = template.render(&messages, add_generation_prompt);
            match (case.get("rendered").and_then(|v| v.as_str()), case.get("error")) {
                (Some(want), _) => assert_eq!(rendered?, want, "{name}: {title}"),
                (None, Some(want)) => match rendered {
                    Err(Error::TemplateRaised { message, origin }) => {
                        assert_eq!(Some(message.as_str()), want.as_str(), "{name}: {title}");
                        assert!(origin.contains(&format!("{name}.json")), "{origin}");
                    }
                    other => {
                        panic!("{name}: {title}: expected the template's exception, got {other:?}")
                    }
                },
                _ => panic!("{name}: {title}: the case has neither `rendered` nor `error`"),
            }
        }
    }
    Ok(())
}

#[test]
fn dated_templates_follow_the_injected_clock() -> Result<()> {
    let (path, fx) = fixture("llama-3.2-instruct")?;
    let template =
        ChatTemplate::from_tokenizer_config(&fx["tokenizer_config"], &path)?.context("template")?;
    let on = |y, m, d| {
        template.clone().with_clock(Clock::Fixed(DateTime::date(y, m, d))).user_prompt("Hi")
    };
    assert!(on(2024, 12, 25)?.contains("\nToday Date: 25 Dec 2024\n"));
    assert!(on(2031, 1, 2)?.contains("\nToday Date: 02 Jan 2031\n"));
    Ok(())
}

#[test]
fn model_directories_read_tokenizer_config_and_chat_template_jinja() -> Result<()> {
    let (_, fx) = fixture("llama-2-chat")?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("tokenizer_config.json"), fx["tokenizer_config"].to_string())?;
    let from_config = ChatTemplate::from_model_dir(dir.path())?.context("template")?;
    assert_eq!(from_config.user_prompt(" Hi ")?, "<s>[INST] Hi [/INST]");
    // A chat_template.jinja beside it wins, as in transformers; the special tokens still come from the config.
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ bos_token }}{{ messages[0].content | trim }}\n",
    )?;
    let from_jinja = ChatTemplate::from_model_dir(dir.path())?.context("template")?;
    assert_eq!(from_jinja.user_prompt(" Hi ")?, "<s>Hi");
    assert!(from_jinja.origin().ends_with("chat_template.jinja"), "{}", from_jinja.origin());
    Ok(())
}

#[test]
fn qwen3_thinking_switch_and_gemma_system_roles() -> Result<()> {
    let (path, fx) = fixture("qwen3-thinking")?;
    let base =
        ChatTemplate::from_tokenizer_config(&fx["tokenizer_config"], &path)?.context("template")?;
    // Not passing enable_thinking is thinking on, as in transformers.
    assert_eq!(base.user_prompt("Hi")?, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    let off = base.clone().with_variable("enable_thinking", serde_json::Value::Bool(false));
    assert!(off.user_prompt("Hi")?.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
    assert_ne!(off, base);

    let (path, fx) = fixture("gemma-2-it")?;
    let gemma2 =
        ChatTemplate::from_tokenizer_config(&fx["tokenizer_config"], &path)?.context("template")?;
    let conversation = [Message::system("Be brief."), Message::user("Hi")];
    match gemma2.render(&conversation, true) {
        Err(Error::TemplateRaised { message, .. }) => {
            assert_eq!(message, "System role not supported")
        }
        other => panic!("expected Gemma-2's exception, got {other:?}"),
    }
    let (path, fx) = fixture("gemma-3-it")?;
    let gemma3 =
        ChatTemplate::from_tokenizer_config(&fx["tokenizer_config"], &path)?.context("template")?;
    assert_eq!(
        gemma3.render(&conversation, true)?,
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    Ok(())
}
