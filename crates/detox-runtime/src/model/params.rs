//! Parameters addressed by their Hugging Face names, with snapshots for exact restore.

use std::collections::HashMap;

use tch::Tensor;

use crate::error::{Error, Result, TorchContext};

/// Index of a parameter inside a [`ParamStore`].
pub(crate) type ParamId = usize;

/// The model's tensors in checkpoint order, addressable by name, and the low-rank side paths placed beside
/// some projections.
///
/// Ids are slots that never move: a removed parameter (a bias attached at run time and detached again) leaves
/// its slot empty, and attaching the same name again reuses it.
#[derive(Debug, Default)]
pub(crate) struct ParamStore {
    /// The name of each slot, removed ones included.
    slot_names: Vec<String>,
    tensors: Vec<Tensor>,
    index: HashMap<String, ParamId>,
    /// The names of the present parameters, in the order they were added.
    names: Vec<String>,
    low_rank: HashMap<ParamId, LowRank>,
}

/// A low-rank side path beside a projection (a LoRA adapter kept apart from the weight): the projection's output
/// gains `scale · (x Aᵀ) Bᵀ`, computed in `A`'s dtype and added in fp32 before the result is cast back to the
/// model dtype, as PEFT's LoRA layers do. Unlike a merge into a bf16 weight, a change smaller than half a bf16
/// step of the weight still reaches the output.
#[derive(Debug)]
pub struct LowRank {
    /// `[rank, in]`.
    pub a: Tensor,
    /// `[out, rank]`.
    pub b: Tensor,
    /// The factor on `B A` (LoRA's `alpha / rank`).
    pub scale: f64,
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
        let id = match self.slot_names.iter().position(|n| n == name) {
            Some(id) => {
                self.tensors[id] = tensor;
                id
            }
            None => {
                self.slot_names.push(name.to_string());
                self.tensors.push(tensor);
                self.tensors.len() - 1
            }
        };
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), id);
        id
    }

    /// Removes `name`, returning its tensor; its slot stays reserved for the name.
    pub fn remove(&mut self, name: &str) -> Result<Tensor> {
        let id = self.id(name)?;
        self.index.remove(name);
        self.names.retain(|n| n != name);
        Ok(std::mem::replace(&mut self.tensors[id], Tensor::new()))
    }

    /// The name of slot `id`.
    pub fn name(&self, id: ParamId) -> &str {
        &self.slot_names[id]
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

    pub fn low_rank(&self, id: ParamId) -> Option<&LowRank> {
        self.low_rank.get(&id)
    }

    pub fn set_low_rank(&mut self, id: ParamId, path: LowRank) -> Option<LowRank> {
        self.low_rank.insert(id, path)
    }

    pub fn remove_low_rank(&mut self, id: ParamId) -> Option<LowRank> {
        self.low_rank.remove(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(|n| (n.as_str(), &self.tensors[self.index[n]]))
    }
}

/// Deep copies of some parameters, taken by [`crate::model::CausalLm::snapshot`] and put back bit-exactly by
/// [`crate::model::CausalLm::restore`].
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) entries: Vec<(String, Tensor)>,
    /// Projection biases the model did not have when the snapshot was taken: restore detaches them again.
    pub(crate) absent: Vec<String>,
}

impl Snapshot {
    /// The names of the saved parameters.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Whether the snapshot restores `name`: a saved copy, or a bias that was absent and is detached on restore.
    pub fn covers(&self, name: &str) -> bool {
        self.get(name).is_some() || self.absent.iter().any(|n| n == name)
    }

    /// The saved copy of `name`, if it is part of the snapshot.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Copies of `names` (present in `store`); `absent` are attachable biases missing from it.
    pub(crate) fn take(store: &ParamStore, names: &[&str], absent: Vec<String>) -> Result<Self> {
        let entries = names
            .iter()
            .map(|name| {
                let t = store.get(store.id(name)?);
                let copy = deep_copy(t)?;
                Ok((name.to_string(), copy))
            })
            .collect::<Result<_>>()?;
        Ok(Self { entries, absent })
    }
}

/// An independent copy of `t` (same device, dtype and values), detached from any autograd graph.
pub(crate) fn deep_copy(t: &Tensor) -> Result<Tensor> {
    t.f_detach()
        .ctx("detaching")?
        .f_to_device_(t.device(), t.kind(), false, true)
        .ctx("copying tensor")
}
