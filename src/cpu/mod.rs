//! The CPU reference backend: the encoder written out plainly ([`encoder`], built from the ops in
//! [`ops`], each forward beside its backward), with a real GEMM (matrixmultiply) for the matrix
//! products. LayerNorm statistics, softmax sums and GELU are computed in f64. It is the yardstick
//! for the GPU kernels, the fallback without a GPU, and the reference for training.

pub mod encoder;
pub mod ops;

use crate::batch::{Batch, Slot};
use crate::model::{ClsHead, Model};
use std::sync::Arc;



pub struct CpuBackend {
    /// The weights in use (an adapter, when set, is merged into them).
    pub model: Arc<Model>,
    adapter: Option<Arc<crate::adapter::Adapter>>,
    /// An adapter applied as separate low-rank branches (the training path).
    unmerged: Option<Arc<crate::adapter::Adapter>>,
    /// The base MLM head while an adapter's trained head parameters replace it.
    saved_mlm: Option<crate::model::MlmHead>,
}

impl CpuBackend {
    pub fn new(model: Arc<Model>) -> Self {
        CpuBackend { model, adapter: None, unmerged: None, saved_mlm: None }
    }

    /// Merges `adapter` into the weights after removing the one merged before (hot-swap).
    pub fn set_adapter(&mut self, adapter: Option<Arc<crate::adapter::Adapter>>) {
        let m = Arc::make_mut(&mut self.model);
        if let Some(old) = self.adapter.take() {
            m.merge_lora(&old, -1.0);
        }
        if let Some(new) = &adapter {
            m.merge_lora(new, 1.0);
        }
        self.set_mlm_head(adapter.as_deref());
        self.adapter = adapter;
        self.unmerged = None;
    }

    /// Restores the base MLM head, then writes the adapter's trained parts over it.
    fn set_mlm_head(&mut self, adapter: Option<&crate::adapter::Adapter>) {
        let m = Arc::make_mut(&mut self.model);
        if let (Some(saved), Some(head)) = (self.saved_mlm.take(), m.mlm.as_mut()) {
            *head = saved;
        }
        if let (Some(a), Some(head)) = (adapter, m.mlm.as_mut()) {
            if !a.mlm_head.is_empty() {
                self.saved_mlm = Some(head.clone());
                a.mlm_head.apply(head);
            }
        }
    }

    /// Applies `adapter` as separate branches `s·(x·Aᵀ)·Bᵀ` beside the base products; any
    /// merged adapter is removed first.
    pub fn set_adapter_unmerged(&mut self, adapter: Option<Arc<crate::adapter::Adapter>>) {
        self.set_adapter(None);
        self.set_mlm_head(adapter.as_deref());
        self.unmerged = adapter;
    }

    /// Final hidden states `[rows × seq, H]` (padding rows hold finite, meaningless values).
    pub fn forward(&self, batch: &Batch) -> Vec<f32> {
        encoder::forward(&self.model, self.unmerged.as_deref(), batch, None)
    }

    pub fn cls_vectors(&self, batch: &Batch) -> Vec<f32> {
        let h = self.model.config.hidden;
        let x = self.forward(batch);
        (0..batch.rows()).flat_map(|b| x[b * batch.seq * h..][..h].to_vec()).collect()
    }

    pub fn cls_scores(&self, batch: &Batch, head: &ClsHead) -> Vec<f32> {
        let h = self.model.config.hidden;
        self.cls_vectors(batch)
            .chunks_exact(h)
            .map(|v| head.score(v) as f32)
            .collect()
    }

    /// Log-softmax rows of the MLM head at `slots`, computed in chunks of rows.
    fn mlm_rows(&self, batch: &Batch, slots: &[Slot], each: impl FnMut(usize, &[f32])) {
        encoder::mlm_rows(&self.model, &self.forward(batch), batch.seq, slots, each)
    }

    pub fn masked_logprobs(&self, batch: &Batch, slots: &[Slot]) -> Vec<f32> {
        let mut out = vec![0f32; slots.len()];
        self.mlm_rows(batch, slots, |i, row| out[i] = row[slots[i].target as usize]);
        out
    }

    pub fn logprob_rows(&self, batch: &Batch, slots: &[Slot]) -> Vec<f32> {
        let v = self.model.config.vocab_size;
        let mut out = vec![0f32; slots.len() * v];
        self.mlm_rows(batch, slots, |i, row| out[i * v..][..v].copy_from_slice(row));
        out
    }
}
