//! Dequantisation of the GGML block formats the embedded model uses (and the plain float types).
//!
//! Blocks hold 32 weights. Q4_0: f16 scale `d`, 16 bytes of 4-bit codes, `w = d * (q - 8)`. Q4_1: f16 `d`, f16
//! minimum `m`, 16 bytes of codes, `w = d * q + m`. Q8_0: f16 `d`, 32 signed bytes, `w = d * q`. In both 4-bit
//! formats byte `j` holds weight `j` in its low nibble and weight `j + 16` in its high nibble.

use half::{bf16, f16};
use rayon::prelude::*;

/// GGML type ids.
pub mod ggml_type {
    /// 32-bit float.
    pub const F32: u32 = 0;
    /// 16-bit float.
    pub const F16: u32 = 1;
    /// 4-bit, scale only.
    pub const Q4_0: u32 = 2;
    /// 4-bit, scale and minimum.
    pub const Q4_1: u32 = 3;
    /// 8-bit, scale.
    pub const Q8_0: u32 = 8;
    /// bfloat16.
    pub const BF16: u32 = 30;
}

const BLOCK: usize = 32;

fn block_bytes(kind: u32) -> Option<(usize, usize)> {
    // (weights per block, bytes per block)
    Some(match kind {
        ggml_type::F32 => (1, 4),
        ggml_type::F16 | ggml_type::BF16 => (1, 2),
        ggml_type::Q4_0 => (BLOCK, 2 + 16),
        ggml_type::Q4_1 => (BLOCK, 2 + 2 + 16),
        ggml_type::Q8_0 => (BLOCK, 2 + 32),
        _ => return None,
    })
}

/// Bytes occupied by `numel` weights of `kind`, or `None` for an unsupported type or a partial block.
pub fn byte_size(kind: u32, numel: u64) -> Option<usize> {
    let (per, bytes) = block_bytes(kind)?;
    let numel = numel as usize;
    if numel % per != 0 {
        return None;
    }
    (numel / per).checked_mul(bytes)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `bytes` of `kind` into fp32 values (in GGML element order). Returns `None` for unsupported types.
pub fn dequantize(kind: u32, bytes: &[u8]) -> Option<Vec<f32>> {
    let (per, size) = block_bytes(kind)?;
    if bytes.len() % size != 0 {
        return None;
    }
    let mut out = vec![0f32; bytes.len() / size * per];
    match kind {
        ggml_type::F32 => out.par_iter_mut().zip(bytes.par_chunks_exact(4)).for_each(|(o, b)| {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }),
        ggml_type::F16 => {
            out.par_iter_mut().zip(bytes.par_chunks_exact(2)).for_each(|(o, b)| *o = f16_at(b, 0))
        }
        ggml_type::BF16 => out
            .par_iter_mut()
            .zip(bytes.par_chunks_exact(2))
            .for_each(|(o, b)| *o = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ggml_type::Q4_0 => {
            out.par_chunks_exact_mut(BLOCK).zip(bytes.par_chunks_exact(size)).for_each(|(o, b)| {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    o[j] = d * ((q & 0x0f) as i32 - 8) as f32;
                    o[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
                }
            })
        }
        ggml_type::Q4_1 => {
            out.par_chunks_exact_mut(BLOCK).zip(bytes.par_chunks_exact(size)).for_each(|(o, b)| {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    let q = b[4 + j];
                    o[j] = d * (q & 0x0f) as f32 + m;
                    o[j + 16] = d * (q >> 4) as f32 + m;
                }
            })
        }
        ggml_type::Q8_0 => {
            out.par_chunks_exact_mut(BLOCK).zip(bytes.par_chunks_exact(size)).for_each(|(o, b)| {
                let d = f16_at(b, 0);
                for j in 0..BLOCK {
                    o[j] = d * (b[2 + j] as i8) as f32;
                }
            })
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_and_q8_0_blocks_by_hand() {
        // Q4_1: d = 0.5, m = -1.0, byte j = (j % 16) | ((15 - j % 16) << 4).
        let mut block = Vec::new();
        block.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let w = dequantize(ggml_type::Q4_1, &block).unwrap();
        assert_eq!(w[0], -1.0);
        assert_eq!(w[3], 0.5);
        assert_eq!(w[16], 6.5);
        assert_eq!(w[31], -1.0 + 0.5 * 0.0);
        // Q8_0: d = 0.25, q = j - 16.
        let mut block = f16::from_f32(0.25).to_le_bytes().to_vec();
        block.extend((0..32i32).map(|j| (j - 16) as i8 as u8));
        let w = dequantize(ggml_type::Q8_0, &block).unwrap();
        assert_eq!(w[0], -4.0);
        assert_eq!(w[31], 3.75);
        assert_eq!(byte_size(ggml_type::Q4_1, 64), Some(40));
        assert_eq!(byte_size(ggml_type::Q8_0, 33), None);
        assert!(dequantize(99, &[0; 4]).is_none());
    }
}
