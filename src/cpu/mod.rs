//! The CPU backend: the encoder ([`encoder`], built from the ops in [`ops`], each forward beside
//! its backward) over packed tokens (no padded FLOPs), f32 throughout, matrix products through
//! the `gemm` crate and everything else vectorised ([`math`]) and spread over cores with rayon.
//! Inference computes the last layer only at the rows it returns ([CLS], or PLL's masked slot)
//! and runs long batches in chunks of [`CHUNK_TOKENS`], so memory stays bounded whatever the
//! list size. It is the yardstick for the GPU kernels, the fallback without a GPU (natively and
//! as WebAssembly), and the reference for training.

pub mod encoder;
pub mod math;
pub mod ops;
pub mod profile;

use crate::batch::{Batch, Slot};
use crate::model::{ClsHead, Model};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// Most real tokens in one inference chunk. Chunks run in parallel, one per core, each
/// single-threaded, so that a chunk's activations stay in that core's cache (≈ 5 MB for
/// MiniLM at 512 tokens) and the layers need no synchronisation; memory stays bounded whatever
/// the batch size (≈ threads × chunk activations).
pub const CHUNK_TOKENS: usize = 512;
/// Fewest tokens per chunk (smaller chunks make the matrix products inefficient).
const MIN_CHUNK_TOKENS: usize = 64;

/// Consecutive row ranges of `batch` for parallel inference: about `2 × threads` chunks of at
/// most [`CHUNK_TOKENS`] real tokens (a longer single row is a chunk of its own).
fn chunks(batch: &Batch) -> Vec<Range<usize>> {
    let total: usize = batch.lens.iter().map(|&l| l as usize).sum();
    let limit = total.div_ceil(2 * rayon::current_num_threads()).clamp(MIN_CHUNK_TOKENS, CHUNK_TOKENS);
    let mut out = Vec::new();
    let (mut lo, mut tokens) = (0, 0);
    for (r, &l) in batch.lens.iter().enumerate() {
        if r > lo && tokens + l as usize > limit {
            out.push(lo..r);
            (lo, tokens) = (r, 0);
        }
        tokens += l as usize;
    }
    if lo < batch.rows() {
        out.push(lo..batch.rows());
    }
    out
}

/// `f` of each chunk, the chunks in parallel; a single chunk runs on this thread, where its
/// ops spread over all cores themselves.
fn each_chunk<W: Sync, T: Send>(work: &[W], f: impl Fn(&W) -> T + Sync + Send) -> Vec<T> {
    if work.len() == 1 {
        work.iter().map(f).collect()
    } else {
        work.par_iter().map(f).collect()
    }
}

pub struct CpuBackend {
    /// The weights in use (an adapter, when set, is merged into them). They change only through
    /// [`CpuBackend::set_adapter`], which keeps `transposed` in step.
    model: Arc<Model>,
    /// The layers' weights transposed for inference (natively; in wasm memory is scarcer).
    transposed: Option<Arc<ops::Transposed>>,
    adapter: Option<Arc<crate::adapter::Adapter>>,
    /// An adapter applied as separate low-rank branches (the training path).
    unmerged: Option<Arc<crate::adapter::Adapter>>,
    /// The base MLM head while an adapter's trained head parameters replace it.
    saved_mlm: Option<crate::model::MlmHead>,
}

impl CpuBackend {
    pub fn new(model: Arc<Model>) -> Self {
        let transposed = Self::transpose(&model);
        CpuBackend { model, transposed, adapter: None, unmerged: None, saved_mlm: None }
    }

    /// The weights in use.
    pub fn model(&self) -> &Model {
        &self.model
    }

    fn transpose(model: &Model) -> Option<Arc<ops::Transposed>> {
        cfg!(not(target_arch = "wasm32")).then(|| Arc::new(ops::Transposed::new(model)))
    }

    /// Merges `adapter` into the weights after removing the one merged before (hot-swap).
    pub fn set_adapter(&mut self, adapter: Option<Arc<crate::adapter::Adapter>>) {
        let weights_change = self.adapter.is_some() || adapter.is_some();
        let m = Arc::make_mut(&mut self.model);
        if let Some(old) = self.adapter.take() {
            m.merge_lora(&old, -1.0);
        }
        if let Some(new) = &adapter {
            m.merge_lora(new, 1.0);
        }
        self.set_mlm_head(adapter.as_deref());
        if weights_change {
            self.transposed = Self::transpose(&self.model);
        }
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

    /// Final hidden states `[rows × seq, H]` (padding rows are zero).
    pub fn forward(&self, batch: &Batch) -> Vec<f32> {
        let lora = self.unmerged.as_deref();
        each_chunk(&chunks(batch), |r| encoder::forward(&self.model, lora, &batch.slice_rows(r.start, r.end), None)).concat()
    }

    /// Final hidden states at `(row, position)` pairs, `[at, H]`, the chunks in parallel.
    fn hidden_at(&self, batch: &Batch, at: &[(usize, usize)]) -> Vec<f32> {
        let h = self.model.config.hidden;
        let lora = self.unmerged.as_deref();
        let mut order: Vec<usize> = (0..at.len()).collect();
        order.sort_by_key(|&i| at[i]);
        // Each chunk's rows and the `order` entries that fall in it.
        let mut work = Vec::new();
        let mut k = 0;
        for r in chunks(batch) {
            let first = k;
            while k < order.len() && at[order[k]].0 < r.end {
                k += 1;
            }
            if k > first {
                work.push((r, first..k));
            }
        }
        let run = |(r, o): &(Range<usize>, Range<usize>)| {
            let local: Vec<(usize, usize)> = order[o.clone()].iter().map(|&i| (at[i].0 - r.start, at[i].1)).collect();
            encoder::forward_rows(&self.model, lora, self.transposed.as_deref(), &batch.slice_rows(r.start, r.end), &local)
        };
        let parts = each_chunk(&work, run);
        let mut out = vec![0f32; at.len() * h];
        for ((_, o), x) in work.iter().zip(parts) {
            for (j, &i) in order[o.clone()].iter().enumerate() {
                out[i * h..][..h].copy_from_slice(&x[j * h..][..h]);
            }
        }
        out
    }

    pub fn cls_vectors(&self, batch: &Batch) -> Vec<f32> {
        let at: Vec<(usize, usize)> = (0..batch.rows()).map(|r| (r, 0)).collect();
        self.hidden_at(batch, &at)
    }

    pub fn cls_scores(&self, batch: &Batch, head: &ClsHead) -> Vec<f32> {
        let h = self.model.config.hidden;
        self.cls_vectors(batch)
            .chunks_exact(h)
            .map(|v| head.score(v) as f32)
            .collect()
    }

    fn slot_hidden(&self, batch: &Batch, slots: &[Slot]) -> Vec<f32> {
        let at: Vec<(usize, usize)> = slots.iter().map(|s| (s.row as usize, s.pos as usize)).collect();
        self.hidden_at(batch, &at)
    }

    pub fn masked_logprobs(&self, batch: &Batch, slots: &[Slot]) -> Vec<f32> {
        let targets: Vec<u32> = slots.iter().map(|s| s.target).collect();
        encoder::mlm_logprobs(&self.model, &self.slot_hidden(batch, slots), &targets)
    }

    pub fn logprob_rows(&self, batch: &Batch, slots: &[Slot]) -> Vec<f32> {
        let v = self.model.config.vocab_size;
        let x = self.slot_hidden(batch, slots);
        let rows: Vec<Slot> = slots.iter().enumerate().map(|(i, s)| Slot { row: i as u32, pos: 0, target: s.target }).collect();
        let mut out = vec![0f32; slots.len() * v];
        encoder::mlm_rows(&self.model, &x, 1, &rows, |i, row| out[i * v..][..v].copy_from_slice(row));
        out
    }
}
