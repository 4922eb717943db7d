//! Refill generation: every prompt's continuation equals generating it alone, whatever the number of slots and
//! however the rows finish.

use anyhow::Result;
use detox_runtime::{generate, generate_refill, CausalLm, GenerationConfig, Sampling};
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
