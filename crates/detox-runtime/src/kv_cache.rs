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
        Ok(Self { keys, values, len: 0, capacity })
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

    /// Writes the new keys/values of `layer` after the stored ones and returns views of everything stored so far
    /// (the new positions included). The cache length moves forward only through [`KvCache::advance`], once all
    /// layers have been written.
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, new, head_dim]`
    /// - returns two `[batch, kv_heads, len + new, head_dim]` views
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let new = k.size()[2];
        if self.len + new > self.capacity {
            return Err(Error::InvalidInput(format!(
                "KV cache overflow: {} stored + {new} new > capacity {}",
                self.len, self.capacity
            )));
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
        self.len += new;
    }
}
