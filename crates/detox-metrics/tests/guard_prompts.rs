//! Guard prompts and verdict readings against `fixtures/guards/expected.json`, which `generate.py` builds with
//! each guard's own code (llama-cookbook, wildguard) or its own template rendered by transformers.

use std::path::Path;

use detox_metrics::guard::{
    Controversial, GuardFormat, GuardPrompt, HarmBench, LlamaGuard3, LlamaGuard3Size,
    LlamaGuard3Template, LlamaGuardCategory, Qwen3Guard, Reading, RubricFormat, ShieldGemma,
    ShieldGemmaHarm, ShieldGemmaPolicies, WildGuard,
};
use detox_metrics::{Exchange, Label, MetricsError};
use serde_json::Value;

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guards/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn exchanges(fixture: &Value) -> Vec<(String, String, String)> {
    fixture["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("name"), s("prompt"), s("response"))
        })
        .collect()
}

fn text(prompt: GuardPrompt) -> String {
    match prompt {
        GuardPrompt::Text(text) => text,
        GuardPrompt::UserTurn(turn) => {
            panic!("a guard's own format is whole text, got a user turn: {turn:?}")
        }
    }
}

fn guards() -> Vec<(&'static str, Box<dyn GuardFormat>)> {
    vec![
        ("llama-guard-3-8b", Box::new(LlamaGuard3::new(LlamaGuard3Size::B8))),
        ("llama-guard-3-1b", Box::new(LlamaGuard3::new(LlamaGuard3Size::B1))),
        (
            "llama-guard-3-cookbook",
            Box::new(
                LlamaGuard3::new(LlamaGuard3Size::B8).with_template(LlamaGuard3Template::Cookbook),
            ),
        ),
        ("wildguard", Box::new(WildGuard::new())),
        ("harmbench", Box::new(HarmBench::new())),
        ("shieldgemma", Box::new(ShieldGemma::new())),
        (
            "shieldgemma-dangerous",
            Box::new(ShieldGemma::with_policies(ShieldGemmaPolicies::One(
                ShieldGemmaHarm::Dangerous,
            ))),
        ),
        (
            "shieldgemma-harassment",
            Box::new(ShieldGemma::with_policies(ShieldGemmaPolicies::One(
                ShieldGemmaHarm::Harassment,
            ))),
        ),
        ("qwen3guard", Box::new(Qwen3Guard::new())),
    ]
}

#[test]
fn every_guard_prompt_matches_the_guards_own_code() {
    let fixture = fixture();
    let exchanges = exchanges(&fixture);
    for (key, guard) in guards() {
        let expected =
            fixture["prompts"][key].as_array().unwrap_or_else(|| panic!("no prompts for {key}"));
        assert_eq!(expected.len(), exchanges.len());
        for ((name, prompt, response), expected) in exchanges.iter().zip(expected) {
            let got = text(guard.prompt(&Exchange::new(prompt, response)).unwrap());
            let expected = expected.as_str().unwrap();
            if got != expected {
                let at = got.chars().zip(expected.chars()).take_while(|(a, b)| a == b).count();
                let from = at.saturating_sub(40);
                panic!(
                    "{key}, exchange {name}: prompts differ at char {at}\n got: {:?}\nwant: {:?}",
                    got.chars().skip(from).take(100).collect::<String>(),
                    expected.chars().skip(from).take(100).collect::<String>(),
                );
            }
        }
    }
}

#[test]
fn llama_guard_3_1b_takes_custom_and_excluded_categories_as_its_template_does() {
    let fixture = fixture();
    let options = &fixture["llama_guard_3_1b_options"];
    let (_, prompt, response) =
        &exchanges(&fixture)[options["exchange"].as_u64().unwrap() as usize];
    let exchange = Exchange::new(prompt, response);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    let custom: Vec<LlamaGuardCategory> = options["custom_categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| LlamaGuardCategory::new(pair[0].as_str().unwrap(), pair[1].as_str().unwrap()))
        .collect();
    let guard = LlamaGuard3::new(LlamaGuard3Size::B1)
        .with_categories(custom)
        .unwrap()
        .excluding(strings(&options["custom_excluded"]))
        .unwrap();
    assert_eq!(text(guard.prompt(&exchange).unwrap()), options["custom_prompt"].as_str().unwrap());
    let guard =
        LlamaGuard3::new(LlamaGuard3Size::B1).excluding(strings(&options["excluded"])).unwrap();
    assert_eq!(
        text(guard.prompt(&exchange).unwrap()),
        options["excluded_prompt"].as_str().unwrap()
    );
}

#[test]
fn the_8b_chat_template_refuses_other_categories() {
    let err = LlamaGuard3::new(LlamaGuard3Size::B8).excluding(["S6"]).unwrap_err();
    assert!(matches!(err, MetricsError::GuardOption { option: "excluded", .. }), "{err}");
    assert!(err.to_string().contains("llama-guard-3-8b"), "{err}");
    let err = LlamaGuard3::new(LlamaGuard3Size::B8)
        .with_categories(vec![LlamaGuardCategory::new("S1", "Mine.")])
        .unwrap_err();
    assert!(matches!(err, MetricsError::GuardOption { option: "categories", .. }), "{err}");
    // The cookbook builds any list, numbered in order.
    let cookbook = LlamaGuard3::new(LlamaGuard3Size::B8)
        .with_template(LlamaGuard3Template::Cookbook)
        .excluding(["S1"])
        .unwrap();
    let listed = cookbook.listed_categories();
    assert_eq!(
        (listed.len(), listed[0].key.as_str(), listed[0].name.as_str()),
        (13, "S1", "Non-Violent Crimes. ")
    );
}

fn check_readings(guard: &dyn GuardFormat, readings: &Value) {
    let words = guard.verdict_words();
    for case in readings.as_array().unwrap() {
        let output = case["output"].as_str().unwrap();
        let got = guard.read(output);
        let expected = &case["reading"];
        let Some(got) = got else {
            assert!(
                expected.is_null(),
                "{}: {output:?} read as nothing, expected {expected}",
                guard.name()
            );
            continue;
        };
        assert!(
            !expected.is_null(),
            "{}: {output:?} read as {got:?}, expected nothing",
            guard.name()
        );
        let label = match expected["label"].as_str().unwrap() {
            "safe" => Label::Safe,
            "unsafe" => Label::Unsafe,
            other => panic!("label {other}"),
        };
        assert_eq!(got.label, label, "{}: label of {output:?}", guard.name());
        assert_eq!(
            got.refusal,
            expected["refusal"].as_bool(),
            "{}: refusal of {output:?}",
            guard.name()
        );
        let categories: Vec<&str> = expected["categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(got.categories, categories, "{}: categories of {output:?}", guard.name());
        assert_eq!(
            got.verdict_at,
            expected["verdict_at"].as_u64().unwrap() as usize,
            "{}: {output:?}",
            guard.name()
        );
        // verdict_at points at the verdict word the continuations stand for.
        let at = output[got.verdict_at..].to_lowercase();
        let starts = [words.unsafe_text.trim(), words.safe_text.trim(), "controversial"]
            .iter()
            .any(|w| at.starts_with(&w.to_lowercase()));
        assert!(
            starts,
            "{}: {output:?}[{}..] does not start with a verdict word",
            guard.name(),
            got.verdict_at
        );
    }
}

#[test]
fn verdicts_are_read_as_the_guards_own_code_reads_them() {
    let fixture = fixture();
    let readings = &fixture["readings"];
    check_readings(&LlamaGuard3::new(LlamaGuard3Size::B8), &readings["llama-guard-3"]);
    check_readings(&LlamaGuard3::new(LlamaGuard3Size::B1), &readings["llama-guard-3"]);
    check_readings(&WildGuard::new(), &readings["wildguard"]);
    check_readings(&HarmBench::new(), &readings["harmbench"]);
    check_readings(&ShieldGemma::new(), &readings["shieldgemma"]);
    check_readings(&Qwen3Guard::new(), &readings["qwen3guard-strict"]);
    check_readings(
        &Qwen3Guard::new().with_controversial(Controversial::Safe),
        &readings["qwen3guard-loose"],
    );
}

#[test]
fn readings_and_verdict_words_follow_each_guards_published_use() {
    assert_eq!(HarmBench::new().reading(), Reading::First);
    assert_eq!(ShieldGemma::new().reading(), Reading::First);
    assert_eq!(WildGuard::new().reading(), Reading::Generated { max_new_tokens: 128 });
    assert_eq!(Qwen3Guard::new().reading(), Reading::Generated { max_new_tokens: 128 });
    assert_eq!(HarmBench::new().verdict_words().unsafe_text, " Yes");
    assert_eq!(ShieldGemma::new().verdict_words().unsafe_text, "Yes");
    assert!(!LlamaGuard3::new(LlamaGuard3Size::B1).add_special_tokens());
    assert!(WildGuard::new().add_special_tokens() && HarmBench::new().add_special_tokens());
    let names: Vec<String> = guards().iter().map(|(_, g)| g.name()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    for (_, guard) in guards() {
        assert!(!guard.source().is_empty());
    }
}

const TEMPLATE: &str = "Judge the reply. Output {\"verdict\": \"safe\"} or {\"verdict\": \"unsafe\"}; keep {{this}} and {0}.\n\
                        Request: {prompt}\nReply: {response}\nVerdict:";

#[test]
fn rubric_fills_both_placeholders_once_and_keeps_other_braces() {
    let rubric = RubricFormat::from_template(TEMPLATE, "rubrics/strict.txt", "").unwrap();
    assert_eq!(rubric.name(), "rubric-strict");
    let prompt = rubric.prompt(&Exchange::new("Say {response}", "I said {prompt} and {}")).unwrap();
    assert_eq!(
        prompt,
        GuardPrompt::UserTurn(
            "Judge the reply. Output {\"verdict\": \"safe\"} or {\"verdict\": \"unsafe\"}; keep {{this}} and {0}.\n\
             Request: Say {response}\nReply: I said {prompt} and {}\nVerdict:"
                .into()
        )
    );
    assert!(!rubric.add_special_tokens());
    assert_eq!(rubric.reading(), Reading::Generated { max_new_tokens: 32 });
}

#[test]
fn rubric_label_words_count_whole_words_only() {
    let rubric = RubricFormat::from_template(TEMPLATE, "r.txt", "").unwrap();
    let read = |t: &str| rubric.read(t).map(|r| (r.label, r.verdict_at));
    assert_eq!(read("unsafe"), Some((Label::Unsafe, 0)));
    assert_eq!(read("The reply is UNSAFE."), Some((Label::Unsafe, 13)));
    assert_eq!(read("Safe, though close to unsafe"), Some((Label::Safe, 0)));
    assert_eq!(read("unsafely written but safe"), Some((Label::Safe, 21)));
    assert_eq!(read("safeguards are unsafe_ish"), None);
    assert_eq!(read("I cannot tell."), None);
    assert_eq!(read("« Unsafe »"), Some((Label::Unsafe, 3)));
}

#[test]
fn rubric_regex_compares_its_group_with_the_label_words() {
    let rubric = RubricFormat::from_template(
        TEMPLATE,
        "r.txt",
        "labels=harmful/harmless,max_new_tokens=8,regex=Verdict: (\\w+)",
    )
    .unwrap();
    assert_eq!(rubric.reading(), Reading::Generated { max_new_tokens: 8 });
    assert_eq!(rubric.verdict_words().unsafe_text, "harmful");
    let read = |t: &str| rubric.read(t).map(|r| (r.label, r.verdict_at));
    assert_eq!(read("harmless chat. Verdict: HARMFUL"), Some((Label::Unsafe, 24)));
    assert_eq!(read("Verdict: harmless"), Some((Label::Safe, 9)));
    assert_eq!(read("Verdict: unclear, harmful"), None);
    assert_eq!(read("harmful"), None);
    // Commas belong to the expression: regex takes the rest of the spec.
    let rubric =
        RubricFormat::from_template(TEMPLATE, "r.txt", "first=true,regex=^(\\w{1,9}),").unwrap();
    assert_eq!(rubric.reading(), Reading::First);
    assert_eq!(rubric.read("Unsafe clearly").map(|r| r.label), None);
    assert_eq!(rubric.read("Unsafe,").map(|r| r.label), Some(Label::Unsafe));
}

#[test]
fn rubric_template_errors_name_the_file_and_the_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_response.txt");
    std::fs::write(&path, "Request: {prompt}\nReply: {reply}").unwrap();
    let err = RubricFormat::from_file(&path, "").unwrap_err();
    assert!(matches!(err, MetricsError::RubricTemplate { placeholder: "{response}", .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("no_response.txt") && message.contains("{response}"), "{message}");

    let err =
        RubricFormat::from_template("Reply: {response} {Prompt}", "upper.txt", "").unwrap_err();
    assert!(matches!(err, MetricsError::RubricTemplate { placeholder: "{prompt}", .. }), "{err}");

    let err = RubricFormat::from_file(dir.path().join("missing.txt"), "").unwrap_err();
    assert!(
        matches!(err, MetricsError::Io { .. }) && err.to_string().contains("missing.txt"),
        "{err}"
    );

    let path = dir.path().join("ok.txt");
    std::fs::write(&path, TEMPLATE).unwrap();
    let rubric = RubricFormat::from_file(&path, "labels=bad/good,first=true").unwrap();
    assert_eq!((rubric.name(), rubric.reading()), ("rubric-ok".to_string(), Reading::First));
}

#[test]
fn rubric_spec_errors_name_the_key() {
    let key_of =
        |spec: &str| match RubricFormat::from_template(TEMPLATE, "r.txt", spec).unwrap_err() {
            MetricsError::GuardSpec { key, reason } => {
                assert!(!reason.is_empty());
                key
            }
            other => panic!("{spec}: {other}"),
        };
    assert_eq!(key_of("labels=unsafe"), "labels");
    assert_eq!(key_of("labels=same/SAME"), "labels");
    assert_eq!(key_of("labels=not safe/safe"), "labels");
    assert_eq!(key_of("first=yes"), "first");
    assert_eq!(key_of("max_new_tokens=0"), "max_new_tokens");
    assert_eq!(key_of("colour=blue"), "colour");
    assert_eq!(key_of("first"), "first");
    assert_eq!(key_of("regex=(a)(b)"), "regex");
    assert_eq!(key_of("regex=no group"), "regex");
    assert_eq!(key_of("regex=(unclosed"), "regex");
    let err = RubricFormat::from_template(TEMPLATE, "r.txt", "first=maybe").unwrap_err();
    assert!(err.to_string().contains("first"), "{err}");
}
