//! The CPU reference backend: the encoder written out plainly, one step per line, with a real
//! GEMM (matrixmultiply) for the matrix products. LayerNorm statistics, softmax sums and GELU are
//! computed in f64. It is the yardstick for the GPU kernels and the fallback without a GPU.

use crate::batch::{Batch, Slot};
use crate::model::{ClsHead, LayerNorm, Linear, Model};
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

/// `y[m, n] = x[m, k] · W[n, k]ᵀ + b[n]` (PyTorch's Linear layout).
fn linear(x: &[f32], m: usize, l: &Linear) -> Vec<f32> {
    let (n, k) = (l.out_features(), l.in_features());
    let mut y = vec![0f32; m * n];
    for row in y.chunks_exact_mut(n) {
        row.copy_from_slice(&l.bias.data);
    }
    matmul_nt(x, &l.weight.data, &mut y, m, n, k, 1.0);
    y
}

/// `c[m, n] += a[m, k] · w[n, k]ᵀ`
fn matmul_nt(a: &[f32], w: &[f32], c: &mut [f32], m: usize, n: usize, k: usize, beta: f32) {
    assert!(a.len() >= m * k && w.len() >= n * k && c.len() >= m * n);
    // SAFETY: the slices hold at least the addressed extents (checked above); strides are in
    // elements and describe row-major a, transposed w, row-major c.
    unsafe {
        matrixmultiply::sgemm(
            m, k, n, 1.0,
            a.as_ptr(), k as isize, 1,
            w.as_ptr(), 1, k as isize,
            beta, c.as_mut_ptr(), n as isize, 1,
        );
    }
}

fn layer_norm(x: &mut [f32], h: usize, ln: &LayerNorm, eps: f32) {
    for row in x.chunks_exact_mut(h) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            *v = (((*v as f64 - mean) * inv) as f32) * ln.gamma.data[i] + ln.beta.data[i];
        }
    }
}

/// Exact GELU, `x·Φ(x)`, with the error function in f64.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
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

    /// Adds the unmerged LoRA branches of layer `li` for `targets`: `out[:, off..] += s·(in·Aᵀ)·Bᵀ`
    /// (f64 sums), `input` `[n, in]`, `out` rows of stride `ldc`.
    fn lora_branch(&self, li: usize, targets: &[crate::adapter::Target], input: &[f32], n: usize, out: &mut [f32], ldc: usize) {
        let Some(a) = &self.unmerged else { return };
        let c = &self.model.config;
        let s = a.scale();
        for p in a.pairs.iter().filter(|p| p.layer == li && targets.contains(&p.target)) {
            let (o, inp) = p.target.shape(c);
            let off = p.target.row_offset(c);
            for row in 0..n {
                let x = &input[row * inp..(row + 1) * inp];
                let t: Vec<f64> = (0..a.r).map(|k| p.a.data[k * inp..(k + 1) * inp].iter().zip(x).map(|(u, v)| *u as f64 * *v as f64).sum()).collect();
                for i in 0..o {
                    let d: f64 = (0..a.r).map(|k| p.b.data[i * a.r + k] as f64 * t[k]).sum();
                    out[row * ldc + off + i] += (s * d) as f32;
                }
            }
        }
    }

    /// Final hidden states `[rows × seq, H]` (padding rows hold finite, meaningless values).
    pub fn forward(&self, batch: &Batch) -> Vec<f32> {
        let c = &self.model.config;
        let m = &self.model;
        let (h, t, rows) = (c.hidden, batch.seq, batch.rows());
        let n = rows * t;
        let mut x = vec![0f32; n * h];
        for (r, row) in x.chunks_exact_mut(h).enumerate() {
            let id = batch.ids[r] as usize;
            let pos = (r % t) + c.position_offset;
            for i in 0..h {
                row[i] = m.word_emb.data[id * h + i] + m.pos_emb.data[pos * h + i] + m.type_emb.data[i];
            }
        }
        layer_norm(&mut x, h, &m.emb_ln, c.layer_norm_eps);

        let (nh, dh) = (c.heads, c.head_dim());
        let scale = 1.0 / (dh as f64).sqrt();
        use crate::adapter::Target;
        for (li, layer) in m.layers.iter().enumerate() {
            let mut qkv = linear(&x, n, &layer.qkv);
            self.lora_branch(li, &[Target::Query, Target::Key, Target::Value], &x, n, &mut qkv, 3 * h);
            let mut ctx = vec![0f32; n * h];
            let mut scores = vec![0f64; t];
            for b in 0..rows {
                let len = batch.lens[b] as usize;
                for head in 0..nh {
                    for i in 0..t {
                        let q = &qkv[(b * t + i) * 3 * h + head * dh..][..dh];
                        let mut max = f64::NEG_INFINITY;
                        for j in 0..len {
                            let k = &qkv[(b * t + j) * 3 * h + h + head * dh..][..dh];
                            let s = q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale;
                            scores[j] = s;
                            max = max.max(s);
                        }
                        let mut sum = 0.0;
                        for s in &mut scores[..len] {
                            *s = (*s - max).exp();
                            sum += *s;
                        }
                        let out = &mut ctx[(b * t + i) * h + head * dh..][..dh];
                        for d in 0..dh {
                            let mut acc = 0.0;
                            for j in 0..len {
                                acc += scores[j] * qkv[(b * t + j) * 3 * h + 2 * h + head * dh + d] as f64;
                            }
                            out[d] = (acc / sum) as f32;
                        }
                    }
                }
            }
            let mut y = linear(&ctx, n, &layer.attn_out);
            self.lora_branch(li, &[Target::AttnOut], &ctx, n, &mut y, h);
            y.iter_mut().zip(&x).for_each(|(a, b)| *a += b);
            layer_norm(&mut y, h, &layer.attn_ln, c.layer_norm_eps);
            let mut f = linear(&y, n, &layer.ffn_in);
            self.lora_branch(li, &[Target::FfnIn], &y, n, &mut f, c.intermediate);
            f.iter_mut().for_each(|v| *v = gelu(*v));
            let mut z = linear(&f, n, &layer.ffn_out);
            self.lora_branch(li, &[Target::FfnOut], &f, n, &mut z, h);
            z.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
            layer_norm(&mut z, h, &layer.ffn_ln, c.layer_norm_eps);
            x = z;
        }
        x
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

    /// Log-softmax rows of the MLM head at `slots`, `[slots, V]`, computed in chunks of rows.
    fn mlm_rows(&self, batch: &Batch, slots: &[Slot], mut each: impl FnMut(usize, &[f32])) {
        let m = &self.model;
        let mlm = m.mlm.as_ref().expect("caller checks for an MLM head");
        let dec = m.decoder_weight().expect("MLM head present");
        let (h, v) = (m.config.hidden, m.config.vocab_size);
        let x = self.forward(batch);
        for (ci, chunk) in slots.chunks(256).enumerate() {
            let mut g: Vec<f32> = Vec::with_capacity(chunk.len() * h);
            for s in chunk {
                g.extend_from_slice(&x[(s.row as usize * batch.seq + s.pos as usize) * h..][..h]);
            }
            let mut t = linear(&g, chunk.len(), &mlm.dense);
            t.iter_mut().for_each(|a| *a = gelu(*a));
            layer_norm(&mut t, h, &mlm.ln, m.config.layer_norm_eps);
            let mut logits = vec![0f32; chunk.len() * v];
            for row in logits.chunks_exact_mut(v) {
                row.copy_from_slice(&mlm.bias.data);
            }
            matmul_nt(&t, &dec.data, &mut logits, chunk.len(), v, h, 1.0);
            for (i, row) in logits.chunks_exact_mut(v).enumerate() {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let lse = max + row.iter().map(|&z| (z as f64 - max).exp()).sum::<f64>().ln();
                row.iter_mut().for_each(|z| *z = (*z as f64 - lse) as f32);
                each(ci * 256 + i, row);
            }
        }
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
