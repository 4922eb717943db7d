//! Padding: how token rows of unequal length become one batch. Left padding (the tokens at the end of each row,
//! as a tokenizer with `padding_side="left"` lays them out) serves generation, scoring and training alike;
//! [`right_pad`] reproduces references that tokenize with the default `padding_side="right"`.

use tch::{Device, Tensor};

use crate::error::{Result, TorchContext};
use crate::model::{ForwardOptions, PositionIds};

/// Token rows left-padded into one batch.
#[derive(Debug)]
pub struct LeftPadded {
    /// `[rows, width]` int64: each row's tokens at the end, the padding id before them.
    pub ids: Tensor,
    /// `[rows, width]` int64: 1 on tokens, 0 on padding.
    pub mask: Tensor,
    /// The longest row's length.
    pub width: usize,
    /// Whether some row is shorter than `width`.
    pub padded: bool,
}

impl LeftPadded {
    /// Forward options under which every row scores as it would alone: the padding mask and positions counted
    /// from each row's first token when some row is padded; otherwise neither (so equal-length rows take the
    /// fused causal kernel, exactly as a single unpadded row does).
    pub fn forward_options(&self) -> ForwardOptions<'_> {
        ForwardOptions {
            attention_mask: self.padded.then_some(&self.mask),
            position_ids: if self.padded { PositionIds::FromMask } else { PositionIds::Sequential },
            ..Default::default()
        }
    }
}

/// Right-pads `rows` with `pad_id` to `width` tokens (at least the longest row) into `[ids, mask]` on `device`:
/// what a Hugging Face tokenizer with `padding_side="right"` returns, to be run with that mask and sequential
/// positions (as a plain `model(input_ids, attention_mask)` call does).
///
/// # Shapes
/// `rows`: `n` token sequences; returns `[n, width]` int64 ids and mask (1 on tokens, 0 on padding).
///
/// ```
/// use detox_runtime::padding::right_pad;
///
/// let (ids, mask) = right_pad(&[vec![5, 6], vec![8]], 0, 3, tch::Device::Cpu)?;
/// assert_eq!(Vec::<i64>::try_from(ids.flatten(0, -1))?, [5, 6, 0, 8, 0, 0]);
/// assert_eq!(Vec::<i64>::try_from(mask.flatten(0, -1))?, [1, 1, 0, 1, 0, 0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn right_pad<R: AsRef<[i64]>>(
    rows: &[R],
    pad_id: i64,
    width: usize,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let width = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0).max(width);
    let mut ids = Vec::with_capacity(width * rows.len());
    let mut mask = Vec::with_capacity(width * rows.len());
    for row in rows {
        let row = row.as_ref();
        let padding = width - row.len();
        ids.extend(row.iter().copied().chain(std::iter::repeat_n(pad_id, padding)));
        mask.extend(std::iter::repeat_n(1i64, row.len()).chain(std::iter::repeat_n(0i64, padding)));
    }
    let shape = [rows.len() as i64, width as i64];
    let tensor = |v: &[i64], what: &str| {
        Tensor::from_slice(v).f_view(shape).ctx(what)?.f_to_device(device).ctx(what)
    };
    Ok((tensor(&ids, "padded ids")?, tensor(&mask, "padding mask")?))
}

/// Left-pads `rows` with `pad_id` into one batch on `device`.
///
/// # Shapes
/// `rows`: `n` token sequences; the result holds `[n, width]` int64 ids and mask, `width` the longest row.
///
/// ```
/// use detox_runtime::padding::left_pad;
///
/// let batch = left_pad(&[vec![5, 6, 7], vec![8]], 0, tch::Device::Cpu)?;
/// assert_eq!((batch.width, batch.padded), (3, true));
/// assert_eq!(Vec::<i64>::try_from(batch.ids.flatten(0, -1))?, [5, 6, 7, 0, 0, 8]);
/// assert_eq!(Vec::<i64>::try_from(batch.mask.flatten(0, -1))?, [1, 1, 1, 0, 0, 1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn left_pad<R: AsRef<[i64]>>(rows: &[R], pad_id: i64, device: Device) -> Result<LeftPadded> {
    let width = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(width * rows.len());
    let mut mask = Vec::with_capacity(width * rows.len());
    for row in rows {
        let row = row.as_ref();
        let padding = width - row.len();
        ids.extend(std::iter::repeat_n(pad_id, padding).chain(row.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, padding).chain(std::iter::repeat_n(1i64, row.len())));
    }
    let shape = [rows.len() as i64, width as i64];
    let tensor = |v: &[i64], what: &str| {
        Tensor::from_slice(v).f_view(shape).ctx(what)?.f_to_device(device).ctx(what)
    };
    Ok(LeftPadded {
        ids: tensor(&ids, "padded ids")?,
        mask: tensor(&mask, "padding mask")?,
        width,
        padded: rows.iter().any(|r| r.as_ref().len() != width),
    })
}
