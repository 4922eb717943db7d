//! Digests of a model's weights, the evidence that an edit was undone bit for bit.
//!
//! Every test that proves an exact restore compares digests taken before the edit and after the restore; they
//! all hash the same bytes in the same order through these functions, so a digest taken in one crate's tests
//! means the same as one taken in another's.

use sha2::{Digest, Sha256};
use tch::Device;

use crate::error::{Result, TorchContext};
use crate::model::CausalLm;

/// The SHA-256 of each parameter's raw bytes (in its own dtype, row-major), with its name, in the order of
/// [`CausalLm::parameter_names`]; the per-tensor form says which tensor differs.
pub fn parameter_digests(model: &CausalLm) -> Result<Vec<(String, [u8; 32])>> {
    model
        .parameter_names()
        .iter()
        .map(|name| Ok((name.clone(), Sha256::digest(raw_bytes(model, name)?).into())))
        .collect()
}

/// One SHA-256 over every parameter, each as its name followed by its raw bytes, in the order of
/// [`CausalLm::parameter_names`]: equal digests mean the same parameters with bit-identical values.
pub fn weights_digest(model: &CausalLm) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    for name in model.parameter_names() {
        hasher.update(name.as_bytes());
        hasher.update(raw_bytes(model, name)?);
    }
    Ok(hasher.finalize().into())
}

/// The parameter's values as bytes, copied to the host (a GPU tensor cannot be read in place).
fn raw_bytes(model: &CausalLm, name: &str) -> Result<Vec<u8>> {
    let tensor = model
        .parameter(name)?
        .f_to_device(Device::Cpu)
        .ctx("weights digest")?
        .f_contiguous()
        .ctx("weights digest")?;
    let numel = tensor.numel();
    let mut bytes = vec![0u8; numel * tensor.kind().elt_size_in_bytes()];
    tensor.f_copy_data_u8(&mut bytes, numel).ctx("weights digest")?;
    Ok(bytes)
}
