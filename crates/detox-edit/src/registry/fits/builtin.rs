//! The fits this crate implements, as the registry lists them: their options and configuring functions (the
//! fits themselves are in [`super::trained`] and [`super::analyses`]), and the option readers they share.

use super::analyses::{configure_profs, configure_steering, configure_surgery};
use super::trained::{
    configure_anti_expert, configure_dpo, configure_expert, configure_ext_sub, configure_mend,
    configure_sft,
};

use detox_runtime::PromptLayout;

use super::FitSpec;
use crate::error::Result;
use crate::registry::{MethodArgs, OptionSpec};

const fn option(name: &'static str, default: &'static str, help: &'static str) -> OptionSpec {
    OptionSpec { name, default, help }
}

const ADAPTER: OptionSpec = option("adapter", "lora", "`lora` adapters or `full` parameters");
const RANK: OptionSpec = option("rank", "8", "LoRA rank");
const ALPHA: OptionSpec = option("alpha", "16", "LoRA alpha");
const MODULES: OptionSpec = option("modules", "q_proj,v_proj", "trained modules, comma-separated");
const LAYERS: OptionSpec = option("layers", "-", "trained layers, comma-separated (default: all)");
const EPOCHS: OptionSpec = option("epochs", "3", "passes over the data");
const BATCH_SIZE: OptionSpec = option("batch_size", "4", "pairs per step");
const MAX_LENGTH: OptionSpec = option("max_length", "512", "most tokens of prompt + response");
const FORMAT: OptionSpec = option(
    "prompt_layout",
    "chat",
    "how prompts are laid out before responses: the `chat` template, or `raw` text and a space",
);
const SEED: OptionSpec = option("seed", "0", "seed of the data order and initialisation");
const STOP_AFTER: OptionSpec =
    option("stop_after", "-", "stop after this many steps in total (the run resumes later)");

/// The options of the four adapter trainers (SFT, expert, anti-expert; DPO adds `beta`).
macro_rules! trainer_options {
    ($lr:literal $(, $extra:expr)*) => {
        &[
            ADAPTER,
            RANK,
            ALPHA,
            MODULES,
            LAYERS,
            option("lr", $lr, "learning rate"),
            EPOCHS,
            BATCH_SIZE,
            MAX_LENGTH,
            FORMAT,
            SEED,
            STOP_AFTER,
            $($extra,)*
        ]
    };
}

/// The built-in fits, in the order user interfaces list them.
pub(super) const FITS: &[FitSpec] = &[
    FitSpec {
        name: "sft",
        description: "supervised fine-tuning on the safe responses (`trained` applies it)",
        options: trainer_options!("1e-4"),
        configure: configure_sft,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "dpo",
        description: "direct preference optimisation on (safe, unsafe) pairs (`trained` applies it)",
        options: trainer_options!("5e-5", option("beta", "0.1", "DPO's beta")),
        configure: configure_dpo,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "expert",
        description: "Ext-Sub's expert module: SFT on the safe responses",
        options: trainer_options!("1e-4"),
        configure: configure_expert,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "anti-expert",
        description: "Ext-Sub's anti-expert module: SFT on the unsafe responses",
        options: trainer_options!("1e-4"),
        configure: configure_anti_expert,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "ext-sub",
        description: "combine an expert and an anti-expert artefact into Ext-Sub's edit (no model needed)",
        options: &[
            option("expert", "-", "the expert artefact (`expert` fit)"),
            option("anti_expert", "-", "the anti-expert artefact (`anti-expert` fit)"),
            option("lambda", "1", "weight of the subtracted deficiency"),
        ],
        configure: configure_ext_sub,
        evaluated_by: "trained",
    },
    FitSpec {
        name: "mend",
        description: "meta-train MEND's hyper-network (`mend` applies it)",
        options: &[
            option("modules", "gate_proj,up_proj,down_proj", "edited modules, comma-separated"),
            option("layers", "-", "edited layers, comma-separated (default: the last three)"),
            option("rank", "1920", "hidden width of the hyper-network"),
            option("lr", "1e-6", "learning rate"),
            option("epochs", "1", "passes over the data"),
            MAX_LENGTH,
            FORMAT,
            SEED,
            STOP_AFTER,
        ],
        configure: configure_mend,
        evaluated_by: "mend",
    },
    FitSpec {
        name: "profs",
        description: "fit ProFS's toxic subspaces from safe and unsafe responses, no gradients (`profs` applies it)",
        options: &[
            option("layers", "-", "edited layers, comma-separated (default: the upper half)"),
            option("rank", "2", "the subspace dimension k (2 in the reference; 10 in its 7B configurations)"),
            option(
                "centring",
                "true",
                "project the preferred embeddings' top direction out of the differences first",
            ),
        ],
        configure: configure_profs,
        evaluated_by: "profs",
    },
    FitSpec {
        name: "steering",
        description: "fit activation-steering vectors: mean safe - unsafe activations per layer (`steering` applies it)",
        options: &[FORMAT, MAX_LENGTH],
        configure: configure_steering,
        evaluated_by: "steering",
    },
    FitSpec {
        name: "surgery",
        description: "Model Surgery: train the toxicity probe and select the gate rows to shift (`surgery` applies it)",
        options: &[
            option("lr", "1e-4", "the probe's learning rate"),
            option("epochs", "20", "passes of the probe over the texts"),
            option("batch_size", "16", "texts per probe step (the authors' script)"),
            option("holdout", "0.1", "share of the texts held out to measure the probe"),
            MAX_LENGTH,
            SEED,
            option("rows", "-", "gate rows shifted (default: 4 × the hidden size)"),
            option("alpha", "1.08", "shift strength"),
        ],
        configure: configure_surgery,
        evaluated_by: "surgery",
    },
];

pub(super) fn format(args: &MethodArgs, fit: &str) -> Result<PromptLayout> {
    Ok(args.get::<PromptLayout>(fit, "prompt_layout")?.unwrap_or(PromptLayout::ChatTemplate))
}

pub(super) fn max_length(args: &MethodArgs, fit: &str) -> Result<usize> {
    Ok(args.get_count(fit, "max_length", 2)?.unwrap_or(512))
}

pub(super) fn seed(args: &MethodArgs, fit: &str) -> Result<u64> {
    Ok(args.get::<u64>(fit, "seed")?.unwrap_or(0))
}
