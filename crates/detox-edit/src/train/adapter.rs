//! What a training run changes: chosen weights in full, or low-rank adapters on them (LoRA, Hu et al., 2022).
//!
//! Adapters are applied as effective weights `W0 + (alpha / rank) · B A` placed into the model before every
//! forward pass, so the runtime needs no adapter-aware layers and the result is the same function PEFT computes.

use std::path::Path;

use detox_runtime::{CausalLm, LowRank, SafetensorsFiles};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::delta::Delta;
use crate::error::{torch, EditError, Result};

/// How the chosen weights are trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AdapterKind {
    /// Every entry of the chosen weights is trained (fp32 master copies).
    Full,
    /// Low-rank adapters: `ΔW = (alpha / rank) · B A` with `A: [rank, in]`, `B: [out, rank]`; `B` starts at zero
    /// and `A` uniform in `±1/sqrt(in)` (PEFT's initialisation), so training starts from the unchanged model.
    Lora {
        /// The adapter rank.
        rank: i64,
        /// The scale numerator.
        alpha: f64,
    },
}

impl AdapterKind {
    /// LoRA with rank 8 and alpha 16, the common PEFT setting.
    pub fn lora_default() -> Self {
        Self::Lora { rank: 8, alpha: 16.0 }
    }

    fn check(&self) -> Result<()> {
        match *self {
            Self::Full => Ok(()),
            Self::Lora { rank, alpha } if rank > 0 && alpha.is_finite() && alpha > 0.0 => Ok(()),
            Self::Lora { rank, alpha } => Err(EditError::InvalidConfig {
                method: "LoRA".into(),
                reason: format!("needs a positive rank and alpha (got rank {rank}, alpha {alpha})"),
            }),
        }
    }
}

/// The parameter names of `model` ending in `.{module}.weight` for any of `modules` (e.g. `q_proj`,
/// `down_proj`), restricted to `layers` when given, in checkpoint order. In a fused checkpoint (Phi-3) `q_proj`,
/// `k_proj` and `v_proj` name `qkv_proj`, `gate_proj` and `up_proj` name `gate_up_proj`. A module that matches
/// nothing is an error naming it.
pub fn target_parameters(
    model: &CausalLm,
    modules: &[&str],
    layers: Option<&[usize]>,
) -> Result<Vec<String>> {
    let in_layers = |name: &str| match layers {
        None => true,
        Some(ls) => ls.iter().any(|l| name.starts_with(&format!("model.layers.{l}."))),
    };
    // A fused checkpoint (Phi-3) keeps q/k/v in `qkv_proj` and gate/up in `gate_up_proj`: a request for the
    // separate projections targets the tensor that holds them.
    let fused = model.config().fused_projections;
    let mut resolved: Vec<&str> = Vec::with_capacity(modules.len());
    for module in modules {
        let module = match (fused, *module) {
            (true, "q_proj" | "k_proj" | "v_proj") => "qkv_proj",
            (true, "gate_proj" | "up_proj") => "gate_up_proj",
            (_, module) => module,
        };
        if !resolved.contains(&module) {
            resolved.push(module);
        }
    }
    let matches = |n: &str, m: &str| n.ends_with(&format!(".{m}.weight")) && in_layers(n);
    if let Some(missing) =
        resolved.iter().find(|m| !model.parameter_names().iter().any(|n| matches(n, m)))
    {
        return Err(EditError::InvalidConfig {
            method: "training".into(),
            reason: format!(
                "no parameter of this {} model matches the module `{missing}` in layers {layers:?}",
                model.config().architecture.model_type()
            ),
        });
    }
    Ok(model
        .parameter_names()
        .iter()
        .filter(|n| resolved.iter().any(|m| matches(n, m)))
        .cloned()
        .collect())
}

#[derive(Debug)]
struct Entry {
    name: String,
    /// The weight before training, in the model dtype, on the parameter's device.
    base: Tensor,
    /// Full: `[W]` (fp32 master copy). LoRA: `[A, B]` (fp32).
    factors: Vec<Tensor>,
}

/// The trainable tensors of a run and how they combine with the frozen weights.
#[derive(Debug)]
pub struct Adapters {
    kind: AdapterKind,
    entries: Vec<Entry>,
}

impl Adapters {
    /// Fresh adapters on `targets` of `model`. LoRA's `A` is drawn from a SplitMix64 generator seeded with `seed`, so it does not depend on
    /// libtorch's global generator or its version.
    pub fn new(model: &CausalLm, targets: &[String], kind: AdapterKind, seed: u64) -> Result<Self> {
        kind.check()?;
        if targets.is_empty() {
            return Err(EditError::EmptyInput { what: "the parameters to train".into() });
        }
        // A generator of our own: libtorch's global one is shared with every other thread of the process.
        let mut rng = safeedit::SplitMix64::new(seed);
        let mut entries = Vec::with_capacity(targets.len());
        for name in targets {
            let base = model
                .parameter(name)?
                .f_detach()
                .map_err(torch("reading a trained weight"))
                .and_then(|t| deep_copy(&t))?;
            let size = base.size();
            if size.len() != 2 {
                return Err(EditError::ShapeMismatch {
                    what: format!("`{name}` (only matrices can be trained)"),
                    expected: "[out, in]".into(),
                    got: size.clone(),
                });
            }
            let device = base.device();
            let factors = match kind {
                AdapterKind::Full => vec![base
                    .f_to_device_(device, Kind::Float, false, true)
                    .map_err(torch("fp32 master copy"))?],
                AdapterKind::Lora { rank, .. } => {
                    let bound = 1.0 / (size[1] as f64).sqrt();
                    let n = (rank * size[1]) as usize;
                    let values: Vec<f32> = (0..n)
                        .map(|_| {
                            // 53 random bits as a uniform in [0, 1), then scaled to ±bound.
                            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                            ((2.0 * u - 1.0) * bound) as f32
                        })
                        .collect();
                    let a = Tensor::from_slice(&values)
                        .f_view([rank, size[1]])
                        .map_err(torch("LoRA A"))?
                        .f_to_device(device)
                        .map_err(torch("LoRA A"))?;
                    let b = Tensor::f_zeros([size[0], rank], (Kind::Float, device))
                        .map_err(torch("LoRA B"))?;
                    vec![a, b]
                }
            };
            entries.push(Entry { name: name.clone(), base, factors });
        }
        let mut adapters = Self { kind, entries };
        adapters.set_requires_grad(true)?;
        Ok(adapters)
    }

    /// How the weights are trained.
    pub fn kind(&self) -> AdapterKind {
        self.kind
    }

    /// The trained parameter names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Every trainable tensor, in a fixed order (per entry: the master copy, or `A` then `B`).
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.entries.iter().flat_map(|e| e.factors.iter())
    }

    /// Mutable access to every trainable tensor, in the order of [`Adapters::tensors`].
    pub fn tensors_mut(&mut self) -> impl Iterator<Item = &mut Tensor> {
        self.entries.iter_mut().flat_map(|e| e.factors.iter_mut())
    }

    /// The names the trainable tensors are saved under: the parameter name for full training, PEFT's
    /// `{module}.lora_A.weight` / `{module}.lora_B.weight` for LoRA.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for e in &self.entries {
            match self.kind {
                AdapterKind::Full => names.push(e.name.clone()),
                AdapterKind::Lora { .. } => {
                    let module = e.name.trim_end_matches(".weight");
                    names.push(format!("{module}.lora_A.weight"));
                    names.push(format!("{module}.lora_B.weight"));
                }
            }
        }
        names
    }

    fn scale(&self) -> f64 {
        match self.kind {
            AdapterKind::Full => 1.0,
            AdapterKind::Lora { rank, alpha } => alpha / rank as f64,
        }
    }

    /// `ΔW` of one entry in fp32, inside the autograd graph.
    fn entry_delta(&self, e: &Entry) -> Result<Tensor> {
        match self.kind {
            AdapterKind::Full => e.factors[0]
                .f_sub(&e.base.f_to_kind(Kind::Float).map_err(torch("full delta"))?)
                .map_err(torch("full delta")),
            AdapterKind::Lora { .. } => e.factors[1]
                .f_mm(&e.factors[0])
                .map_err(torch("LoRA product"))?
                .f_mul_scalar(self.scale())
                .map_err(torch("LoRA scale")),
        }
    }

    /// Makes `model` compute with the trained tensors, carrying gradients to them, as every training forward pass
    /// needs: full training places the fp32 master copy cast to the model dtype; LoRA places `A` and `B` as a
    /// side path beside the frozen weight ([`CausalLm::set_low_rank`], as PEFT computes it), so that in bf16 an
    /// adapter's contribution is not lost to the weight's rounding.
    pub fn install(&self, model: &mut CausalLm) -> Result<()> {
        let kind = model.kind();
        for e in &self.entries {
            match self.kind {
                AdapterKind::Full => {
                    let effective = e.factors[0].f_to_kind(kind).map_err(torch("casting"))?;
                    drop(model.replace_parameter(&e.name, effective)?);
                }
                AdapterKind::Lora { .. } => {
                    let path = LowRank {
                        a: e.factors[0].shallow_clone(),
                        b: e.factors[1].shallow_clone(),
                        scale: self.scale(),
                    };
                    drop(model.set_low_rank(&e.name, path)?);
                }
            }
        }
        Ok(())
    }

    /// Puts the model from before training back, bit-exactly: the weights from before training, no side path.
    pub fn uninstall(&self, model: &mut CausalLm) -> Result<()> {
        for e in &self.entries {
            drop(model.remove_low_rank(&e.name)?);
            let copy = deep_copy(&e.base)?;
            drop(model.replace_parameter(&e.name, copy)?);
        }
        model.freeze_all()?;
        Ok(())
    }

    /// What training changed, `W_trained - W0` in fp32 per parameter.
    pub fn delta(&self) -> Result<Delta> {
        let _guard = tch::no_grad_guard();
        let mut delta = Delta::new();
        for e in &self.entries {
            delta.add(&e.name, &self.entry_delta(e)?)?;
        }
        Ok(delta)
    }

    /// The trainable tensors under their saved names (see [`Adapters::tensor_names`]), detached: what a trained
    /// artefact writes to its adapter file ([`super::TrainedArtefact`]).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.tensor_names().into_iter().zip(self.tensors()).map(|(n, t)| (n, t.detach())).collect()
    }

    /// Replaces the trainable tensors with those of the safetensors file at `path` (a trained artefact's
    /// adapter file); names and shapes must match.
    pub fn load_tensors(&mut self, path: &Path) -> Result<()> {
        let files = SafetensorsFiles::open_files(&[path.to_path_buf()])?;
        let names = self.tensor_names();
        for (name, t) in names.iter().zip(self.tensors_mut()) {
            if !files.contains(name) {
                return Err(EditError::Artefact {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{name}` is missing"),
                });
            }
            let loaded = files.load(name, t.device(), Some(Kind::Float))?;
            if loaded.size() != t.size() {
                return Err(EditError::ShapeMismatch {
                    what: format!("{}: tensor `{name}`", path.display()),
                    expected: format!("{:?}", t.size()),
                    got: loaded.size(),
                });
            }
            let _guard = tch::no_grad_guard();
            t.f_copy_(&loaded).map_err(torch("loading a trained tensor"))?;
        }
        Ok(())
    }

    fn set_requires_grad(&mut self, on: bool) -> Result<()> {
        for t in self.tensors_mut() {
            *t = t
                .f_detach()
                .map_err(torch("requires_grad"))?
                .f_set_requires_grad(on)
                .map_err(torch("requires_grad"))?;
        }
        Ok(())
    }
}

fn deep_copy(t: &Tensor) -> Result<Tensor> {
    t.f_to_device_(t.device(), t.kind(), false, true).map_err(torch("copying a weight"))
}
