//! `CausalLm::random`: every supported architecture's config gives a model with exactly the tensors (names and
//! shapes) its checkpoint has, which runs; the same seed gives the same weights and another seed other weights.

use std::path::PathBuf;

use anyhow::Result;
use detox_runtime::{Architecture, CausalLm, Config, ForwardOptions};
use tch::{Device, Kind, Tensor};

/// Tiny checkpoints of every supported architecture (`tests/fixtures/decoders/generate.py`).
const MODELS: &[&str] = &["llama", "llama3_tied_sharded", "mistral_window", "qwen2"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoders").join(name)
}

#[test]
fn every_architecture_gets_its_checkpoints_tensors_and_runs() -> Result<()> {
    let mut architectures = Vec::new();
    for name in MODELS {
        let loaded = CausalLm::load(fixture(name), Device::Cpu, Kind::Float)?;
        let config = Config::from_file(fixture(name).join("config.json"))?;
        let random = CausalLm::random(&config, Device::Cpu, Kind::Float, 0)?;
        let mut want: Vec<(String, Vec<i64>)> = loaded
            .parameter_names()
            .iter()
            .map(|n| Ok((n.clone(), loaded.parameter(n)?.size())))
            .collect::<Result<_>>()?;
        let mut got: Vec<(String, Vec<i64>)> = random
            .parameter_names()
            .iter()
            .map(|n| Ok((n.clone(), random.parameter(n)?.size())))
            .collect::<Result<_>>()?;
        want.sort();
        got.sort();
        assert_eq!(got, want, "{name}");
        let ids = Tensor::from_slice(&[1i64, 5, 9, 3]).unsqueeze(0);
        let logits = random.forward(&ids, &ForwardOptions::default())?.logits;
        assert_eq!(logits.size(), [1, 4, config.vocab_size], "{name}");
        let finite = logits.isfinite().all().int64_value(&[]) == 1;
        assert!(finite, "{name}: non-finite logits");
        architectures.push(config.architecture);
    }
    for architecture in [Architecture::Llama, Architecture::Mistral, Architecture::Qwen2] {
        assert!(architectures.contains(&architecture), "{architecture:?} is not covered");
    }
    Ok(())
}

#[test]
fn the_seed_decides_the_weights() -> Result<()> {
    let config = Config::from_file(fixture("qwen2").join("config.json"))?;
    let a = CausalLm::random(&config, Device::Cpu, Kind::Float, 7)?;
    let b = CausalLm::random(&config, Device::Cpu, Kind::Float, 7)?;
    let c = CausalLm::random(&config, Device::Cpu, Kind::Float, 8)?;
    let mut differs = false;
    for name in a.parameter_names() {
        assert!(a.parameter(name)?.equal(b.parameter(name)?), "{name} differs under one seed");
        differs |= !a.parameter(name)?.equal(c.parameter(name)?);
    }
    assert!(differs, "another seed gave the same weights");
    Ok(())
}
