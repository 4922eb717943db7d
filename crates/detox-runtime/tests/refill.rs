//! Refill generation: every prompt's continuation equals generating it alone, whatever the number of slots and
//! however the rows finish.

use anyhow::Result;
use detox_runtime::{generate, generate_refill, CausalLm, Error, GenerationConfig, Sampling};
use tch::{Device, Kind};

fn fixture() -> Result<CausalLm> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../detox-edit/tests/fixtures/dinm/model");
    Ok(CausalLm::load(dir, Device::Cpu, Kind::Float)?)
}

fn prompts() -> Vec<Vec<i64>> {
    vec![
        vec![1, 40, 41, 42, 43, 44, 45],
        vec![1, 60],
        vec![1, 70, 71, 72],
        vec![1, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89],
        vec![1, 90, 91],
        vec![1, 100, 101, 102, 103],
        vec![1, 110],
    ]
}

#[test]
fn refilled_slots_give_each_prompt_its_own_greedy_continuation() -> Result<()> {
    let model = fixture()?;
    let plain = |eos: Vec<i64>| GenerationConfig {
        max_new_tokens: 12,
        sampling: Sampling::Greedy,
        eos_token_ids: eos,
        pad_token_id: 0,
        sync_every: 3,
    };
    // Without an EOS, find tokens that end some rows early so that slots are freed and refilled mid-run.
    let free_run: Vec<_> = prompts()
        .iter()
        .map(|p| generate(&model, std::slice::from_ref(p), &plain(Vec::new()), None))
        .collect::<detox_runtime::Result<_>>()?;
    let eos = vec![free_run[0][0].tokens[4], free_run[2][0].tokens[1]];
    let config = plain(eos);
    let alone: Vec<_> = prompts()
        .iter()
        .map(|p| generate(&model, std::slice::from_ref(p), &config, None).map(|mut g| g.remove(0)))
        .collect::<detox_runtime::Result<_>>()?;
    assert!(alone.iter().any(|g| g.tokens.len() < 12), "some rows stop early");
    assert!(alone.iter().any(|g| g.tokens.len() == 12), "some rows run to the limit");
    for slots in [1, 2, 3, 7, 10] {
        let pooled = generate_refill(&model, &prompts(), &config, slots)?;
        assert_eq!(pooled, alone, "{slots} slots");
    }
    Ok(())
}

#[test]
fn refill_refuses_what_it_cannot_do() -> Result<()> {
    let model = fixture()?;
    let config = GenerationConfig::greedy(4, vec![2]);
    assert!(generate_refill(&model, &prompts(), &config, 0).is_err());
    assert!(generate_refill(&model, &[vec![]], &config, 2).is_err());
    assert!(generate_refill(&model, &[], &config, 2)?.is_empty());
    Ok(())
}

/// Loading refuses non-finite weights, but a weight can become non-finite afterwards (an edit, an overflow in a
/// low-precision dtype). Then a row fed the damaged token gets NaN logits: both generation paths stop with a
/// typed error naming the row and the step, instead of decoding garbage for the judge.
#[test]
fn non_finite_logits_stop_generation_naming_row_and_step() -> Result<()> {
    let mut model = fixture()?;
    let config = GenerationConfig {
        max_new_tokens: 10,
        sampling: Sampling::Greedy,
        eos_token_ids: Vec::new(),
        pad_token_id: 0,
        sync_every: 4,
    };
    let clean = generate(&model, &prompts(), &config, None)?;
    // A token that exactly one row produces, at step `k` (not its last), and that no prompt holds: with its
    // embedding row poisoned, that row's logits turn NaN at step `k + 1` and no other row's ever do.
    let (row, k, token) = (0..clean.len())
        .flat_map(|r| (0..clean[r].tokens.len() - 1).map(move |k| (r, k)))
        .map(|(r, k)| (r, k, clean[r].tokens[k]))
        .find(|&(r, k, t)| {
            t != config.pad_token_id
                && !prompts().iter().any(|p| p.contains(&t))
                && clean[r].tokens[..k].iter().all(|&u| u != t)
                && clean.iter().enumerate().all(|(o, g)| o == r || !g.tokens.contains(&t))
        })
        .expect("some row produces a token no other row or prompt holds");
    let others: Vec<Vec<i64>> =
        prompts().into_iter().enumerate().filter(|&(r, _)| r != row).map(|(_, p)| p).collect();
    let clean_others = generate(&model, &others, &config, None)?;
    let name = "model.embed_tokens.weight";
    let poisoned = model.parameter(name)?.copy();
    let _ = poisoned.get(token).fill_(f64::NAN);
    let _previous = model.replace_parameter(name, poisoned)?;

    let expected = (k + 1, row);
    let refusal = |result: detox_runtime::Result<Vec<_>>| match result {
        Err(Error::NonFiniteLogits { step, row }) => (step, row),
        other => panic!("expected non-finite logits, got {other:?}"),
    };
    assert_eq!(refusal(generate(&model, &prompts(), &config, None)), expected);
    for slots in [1, 3, 7] {
        assert_eq!(
            refusal(generate_refill(&model, &prompts(), &config, slots)),
            expected,
            "{slots} slots"
        );
    }
    // Alone, the row's prompt is row 0 of its call; the other prompts generate as before.
    let alone = generate(&model, std::slice::from_ref(&prompts()[row]), &config, None);
    assert_eq!(refusal(alone), (k + 1, 0));
    assert_eq!(generate(&model, &others, &config, None)?, clean_others);

    // A NaN norm weight makes every logit NaN: the first row's first token is refused, and so is a refill's
    // prefill.
    let norm = model.parameter("model.norm.weight")?.copy().fill_(f64::NAN);
    let _previous = model.replace_parameter("model.norm.weight", norm)?;
    assert_eq!(refusal(generate(&model, &prompts(), &config, None)), (0, 0));
    assert_eq!(refusal(generate_refill(&model, &prompts(), &config, 2)), (0, 0));
    // Sampling reports the same error, not a failure of the sampler on NaN probabilities.
    let sampled = GenerationConfig {
        sampling: Sampling::TopP { temperature: 0.7, top_p: 0.9, seed: 3 },
        ..config.clone()
    };
    assert_eq!(refusal(generate(&model, &prompts(), &sampled, None)), (0, 0));
    assert_eq!(refusal(generate_refill(&model, &prompts(), &sampled, 2)), (0, 0));
    let message = generate(&model, &prompts(), &config, None).unwrap_err().to_string();
    assert!(message.contains("non-finite") && message.contains("dtype"), "{message}");
    Ok(())
}

fn decoder_fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoders").join(name)
}

/// OLMo-2 (norms after each block, whole-projection q/k norms) refills like the Llama-shaped fixture.
#[test]
fn refill_serves_a_post_norm_family() -> Result<()> {
    let model = CausalLm::load(decoder_fixture("olmo2"), Device::Cpu, Kind::Float)?;
    let config = GenerationConfig::greedy(6, vec![2]);
    let alone: Vec<_> = prompts()
        .iter()
        .map(|p| generate(&model, std::slice::from_ref(p), &config, None).map(|mut g| g.remove(0)))
        .collect::<detox_runtime::Result<_>>()?;
    for slots in [1, 3] {
        assert_eq!(generate_refill(&model, &prompts(), &config, slots)?, alone, "{slots} slots");
    }
    Ok(())
}

/// A LongRoPE model whose slots would cross its pre-training context (where generation recomputes the whole
/// sequence) is refused by name; Phi-3's sliding window is taken away so that the window is not what refuses.
#[test]
fn refill_refuses_longrope_past_its_context() -> Result<()> {
    let dir = decoder_fixture("phi3");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    json["sliding_window"] = serde_json::Value::Null;
    let config = detox_runtime::Config::from_value(&json, &dir.join("config.json"))?;
    let tensors = detox_runtime::SafetensorsFiles::open_dir(&dir)?.load_all(Device::Cpu, None)?;
    let model = CausalLm::from_tensors(config, tensors, Device::Cpu, Kind::Float)?;
    let short = GenerationConfig::greedy(2, vec![2]);
    assert_eq!(
        generate_refill(&model, &[vec![1, 5, 6]], &short, 1)?.len(),
        1,
        "within the context"
    );
    let err = generate_refill(&model, &prompts(), &GenerationConfig::greedy(4, vec![2]), 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("LongRoPE") && err.contains("8-position"), "{err}");
    Ok(())
}
