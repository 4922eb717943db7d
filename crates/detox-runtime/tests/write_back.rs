//! Writing an edited model back as a Hugging Face directory (`CausalLm::save_pretrained`): reloading it gives
//! bit-identical parameters, shards come with an index, the source's files are copied unchanged, and transformers
//! computes the edited model's logits from it (`tests/fixtures/write_back/`, made by `check.py` there from the
//! directories this test writes when `DETOX_WRITE_BACK_OUT` names a folder).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use common::decoder;
use detox_runtime::export::parse_shard_size;
use detox_runtime::{
    load_model, CausalLm, Error, ForwardOptions, LowRank, SafetensorsFiles, SaveOptions,
};
use tch::{Device, Kind, Tensor};

/// The tiny decoders, with whether their embedding is tied to the output head.
const MODELS: [(&str, bool); 4] =
    [("llama", false), ("llama3_tied_sharded", true), ("mistral_window", false), ("qwen2", false)];

/// The prompt whose logits the fixtures hold (token ids of the tiny vocabulary).
const PROMPT: [i64; 9] = [1, 17, 93, 44, 5, 61, 120, 33, 7];

const DOWN: &str = "model.layers.1.mlp.down_proj.weight";
const Q: &str = "model.layers.0.self_attn.q_proj.weight";

fn write_back_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/write_back")
        .join(format!("{name}.safetensors"))
}

/// A deterministic pattern of `shape` with values in `[-scale, scale]` (no random generator, so the edit is the
/// same everywhere).
fn pattern(shape: &[i64], scale: f64, phase: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + phase).sin().reshape(shape) * scale
}

/// The fixture model with an edit of each kind: a replaced down projection, a shifted final norm, a low-rank
/// path beside a query projection, and for a tied model an edited embedding (which is also its head).
fn edited(name: &str, tied: bool) -> Result<CausalLm> {
    edit(CausalLm::load(decoder(name), Device::Cpu, Kind::Float)?, tied)
}

/// [`edited`]'s edits on a loaded model.
fn edit(mut model: CausalLm, tied: bool) -> Result<CausalLm> {
    let down = model.parameter(DOWN)?.detach();
    let _ = model.replace_parameter(DOWN, &down + pattern(&down.size(), 0.05, 0.0))?;
    let norm = model.parameter("model.norm.weight")?.detach();
    let _ = model.replace_parameter("model.norm.weight", norm + 0.25)?;
    let q = model.parameter(Q)?.size();
    let path =
        LowRank { a: pattern(&[2, q[1]], 0.3, 1.0), b: pattern(&[q[0], 2], 0.3, 2.0), scale: 0.5 };
    ensure!(model.set_low_rank(Q, path)?.is_none());
    if tied {
        let embed = model.parameter("model.embed_tokens.weight")?.detach();
        let _ = model.replace_parameter(
            "model.embed_tokens.weight",
            &embed + pattern(&embed.size(), 0.02, 3.0),
        )?;
    }
    Ok(model)
}

/// What each parameter of `model` must be once written: itself, the low-rank path merged in fp32.
fn merged(model: &CausalLm, name: &str) -> Result<Tensor> {
    let w = model.parameter(name)?.detach();
    Ok(match model.low_rank(name)? {
        Some(p) => w + p.b.matmul(&p.a) * p.scale,
        None => w,
    })
}

/// A word-level tokenizer over the special tokens: enough for the directory to load as a model with a tokenizer.
const TOKENIZER: &str = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
"normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
"model": {"type": "WordLevel", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2}, "unk_token": "<unk>"}}"#;

/// A copy of a fixture directory with the tokenizer-side files a real checkpoint has, and a stray file that must
/// not be copied.
fn source_dir(name: &str, into: &Path) -> Result<PathBuf> {
    let dir = into.join(format!("{name}-source"));
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(decoder(name))? {
        let entry = entry?;
        let file = entry.file_name();
        if !file.to_string_lossy().starts_with("expected") {
            std::fs::copy(entry.path(), dir.join(&file))?;
        }
    }
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER)?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 64}"#,
    )?;
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{% for m in messages %}{{ m.content }}{% endfor %}",
    )?;
    std::fs::write(dir.join("generation_config.json"), "{\n  \"do_sample\": false\n}\n")?;
    std::fs::write(dir.join("README.md"), "not part of the model\n")?;
    Ok(dir)
}

/// The rotary table an older checkpoint stored, which the runtime recomputes and transformers ignores.
const INV_FREQ: &str = "model.layers.0.self_attn.rotary_emb.inv_freq";

/// The tied Llama-3 fixture as older checkpoints were saved: the tied head stored beside the embedding, and a
/// rotary table, in one file.
fn stored_head_source(into: &Path) -> Result<PathBuf> {
    let dir = source_dir("llama3_tied_sharded", into)?;
    let files = SafetensorsFiles::open_dir(&dir)?;
    let mut tensors: Vec<(String, Tensor)> = files
        .names()
        .map(|n| Ok((n.to_string(), files.load(n, Device::Cpu, None)?)))
        .collect::<Result<_>>()?;
    drop(files);
    let embed =
        tensors.iter().find(|(n, _)| n == "model.embed_tokens.weight").context("embedding")?;
    tensors.push(("lm_head.weight".into(), embed.1.copy()));
    tensors.push((INV_FREQ.into(), Tensor::arange(4, (Kind::Float, Device::Cpu)) * 0.125));
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors")
            || path.ends_with("model.safetensors.index.json")
        {
            std::fs::remove_file(path)?;
        }
    }
    detox_runtime::weights::save_safetensors(&dir.join("model.safetensors"), &tensors)?;
    Ok(dir)
}

fn files_in(dir: &Path) -> Result<BTreeSet<String>> {
    std::fs::read_dir(dir)?.map(|e| Ok(e?.file_name().to_string_lossy().into_owned())).collect()
}

fn logits(model: &CausalLm) -> Result<Tensor> {
    let ids = Tensor::from_slice(&PROMPT).unsqueeze(0);
    Ok(tch::no_grad(|| model.forward(&ids, &ForwardOptions::default()))?.logits.squeeze_dim(0))
}

#[test]
fn written_directories_reload_bit_identically_with_the_source_files() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for (name, tied) in MODELS {
        let model = edited(name, tied)?;
        let source = source_dir(name, tmp.path())?;
        let out = tmp.path().join(name);
        let saved = model.save_pretrained(&source, &out, &SaveOptions::new())?;
        assert_eq!(saved.weight_files, ["model.safetensors"], "{name}: fits one file");
        assert_eq!(saved.dtype, Kind::Float);

        // Only the model's files: no stray README, no index for a single file, no temporary leftovers.
        let want: BTreeSet<String> = [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "generation_config.json",
        ]
        .map(String::from)
        .into();
        assert_eq!(files_in(&out)?, want, "{name}");
        assert_eq!(files_in(tmp.path())?.iter().filter(|f| f.starts_with('.')).count(), 0);
        // The weights are as readable as the other files (not private like a temporary file).
        let mode = |f: &str| -> Result<std::fs::Permissions> {
            Ok(std::fs::metadata(out.join(f))?.permissions())
        };
        assert_eq!(mode("model.safetensors")?, mode("config.json")?, "{name}");
        for file in [
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "generation_config.json",
        ] {
            assert_eq!(std::fs::read(out.join(file))?, std::fs::read(source.join(file))?, "{file}");
        }
        // The config is the source's with the dtype added in the source's dialect (transformers 5: `dtype`).
        let read = |p: &Path| -> Result<serde_json::Value> {
            Ok(serde_json::from_slice(&std::fs::read(p.join("config.json"))?)?)
        };
        let mut want_config = read(&source)?;
        want_config["dtype"] = "float32".into();
        assert_eq!(read(&out)?, want_config, "{name}");

        // The head of a tied model stays implied, as in the source checkpoint.
        let stored = SafetensorsFiles::open_dir(&out)?;
        assert_eq!(stored.contains("lm_head.weight"), !tied, "{name}");
        assert_eq!(saved.tensors, model.parameter_names().len());

        let reloaded = CausalLm::load(&out, Device::Cpu, Kind::Float)?;
        assert_eq!(reloaded.parameter_names(), model.parameter_names());
        for p in model.parameter_names() {
            let want = merged(&model, p)?;
            assert!(reloaded.parameter(p)?.equal(&want), "{name}: `{p}` is not bit-identical");
        }
        assert!(reloaded.low_rank(Q)?.is_none());
        let diff = (logits(&reloaded)? - logits(&model)?).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name}: the reloaded model's logits differ by {diff}");
    }
    Ok(())
}

#[test]
fn a_stored_tied_head_and_rotary_tables_are_written_as_the_source_had_them() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let source = stored_head_source(tmp.path())?;
    let model = edit(CausalLm::load(&source, Device::Cpu, Kind::Float)?, true)?;
    let out = tmp.path().join("out");
    let saved = model.save_pretrained(&source, &out, &SaveOptions::new())?;
    assert_eq!(saved.tensors, model.parameter_names().len() + 2);
    let stored = SafetensorsFiles::open_dir(&out)?;
    let head = stored.load("lm_head.weight", Device::Cpu, None)?;
    assert!(
        head.equal(model.parameter("model.embed_tokens.weight")?),
        "the head is the edited embedding"
    );
    let table = stored.load(INV_FREQ, Device::Cpu, None)?;
    let original = SafetensorsFiles::open_dir(&source)?.load(INV_FREQ, Device::Cpu, None)?;
    assert!(table.equal(&original), "the rotary table is copied as it was");
    let reloaded = CausalLm::load(&out, Device::Cpu, Kind::Float)?;
    for p in model.parameter_names() {
        assert!(reloaded.parameter(p)?.equal(&merged(&model, p)?), "`{p}` is not bit-identical");
    }
    Ok(())
}

#[test]
fn shards_get_an_index_and_dtypes_are_written_as_asked() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = edited("qwen2", false)?;
    let source = source_dir("qwen2", tmp.path())?;
    let out = tmp.path().join("sharded");
    let options = SaveOptions::new()
        .with_dtype(Kind::BFloat16)
        .with_max_shard_size(parse_shard_size("10KB")?);
    let saved = model.save_pretrained(&source, &out, &options)?;
    let count = saved.weight_files.len();
    ensure!(count > 2, "expected several shards, got {count}");
    for (i, file) in saved.weight_files.iter().enumerate() {
        assert_eq!(file, &format!("model-{:05}-of-{count:05}.safetensors", i + 1));
        let size = std::fs::metadata(out.join(file))?.len();
        // Each shard holds at most 10 kB of tensor data (plus its header), or one larger tensor alone.
        let tensors = SafetensorsFiles::open_files(&[out.join(file)])?;
        let names: Vec<&str> = tensors.names().collect();
        assert!(size < 12_000 || names.len() == 1, "{file}: {size} bytes, {names:?}");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json"))?)?;
    assert_eq!(index["metadata"]["total_size"], saved.total_size);
    let mapped = index["weight_map"].as_object().context("weight_map")?;
    assert_eq!(mapped.len(), model.parameter_names().len());
    let bytes: u64 = model
        .parameter_names()
        .iter()
        .map(|p| model.parameter(p).unwrap().numel() as u64 * 2)
        .sum();
    assert_eq!(saved.total_size, bytes, "bf16 takes two bytes a value");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json"))?)?;
    assert_eq!(config["dtype"], "bfloat16");

    let reloaded = CausalLm::load(&out, Device::Cpu, Kind::BFloat16)?;
    let stored = SafetensorsFiles::open_dir(&out)?;
    for p in model.parameter_names() {
        assert_eq!(stored.stored_kind(p)?, Kind::BFloat16, "{p}");
        let want = merged(&model, p)?.to_kind(Kind::BFloat16);
        assert!(reloaded.parameter(p)?.equal(&want), "`{p}` is not bit-identical");
    }
    Ok(())
}

#[test]
fn what_cannot_be_written_is_refused_with_the_path() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let source = source_dir("llama", tmp.path())?;
    let mut model = edited("llama", false)?;
    let out = tmp.path().join("out");
    let export_error = |e: Error| match e {
        Error::Export { path, reason } => {
            assert_eq!(path, out, "{reason}");
            reason
        }
        other => panic!("expected an export error, got {other}"),
    };

    // An existing non-empty directory is kept unless overwriting is asked for.
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("notes.txt"), "mine")?;
    let reason =
        export_error(model.save_pretrained(&source, &out, &SaveOptions::new()).unwrap_err());
    assert!(reason.contains("not empty"), "{reason}");
    assert_eq!(files_in(&out)?, BTreeSet::from(["notes.txt".to_string()]));
    model.save_pretrained(&source, &out, &SaveOptions::new().with_overwrite(true))?;
    assert!(!out.join("notes.txt").exists() && out.join("model.safetensors").exists());
    // An existing empty directory is simply filled.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    model.save_pretrained(&source, &empty, &SaveOptions::new())?;
    assert!(empty.join("config.json").exists());

    let fresh = tmp.path().join("fresh");
    // A steering-style bias attached at run time has no place in a Llama checkpoint.
    let bias = "model.layers.0.mlp.down_proj.bias";
    model.attach_bias(bias)?;
    let e = model.save_pretrained(&source, &fresh, &SaveOptions::new()).unwrap_err();
    assert!(matches!(&e, Error::Export { reason, .. } if reason.contains(bias)), "{e}");
    let mut model = edited("llama", false)?;
    // A batched edit still in place (one weight per row) is refused.
    let down = model.parameter(DOWN)?.detach();
    let _ = model.replace_parameter(DOWN, Tensor::stack(&[&down, &down], 0))?;
    let e = model.save_pretrained(&source, &fresh, &SaveOptions::new()).unwrap_err();
    assert!(matches!(&e, Error::Export { reason, .. } if reason.contains(DOWN)), "{e}");
    // Damaged weights would give a directory that does not load.
    let mut damaged = down.copy();
    let _ = damaged.fill_diagonal_(f64::NAN, false);
    let _ = model.replace_parameter(DOWN, damaged)?;
    let e = model.save_pretrained(&source, &fresh, &SaveOptions::new()).unwrap_err();
    assert!(matches!(&e, Error::NonFiniteWeights { name, .. } if name == DOWN), "{e}");
    assert!(!fresh.exists(), "nothing is left behind by a refused write");
    assert!(!tmp.path().join(".fresh.partial").exists(), "nor a half-written directory");

    // A source that is not the model's checkpoint: Qwen2's has the query, key and value biases Llama lacks.
    let other = source_dir("qwen2", tmp.path())?;
    let e =
        edited("llama", false)?.save_pretrained(&other, &fresh, &SaveOptions::new()).unwrap_err();
    assert!(
        matches!(&e, Error::Export { reason, .. } if reason.contains("self_attn.k_proj.bias")),
        "{e}"
    );
    // A model loaded from GGUF has no config.json or tokenizer files to copy.
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/tiny.gguf");
    let loaded = load_model(&gguf, &[Device::Cpu], Kind::Float)?;
    let e = loaded.save_pretrained(&fresh, &SaveOptions::new()).unwrap_err();
    assert!(matches!(&e, Error::Export { reason, .. } if reason.contains("GGUF")), "{e}");
    // One loaded from a directory writes through the same call, with its own source.
    let loaded = load_model(&source, &[Device::Cpu], Kind::Float)?;
    loaded.save_pretrained(&fresh, &SaveOptions::new())?;
    assert!(fresh.join("tokenizer_config.json").exists());
    Ok(())
}

/// transformers' logits for the written directories (`check.py --write-fixtures`) equal the edited model's here.
/// With `DETOX_WRITE_BACK_OUT=<folder>` the directories and this runtime's logits are written there first, for
/// `check.py <folder>` to load in transformers.
#[test]
fn transformers_computes_the_edited_models_logits() -> Result<()> {
    let keep = std::env::var_os("DETOX_WRITE_BACK_OUT").map(PathBuf::from);
    if let Some(keep) = &keep {
        let tmp = tempfile::tempdir()?;
        std::fs::create_dir_all(keep)?;
        for (name, tied) in MODELS {
            let model = edited(name, tied)?;
            let source = source_dir(name, tmp.path())?;
            let mut options = SaveOptions::new().with_overwrite(true);
            if name == "llama3_tied_sharded" {
                // Sharded as its source was, for transformers to read an index this runtime wrote.
                options = options.with_max_shard_size(parse_shard_size("20KB")?);
            }
            model.save_pretrained(&source, &keep.join(name), &options)?;
            let ids = Tensor::from_slice(&PROMPT).unsqueeze(0);
            let tensors = [("input_ids".to_string(), ids), ("logits".to_string(), logits(&model)?)];
            let path = keep.join(format!("{name}.detox.safetensors"));
            detox_runtime::weights::save_safetensors(&path, &tensors)?;
        }
        // A tied source that stored its head (and a rotary table): transformers must tie and ignore them.
        let source = stored_head_source(tmp.path())?;
        let model = edit(CausalLm::load(&source, Device::Cpu, Kind::Float)?, true)?;
        let options = SaveOptions::new().with_overwrite(true);
        model.save_pretrained(&source, &keep.join("llama3_stored_head"), &options)?;
        let ids = Tensor::from_slice(&PROMPT).unsqueeze(0);
        let tensors = [("input_ids".to_string(), ids), ("logits".to_string(), logits(&model)?)];
        detox_runtime::weights::save_safetensors(
            &keep.join("llama3_stored_head.detox.safetensors"),
            &tensors,
        )?;
        // Half precision: transformers must read the dtype from config.json (`dtype="auto"`).
        let out = keep.join("qwen2_bf16");
        let options = SaveOptions::new().with_overwrite(true).with_dtype(Kind::BFloat16);
        edited("qwen2", false)?.save_pretrained(
            &source_dir("qwen2", tmp.path())?,
            &out,
            &options,
        )?;
        let ids = Tensor::from_slice(&PROMPT).unsqueeze(0);
        let reloaded = CausalLm::load(&out, Device::Cpu, Kind::BFloat16)?;
        let tensors = [("input_ids".to_string(), ids), ("logits".to_string(), logits(&reloaded)?)];
        detox_runtime::weights::save_safetensors(
            &keep.join("qwen2_bf16.detox.safetensors"),
            &tensors,
        )?;
    }
    for (name, tied) in MODELS {
        let ours = logits(&edited(name, tied)?)?;
        let theirs = fixture_logits(&write_back_fixture(name))?;
        assert_eq!(theirs.size(), ours.size(), "{name}");
        let diff = (&theirs - &ours).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{name}: transformers' logits differ from ours by {diff}");
        // The edit is visible: the fixture is not the unedited model's.
        let unedited = logits(&CausalLm::load(decoder(name), Device::Cpu, Kind::Float)?)?;
        let moved = (&theirs - unedited).abs().max().double_value(&[]);
        assert!(moved > 1e-2, "{name}: the edit changed the logits by only {moved}");
    }
    // The tied source with a stored head: the same edits, the same logits.
    let tmp = tempfile::tempdir()?;
    let source = stored_head_source(tmp.path())?;
    let ours = logits(&edit(CausalLm::load(&source, Device::Cpu, Kind::Float)?, true)?)?;
    let theirs = fixture_logits(&write_back_fixture("llama3_stored_head"))?;
    let diff = (&theirs - &ours).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "llama3_stored_head: transformers' logits differ from ours by {diff}");
    // The bf16 directory, computed in bf16 by both runtimes: rounding differs, so the bound is looser.
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("qwen2_bf16");
    let options = SaveOptions::new().with_dtype(Kind::BFloat16);
    edited("qwen2", false)?.save_pretrained(&source_dir("qwen2", tmp.path())?, &out, &options)?;
    let ours = logits(&CausalLm::load(&out, Device::Cpu, Kind::BFloat16)?)?.to_kind(Kind::Float);
    let theirs = fixture_logits(&write_back_fixture("qwen2_bf16"))?;
    let diff = (&theirs - &ours).abs().max().double_value(&[]);
    assert!(diff < 5e-2, "qwen2_bf16: transformers' logits differ from ours by {diff}");
    Ok(())
}

/// The logits of a fixture written by `check.py`, after checking its prompt.
fn fixture_logits(path: &Path) -> Result<Tensor> {
    let fixture = SafetensorsFiles::open_files(std::slice::from_ref(&path.to_path_buf()))
        .with_context(|| format!("{}: run check.py --write-fixtures", path.display()))?;
    let ids = fixture.load("input_ids", Device::Cpu, None)?;
    ensure!(
        ids.equal(&Tensor::from_slice(&PROMPT).unsqueeze(0)),
        "{}: another prompt",
        path.display()
    );
    Ok(fixture.load("logits", Device::Cpu, Some(Kind::Float))?)
}
