//! `cargo xtask gpu-check`: one command that proves the CUDA path on a GPU machine.
//!
//! The check is a bundle: stripped release test executables and examples, the fixtures they read and a
//! `run.sh` that runs them against a given libtorch, so the same check runs on a GPU machine without a Rust
//! toolchain (`--bundle DIR`). Without `--bundle`, the bundle is built under the output folder and run at once
//! against the libtorch in use. Steps: the doctor (build, driver, GPUs, bf16), the ignored CUDA tests (decoder
//! parity in fp32 and bf16, the CPU + CUDA device map, DINM parity and bit-exact restore in fp32), the DINM edit
//! and generation on a tiny random-weight model in bf16 and fp32, and the protocol benchmark on the Llama-2-7B
//! shape (with the transformers peer where python3 has torch). It writes `report.md` and `report.jsonl` and
//! exits non-zero on any failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::{managed_libtorch, workspace_root};

/// Settings of `cargo xtask gpu-check`.
#[derive(Debug, Clone, clap::Args)]
pub struct GpuCheckArgs {
    /// Only build the bundle into this folder (under 64 MiB); run it on the GPU machine with
    /// `DIR/run.sh LIBTORCH_DIR`.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Where the bundle and the report go when the check runs here.
    #[arg(long, default_value = "runs/gpu-check")]
    pub out: PathBuf,
}

/// The bundle must fit through the channels a GPU machine is reached by.
const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// The integration tests holding the ignored CUDA variants: (package, test target).
const CUDA_TESTS: &[(&str, &str)] = &[
    ("detox-runtime", "decoder_parity"),
    ("detox-runtime", "device_map"),
    ("detox-edit", "dinm_parity"),
];

/// The examples the bundle runs.
const EXAMPLES: &[&str] = &["doctor", "protocol_bench"];

/// Fixture folders the CUDA tests read, relative to the workspace root.
const FIXTURES: &[&str] =
    &["crates/detox-runtime/tests/fixtures/decoders", "crates/detox-edit/tests/fixtures/dinm"];

/// Runs the task.
pub fn run(args: &GpuCheckArgs) -> Result<()> {
    let root = workspace_root();
    match &args.bundle {
        Some(dir) => {
            let dir = if dir.is_absolute() { dir.clone() } else { root.join(dir) };
            build_bundle(&dir)?;
            println!("run it on a GPU machine: {}/run.sh LIBTORCH_DIR", dir.display());
            Ok(())
        }
        None => {
            crate::libtorch::ensure(false)?;
            let out = root.join(&args.out);
            let bundle = out.join("bundle");
            build_bundle(&bundle)?;
            let libtorch =
                std::env::var_os("LIBTORCH").map(PathBuf::from).unwrap_or_else(managed_libtorch);
            let status = Command::new(bundle.join("run.sh"))
                .arg(&libtorch)
                .env("OUT", &out)
                .status()
                .context("running the bundle's run.sh")?;
            print_bench_table(&out)?;
            if !status.success() {
                bail!("the GPU check failed; see {}", out.join("report.md").display());
            }
            Ok(())
        }
    }
}

/// Builds the release executables, strips them and writes the bundle with its fixtures and `run.sh`.
fn build_bundle(dir: &Path) -> Result<()> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;

    let mut tests = Command::new(&cargo);
    tests.args(["test", "--release", "--no-run"]).current_dir(&root);
    for (package, target) in CUDA_TESTS {
        tests.args(["-p", package, "--test", target]);
    }
    let built = crate::artifacts::build(&mut tests, "the CUDA test executables")?;
    for (_, target) in CUDA_TESTS {
        place(built.get(target)?, &bin.join(target))?;
    }
    let examples = crate::artifacts::release_examples(EXAMPLES)?;
    for example in EXAMPLES {
        place(examples.get(example)?, &bin.join(example))?;
    }
    for fixture in FIXTURES {
        copy_tree(&root.join(fixture), &dir.join(fixture))?;
    }
    fs::copy(root.join("examples/bench/hf_protocol_peer.py"), dir.join("hf_protocol_peer.py"))
        .context("copying the transformers peer")?;
    let script = dir.join("run.sh");
    fs::write(&script, RUN_SH)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;

    let bytes = tree_bytes(dir)?;
    println!("bundle: {} ({:.1} MiB)", dir.display(), bytes as f64 / (1u64 << 20) as f64);
    if bytes > MAX_BUNDLE_BYTES {
        bail!("the bundle holds {bytes} bytes, over the 64 MiB it must stay under");
    }
    Ok(())
}

/// Copies an executable and strips its symbols (debug information makes test executables hundreds of MB).
fn place(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    let status = Command::new("strip")
        .arg(to)
        .status()
        .context("running `strip` (binutils) to shrink the bundle")?;
    if !status.success() {
        bail!("strip failed on {}", to.display());
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        total += if entry.file_type()?.is_dir() {
            tree_bytes(&entry.path())?
        } else {
            entry.metadata()?.len()
        };
    }
    Ok(total)
}

/// The protocol benchmark's table from the figures the bundle recorded, as `cargo xtask bench` prints it.
fn print_bench_table(out: &Path) -> Result<()> {
    let Ok(raw) = fs::read_to_string(out.join("protocol_bench_llama2-7b.log")) else {
        return Ok(());
    };
    let mut figures = raw;
    if let Ok(peer) = fs::read_to_string(out.join("transformers_peer_llama2-7b.log")) {
        figures.push_str(&peer);
    }
    let table = crate::bench::render_table(&crate::bench::parse_figures(&figures));
    fs::write(out.join("bench-table.md"), &table)?;
    println!("\n{table}");
    Ok(())
}

/// The bundle's entry point: runs every step against the libtorch given as its argument.
const RUN_SH: &str = r#"#!/bin/sh
# The detox GPU check, prebuilt: ./run.sh LIBTORCH_DIR
# LIBTORCH_DIR is a CUDA build of libtorch 2.11.0 (e.g. .libtorch-cuda from `cargo xtask setup --cuda`, or a
# libtorch 2.11.0 cu13x archive). Writes report.md and report.jsonl into $OUT (default: ./report) and exits
# non-zero when any step fails.
set -u
LIBTORCH_DIR=$(cd "${1:?usage: ./run.sh LIBTORCH_DIR}" && pwd) || exit 2
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/report}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$LIBTORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
: > "$OUT/report.jsonl"
# The table rows and the notes are collected apart and put together at the end, so a note never splits the table.
: > "$OUT/rows.md"
: > "$OUT/notes.md"
failed=0

step() {
    name=$1; shift
    echo "==> $name"
    start=$(date +%s)
    if "$@" > "$OUT/$name.log" 2>&1; then result=pass; else result=FAIL; failed=1; fi
    seconds=$(( $(date +%s) - start ))
    tail -n 15 "$OUT/$name.log"
    echo "    $name: $result in ${seconds}s"
    printf '{"step":"%s","result":"%s","seconds":%s}\n' "$name" "$result" "$seconds" >> "$OUT/report.jsonl"
    printf '| %s | %s | %s |\n' "$name" "$result" "$seconds" >> "$OUT/rows.md"
}

step doctor "$HERE/bin/doctor"
cat "$OUT/doctor.log"
if ! grep -q '^CUDA available *: yes' "$OUT/doctor.log"; then
    echo "NO USABLE GPU: every CUDA step below fails; the doctor says why:"
    grep -E 'why CUDA is off|dlopen error|libtorch build|NVIDIA driver' "$OUT/doctor.log"
    printf '**No usable GPU**: %s\n\n' "$(grep 'why CUDA is off' "$OUT/doctor.log" | sed 's/.*: //')" >> "$OUT/notes.md"
fi
# Which fused attention kernel each attention call runs on, and whether its gradients are finite (the doctor
# step fails when one is not).
{
    printf 'Attention kernels (from the doctor):\n\n'
    grep '^  attention ' "$OUT/doctor.log" | sed 's/^  attention /- /'
    printf '\n'
} >> "$OUT/notes.md"

DETOX_CRATE_DIR="$HERE/crates/detox-runtime" step decoder_parity_cuda "$HERE/bin/decoder_parity" --ignored --test-threads 1
DETOX_CRATE_DIR="$HERE/crates/detox-runtime" step device_map_cuda "$HERE/bin/device_map" --ignored --test-threads 1
DETOX_CRATE_DIR="$HERE/crates/detox-edit" step dinm_parity_cuda "$HERE/bin/dinm_parity" --ignored --test-threads 1
for dtype in bf16 f32; do
    step "dinm_edit_and_generation_tiny_$dtype" "$HERE/bin/protocol_bench" --shape tiny --device cuda --dtype "$dtype" \
        --prompt 64 --target 32 --new 32 --gen-batches 2,8 --edit-batch 2 --records 10 --skip-baselines
done
step protocol_bench_llama2-7b "$HERE/bin/protocol_bench" --shape llama2-7b --device cuda --dtype bf16 --new 600 --gen-batches 5,64
if python3 -c 'import torch, transformers' > /dev/null 2>&1; then
    step transformers_peer_llama2-7b python3 "$HERE/hf_protocol_peer.py" --shape llama2-7b --device cuda --dtype bf16 \
        --new 600 --gen-batches 5,64 --records 1350 --ceilings
else
    echo "python3 with torch and transformers is absent: the transformers peer is skipped"
    printf 'transformers peer: skipped (python3 with torch and transformers is absent)\n\n' >> "$OUT/notes.md"
fi
grep -h '^{' "$OUT"/protocol_bench_*.log "$OUT"/dinm_edit_and_generation_*.log "$OUT"/transformers_peer_*.log 2>/dev/null >> "$OUT/report.jsonl"
{
    printf '# GPU check\n\nlibtorch: %s\n\n' "$LIBTORCH_DIR"
    cat "$OUT/notes.md"
    printf '| step | result | seconds |\n|---|---|---|\n'
    cat "$OUT/rows.md"
} > "$OUT/report.md"
rm -f "$OUT/rows.md" "$OUT/notes.md"
echo "report: $OUT/report.md and $OUT/report.jsonl"
exit $failed
"#;
