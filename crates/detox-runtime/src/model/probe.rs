//! Gradient factors of linear layers, the inputs of gradient-based hyper-networks such as MEND.
//!
//! For a linear layer `y = x Wᵀ` the gradient of a loss over a sequence is a sum of outer products,
//! `∂L/∂W = Σ_t δ_t u_tᵀ`, with `u_t` the layer's input at token `t` and `δ_t = ∂L/∂y_t`. A probe passed to
//! [`crate::CausalLm::forward`] records `u` and adds a zero tap to `y` whose gradient is `δ`, so one forward and
//! one backward pass give both factors of every probed layer without forming the full gradient.

use std::cell::RefCell;

use tch::{Kind, Tensor};

use crate::error::{Error, Result, TorchContext};

/// Which linear weights to probe (by Hugging Face name, e.g. `model.layers.5.mlp.down_proj.weight`), and what the
/// last forward pass recorded for them.
#[derive(Debug, Default)]
pub struct LinearProbe {
    names: Vec<String>,
    taps: RefCell<Vec<Tap>>,
}

#[derive(Debug)]
struct Tap {
    name: String,
    input: Tensor,
    tap: Tensor,
}

/// The gradient factors of one linear weight over the probed tokens.
#[derive(Debug)]
pub struct GradientFactors {
    /// The weight's name.
    pub name: String,
    /// `[tokens, in]` fp32: the layer's inputs `u_t`.
    pub inputs: Tensor,
    /// `[tokens, out]` fp32: the loss gradients of the layer's outputs `δ_t`.
    pub output_grads: Tensor,
}

impl GradientFactors {
    /// The full gradient `Σ_t δ_t u_tᵀ`, `[out, in]` fp32 (for checks; hyper-networks use the factors).
    pub fn gradient(&self) -> Result<Tensor> {
        self.output_grads.f_transpose(0, 1).ctx("gradient")?.f_mm(&self.inputs).ctx("gradient")
    }
}

impl LinearProbe {
    /// A probe of the named weights.
    pub fn new(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { names: names.into_iter().map(Into::into).collect(), taps: RefCell::new(Vec::new()) }
    }

    /// The probed weight names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub(crate) fn wants(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Records `xs` as the input of `name` and returns `ys` plus a zero tap that collects `∂L/∂ys`.
    pub(crate) fn record(&self, name: &str, xs: &Tensor, ys: Tensor) -> Result<Tensor> {
        let input = xs.f_detach().ctx("probe input")?;
        let tap = Tensor::f_zeros_like(&ys)
            .ctx("probe tap")?
            .f_set_requires_grad(true)
            .ctx("probe tap")?;
        let out = ys.f_add(&tap).ctx("probe tap")?;
        self.taps.borrow_mut().push(Tap { name: name.to_string(), input, tap });
        Ok(out)
    }

    /// Forgets what earlier passes recorded.
    pub fn clear(&self) {
        self.taps.borrow_mut().clear();
    }

    /// The factors of every probed weight, in the order of [`LinearProbe::names`], after `backward` of a loss
    /// computed from the probed forward pass. Positions where `token_mask` (`[batch, seq]`, nonzero for tokens)
    /// is zero, i.e. padding, are left out; without a mask every position counts. Clears the probe.
    pub fn factors(&self, token_mask: Option<&Tensor>) -> Result<Vec<GradientFactors>> {
        let taps = std::mem::take(&mut *self.taps.borrow_mut());
        let mut out = Vec::with_capacity(self.names.len());
        for name in &self.names {
            let mut found = taps.iter().filter(|t| &t.name == name);
            let tap = found.next().ok_or_else(|| Error::InvalidState {
                what: format!("`{name}` was not reached by the probed forward pass"),
            })?;
            if found.next().is_some() {
                return Err(Error::InvalidState { what: format!(
                    "`{name}` was recorded by more than one forward pass; clear the probe between passes"
                ) });
            }
            let grad = tap.tap.grad();
            if !grad.defined() {
                return Err(Error::InvalidState {
                    what: format!(
                    "no gradient reached `{name}`: call backward on a loss of the probed pass first"
                ),
                });
            }
            let flat = |t: &Tensor| -> Result<Tensor> {
                let d = *t.size().last().unwrap_or(&0);
                let t = t.f_to_kind(Kind::Float).ctx("probe")?.f_reshape([-1, d]).ctx("probe")?;
                match token_mask {
                    None => Ok(t),
                    Some(m) => {
                        let keep = m
                            .f_reshape([-1])
                            .ctx("probe mask")?
                            .f_ne(0)
                            .ctx("probe mask")?
                            .f_to_device(t.device())
                            .ctx("probe mask")?;
                        t.f_index(&[Some(keep)]).ctx("probe mask")
                    }
                }
            };
            out.push(GradientFactors {
                name: name.clone(),
                inputs: flat(&tap.input)?,
                output_grads: flat(&grad)?,
            });
        }
        Ok(out)
    }
}
