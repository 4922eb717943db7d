//! Adam on a single tensor, step for step as `torch.optim.Adam` (no AMSGrad, coupled weight decay).

use tch::{Kind, Tensor};

use crate::error::{torch, Result};

/// Adam state for one fp32 tensor.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    step: i32,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

impl Adam {
    /// Fresh state shaped like `param` (PyTorch's defaults: betas (0.9, 0.999), eps 1e-8).
    pub fn new(param: &Tensor, lr: f64, weight_decay: f64) -> Result<Self> {
        let zeros = || Tensor::f_zeros_like(param).map_err(torch("allocating Adam state"));
        Ok(Self {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
            step: 0,
            exp_avg: zeros()?,
            exp_avg_sq: zeros()?,
        })
    }

    /// The number of updates taken and the two moment estimates, for checkpoints.
    ///
    /// # Shapes
    /// Both moments have the parameter's shape, fp32.
    pub fn state(&self) -> (i32, &Tensor, &Tensor) {
        (self.step, &self.exp_avg, &self.exp_avg_sq)
    }

    /// Puts back a state read by [`Adam::state`]; the moments must have the parameter's shape.
    pub fn load_state(&mut self, step: i32, exp_avg: Tensor, exp_avg_sq: Tensor) -> Result<()> {
        for (what, t) in [("first", &exp_avg), ("second", &exp_avg_sq)] {
            if t.size() != self.exp_avg.size() {
                return Err(crate::error::EditError::State(format!(
                    "the checkpoint's Adam {what} moment has shape {:?}, the parameter {:?}",
                    t.size(),
                    self.exp_avg.size()
                )));
            }
        }
        let device = self.exp_avg.device();
        let place = |t: Tensor| {
            t.f_to_device_(device, Kind::Float, false, false).map_err(torch("loading Adam state"))
        };
        self.exp_avg = place(exp_avg)?;
        self.exp_avg_sq = place(exp_avg_sq)?;
        self.step = step;
        Ok(())
    }

    /// Like [`Adam::step`], but only the rows where `active` is true change (parameter and moments); the other
    /// rows keep their values, as if their optimiser had stopped. All active rows share the step count, which
    /// holds when rows only ever leave the active set.
    ///
    /// # Shapes
    /// `param`, `grad`: `[rows, ...]` fp32; `active`: bool, broadcastable to `param` (e.g. `[rows, 1, 1]`).
    pub fn step_rows(&mut self, param: &mut Tensor, grad: &Tensor, active: &Tensor) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let keep = |t: &Tensor| {
            t.f_detach()
                .map_err(torch("Adam row state"))?
                .f_to_device_(t.device(), t.kind(), false, true)
                .map_err(torch("Adam row state"))
        };
        let (p0, m0, v0) = (keep(param)?, keep(&self.exp_avg)?, keep(&self.exp_avg_sq)?);
        self.step(param, grad)?;
        let select = |new: &Tensor, old: &Tensor| {
            new.f_where_self(active, old).map_err(torch("Adam row select"))
        };
        let p = select(param, &p0)?;
        param.f_copy_(&p).map_err(torch("Adam row select"))?;
        self.exp_avg = select(&self.exp_avg, &m0)?;
        self.exp_avg_sq = select(&self.exp_avg_sq, &v0)?;
        Ok(())
    }

    /// Applies one update to `param` (in place) from `grad`.
    ///
    /// # Shapes
    /// `param` and `grad` have the same shape, fp32.
    pub fn step(&mut self, param: &mut Tensor, grad: &Tensor) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let (b1, b2) = self.betas;
        let grad = if self.weight_decay != 0.0 {
            grad.f_add(&param.f_mul_scalar(self.weight_decay).map_err(torch("weight decay"))?)
                .map_err(torch("weight decay"))?
        } else {
            grad.shallow_clone()
        };
        // exp_avg.lerp_(grad, 1 - beta1), as PyTorch writes the first moment.
        let _ = self.exp_avg.f_lerp_(&grad, 1.0 - b1).map_err(torch("Adam first moment"))?;
        let _ = self.exp_avg_sq.f_mul_scalar_(b2).map_err(torch("Adam second moment"))?;
        let _ = self
            .exp_avg_sq
            .f_addcmul_(&grad.f_mul_scalar(1.0 - b2).map_err(torch("Adam second moment"))?, &grad)
            .map_err(torch("Adam second moment"))?;
        let bias_correction1 = 1.0 - b1.powi(self.step);
        let bias_correction2 = 1.0 - b2.powi(self.step);
        let step_size = self.lr / bias_correction1;
        let denom = self
            .exp_avg_sq
            .f_sqrt()
            .map_err(torch("Adam denominator"))?
            .f_div_scalar(bias_correction2.sqrt())
            .map_err(torch("Adam denominator"))?
            .f_add_scalar(self.eps)
            .map_err(torch("Adam denominator"))?;
        let _ = param
            .f_addcdiv_(&self.exp_avg.f_mul_scalar(-step_size).map_err(torch("Adam"))?, &denom)
            .map_err(torch("Adam update"))?;
        debug_assert_eq!(param.kind(), Kind::Float);
        Ok(())
    }
}
