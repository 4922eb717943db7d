//! `cargo xtask fuzz <target> [--seconds N]`: a long libFuzzer run of one fuzz target (or `all`, one after the
//! other) through `cargo +nightly fuzz`. New inputs go to a working corpus under `fuzz/target/`, so the committed
//! corpus (`fuzz/corpus/<target>/`, replayed by `cargo test -p detox-eval --test fuzz_corpus`) stays small; a
//! crash is left in `fuzz/artifacts/<target>/` to be fixed and then committed to the corpus as `finding-*`.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::workspace_root;

/// The fuzz targets, one per untrusted format (`fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: &[&str] = &[
    "safeedit_json",
    "nlpcc_json",
    "gguf",
    "hf_config",
    "safetensors_header",
    "dinm_hparams",
    "tokenizer_json",
    "run_jsonl",
    "run_manifest",
];

/// Settings of a fuzzing run.
#[derive(Debug, Clone, clap::Args)]
pub struct FuzzArgs {
    /// The target (see `fuzz/fuzz_targets/`), or `all` for each in turn.
    pub target: String,
    /// Seconds per target.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// Largest input in bytes.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_len: u64,
}

/// Runs the requested targets; fails on the first target whose run finds a crash.
pub fn run(args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&str> = match args.target.as_str() {
        "all" => TARGETS.to_vec(),
        t if TARGETS.contains(&t) => vec![t],
        other => {
            bail!("unknown fuzz target {other:?}; the targets are: all, {}", TARGETS.join(", "))
        }
    };
    let probe = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        bail!(
            "cargo fuzz needs the nightly toolchain and cargo-fuzz: `rustup toolchain install nightly` and \
             `cargo install cargo-fuzz`"
        );
    }
    let fuzz_dir = workspace_root().join("fuzz");
    for target in targets {
        let work = fuzz_dir.join("target").join("corpus").join(target);
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        println!("fuzzing {target} for {} s (new inputs in {})", args.seconds, work.display());
        // No sanitizer: the readers are safe Rust over a read-only mapping, and the targets' own allocator
        // enforces the allocation bound; coverage-guided speed matters more here.
        let status = Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", "--sanitizer", "none", "-O", target])
            .arg(&work)
            .arg(fuzz_dir.join("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-max_len={}", args.max_len))
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=1")
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            bail!(
                "{target}: the run found a crash ({status}); the input is in {}; fix the reader, then add the \
                 input to fuzz/corpus/{target}/ as finding-<what>",
                fuzz_dir.join("artifacts").join(target).display()
            );
        }
    }
    Ok(())
}
