//! The locator against the reference computation recorded by `crates/detox-edit/tests/fixtures/dinm/generate.py`.

use std::path::PathBuf;

use anyhow::Result;
use detox_locate::{contrast_token_ids, PaddingPositions};
use detox_runtime::CausalLm;
use tch::{Device, Kind};

fn dinm_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../detox-edit/tests/fixtures/dinm")
}

fn rows(v: &serde_json::Value) -> Vec<Vec<i64>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn distances_and_layer_match_the_reference() -> Result<()> {
    let dir = dinm_fixtures();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    let model = CausalLm::load(dir.join("model"), Device::Cpu, Kind::Float)?;
    let ids = rows(&expected["locate"]["input_ids"]);
    let mask = rows(&expected["locate"]["attention_mask"]);
    let unpadded: Vec<Vec<i64>> = ids
        .iter()
        .zip(&mask)
        .map(|(i, m)| i.iter().zip(m).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect())
        .collect();
    let pad = ids[1][0];
    let report =
        contrast_token_ids(&model, &unpadded[0], &unpadded[1], pad, PaddingPositions::Included)?;
    let want: Vec<f64> = serde_json::from_value(expected["locate"]["distances"].clone())?;
    assert_eq!(report.distances.len(), want.len());
    for (layer, (got, want)) in report.distances.iter().zip(&want).enumerate() {
        assert!((got - want).abs() <= 1e-3 * want.abs().max(1.0), "layer {layer}: {got} vs {want}");
    }
    assert_eq!(report.toxic_layer, expected["locate"]["layer"].as_u64().unwrap() as usize);

    let masked =
        contrast_token_ids(&model, &unpadded[0], &unpadded[1], pad, PaddingPositions::Masked)?;
    assert!(masked.distances.iter().zip(&report.distances).all(|(m, f)| m <= f));
    assert!(
        masked.distances.iter().zip(&report.distances).any(|(m, f)| m < f),
        "padding positions were dropped"
    );
    Ok(())
}
