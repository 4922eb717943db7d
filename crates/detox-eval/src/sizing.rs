//! How many records the batched protocol processes together ([`crate::harness::HarnessSettings::batch_records`]):
//! a number the user chose, checked against the GPU's free memory, or as many as that memory holds.

use std::str::FromStr;

use detox_runtime::memory::{device_memory, fit_count, generation_row_bytes};
use detox_runtime::CausalLm;

use crate::error::{EvalError, Result};
use crate::respond::Decoding;

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
                _ => Err(EvalError::Invalid(format!(
                    "records per batch: expected a positive number or `auto`, got {text:?}"
                ))),
            },
        }
    }
}

/// The chosen number of records and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    /// Records processed together.
    pub records: usize,
    /// How the number was reached, for printing.
    pub reason: String,
}

/// Memory one record of the batched protocol needs on `model`'s device: five generation rows, the batched DINM
/// edit's share, and the record's edited weight during generation, in bytes.
pub fn bytes_per_record(model: &CausalLm, decoding: &Decoding) -> u64 {
    let (config, kind) = (model.config(), model.kind());
    let (prompt, new) = (decoding.max_input_tokens, decoding.max_new_tokens);
    let weight =
        (config.hidden_size * config.intermediate_size) as u64 * kind.elt_size_in_bytes() as u64;
    5 * generation_row_bytes(config, kind, prompt, new)
        + detox_edit::dinm::batch::memory_per_record(config, kind, prompt)
        + weight
}

/// Resolves `asked` for `model` and `decoding`: on a GPU, checked against (or, for [`BatchRecords::Auto`], chosen
/// from) its free memory; elsewhere the number asked for, or [`CPU_RECORDS`].
pub fn plan_batch(model: &CausalLm, decoding: &Decoding, asked: BatchRecords) -> Result<BatchPlan> {
    let Some(memory) = device_memory(model.device()) else {
        return Ok(match asked {
            BatchRecords::Fixed(records) => BatchPlan { records, reason: "as asked".into() },
            BatchRecords::Auto => BatchPlan {
                records: CPU_RECORDS,
                reason: "the device does not report free memory".into(),
            },
        });
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
        BatchRecords::Fixed(n) if n > fits => Err(EvalError::Invalid(format!(
            "{n} records per batch need about {:.1} GiB but {:.1} GiB of the GPU is free (at most {fits} \
             records fit)",
            gib(n as u64 * per_record),
            gib(memory.free)
        ))),
        BatchRecords::Fixed(records) => Ok(BatchPlan {
            records,
            reason: format!("as asked; {fits} would fit in {:.1} GiB free", gib(memory.free)),
        }),
        BatchRecords::Auto => Ok(BatchPlan {
            records: fits,
            reason: format!(
                "{:.1} GiB free, about {:.2} GiB per record",
                gib(memory.free),
                gib(per_record)
            ),
        }),
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
}
