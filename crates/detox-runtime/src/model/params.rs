//! Parameters addressed by their Hugging Face names, with snapshots for exact restore.

use std::collections::HashMap;

use tch::Tensor;

use crate::error::{Error, Result, TorchContext};

/// Index of a parameter inside a [`ParamStore`].
pub(crate) type ParamId = usize;

/// The model's tensors in checkpoint order, addressable by name.
#[derive(Debug, Default)]
pub(crate) struct ParamStore {
    names: Vec<String>,
    tensors: Vec<Tensor>,
    index: HashMap<String, ParamId>,
}

impl ParamStore {
    /// Moves `name` out of `source` into the store.
    pub fn take(&mut self, source: &mut HashMap<String, Tensor>, name: &str) -> Result<ParamId> {
        let tensor = source
            .remove(name)
            .ok_or_else(|| Error::MissingTensors { names: vec![name.into()] })?;
        Ok(self.push(name, tensor))
    }

    /// Adds a tensor under `name`.
    pub fn push(&mut self, name: &str, tensor: Tensor) -> ParamId {
        let id = self.tensors.len();
        self.names.push(name.to_string());
        self.tensors.push(tensor);
        self.index.insert(name.to_string(), id);
        id
    }

    pub fn get(&self, id: ParamId) -> &Tensor {
        &self.tensors[id]
    }

    pub fn id(&self, name: &str) -> Result<ParamId> {
        self.index.get(name).copied().ok_or_else(|| Error::UnknownParameter { name: name.into() })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn set(&mut self, id: ParamId, tensor: Tensor) -> Tensor {
        std::mem::replace(&mut self.tensors[id], tensor)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(self.tensors.iter())
    }
}

/// Deep copies of some parameters, taken by [`crate::model::CausalLm::snapshot`] and put back bit-exactly by
/// [`crate::model::CausalLm::restore`].
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) entries: Vec<(String, Tensor)>,
}

impl Snapshot {
    /// The names of the saved parameters.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// The saved copy of `name`, if it is part of the snapshot.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub(crate) fn take(store: &ParamStore, names: &[&str]) -> Result<Self> {
        let entries = names
            .iter()
            .map(|name| {
                let t = store.get(store.id(name)?);
                let copy = deep_copy(t)?;
                Ok((name.to_string(), copy))
            })
            .collect::<Result<_>>()?;
        Ok(Self { entries })
    }
}

/// An independent copy of `t` (same device, dtype and values), detached from any autograd graph.
pub(crate) fn deep_copy(t: &Tensor) -> Result<Tensor> {
    t.f_detach()
        .ctx("detaching")?
        .f_to_device_(t.device(), t.kind(), false, true)
        .ctx("copying tensor")
}
