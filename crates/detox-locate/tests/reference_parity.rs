//! The locator against the reference computation recorded by `crates/detox-edit/tests/fixtures/dinm/generate.py`.

use std::path::PathBuf;

use anyhow::Result;
use detox_locate::{contrast_token_ids, LayerDistances, PaddingPositions};
use detox_runtime::CausalLm;
use tch::{Device, Kind};

fn dinm_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../detox-edit/tests/fixtures/dinm")
}

fn rows(v: &serde_json::Value) -> Vec<Vec<i64>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The fixture model, the reference's expectations, the safe and unsafe responses' ids without their padding,
/// and the padding id.
fn reference_case() -> Result<(CausalLm, serde_json::Value, Vec<Vec<i64>>, i64)> {
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
    Ok((model, expected, unpadded, pad))
}

#[test]
fn distances_and_layer_match_the_reference() -> Result<()> {
    let (model, expected, unpadded, pad) = reference_case()?;
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

/// The distances are taken in fp32 from bf16 hidden states, so a bf16 model names the fp32 model's layer here,
/// where the winner is clear; each distance stays within bf16's relative precision (2^-8) times a few layers of
/// accumulated rounding.
#[test]
fn a_bf16_model_names_the_same_layer_as_fp32() -> Result<()> {
    let dir = dinm_fixtures();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    let ids = rows(&expected["locate"]["input_ids"]);
    let mask = rows(&expected["locate"]["attention_mask"]);
    let unpadded: Vec<Vec<i64>> = ids
        .iter()
        .zip(&mask)
        .map(|(i, m)| i.iter().zip(m).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect())
        .collect();
    let pad = ids[1][0];
    let locate = |kind: Kind| -> Result<LayerDistances> {
        let model = CausalLm::load(dir.join("model"), Device::Cpu, kind)?;
        Ok(contrast_token_ids(&model, &unpadded[0], &unpadded[1], pad, PaddingPositions::Included)?)
    };
    let fp32 = locate(Kind::Float)?;
    let bf16 = locate(Kind::BFloat16)?;
    assert!(fp32.near_ties.is_empty(), "the fixture's winner is a near-tie: {fp32:?}");
    assert_eq!(bf16.toxic_layer, fp32.toxic_layer, "bf16 {bf16:?} vs fp32 {fp32:?}");
    for (layer, (b, f)) in bf16.distances.iter().zip(&fp32.distances).enumerate() {
        assert!((b - f).abs() <= 0.05 * f.abs(), "layer {layer}: bf16 {b} vs fp32 {f}");
    }
    Ok(())
}

/// The text API lays the texts out as asked, encodes them with the caller's encoder and contrasts the ids exactly
/// as [`contrast_token_ids`] does; the encoder's error comes back as it is.
#[test]
fn texts_are_laid_out_encoded_and_contrasted_like_their_ids() -> Result<()> {
    use detox_locate::{contrast_texts, ContrastTexts, LocateInput, LocateOptions};

    let (model, _, unpadded, pad) = reference_case()?;
    let texts = ContrastTexts { prompt: "Q", safe: "S", unsafe_: "U" };
    let encode = |text: &str| match text {
        "Q S" => Ok(unpadded[0].clone()),
        "Q U" => Ok(unpadded[1].clone()),
        other => Err(anyhow::anyhow!("unexpected text {other:?}")),
    };
    let options = LocateOptions { input: LocateInput::WithPrompt, ..LocateOptions::default() };
    let from_texts = contrast_texts::<anyhow::Error>(&model, texts, &options, pad, encode)?;
    let from_ids =
        contrast_token_ids(&model, &unpadded[0], &unpadded[1], pad, PaddingPositions::Included)?;
    assert_eq!(from_texts.distances, from_ids.distances);
    assert_eq!(from_texts.toxic_layer, from_ids.toxic_layer);
    let err = contrast_texts(&model, texts, &LocateOptions::default(), pad, encode).unwrap_err();
    assert!(err.to_string().contains("unexpected text \"S\""), "{err}");
    Ok(())
}
