//! Weight deltas: what an edit changed, exportable as safetensors and applicable to a model later.

use std::path::Path;

use detox_runtime::{CausalLm, SafetensorsFiles, Snapshot};
use tch::{Device, Kind, Tensor};

use crate::error::{torch, EditError, Result};

/// Per-tensor differences `W_edited - W_original` in fp32, keyed by Hugging Face parameter name.
#[derive(Debug, Default)]
pub struct Delta {
    entries: Vec<(String, Tensor)>,
}

impl Delta {
    /// An empty delta.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or accumulates onto) the difference for `name`.
    ///
    /// # Shapes
    /// `diff` has the parameter's shape; it is stored in fp32.
    pub fn add(&mut self, name: &str, diff: &Tensor) -> Result<()> {
        let diff = diff
            .f_detach()
            .map_err(torch("delta"))?
            .f_to_kind(Kind::Float)
            .map_err(torch("delta"))?;
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some((_, existing)) => {
                *existing = existing.f_add(&diff).map_err(torch("accumulating delta"))?
            }
            None => self.entries.push((
                name.to_string(),
                diff.f_to_device_(diff.device(), Kind::Float, false, true)
                    .map_err(torch("delta copy"))?,
            )),
        }
        Ok(())
    }

    /// A second handle on the same differences (no copy): deltas are never changed in place, so sharing is safe.
    pub fn shallow_clone(&self) -> Self {
        Self { entries: self.entries.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect() }
    }

    /// The parameter names the delta touches.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// The difference for `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Whether the delta touches nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Frobenius norm over all entries.
    pub fn norm(&self) -> Result<f64> {
        let mut sq = 0.0;
        for (_, t) in &self.entries {
            let n = t
                .f_norm()
                .map_err(torch("delta norm"))?
                .f_double_value(&[])
                .map_err(torch("delta norm"))?;
            sq += n * n;
        }
        Ok(sq.sqrt())
    }

    /// Writes the delta as a safetensors file (one fp32 tensor per parameter name), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> =
            self.entries.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        detox_runtime::weights::save_safetensors(path, &tensors)?;
        Ok(())
    }

    /// Reads a delta written by [`Delta::save`].
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_onto(path, Device::Cpu)
    }

    /// Reads a delta written by [`Delta::save`] onto `device`.
    pub(crate) fn load_onto(path: &Path, device: Device) -> Result<Self> {
        let files = SafetensorsFiles::open_files(&[path.to_path_buf()])?;
        let mut delta = Delta::new();
        for name in files.names() {
            let t = files.load(name, device, Some(Kind::Float))?;
            delta.entries.push((name.to_string(), t));
        }
        if delta.is_empty() {
            return Err(EditError::Artefact {
                path: path.to_path_buf(),
                reason: "holds no tensors".into(),
            });
        }
        Ok(delta)
    }

    /// Adds the delta to the model's weights (computed in fp32, stored in the model's dtype) and returns a
    /// snapshot of the touched parameters so that [`CausalLm::restore`] undoes it exactly. A projection bias the
    /// model lacks (a steering vector's) is attached as zero first, and the restore detaches it.
    pub fn apply(&self, model: &mut CausalLm) -> Result<Snapshot> {
        let names: Vec<&str> = self.names().collect();
        let snapshot = model.snapshot(&names)?;
        for (name, diff) in &self.entries {
            if snapshot.get(name).is_none() {
                model.attach_bias(name)?;
            }
            let current = model.parameter(name)?;
            if current.size() != diff.size() {
                return Err(detox_runtime::Error::ShapeMismatch {
                    name: name.clone(),
                    expected: current.size(),
                    actual: diff.size(),
                }
                .into());
            }
            let edited = add_in_fp32(current, diff, model.kind())?;
            drop(model.replace_parameter(name, edited)?);
        }
        Ok(snapshot)
    }
}

/// `weight + diff`, added in fp32 on `weight`'s device and cast to `kind`: how every edit, trained adapter and
/// stored delta lands on a model weight, so that applying the same difference twice gives the same bits.
///
/// # Shapes
/// `weight` and `diff` have the same shape (any float dtypes; `diff` on any device); returns that shape in `kind`
/// on `weight`'s device. Gradients flow through both operands.
pub(crate) fn add_in_fp32(weight: &Tensor, diff: &Tensor, kind: Kind) -> Result<Tensor> {
    weight
        .f_to_kind(Kind::Float)
        .and_then(|w| w.f_add(&diff.f_to_device(weight.device())?))
        .and_then(|w| w.f_to_kind(kind))
        .map_err(torch("adding a weight difference"))
}
