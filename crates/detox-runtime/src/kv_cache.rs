//! A pre-allocated key/value cache for incremental decoding.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result, TorchContext};

/// Keys and values of every layer for a batch, allocated once for the longest sequence the caller will reach.
#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: i64,
    capacity: i64,
    /// Slot mode: where each row writes its next token (`[batch]` int64); `None` appends at the shared length.
    row_positions: Option<Tensor>,
}

impl KvCache {
    /// Allocates zeroed storage.
    ///
    /// # Shapes
    /// Each layer holds keys and values of shape `[batch, kv_heads, capacity, head_dim]` in `kind`.
    pub fn new(
        layers: usize,
        batch: i64,
        kv_heads: i64,
        head_dim: i64,
        capacity: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        Self::on_devices(&vec![device; layers], batch, kv_heads, head_dim, capacity, kind)
    }

    /// Allocates zeroed storage with layer `i` on `devices[i]` (for a model placed over several devices).
    ///
    /// # Shapes
    /// Each layer holds keys and values of shape `[batch, kv_heads, capacity, head_dim]` in `kind`.
    pub fn on_devices(
        devices: &[Device],
        batch: i64,
        kv_heads: i64,
        head_dim: i64,
        capacity: i64,
        kind: Kind,
    ) -> Result<Self> {
        let shape = [batch, kv_heads, capacity, head_dim];
        let alloc =
            |device: Device| Tensor::f_zeros(shape, (kind, device)).ctx("allocating the KV cache");
        let keys = devices.iter().map(|d| alloc(*d)).collect::<Result<Vec<_>>>()?;
        let values = devices.iter().map(|d| alloc(*d)).collect::<Result<Vec<_>>>()?;
        Ok(Self { keys, values, len: 0, capacity, row_positions: None })
    }

    /// Number of positions already stored.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Slot mode: every row is an independent sequence that writes its next token at its own position
    /// (`positions`, `[batch]` int64) and attends over the whole capacity, restricted by the attention mask the
    /// caller passes. Forward passes then take one token per row.
    pub(crate) fn set_row_positions(&mut self, positions: Tensor) {
        // A one-token step then attends over `len + 1 = capacity` key positions.
        self.len = self.capacity - 1;
        self.row_positions = Some(positions);
    }

    /// Copies the first `from.len()` positions of `from`'s row 0 into row `row`, positions `0..from.len()`.
    pub(crate) fn write_row(&mut self, row: i64, from: &KvCache) -> Result<()> {
        let n = from.len;
        if n > self.capacity || from.keys.len() != self.keys.len() {
            return Err(Error::OutOfRange { what: format!(
                "cannot copy {n} cached positions of {} layers into a cache of capacity {} with {} layers",
                from.keys.len(),
                self.capacity,
                self.keys.len()
            ) });
        }
        for (mine, theirs) in [(&mut self.keys, &from.keys), (&mut self.values, &from.values)] {
            for (dst, src) in mine.iter_mut().zip(theirs) {
                let source = src
                    .f_narrow(0, 0, 1)
                    .ctx("slot source")?
                    .f_narrow(2, 0, n)
                    .ctx("slot source")?;
                let mut target =
                    dst.f_narrow(0, row, 1).ctx("slot")?.f_narrow(2, 0, n).ctx("slot")?;
                target.f_copy_(&source).ctx("filling a slot")?;
            }
        }
        Ok(())
    }

    /// Writes the new keys/values of `layer` after the stored ones and returns views of everything stored so far
    /// (the new positions included). The cache length moves forward only through [`KvCache::advance`], once all
    /// layers have been written.
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, new, head_dim]`
    /// - returns two `[batch, kv_heads, len + new, head_dim]` views (in slot mode the whole capacity)
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let new = k.size()[2];
        if let Some(positions) = &self.row_positions {
            if new != 1 {
                return Err(Error::InvalidState {
                    what: format!("a slot cache takes one token per row and step, got {new}"),
                });
            }
            let size = k.size();
            let device = self.keys[layer].device();
            let index = positions
                .f_to_device(device)
                .ctx("slot positions")?
                .f_view([size[0], 1, 1, 1])
                .ctx("slot positions")?
                .f_expand([size[0], size[1], 1, size[3]], false)
                .ctx("slot positions")?;
            let _ = self.keys[layer].f_scatter_(2, &index, k).ctx("writing keys to slots")?;
            let _ = self.values[layer].f_scatter_(2, &index, v).ctx("writing values to slots")?;
            return Ok((self.keys[layer].shallow_clone(), self.values[layer].shallow_clone()));
        }
        if self.len + new > self.capacity {
            return Err(Error::OutOfRange {
                what: format!(
                    "KV cache overflow: {} stored + {new} new > capacity {}",
                    self.len, self.capacity
                ),
            });
        }
        let mut k_slot = self.keys[layer].f_narrow(2, self.len, new).ctx("cache slot")?;
        k_slot.f_copy_(k).ctx("writing keys to cache")?;
        let mut v_slot = self.values[layer].f_narrow(2, self.len, new).ctx("cache slot")?;
        v_slot.f_copy_(v).ctx("writing values to cache")?;
        let total = self.len + new;
        Ok((
            self.keys[layer].f_narrow(2, 0, total).ctx("cache view")?,
            self.values[layer].f_narrow(2, 0, total).ctx("cache view")?,
        ))
    }

    /// Marks `new` positions as stored.
    pub(crate) fn advance(&mut self, new: i64) {
        if self.row_positions.is_some() {
            // Slot rows keep their own positions; the caller moves them.
            return;
        }
        self.len += new;
    }
}
