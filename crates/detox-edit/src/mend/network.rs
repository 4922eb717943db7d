//! MEND's hyper-network (Mitchell et al., ICLR 2022): it maps the gradient factors of a weight to the factors of
//! a pseudo-gradient, whose outer product is the edit.
//!
//! For each weight shape there is one gradient transform, shared by the weights of that shape; each weight (a
//! "mode") gets its own scale and shift of the output and its own learnt edit learning rate. A transform
//! normalises `u` and `δ` with statistics measured on the training data, concatenates them and applies a
//! residual low-rank MLP, `x + W₂ relu(W₁ x + b₁) + b₂`, whose `W₂` starts at zero: at initialisation the
//! pseudo-gradient is the (normalised) gradient.

use std::path::Path;

use detox_runtime::{GradientFactors, SafetensorsFiles};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{torch, EditError, Result};

/// The shape of a hyper-network: the weights it edits and the hidden rank of its MLPs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkLayout {
    /// The edited weights, by Hugging Face name, each with its `[out, in]` shape.
    pub weights: Vec<(String, [i64; 2])>,
    /// The hidden width of each transform's MLP (MEND's `rank`, 1920 in the reference configurations; capped at
    /// the transform's input width).
    pub rank: i64,
    /// The initial per-weight edit learning rate (MEND's `edit_lr`).
    pub init_edit_lr: f64,
}

#[derive(Debug)]
struct Transform {
    shape: [i64; 2],
    /// `[rank, in + out]`, `[rank]`, `[in + out, rank]`, `[in + out]`.
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    /// `[modes, in + out]` each.
    mode_scale: Tensor,
    mode_shift: Tensor,
    /// Normalisation statistics of `[u, δ]`, `[in + out]` each (not trained).
    mean: Tensor,
    std: Tensor,
}

/// The hyper-network: its transforms, the per-weight edit learning rates and the normalisation statistics.
#[derive(Debug)]
pub struct MendNetwork {
    layout: NetworkLayout,
    transforms: Vec<Transform>,
    /// For each weight: its transform and its mode within it.
    routes: Vec<(usize, i64)>,
    /// `[weights]`.
    edit_lrs: Tensor,
}

impl MendNetwork {
    /// A fresh network for `layout` on `device`, with identity normalisation; `seed` draws `W₁`.
    pub fn new(layout: NetworkLayout, device: Device, seed: u64) -> Result<Self> {
        if layout.weights.is_empty()
            || layout.rank <= 0
            || !layout.init_edit_lr.is_finite()
            || layout.init_edit_lr <= 0.0
        {
            return Err(EditError::InvalidConfig {
                method: "MEND".into(),
                reason: "needs at least one weight, a positive rank and a positive edit lr".into(),
            });
        }
        let mut rng = safeedit::SplitMix64::new(seed);
        let mut shapes: Vec<[i64; 2]> = Vec::new();
        let mut routes = Vec::new();
        let mut modes: Vec<i64> = Vec::new();
        for (_, shape) in &layout.weights {
            let t = match shapes.iter().position(|s| s == shape) {
                Some(t) => t,
                None => {
                    shapes.push(*shape);
                    modes.push(0);
                    shapes.len() - 1
                }
            };
            routes.push((t, modes[t]));
            modes[t] += 1;
        }
        let f =
            |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("MEND initialisation"));
        let mut transforms = Vec::with_capacity(shapes.len());
        for (shape, &n_modes) in shapes.iter().zip(&modes) {
            let d = shape[0] + shape[1];
            let rank = layout.rank.min(d);
            let bound = 1.0 / (d as f64).sqrt();
            let values: Vec<f32> = (0..rank * d)
                .map(|_| {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect();
            let opts = (Kind::Float, device);
            transforms.push(Transform {
                shape: *shape,
                w1: f(Tensor::from_slice(&values)
                    .f_view([rank, d])
                    .and_then(|t| t.f_to_device(device)))?,
                b1: f(Tensor::f_zeros([rank], opts))?,
                w2: f(Tensor::f_zeros([d, rank], opts))?,
                b2: f(Tensor::f_zeros([d], opts))?,
                mode_scale: f(Tensor::f_ones([n_modes, d], opts))?,
                mode_shift: f(Tensor::f_zeros([n_modes, d], opts))?,
                mean: f(Tensor::f_zeros([d], opts))?,
                std: f(Tensor::f_ones([d], opts))?,
            });
        }
        let n = layout.weights.len() as i64;
        let edit_lrs = f(Tensor::f_full([n], layout.init_edit_lr, (Kind::Float, device)))?;
        let mut net = Self { layout, transforms, routes, edit_lrs };
        for t in net.trainable_mut() {
            *t = f(t.f_detach().and_then(|t| t.f_set_requires_grad(true)))?;
        }
        Ok(net)
    }

    /// The edited weights and the network's widths.
    pub fn layout(&self) -> &NetworkLayout {
        &self.layout
    }

    /// The learnt edit learning rate of each weight, in layout order.
    pub fn edit_lrs(&self) -> Result<Vec<f64>> {
        Vec::<f64>::try_from(
            self.edit_lrs
                .f_to_kind(Kind::Double)
                .map_err(torch("edit lrs"))?
                .f_to_device(Device::Cpu)
                .map_err(torch("edit lrs"))?,
        )
        .map_err(torch("edit lrs"))
    }

    /// Sets each transform's normalisation from gradient factors seen on training data: per feature mean and
    /// standard deviation of `[u, δ]` over every token (a floor of 1e-8 keeps constant features finite).
    pub fn set_normalisation(&mut self, samples: &[Vec<GradientFactors>]) -> Result<()> {
        let f =
            |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("MEND normalisation"));
        for (t_index, transform) in self.transforms.iter_mut().enumerate() {
            let mut rows = Vec::new();
            for factors in samples {
                for (factor, (t, _)) in factors.iter().zip(&self.routes) {
                    if *t == t_index {
                        rows.push(f(Tensor::f_cat(&[&factor.inputs, &factor.output_grads], 1))?);
                    }
                }
            }
            if rows.is_empty() {
                return Err(EditError::EmptyInput { what: "the gradient factors".into() });
            }
            let all = f(Tensor::f_cat(&rows, 0))?;
            let all = f(all.f_to_device(transform.mean.device()))?;
            transform.mean = f(all.f_mean_dim([0i64].as_slice(), false, Kind::Float))?;
            let std = f(all.f_std_correction([0i64].as_slice(), tch::Scalar::int(0), false))?;
            transform.std = f(std.f_clamp_min(1e-8))?;
        }
        Ok(())
    }

    /// The edit of every weight from its gradient factors (in layout order): `ΔW = -lr_w · δ'ᵀ u'`, with
    /// `(u', δ')` the transform's output. Inside the autograd graph of the network's tensors.
    ///
    /// # Shapes
    /// Factors: `inputs [tokens, in]`, `output_grads [tokens, out]`; returns one `[out, in]` fp32 per weight.
    pub fn edits(&self, factors: &[GradientFactors]) -> Result<Vec<Tensor>> {
        if factors.len() != self.routes.len()
            || factors.iter().zip(&self.layout.weights).any(|(f, (n, _))| &f.name != n)
        {
            return Err(EditError::InvalidConfig {
                method: "MEND".into(),
                reason: "the gradient factors do not match the network's weights".into(),
            });
        }
        let e = |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("MEND transform"));
        let mut out = Vec::with_capacity(factors.len());
        for (i, (factor, &(t, mode))) in factors.iter().zip(&self.routes).enumerate() {
            let tr = &self.transforms[t];
            let device = tr.w1.device();
            let u = e(factor.inputs.f_to_device(device))?;
            let d = e(factor.output_grads.f_to_device(device))?;
            let x = e(Tensor::f_cat(&[&u, &d], 1))?;
            let x = e(e(x.f_sub(&tr.mean))?.f_div(&tr.std))?;
            let hidden = e(e(x.f_linear(&tr.w1, Some(&tr.b1)))?.f_relu())?;
            let y = e(x.f_add(&e(hidden.f_linear(&tr.w2, Some(&tr.b2)))?))?;
            let y =
                e(e(y.f_mul(&e(tr.mode_scale.f_get(mode))?))?
                    .f_add(&e(tr.mode_shift.f_get(mode))?))?;
            let [out_dim, in_dim] = tr.shape;
            let u2 = e(y.f_narrow(1, 0, in_dim))?;
            let d2 = e(y.f_narrow(1, in_dim, out_dim))?;
            let pseudo = e(e(d2.f_transpose(0, 1))?.f_mm(&u2))?;
            let lr = e(self.edit_lrs.f_get(i as i64))?;
            out.push(e(e(pseudo.f_mul(&lr))?.f_neg())?);
        }
        Ok(out)
    }

    /// Tensors trained with the network learning rate, named, in a fixed order.
    pub(crate) fn network_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut out = Vec::new();
        for (i, t) in self.transforms.iter().enumerate() {
            for (name, tensor) in [
                ("w1", &t.w1),
                ("b1", &t.b1),
                ("w2", &t.w2),
                ("b2", &t.b2),
                ("mode_scale", &t.mode_scale),
                ("mode_shift", &t.mode_shift),
            ] {
                out.push((format!("transform.{i}.{name}"), tensor));
            }
        }
        out
    }

    /// Mutable access in the order of [`Self::network_tensors`] followed by the edit lrs.
    pub(crate) fn trainable_mut(&mut self) -> Vec<&mut Tensor> {
        let mut out = Vec::new();
        for t in &mut self.transforms {
            out.extend([
                &mut t.w1,
                &mut t.b1,
                &mut t.w2,
                &mut t.b2,
                &mut t.mode_scale,
                &mut t.mode_shift,
            ]);
        }
        out.push(&mut self.edit_lrs);
        out
    }

    /// Every trainable tensor with its name: [`Self::network_tensors`] then `edit_lrs`.
    pub(crate) fn trainable(&self) -> Vec<(String, &Tensor)> {
        let mut out = self.network_tensors();
        out.push(("edit_lrs".into(), &self.edit_lrs));
        out
    }

    /// Every tensor of the network under the name [`TENSORS_FILE`] stores it by, detached: the trained ones, then
    /// each transform's normalisation statistics.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> =
            self.trainable().into_iter().map(|(n, t)| (n, t.detach())).collect();
        for (i, t) in self.transforms.iter().enumerate() {
            out.push((format!("transform.{i}.mean"), t.mean.shallow_clone()));
            out.push((format!("transform.{i}.std"), t.std.shallow_clone()));
        }
        out
    }

    /// Writes the network into `dir`, which exists: [`TENSORS_FILE`] (every tensor) and [`LAYOUT_FILE`] (the
    /// layout); part of a [`super::MendArtefact`].
    pub(crate) fn write_files(&self, dir: &Path) -> Result<()> {
        detox_runtime::weights::save_safetensors(&dir.join(TENSORS_FILE), &self.named_tensors())?;
        crate::train::checkpoint::write_json(&dir.join(LAYOUT_FILE), &self.layout)
    }

    /// Reads a network written by [`MendNetwork::write_files`] onto `device`.
    pub(crate) fn read_files(dir: &Path, device: Device) -> Result<Self> {
        let layout: NetworkLayout =
            crate::train::checkpoint::read_json(&dir.join(LAYOUT_FILE), "a MEND layout")?;
        let mut net = Self::new(layout, device, 0)?;
        let path = dir.join(TENSORS_FILE);
        let files = SafetensorsFiles::open_files(std::slice::from_ref(&path))?;
        let names: Vec<String> = net.trainable().into_iter().map(|(n, _)| n).collect();
        let _guard = tch::no_grad_guard();
        for (name, target) in names.iter().zip(net.trainable_mut()) {
            copy_named(&files, &path, name, target, device)?;
        }
        for (i, t) in net.transforms.iter_mut().enumerate() {
            copy_named(&files, &path, &format!("transform.{i}.mean"), &mut t.mean, device)?;
            copy_named(&files, &path, &format!("transform.{i}.std"), &mut t.std, device)?;
        }
        Ok(net)
    }
}

fn copy_named(
    files: &SafetensorsFiles,
    path: &Path,
    name: &str,
    target: &mut Tensor,
    device: Device,
) -> Result<()> {
    if !files.contains(name) {
        return Err(EditError::Artefact {
            path: path.to_path_buf(),
            reason: format!("tensor `{name}` is missing"),
        });
    }
    let t = files.load(name, device, Some(Kind::Float))?;
    if t.size() != target.size() {
        return Err(EditError::ShapeMismatch {
            what: format!("{}: tensor `{name}`", path.display()),
            expected: format!("{:?} (the layout's)", target.size()),
            got: t.size(),
        });
    }
    target.f_copy_(&t).map_err(torch("loading MEND"))?;
    Ok(())
}

/// The tensors of a saved network.
pub const TENSORS_FILE: &str = "mend.safetensors";
/// The layout of a saved network.
pub const LAYOUT_FILE: &str = "mend.json";
