//! Forward passes resumed from inside the model.
//!
//! An optimisation that changes one tensor and runs the same inputs many times (a DINM edit, FT-L) recomputes,
//! at every step, everything below that tensor although none of it can change. A [`FrozenPrefix`] keeps the
//! state of a pass at the latest point the changing tensor cannot reach, computed once without gradient;
//! [`CausalLm::forward_resumed`] finishes the pass from there with the model's current parameters. The result
//! equals a full [`CausalLm::forward`] (the same operations on the same values) as long as nothing below the
//! resume point changed since the prefix was computed.

use tch::Tensor;

use super::layer::{attention_mask, kept_positions, LayerInputs};
use super::{
    mask_on_device, on_device, split_layer_name, CausalLm, ForwardOptions, LogitsSelection,
    PassContext,
};
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
            return Err(Error::Unsupported {
                what: "a frozen prefix returns logits only: no hidden states or probe".into(),
            });
        }
        let layer = point.layer();
        if layer >= self.layers.len() {
            return Err(Error::OutOfRange {
                what: format!(
                    "cannot resume in layer {layer}: the model has {} layers",
                    self.layers.len()
                ),
            });
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
                let residual = decoder.attention_residual(
                    &self.config,
                    &self.params,
                    &xs,
                    0,
                    &inputs,
                    None,
                )?;
                let down_input = decoder.down_input(&self.config, &self.params, &residual, None)?;
                (residual, Some(down_input))
            }
        };
        Ok(FrozenPrefix { point, residual, down_input, pass })
    }

    /// Finishes the pass `prefix` holds with the model's current parameters, with gradient where they carry
    /// it; equal to [`CausalLm::forward`] on the prefix's inputs when nothing below the resume point changed.
    /// A window that ends at the last position is computed in the last layer for its own positions only.
    ///
    /// # Shapes
    /// Returns the logits `selection` names: `[batch, seq | 1 | len, vocab]` in the model dtype.
    pub fn forward_resumed(
        &self,
        prefix: &FrozenPrefix,
        selection: LogitsSelection,
    ) -> Result<Tensor> {
        match selection {
            LogitsSelection::Window { start, len }
                if start >= 0 && start + len == prefix.seq_len() =>
            {
                let last = self.resume_layers(prefix, start)?;
                self.output_logits(&last, LogitsSelection::All)
            }
            _ => {
                let last = self.resume_layers(prefix, 0)?;
                self.output_logits(&last, selection)
            }
        }
    }

    /// The decoder layers of a resumed pass: the last layer's output at positions `from..`, before the final
    /// norm. Every layer but the last computes every position (later positions attend to them); the last one
    /// computes only the positions returned.
    ///
    /// # Shapes
    /// Returns `[batch, seq - from, hidden]` in the model dtype, on the head's device.
    pub fn resume_layers(&self, prefix: &FrozenPrefix, from: i64) -> Result<Tensor> {
        let seq = prefix.seq_len();
        if !(0..seq).contains(&from) {
            return Err(Error::OutOfRange {
                what: format!("cannot keep positions from {from} of a {seq}-position pass"),
            });
        }
        let layer = prefix.point.layer();
        let mut xs = match (&prefix.point, &prefix.down_input) {
            (ResumePoint::DownProjInput(_), Some(down_input)) => {
                // In the last layer only the kept positions are needed; below it, every position.
                let keep = if layer + 1 == self.layers.len() { from } else { 0 };
                self.layers[layer].down_residual(
                    &self.config,
                    &self.params,
                    &kept_positions(&prefix.residual, keep)?,
                    &kept_positions(down_input, keep)?,
                    None,
                )?
            }
            _ => self.resume_layer(prefix, layer, &prefix.residual, from)?,
        };
        for decoder in &self.layers[layer + 1..] {
            xs = on_device(&xs, self.map.layers[decoder.index])?;
            xs = self.resume_layer(prefix, decoder.index, &xs, from)?;
        }
        on_device(&xs, self.map.head)
    }

    /// Runs layer `index` of a resumed pass; the last layer only for the positions `from..`.
    fn resume_layer(
        &self,
        prefix: &FrozenPrefix,
        index: usize,
        xs: &Tensor,
        from: i64,
    ) -> Result<Tensor> {
        let (decoder, pass) = (&self.layers[index], &prefix.pass);
        let inputs = pass.built_inputs(self, index, None)?;
        if index + 1 < self.layers.len() || from == 0 {
            return decoder.forward(&self.config, &self.params, xs, &inputs, None);
        }
        // The kept queries' mask: causal from their positions, over every key, padding and window applied.
        let window = self.config.sliding_windows[index];
        let mask = attention_mask(&pass.key_valid, from, pass.seq - from, window)?;
        let mask = mask_on_device(&mask, self.map.layers[index])?;
        let inputs = LayerInputs { mask: &mask, ..inputs };
        decoder.forward_from(&self.config, &self.params, xs, from, &inputs, None)
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
        let seq = *last_layer_output.size().get(1).ok_or_else(|| Error::BadShape {
            what: "the last layer's output must be [batch, seq, hidden]".into(),
        })?;
        Ok(self.head(last_layer_output.shallow_clone(), None, selection, seq)?.logits)
    }
}
