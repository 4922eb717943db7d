//! Forward passes resumed from inside the model.
//!
//! An optimisation that changes one tensor and runs the same inputs many times (a DINM edit, FT-L) recomputes,
//! at every step, everything below that tensor although none of it can change. A [`FrozenPrefix`] keeps the
//! state of a pass at the latest point the changing tensor cannot reach, computed once without gradient;
//! [`CausalLm::forward_resumed`] finishes the pass from there with the model's current parameters. The result
//! equals a full [`CausalLm::forward`] (the same operations on the same values) as long as nothing below the
//! resume point changed since the prefix was computed.

use tch::Tensor;

use super::{on_device, split_layer_name, CausalLm, ForwardOptions, LogitsSelection, PassContext};
use crate::error::{Error, Result};

/// Where a resumed pass starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePoint {
    /// The hidden state entering decoder layer `i`: layer `i` and everything above it are recomputed.
    LayerInput(usize),
    /// The input of layer `i`'s `mlp.down_proj`: the layer's attention residual and MLP activations are kept,
    /// only its down-projection and the layers above it are recomputed.
    DownProjInput(usize),
}

impl ResumePoint {
    /// The decoder layer the pass resumes in.
    pub fn layer(self) -> usize {
        match self {
            Self::LayerInput(i) | Self::DownProjInput(i) => i,
        }
    }
}

/// The state of a forward pass at a [`ResumePoint`], computed once without gradient.
#[derive(Debug)]
pub struct FrozenPrefix {
    point: ResumePoint,
    /// The hidden state entering the layer ([`ResumePoint::LayerInput`]) or the layer's attention residual
    /// ([`ResumePoint::DownProjInput`]): `[batch, seq, hidden]` in the model dtype, on the layer's device.
    residual: Tensor,
    /// With [`ResumePoint::DownProjInput`]: `[batch, seq, intermediate]`.
    down_input: Option<Tensor>,
    pass: PassContext,
}

impl FrozenPrefix {
    /// Where the pass resumes.
    pub fn point(&self) -> ResumePoint {
        self.point
    }

    /// The number of positions of the pass.
    pub fn seq_len(&self) -> i64 {
        self.pass.seq
    }
}

impl CausalLm {
    /// The latest point from which a pass can be resumed when only the parameter `name` changes: inside its
    /// layer before `mlp.down_proj` for the down-projection's weight or bias, the layer's input for any other
    /// parameter of a decoder layer, `None` for parameters outside the layers (embedding, final norm, head) or
    /// names the model does not hold.
    pub fn resume_point_for(&self, name: &str) -> Option<ResumePoint> {
        let module = name.strip_suffix(".weight").or_else(|| name.strip_suffix(".bias"))?;
        let (layer, module) = split_layer_name(module)?;
        if layer >= self.layers.len() {
            return None;
        }
        if self.params.id(name).is_err() && self.attachable_bias(name).is_none() {
            return None;
        }
        Some(if module == "mlp.down_proj" {
            ResumePoint::DownProjInput(layer)
        } else {
            ResumePoint::LayerInput(layer)
        })
    }

    /// Runs the pass up to `point`, without gradient, and keeps its state there.
    ///
    /// `options` are those of [`CausalLm::forward`], without hidden states or a probe (a resumed pass returns
    /// logits only); its logits selection is given to [`CausalLm::forward_resumed`] instead.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` int64
    pub fn forward_prefix(
        &self,
        input_ids: &Tensor,
        options: &ForwardOptions<'_>,
        point: ResumePoint,
    ) -> Result<FrozenPrefix> {
        if options.output_hidden_states || options.probe.is_some() {
            return Err(Error::InvalidInput(
                "a frozen prefix returns logits only: no hidden states or probe".into(),
            ));
        }
        let layer = point.layer();
        if layer >= self.layers.len() {
            return Err(Error::InvalidInput(format!(
                "cannot resume in layer {layer}: the model has {} layers",
                self.layers.len()
            )));
        }
        let _no_grad = tch::no_grad_guard();
        let (mut xs, mut pass) = self.begin(input_ids, options, 0)?;
        for decoder in &self.layers[..layer] {
            xs = on_device(&xs, self.map.layers[decoder.index])?;
            let inputs = pass.layer_inputs(self, decoder.index, None)?;
            xs = decoder.forward(&self.config, &self.params, &xs, &inputs, None)?;
        }
        // Every layer the resumed passes run needs its tables and mask; they are built here once.
        for index in layer..self.layers.len() {
            pass.prepare(self, index)?;
        }
        let xs = on_device(&xs, self.map.layers[layer])?;
        let (residual, down_input) = match point {
            ResumePoint::LayerInput(_) => (xs, None),
            ResumePoint::DownProjInput(_) => {
                let decoder = &self.layers[layer];
                let inputs = pass.built_inputs(self, layer, None)?;
                let residual =
                    decoder.attention_residual(&self.config, &self.params, &xs, &inputs, None)?;
                let down_input = decoder.down_input(&self.config, &self.params, &residual, None)?;
                (residual, Some(down_input))
            }
        };
        Ok(FrozenPrefix { point, residual, down_input, pass })
    }

    /// Finishes the pass `prefix` holds with the model's current parameters, with gradient where they carry
    /// it; equal to [`CausalLm::forward`] on the prefix's inputs when nothing below the resume point changed.
    /// This is [`CausalLm::resume_layers`] followed by [`CausalLm::output_logits`].
    ///
    /// # Shapes
    /// Returns the logits `selection` names: `[batch, seq | 1 | len, vocab]` in the model dtype.
    pub fn forward_resumed(
        &self,
        prefix: &FrozenPrefix,
        selection: LogitsSelection,
    ) -> Result<Tensor> {
        let last = self.resume_layers(prefix)?;
        self.output_logits(&last, selection)
    }

    /// The decoder layers of a resumed pass: the last layer's output, before the final norm.
    ///
    /// # Shapes
    /// Returns `[batch, seq, hidden]` in the model dtype, on the head's device.
    pub fn resume_layers(&self, prefix: &FrozenPrefix) -> Result<Tensor> {
        let layer = prefix.point.layer();
        let pass = &prefix.pass;
        let mut xs =
            match (&prefix.point, &prefix.down_input) {
                (ResumePoint::DownProjInput(_), Some(down_input)) => self.layers[layer]
                    .down_residual(&self.params, &prefix.residual, down_input, None)?,
                _ => {
                    let inputs = pass.built_inputs(self, layer, None)?;
                    self.layers[layer].forward(
                        &self.config,
                        &self.params,
                        &prefix.residual,
                        &inputs,
                        None,
                    )?
                }
            };
        for decoder in &self.layers[layer + 1..] {
            xs = on_device(&xs, self.map.layers[decoder.index])?;
            let inputs = pass.built_inputs(self, decoder.index, None)?;
            xs = decoder.forward(&self.config, &self.params, &xs, &inputs, None)?;
        }
        on_device(&xs, self.map.head)
    }

    /// The final norm and output projection over the positions `selection` names, from the last decoder layer's
    /// output (what [`CausalLm::resume_layers`] returns).
    ///
    /// # Shapes
    /// `last_layer_output`: `[batch, seq, hidden]`; returns `[batch, seq | 1 | len, vocab]` in the model dtype,
    /// on [`CausalLm::device`].
    pub fn output_logits(
        &self,
        last_layer_output: &Tensor,
        selection: LogitsSelection,
    ) -> Result<Tensor> {
        let seq = *last_layer_output.size().get(1).ok_or_else(|| {
            Error::InvalidInput("the last layer's output must be [batch, seq, hidden]".into())
        })?;
        Ok(self.head(last_layer_output.shallow_clone(), None, selection, seq)?.logits)
    }
}
