//! How many records the batched protocol processes together ([`crate::settings::HarnessSettings::batch_records`]):
//! a number the user chose, checked against the GPU's free memory, or as many as that memory holds.

use std::str::FromStr;

use detox_runtime::memory::{device_memory, fit_count, generation_row_bytes};
use detox_runtime::CausalLm;
use tch::Device;

use crate::error::{EvalError, Result};
use crate::settings::Decoding;

/// Records processed together when the device cannot report its free memory (the CPU) and none were asked for.
pub const CPU_RECORDS: usize = 8;

/// Share of free memory kept in reserve for the allocator's fragmentation and libtorch's workspaces.
const RESERVE: f64 = 0.1;

/// The most records `auto` chooses, however much memory is free.
const MOST_RECORDS: usize = 256;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchRecords {
    /// As many as free memory holds ([`CPU_RECORDS`] on the CPU).
    Auto,
    /// Exactly this many (at least 1); refused when a GPU cannot hold them.
    Fixed(usize),
}

impl FromStr for BatchRecords {
    type Err = EvalError;

    /// `auto` or a positive number.
    fn from_str(text: &str) -> Result<Self> {
        match text.trim() {
            "auto" => Ok(Self::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Self::Fixed(n)),
                _ => Err(EvalError::InvalidSetting {
                    setting: "records per batch".into(),
                    reason: format!("expected a positive number or `auto`, got {text:?}"),
                }),
            },
        }
    }
}

/// The chosen number of records and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchPlan {
    /// Records processed together.
    pub records: usize,
    /// How the number was reached, for printing.
    pub reason: String,
    /// Something the user should hear about the choice (printed as a warning), e.g. a GPU whose free memory
    /// could not be read, so that `auto` fell back to [`CPU_RECORDS`] without knowing what fits.
    pub warning: Option<String>,
}

/// Memory one record of the batched protocol needs on `model`'s device: five generation rows, the batched DINM
/// edit's share, and the record's edited weight during generation, in bytes.
pub fn bytes_per_record(model: &CausalLm, decoding: &Decoding) -> u64 {
    let (config, kind) = (model.config(), model.kind());
    // Unbounded inputs are sized at the longest the model's context allows: the worst case, not the typical.
    let prompt = decoding.input_bound(config.max_position_embeddings as usize);
    let new = decoding.max_new_tokens;
    let weight =
        (config.hidden_size * config.intermediate_size) as u64 * kind.elt_size_in_bytes() as u64;
    5 * generation_row_bytes(config, kind, prompt, new)
        + detox_edit::dinm::memory_per_record(config, kind, prompt)
        + weight
}

/// Resolves `asked` for `model` and `decoding`: on a GPU, checked against (or, for [`BatchRecords::Auto`], chosen
/// from) its free memory; elsewhere the number asked for, or [`CPU_RECORDS`].
pub fn plan_batch(model: &CausalLm, decoding: &Decoding, asked: BatchRecords) -> Result<BatchPlan> {
    let Some(memory) = device_memory(model.device()) else {
        return Ok(plan_without_memory(model.device(), asked));
    };
    let per_record = bytes_per_record(model, decoding);
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    let fits = fit_count(
        "one record of the batched protocol",
        per_record,
        memory.free,
        RESERVE,
        MOST_RECORDS,
    )?;
    match asked {
        BatchRecords::Fixed(n) if n > fits => Err(EvalError::BatchTooLarge {
            records: n,
            need_gib: gib(n as u64 * per_record),
            free_gib: gib(memory.free),
            fits,
        }),
        BatchRecords::Fixed(records) => Ok(BatchPlan {
            records,
            reason: format!("as asked; {fits} would fit in {:.1} GiB free", gib(memory.free)),
            warning: None,
        }),
        BatchRecords::Auto => Ok(BatchPlan {
            records: fits,
            reason: format!(
                "{:.1} GiB free, about {:.2} GiB per record",
                gib(memory.free),
                gib(per_record)
            ),
            warning: None,
        }),
    }
}

/// The plan where `device` does not report its free memory: the number asked for, or [`CPU_RECORDS`]; on a GPU
/// with a warning, since nothing was checked.
fn plan_without_memory(device: Device, asked: BatchRecords) -> BatchPlan {
    let warning = device.is_cuda().then(|| {
        format!(
            "the free memory of {device:?} could not be read (the CUDA runtime library was not found in this \
             process), so the number of records per batch is not checked against it{}",
            match asked {
                BatchRecords::Auto => format!(
                    "; `auto` falls back to {CPU_RECORDS}: pass a number to choose another"
                ),
                BatchRecords::Fixed(_) => String::new(),
            }
        )
    });
    match asked {
        BatchRecords::Fixed(records) => BatchPlan { records, reason: "as asked".into(), warning },
        BatchRecords::Auto => BatchPlan {
            records: CPU_RECORDS,
            reason: "the device does not report free memory".into(),
            warning,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_numbers_parse_and_bad_ones_are_named() {
        assert_eq!("auto".parse::<BatchRecords>().unwrap(), BatchRecords::Auto);
        assert_eq!("4".parse::<BatchRecords>().unwrap(), BatchRecords::Fixed(4));
        for bad in ["0", "-1", "many", ""] {
            let err = bad.parse::<BatchRecords>().unwrap_err().to_string();
            assert!(err.contains("positive number or `auto`"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_gpu_without_memory_figures_is_warned_about_and_the_cpu_is_not() {
        let plan = plan_without_memory(Device::Cuda(0), BatchRecords::Auto);
        assert_eq!(plan.records, CPU_RECORDS);
        let warning = plan.warning.expect("a warning for the GPU");
        assert!(warning.contains("falls back to 8"), "{warning}");
        let fixed = plan_without_memory(Device::Cuda(0), BatchRecords::Fixed(3));
        assert_eq!(fixed.records, 3);
        assert!(fixed.warning.is_some_and(|w| !w.contains("falls back")));
        let cpu = plan_without_memory(Device::Cpu, BatchRecords::Auto);
        assert_eq!((cpu.records, cpu.warning), (CPU_RECORDS, None));
    }
}
