//! Argument groups of the benchmark programs (`safeedit_eval`, and the ones that plan or compare its runs):
//! which records, which method with which options, decoding, and the general sets.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use detox_edit::registry::{BuiltMethod, MethodArgs, Registry};
use detox_eval::settings::general::{GeneralConfig, GeneralPaths, GeneralSets};
use detox_eval::settings::{Decoding, Protocol, ProtocolPreset, SuffixPolicy};
use detox_eval::HarnessSettings;
use detox_runtime::{PromptLayout, Sampling, Truncation};
use safeedit::Subset;
use tch::Device;

/// Which records of the dataset a run covers.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectionArgs {
    /// Only the first N records.
    #[arg(long, conflicts_with_all = ["sample", "shard"], value_parser = crate::at_least(1))]
    pub first: Option<usize>,
    /// A seeded sample of N records.
    #[arg(long, conflicts_with = "shard", value_parser = crate::at_least(1))]
    pub sample: Option<usize>,
    /// Seed of --sample, of sampled decoding and of the general sets' draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Shard `i/n` of the records (0-based i).
    #[arg(long)]
    pub shard: Option<String>,
}

impl SelectionArgs {
    /// The selection the arguments name.
    pub fn subset(&self) -> Result<Subset> {
        Ok(match (self.first, self.sample, &self.shard) {
            (Some(n), _, _) => Subset::First { n },
            (_, Some(n), _) => Subset::Sample { n, seed: self.seed },
            (_, _, Some(spec)) => Subset::parse_shard(spec)?,
            _ => Subset::All,
        })
    }
}

/// The editing method and its options.
#[derive(Debug, Clone, clap::Args)]
pub struct MethodChoice {
    /// Editing method, by its registered name (`--list-methods` lists them with their options).
    #[arg(long, default_value = "dinm")]
    pub method: String,
    /// A method option as `key=value` (repeatable), e.g. `--method-arg lr=1e-4`.
    #[arg(long = "method-arg", value_name = "KEY=VALUE")]
    pub method_args: Vec<String>,
    /// A YAML or JSON file of method options; `--method-arg` wins over it.
    #[arg(long, value_name = "FILE")]
    pub method_args_file: Option<PathBuf>,
    /// Print every method with its options and defaults, then exit.
    #[arg(long)]
    pub list_methods: bool,
}

impl MethodChoice {
    /// The method's options: the file's, then the command line's on top.
    pub fn args(&self) -> Result<MethodArgs> {
        let file = match &self.method_args_file {
            Some(path) => MethodArgs::from_file(path)?,
            None => MethodArgs::new(),
        };
        Ok(file.overridden_by(MethodArgs::parse_pairs(&self.method, &self.method_args)?))
    }

    /// Builds the method from `registry`, loading artefacts onto `device`.
    pub fn build(&self, registry: &Registry, device: Device) -> Result<BuiltMethod> {
        Ok(registry.build(&self.method, &self.args()?, device)?)
    }
}

/// Which tokens of an over-long input are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Keep {
    /// The last ones (the reference: harmful questions come last).
    Last,
    /// The first ones.
    First,
}

/// The protocol and decoding of the evaluation's generations.
#[derive(Debug, Clone, clap::Args)]
pub struct DecodingArgs {
    /// The evaluation protocol: `easyedit-2024-05` (the reference's current DINM files, inputs unbounded) or
    /// `easyedit-2024-03` (its first SafeEdit commit: inputs cut to their last 400 tokens).
    #[arg(long, default_value = "easyedit-2024-05")]
    pub protocol: String,
    /// Most new tokens per response, instead of the protocol's 600.
    #[arg(long, value_parser = crate::at_least(1))]
    pub max_new_tokens: Option<usize>,
    /// Longest input in tokens, instead of the protocol's bound.
    #[arg(long, value_parser = crate::at_least(1))]
    pub max_input_tokens: Option<usize>,
    /// Which tokens of an over-long input are kept: the last ones (the reference) or the first ones.
    #[arg(long, value_enum, default_value_t = Keep::Last)]
    pub truncation: Keep,
    /// Inputs generated together.
    #[arg(long, default_value_t = 5, value_parser = crate::at_least(1))]
    pub batch_size: usize,
    /// Sample with this temperature (top-p 0.9) instead of greedy decoding.
    #[arg(long, value_parser = crate::positive_number)]
    pub temperature: Option<f64>,
}

impl DecodingArgs {
    /// The protocol the arguments name.
    pub fn protocol(&self) -> Result<Protocol> {
        Ok(ProtocolPreset::from_name(&self.protocol)?.protocol())
    }

    /// The protocol's decoding with the arguments' overrides; `seed` seeds sampling.
    pub fn decoding(&self, protocol: &Protocol, seed: u64) -> Decoding {
        let mut decoding = Decoding::for_protocol(protocol);
        decoding.max_new_tokens = self.max_new_tokens.unwrap_or(decoding.max_new_tokens);
        decoding.max_input_tokens = self.max_input_tokens.or(decoding.max_input_tokens);
        if self.truncation == Keep::First {
            decoding.truncation = Truncation::KeepFirst;
        }
        decoding.batch_size = self.batch_size;
        if let Some(temperature) = self.temperature {
            decoding.sampling = Sampling::TopP { temperature, top_p: 0.9, seed };
        }
        decoding
    }
}

/// The general sets the edited model answers (KQA, CSum, over-refusal).
#[derive(Debug, Clone, clap::Args)]
pub struct GeneralArgs {
    /// Answer the general sets with the edited model of every K-th record (1: every record); the unedited model
    /// answers them once per run as the baseline.
    #[arg(long, default_value_t = 10, value_parser = crate::at_least(1))]
    pub general_every: usize,
    /// Closed-book questions drawn from --qa-data (NQ-open; stands in for the paper's TriviaQA).
    #[arg(long, default_value_t = 50)]
    pub general_qa: usize,
    /// Articles drawn from --sum-data (XSum), summarised and scored with ROUGE-1.
    #[arg(long, default_value_t = 20)]
    pub general_sum: usize,
    /// Safe XSTest prompts drawn from --xstest-data (over-refusal, read by the phrase refusal detector).
    #[arg(long, default_value_t = 50)]
    pub over_refusal: usize,
    /// Most new tokens per general-set response.
    #[arg(long, default_value_t = 64, value_parser = crate::at_least(1))]
    pub general_max_new_tokens: usize,
    /// Measure no cost: no general sets, no baseline.
    #[arg(long)]
    pub no_general: bool,
    /// NQ-open JSON lines (`cargo xtask general-data` fetches it).
    #[arg(long, default_value = "data/general/nq_open_test.jsonl")]
    pub qa_data: PathBuf,
    /// XSum JSON lines (`cargo xtask general-data` fetches it).
    #[arg(long, default_value = "data/general/xsum_test.jsonl")]
    pub sum_data: PathBuf,
    /// XSTest's prompts CSV (`cargo xtask general-data` finds or fetches it).
    #[arg(long, default_value = "data/general/xstest_prompts.csv")]
    pub xstest_data: PathBuf,
}

impl GeneralArgs {
    /// The sets the arguments ask for (`None` with `--no-general`), drawn with `seed`.
    pub fn sets(&self, seed: u64) -> Result<Option<GeneralSets>> {
        if self.no_general {
            return Ok(None);
        }
        let config = GeneralConfig {
            every: self.general_every,
            qa: self.general_qa,
            sum: self.general_sum,
            over_refusal: self.over_refusal,
            seed,
            max_new_tokens: self.general_max_new_tokens,
            ..GeneralConfig::default()
        };
        let paths = GeneralPaths {
            qa: Some(self.qa_data.clone()),
            sum: Some(self.sum_data.clone()),
            over_refusal: Some(self.xstest_data.clone()),
        };
        GeneralSets::load(config, &paths).map(Some).map_err(|e| {
            anyhow!(
                "{e}\n(`cargo xtask general-data` fetches the general sets; `--no-general` runs without them)"
            )
        })
    }
}

/// How evaluation inputs are shown to the model, and what a run keeps besides its records.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// How evaluation inputs are shown to the model: `raw` text (the reference) or the `chat` template.
    #[arg(long, default_value_t = PromptLayout::Raw)]
    pub prompt_layout: PromptLayout,
    /// Deprecated spelling of --prompt-layout.
    #[arg(long, hide = true)]
    pub prompt_style: Option<PromptLayout>,
    /// Where the suffix system prompt goes (default: post-edit only, neither for prompt-only methods).
    #[arg(long)]
    pub suffix_policy: Option<SuffixPolicy>,
    /// Cache of pre-edit responses shared between runs.
    #[arg(long)]
    pub pre_edit_cache: Option<PathBuf>,
    /// NLTK's `punkt_tab/english` directory for exact fluency (`cargo xtask punkt`); else the rule splitter.
    #[arg(long, default_value = "models/punkt_tab/english")]
    pub punkt: PathBuf,
}

impl InputArgs {
    /// The harness settings of a run into `out`: the protocol and decoding `decoding` names, these inputs,
    /// `seed`, and the suffix policy's default for a method that only rewrites prompts or not.
    pub fn settings(
        &self,
        out: &std::path::Path,
        decoding: &DecodingArgs,
        seed: u64,
        prompt_only: bool,
    ) -> Result<HarnessSettings> {
        let mut settings = HarnessSettings::for_protocol(out, decoding.protocol()?);
        settings.decoding = decoding.decoding(&settings.protocol, seed);
        settings.prompt_layout = match self.prompt_style {
            Some(layout) => {
                eprintln!("note: --prompt-style is deprecated; use --prompt-layout");
                layout
            }
            None => self.prompt_layout,
        };
        settings.suffix_policy =
            self.suffix_policy.unwrap_or(SuffixPolicy::default_for(prompt_only));
        settings.pre_edit_cache = self.pre_edit_cache.clone();
        settings.seed = seed;
        settings.punkt_dir = self.punkt.is_dir().then(|| self.punkt.clone());
        Ok(settings)
    }
}
