//! Which model dtypes a method may compute gradients in.

use detox_runtime::CausalLm;
use tch::Kind;

use crate::error::{EditError, Result};

/// Refuses a model loaded in f16 before `method` does any work: without loss scaling its small gradients flush
/// to zero and the edit silently does nothing (bf16 shares fp32's exponent range and is accepted).
pub(crate) fn refuse_half(model: &CausalLm, method: &'static str) -> Result<()> {
    match model.kind() {
        Kind::Half => {
            Err(EditError::UnsupportedDtype { method, dtype: format!("{:?}", Kind::Half) })
        }
        _ => Ok(()),
    }
}
