//! Chat renderings against the published Jinja templates (`tests/fixtures/chat/generate.py`).

use std::path::Path;

use anyhow::Result;
use detox_runtime::{ChatTemplate, Message};

#[test]
fn renderings_match_the_jinja_templates() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/expected.json");
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let family = case["family"].as_str().unwrap();
        let source = expected["templates"][family].as_str().unwrap();
        let template = ChatTemplate::detect(source)?;
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone())?;
        let rendered = template.render(&messages, true);
        match case["rendered"].as_str() {
            Some(want) => assert_eq!(rendered?, want, "{family}: {messages:?}"),
            None => assert!(rendered.is_err(), "{family} refuses {messages:?}"),
        }
    }
    Ok(())
}
