//! The CPU ops, each forward beside its backward (llm.c style). Matrix products go through
//! matrixmultiply's SGEMM; LayerNorm statistics, softmax sums and GELU's error function are f64.
//!
//! Backward functions *accumulate* into their gradient outputs (`+=`), so a tensor used twice
//! (a residual, a tied embedding) simply receives both contributions.

use crate::model::{LayerNorm, Linear};

/// `c = alpha · op(a) · op(b) + beta · c`, row-major; `op(a)` is `[m, k]`, `op(b)` is `[k, n]`.
/// `ta`/`tb` say that `a`/`b` are stored transposed (`[k, m]`, `[n, k]`).
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, k: usize, n: usize, alpha: f32, a: &[f32], ta: bool, b: &[f32], tb: bool, beta: f32, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm extents");
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the slices hold at least the addressed extents (asserted above) and the strides
    // describe exactly those row-major (or transposed) layouts.
    unsafe {
        matrixmultiply::sgemm(m, k, n, alpha, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, beta, c.as_mut_ptr(), n as isize, 1);
    }
}

/// `y[m, n] = x[m, k] · W[n, k]ᵀ + b[n]` (PyTorch's Linear layout).
pub fn linear(x: &[f32], m: usize, l: &Linear) -> Vec<f32> {
    let (n, k) = (l.out_features(), l.in_features());
    let mut y = vec![0f32; m * n];
    for row in y.chunks_exact_mut(n) {
        row.copy_from_slice(&l.bias.data);
    }
    gemm(m, k, n, 1.0, x, false, &l.weight.data, true, 1.0, &mut y);
    y
}

/// Backward of [`linear`]: `dx += dy·W`; with `dw`, also `dW += dyᵀ·x` and `db += Σ_rows dy`.
pub fn linear_backward(dy: &[f32], x: &[f32], m: usize, l: &Linear, dx: Option<&mut [f32]>, dw: Option<(&mut [f32], &mut [f32])>) {
    let (n, k) = (l.out_features(), l.in_features());
    if let Some(dx) = dx {
        gemm(m, n, k, 1.0, dy, false, &l.weight.data, false, 1.0, dx);
    }
    if let Some((dw, db)) = dw {
        gemm(n, m, k, 1.0, dy, true, x, false, 1.0, dw);
        for row in dy.chunks_exact(n) {
            db.iter_mut().zip(row).for_each(|(g, d)| *g += d);
        }
    }
}

/// A LoRA branch `y[:, off..off+o] += s·(x·Aᵀ)·Bᵀ`, `A [r, in]`, `B [o, r]`, y rows of stride
/// `ldy`. Returns `t = x·Aᵀ` `[m, r]` (kept for the backward).
#[allow(clippy::too_many_arguments)]
pub fn lora(x: &[f32], m: usize, a: &[f32], b: &[f32], r: usize, s: f32, y: &mut [f32], ldy: usize, off: usize) -> Vec<f32> {
    let inp = a.len() / r;
    let o = b.len() / r;
    let mut t = vec![0f32; m * r];
    gemm(m, inp, r, 1.0, x, false, a, true, 0.0, &mut t);
    let mut d = vec![0f32; m * o];
    gemm(m, r, o, s, &t, false, b, true, 0.0, &mut d);
    for (row, dr) in y.chunks_exact_mut(ldy).zip(d.chunks_exact(o)) {
        row[off..off + o].iter_mut().zip(dr).for_each(|(v, e)| *v += e);
    }
    t
}

/// Backward of [`lora`] for `dy` (the `o` columns of this branch, `[m, o]`): `dB += s·dyᵀ·t`,
/// `dA += s·(dy·B)ᵀ·x`, `dx += s·(dy·B)·A`.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward(dy: &[f32], x: &[f32], t: &[f32], m: usize, a: &[f32], b: &[f32], r: usize, s: f32, da: &mut [f32], db: &mut [f32], dx: &mut [f32]) {
    let inp = a.len() / r;
    let o = b.len() / r;
    gemm(o, m, r, s, dy, true, t, false, 1.0, db);
    let mut u = vec![0f32; m * r];
    gemm(m, o, r, s, dy, false, b, false, 0.0, &mut u);
    gemm(r, m, inp, 1.0, &u, true, x, false, 1.0, da);
    gemm(m, r, inp, 1.0, &u, false, a, false, 1.0, dx);
}

/// Columns `off..off+o` of `y` (rows of stride `ld`) as a dense `[m, o]` block.
pub fn columns(y: &[f32], ld: usize, off: usize, o: usize) -> Vec<f32> {
    y.chunks_exact(ld).flat_map(|r| r[off..off + o].iter().copied()).collect()
}

/// LayerNorm in place over rows of `h`; returns `(x̂, 1/σ)` for the backward.
pub fn layer_norm(x: &mut [f32], h: usize, ln: &LayerNorm, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut xhat = vec![0f32; x.len()];
    let mut rstd = Vec::with_capacity(x.len() / h);
    for (row, xh) in x.chunks_exact_mut(h).zip(xhat.chunks_exact_mut(h)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            let n = ((*v as f64 - mean) * inv) as f32;
            xh[i] = n;
            *v = n * ln.gamma.data[i] + ln.beta.data[i];
        }
        rstd.push(inv as f32);
    }
    (xhat, rstd)
}

/// Backward of [`layer_norm`]: returns `dx`; with `dp`, also `dγ += Σ dy·x̂`, `dβ += Σ dy`.
pub fn layer_norm_backward(dy: &[f32], xhat: &[f32], rstd: &[f32], h: usize, ln: &LayerNorm, dp: Option<(&mut [f32], &mut [f32])>) -> Vec<f32> {
    let mut dx = vec![0f32; dy.len()];
    for (((d, xh), &inv), out) in dy.chunks_exact(h).zip(xhat.chunks_exact(h)).zip(rstd).zip(dx.chunks_exact_mut(h)) {
        let (mut m1, mut m2) = (0f64, 0f64);
        for i in 0..h {
            let g = d[i] as f64 * ln.gamma.data[i] as f64;
            m1 += g;
            m2 += g * xh[i] as f64;
        }
        m1 /= h as f64;
        m2 /= h as f64;
        for i in 0..h {
            let g = d[i] as f64 * ln.gamma.data[i] as f64;
            out[i] = (inv as f64 * (g - m1 - xh[i] as f64 * m2)) as f32;
        }
    }
    if let Some((dg, db)) = dp {
        for (d, xh) in dy.chunks_exact(h).zip(xhat.chunks_exact(h)) {
            for i in 0..h {
                dg[i] += d[i] * xh[i];
                db[i] += d[i];
            }
        }
    }
    dx
}

/// Exact GELU, `x·Φ(x)`, with the error function in f64.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

/// `d gelu(x) / dx = Φ(x) + x·φ(x)`.
pub fn gelu_grad(x: f32) -> f32 {
    let x = x as f64;
    let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf + x * pdf) as f32
}

/// The shape of one attention call: `rows` sequences of `seq` positions, `heads × dh` wide.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub rows: usize,
    pub seq: usize,
    pub heads: usize,
    pub dh: usize,
}

impl AttnShape {
    fn h(&self) -> usize {
        self.heads * self.dh
    }
    /// Offset of probability row `(b, head, i)` in the `[rows, heads, seq, seq]` table.
    fn p(&self, b: usize, head: usize, i: usize) -> usize {
        ((b * self.heads + head) * self.seq + i) * self.seq
    }
}

/// Softmax attention over the fused `qkv` `[rows·seq, 3H]`, keys restricted to each row's
/// length. Returns the context `[rows·seq, H]` and the probabilities `[rows, heads, seq, seq]`.
pub fn attention(qkv: &[f32], lens: &[u32], s: AttnShape) -> (Vec<f32>, Vec<f32>) {
    let (h, t, dh) = (s.h(), s.seq, s.dh);
    let scale = 1.0 / (dh as f64).sqrt();
    let mut ctx = vec![0f32; s.rows * t * h];
    let mut probs = vec![0f32; s.rows * s.heads * t * t];
    let mut sc = vec![0f64; t];
    for b in 0..s.rows {
        let len = lens[b] as usize;
        for head in 0..s.heads {
            for i in 0..t {
                let q = &qkv[(b * t + i) * 3 * h + head * dh..][..dh];
                let mut max = f64::NEG_INFINITY;
                for j in 0..len {
                    let k = &qkv[(b * t + j) * 3 * h + h + head * dh..][..dh];
                    sc[j] = q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale;
                    max = max.max(sc[j]);
                }
                let mut sum = 0.0;
                for v in &mut sc[..len] {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                let p = &mut probs[s.p(b, head, i)..][..t];
                for j in 0..len {
                    p[j] = (sc[j] / sum) as f32;
                }
                let out = &mut ctx[(b * t + i) * h + head * dh..][..dh];
                for (d, o) in out.iter_mut().enumerate() {
                    let mut acc = 0.0;
                    for j in 0..len {
                        acc += sc[j] * qkv[(b * t + j) * 3 * h + 2 * h + head * dh + d] as f64;
                    }
                    *o = (acc / sum) as f32;
                }
            }
        }
    }
    (ctx, probs)
}

/// Backward of [`attention`]: `dqkv` `[rows·seq, 3H]` from `dctx` `[rows·seq, H]`.
pub fn attention_backward(dctx: &[f32], qkv: &[f32], probs: &[f32], lens: &[u32], s: AttnShape) -> Vec<f32> {
    let (h, t, dh) = (s.h(), s.seq, s.dh);
    let scale = 1.0 / (dh as f64).sqrt();
    let mut dqkv = vec![0f32; qkv.len()];
    let mut dp = vec![0f64; t];
    for b in 0..s.rows {
        let len = lens[b] as usize;
        for head in 0..s.heads {
            for i in 0..t {
                let p = &probs[s.p(b, head, i)..][..t];
                let dc = &dctx[(b * t + i) * h + head * dh..][..dh];
                // dP_j = dctx·V_j ; dV_j += P_j·dctx
                let mut dot = 0.0;
                for j in 0..len {
                    let vrow = (b * t + j) * 3 * h + 2 * h + head * dh;
                    let mut acc = 0.0;
                    for d in 0..dh {
                        acc += dc[d] as f64 * qkv[vrow + d] as f64;
                        dqkv[vrow + d] += p[j] * dc[d];
                    }
                    dp[j] = acc;
                    dot += acc * p[j] as f64;
                }
                // dS_j = P_j (dP_j − Σ_k P_k dP_k); dQ_i += scale Σ_j dS_j K_j; dK_j += scale dS_j Q_i
                let qrow = (b * t + i) * 3 * h + head * dh;
                for j in 0..len {
                    let ds = (p[j] as f64 * (dp[j] - dot) * scale) as f32;
                    if ds == 0.0 {
                        continue;
                    }
                    let krow = (b * t + j) * 3 * h + h + head * dh;
                    for d in 0..dh {
                        dqkv[qrow + d] += ds * qkv[krow + d];
                        dqkv[krow + d] += ds * qkv[qrow + d];
                    }
                }
            }
        }
    }
    dqkv
}

/// Log-softmax of each row of `v` columns in place (f64 sums).
pub fn log_softmax(x: &mut [f32], v: usize) {
    for row in x.chunks_exact_mut(v) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = max + row.iter().map(|&z| (z as f64 - max).exp()).sum::<f64>().ln();
        row.iter_mut().for_each(|z| *z = (*z as f64 - lse) as f32);
    }
}
