//! RoBERTa's input embeddings: word + position + token type, then LayerNorm.
//!
//! Positions follow fairseq's convention, kept by Hugging Face (`create_position_ids_from_input_ids`): padding
//! tokens sit at position `padding_idx`, and the real tokens are numbered `padding_idx + 1, padding_idx + 2, ...`
//! in order, counting only non-padding tokens. Token type 0 is used throughout (RoBERTa has a single type).

use tch::{Device, Kind, Tensor};

use super::config::RobertaConfig;
use crate::error::{Result, TorchContext};
use crate::weights::SafetensorsFiles;

pub(crate) struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm_weight: Tensor,
    norm_bias: Tensor,
    padding_idx: i64,
    eps: f64,
    hidden: i64,
}

impl Embeddings {
    pub(crate) fn load(
        ckpt: &SafetensorsFiles,
        cfg: &RobertaConfig,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        let p = "roberta.embeddings";
        Ok(Self {
            word: ckpt.load(&format!("{p}.word_embeddings.weight"), device, Some(kind))?,
            position: ckpt.load(&format!("{p}.position_embeddings.weight"), device, Some(kind))?,
            token_type: ckpt.load(
                &format!("{p}.token_type_embeddings.weight"),
                device,
                Some(kind),
            )?,
            norm_weight: ckpt.load(&format!("{p}.LayerNorm.weight"), device, Some(kind))?,
            norm_bias: ckpt.load(&format!("{p}.LayerNorm.bias"), device, Some(kind))?,
            padding_idx: cfg.pad_token_id,
            eps: cfg.layer_norm_eps,
            hidden: cfg.hidden_size,
        })
    }

    /// `input_ids` [b, s] (Int64, on the model's device) -> [b, s, hidden].
    pub(crate) fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let position_ids = position_ids(input_ids, self.padding_idx)?;
        let words = Tensor::f_embedding(&self.word, input_ids, self.padding_idx, false, false)
            .ctx("embedding the tokens")?;
        let positions =
            Tensor::f_embedding(&self.position, &position_ids, self.padding_idx, false, false)
                .ctx("embedding the positions")?;
        let token_type = self.token_type.f_select(0, 0).ctx("selecting token type 0")?;
        let xs = words
            .f_add(&positions)
            .and_then(|xs| xs.f_add(&token_type))
            .ctx("summing the embeddings")?;
        xs.f_layer_norm(
            [self.hidden],
            Some(&self.norm_weight),
            Some(&self.norm_bias),
            self.eps,
            true,
        )
        .ctx("normalising the embeddings")
    }
}

/// RoBERTa position ids: `padding_idx` at padding tokens, `padding_idx + 1 + (number of earlier non-padding
/// tokens)` elsewhere.
///
/// # Shapes
/// `input_ids` [b, s] (Int64) -> [b, s] (Int64), on the same device.
pub fn position_ids(input_ids: &Tensor, padding_idx: i64) -> Result<Tensor> {
    let not_pad = input_ids
        .f_ne(padding_idx)
        .and_then(|m| m.f_to_kind(Kind::Int64))
        .ctx("masking padding")?;
    not_pad
        .f_cumsum(1, Kind::Int64)
        .and_then(|c| c.f_mul(&not_pad))
        .and_then(|c| c.f_add_scalar(padding_idx))
        .ctx("numbering positions")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_skip_padding_and_start_after_padding_idx() {
        let ids = Tensor::from_slice(&[0i64, 7, 9, 2, 1, 1, 0, 5, 2, 1, 1, 1]).view([2, 6]);
        let pos = position_ids(&ids, 1).unwrap();
        let got = Vec::<i64>::try_from(pos.flatten(0, -1)).unwrap();
        assert_eq!(got, vec![2, 3, 4, 5, 1, 1, 2, 3, 4, 1, 1, 1]);
    }
}
