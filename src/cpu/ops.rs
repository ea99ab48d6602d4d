//! The CPU ops, each forward beside its backward (llm.c style), over *packed* tokens: the real
//! tokens of all sequences one after another, no padding (see [`Packed`]). Matrix products go
//! through the `gemm` crate (AVX-512/AVX2/NEON micro-kernels chosen at run time, wasm simd128,
//! threads through rayon); everything else is f32 from [`super::math`], row-parallel with rayon.
//!
//! Backward functions *accumulate* into their gradient outputs (`+=`), so a tensor used twice
//! (a residual, a tied embedding) simply receives both contributions.

use super::math;
use crate::model::{LayerNorm, Linear};
use multiversion::multiversion;
use rayon::prelude::*;

/// Rows per parallel task for row-wise ops (LayerNorm, GELU): enough work to pay for a task.
const ROWS_PER_TASK: usize = 32;

/// Threads for one matrix product: all of rayon's, unless the caller already runs on one of
/// them (inference runs chunks in parallel; each chunk's products then stay on its thread).
fn parallelism() -> gemm::Parallelism {
    if rayon::current_thread_index().is_some() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    }
}

/// `c = beta·c + alpha · op(a) · op(b)`, row-major; `op(a)` is `[m, k]`, `op(b)` is `[k, n]`.
/// `ta`/`tb` say that `a`/`b` are stored transposed (`[k, m]`, `[n, k]`). `beta` is 0 or 1.
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, k: usize, n: usize, alpha: f32, a: &[f32], ta: bool, b: &[f32], tb: bool, beta: f32, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm extents");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == 0.0 {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the slices hold at least the addressed extents (asserted above) and the strides
    // describe exactly those row-major (or transposed) layouts; `c` does not alias `a` or `b`.
    // gemm's arguments: dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
    // alpha (dst scale), beta (product scale), conjugations, threads.
    unsafe {
        gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, beta != 0.0, a.as_ptr(), csa, rsa, b.as_ptr(), csb, rsb, beta, alpha, false, false, false, parallelism());
    }
}

/// `y[m, n] = x[m, k] · W[n, k]ᵀ + b[n]` (PyTorch's Linear layout), plus `add` `[m, n]` when
/// given (a residual, folded into the product's initial value). `wt`, when given, is `W`
/// transposed (`[k, n]`, see [`Transposed`]), which gemm packs faster.
pub fn linear(x: &[f32], m: usize, l: &Linear, add: Option<&[f32]>, wt: Option<&[f32]>) -> Vec<f32> {
    let (n, k) = (l.out_features(), l.in_features());
    let mut y = vec![0f32; m * n];
    match add {
        Some(r) => y.par_chunks_mut(n * ROWS_PER_TASK).zip(r.par_chunks(n * ROWS_PER_TASK)).for_each(|(yc, rc)| {
            for (row, rr) in yc.chunks_exact_mut(n).zip(rc.chunks_exact(n)) {
                row.iter_mut().zip(rr).zip(&l.bias.data).for_each(|((o, a), b)| *o = a + b);
            }
        }),
        None => y.par_chunks_mut(n * ROWS_PER_TASK).for_each(|yc| yc.chunks_exact_mut(n).for_each(|row| row.copy_from_slice(&l.bias.data))),
    }
    match wt {
        Some(w) => gemm(m, k, n, 1.0, x, false, w, false, 1.0, &mut y),
        None => gemm(m, k, n, 1.0, x, false, &l.weight.data, true, 1.0, &mut y),
    }
    y
}

/// The encoder layers' weights transposed to `[in, out]` (qkv, attention output, FFN in, FFN
/// out), for inference: gemm packs `W[out, in]` with strided scalar loads on every call, `[in,
/// out]` with contiguous ones (CLS scoring ≈ 6% faster, for one more copy of the weights).
pub struct Transposed {
    pub layers: Vec<[Vec<f32>; 4]>,
}

impl Transposed {
    pub fn new(m: &crate::model::Model) -> Self {
        let t = |l: &Linear| {
            let (n, k) = (l.out_features(), l.in_features());
            let mut out = vec![0f32; n * k];
            out.par_chunks_mut(n).enumerate().for_each(|(kk, row)| {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = l.weight.data[j * k + kk];
                }
            });
            out
        };
        Transposed { layers: m.layers.iter().map(|l| [t(&l.qkv), t(&l.attn_out), t(&l.ffn_in), t(&l.ffn_out)]).collect() }
    }
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

/// Rows `idx` of `x` (rows of `h`), in that order.
pub fn gather_rows(x: &[f32], h: usize, idx: &[usize]) -> Vec<f32> {
    let mut g = Vec::with_capacity(idx.len() * h);
    for &i in idx {
        g.extend_from_slice(&x[i * h..][..h]);
    }
    g
}

/// LayerNorm in place over rows of `h`. With `keep`, returns `(x̂, 1/σ)` for the backward.
pub fn layer_norm(x: &mut [f32], h: usize, ln: &LayerNorm, eps: f32, keep: bool) -> (Vec<f32>, Vec<f32>) {
    let (g, b) = (&ln.gamma.data[..], &ln.beta.data[..]);
    if !keep {
        x.par_chunks_mut(h * ROWS_PER_TASK).for_each(|c| c.chunks_exact_mut(h).for_each(|row| {
            math::layer_norm_row(row, g, b, eps, None);
        }));
        return (Vec::new(), Vec::new());
    }
    let rows = x.len() / h;
    let mut xhat = vec![0f32; x.len()];
    let mut rstd = vec![0f32; rows];
    x.par_chunks_mut(h * ROWS_PER_TASK).zip(xhat.par_chunks_mut(h * ROWS_PER_TASK)).zip(rstd.par_chunks_mut(ROWS_PER_TASK)).for_each(|((xc, hc), rc)| {
        for ((row, xh), r) in xc.chunks_exact_mut(h).zip(hc.chunks_exact_mut(h)).zip(rc) {
            *r = math::layer_norm_row(row, g, b, eps, Some(xh));
        }
    });
    (xhat, rstd)
}

/// Backward of [`layer_norm`]: returns `dx`; with `dp`, also `dγ += Σ dy·x̂`, `dβ += Σ dy`.
pub fn layer_norm_backward(dy: &[f32], xhat: &[f32], rstd: &[f32], h: usize, ln: &LayerNorm, dp: Option<(&mut [f32], &mut [f32])>) -> Vec<f32> {
    let mut dx = vec![0f32; dy.len()];
    let g = &ln.gamma.data[..];
    dx.par_chunks_mut(h * ROWS_PER_TASK).zip(dy.par_chunks(h * ROWS_PER_TASK)).zip(xhat.par_chunks(h * ROWS_PER_TASK)).zip(rstd.par_chunks(ROWS_PER_TASK)).for_each(|(((out, d), xh), inv)| {
        for (((o, d), xh), &inv) in out.chunks_exact_mut(h).zip(d.chunks_exact(h)).zip(xh.chunks_exact(h)).zip(inv) {
            math::layer_norm_backward_row(d, xh, inv, g, o);
        }
    });
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

/// `x ← gelu(x)`, in parallel.
pub fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(8192).for_each(math::gelu_slice);
}

/// `d ← d·gelu'(x)`, in parallel.
pub fn gelu_backward(d: &mut [f32], x: &[f32]) {
    d.par_chunks_mut(8192).zip(x.par_chunks(8192)).for_each(|(d, x)| math::gelu_backward_slice(d, x));
}

/// Variable-length sequences packed one after another: sequence `s` holds tokens
/// `starts[s]..starts[s] + lens[s]` of a `[tokens, ·]` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub starts: Vec<usize>,
    pub lens: Vec<usize>,
    pub tokens: usize,
}

impl Packed {
    pub fn new(lens: impl IntoIterator<Item = usize>) -> Self {
        let lens: Vec<usize> = lens.into_iter().collect();
        let mut starts = Vec::with_capacity(lens.len());
        let mut t = 0;
        for &l in &lens {
            starts.push(t);
            t += l;
        }
        Packed { starts, lens, tokens: t }
    }

    pub fn seqs(&self) -> usize {
        self.lens.len()
    }

    /// Where each sequence's `[heads, len, len]` block of attention probabilities starts, and
    /// the total.
    fn prob_offsets(&self, heads: usize) -> (Vec<usize>, usize) {
        let mut o = Vec::with_capacity(self.seqs());
        let mut t = 0;
        for &l in &self.lens {
            o.push(t);
            t += heads * l * l;
        }
        (o, t)
    }
}

/// Which query tokens attention computes: all of them, or per sequence a subset (packed token
/// indices `idx[ranges[s]]` of sequence `s`, ascending), e.g. only [CLS] or the masked slot in
/// the last layer.
pub enum Queries<'a> {
    All,
    Some { idx: &'a [usize], ranges: &'a [std::ops::Range<usize>] },
}

/// Splits `x` into consecutive mutable pieces of the given lengths.
fn split_lens<'a>(mut x: &'a mut [f32], lens: impl Iterator<Item = usize>) -> Vec<&'a mut [f32]> {
    let mut out = Vec::new();
    for l in lens {
        let (a, b) = std::mem::take(&mut x).split_at_mut(l);
        out.push(a);
        x = b;
    }
    out
}

/// The attention heads' geometry.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub dh: usize,
}

impl Heads {
    fn h(&self) -> usize {
        self.heads * self.dh
    }
}

/// Lanes of the attention kernel's blocks (one AVX-512 register of f32).
const LANES: usize = 16;
/// Queries per block: each key (or value) row loaded serves this many queries.
const QB: usize = 4;

/// Softmax attention of one sequence over the fused `qkv` rows `[len, 3H]` of that sequence:
/// for each query row `q_rows[i]` (relative to the sequence) writes the context row `ctx[i]`
/// and, with `probs`, the `[heads, len, len]` probabilities.
///
/// Register-blocked: `QB` queries against `LANES` keys at a time for the scores, and `QB`
/// queries × `LANES` head dimensions for the context; keys and head dimensions are zero-padded
/// to whole blocks (padded keys get probability 0), so every inner loop is a fixed-size one.
/// The softmax is fused: `e^(s − max)` feeds the context sum, divided once by `Σ e` at the end.
///
/// Long on purpose: one register-blocked kernel whose loops share the blocks' accumulators.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn attend_seq(qkv: &[f32], len: usize, hd: Heads, q_rows: &[usize], ctx: &mut [f32], mut probs: Option<&mut [f32]>) {
    type Block = [f32; LANES];
    let (h, dh) = (hd.h(), hd.dh);
    let scale = 1.0 / (dh as f32).sqrt();
    let (kb, db) = (len.div_ceil(LANES), dh.div_ceil(LANES));
    // kt: [dh][kb] blocks of scaled keys, transposed; v: [len][db] blocks; q: [dh][QB];
    // s: [QB][kb] blocks of scores, then of e^(s − max).
    let mut kt = vec![[0f32; LANES]; dh * kb];
    let mut v = vec![[0f32; LANES]; len * db];
    let mut q = vec![[0f32; QB]; dh];
    let mut s = vec![[0f32; LANES]; QB * kb];
    // Padded keys: −∞ added to their scores.
    let mut pad: Block = [0.0; LANES];
    for (l, p) in pad.iter_mut().enumerate() {
        if (kb - 1) * LANES + l >= len {
            *p = f32::NEG_INFINITY;
        }
    }
    for head in 0..hd.heads {
        for j in 0..len {
            let row = &qkv[j * 3 * h..];
            let (k, vv) = (&row[h + head * dh..][..dh], &row[2 * h + head * dh..][..dh]);
            for d in 0..dh {
                kt[d * kb + j / LANES][j % LANES] = k[d] * scale;
                v[j * db + d / LANES][d % LANES] = vv[d];
            }
        }
        for (bi, block) in q_rows.chunks(QB).enumerate() {
            for (qi, &i) in block.iter().enumerate() {
                for (d, &x) in qkv[i * 3 * h + head * dh..][..dh].iter().enumerate() {
                    q[d][qi] = x;
                }
            }
            // Scores: s[qi][j] = Σ_d q[qi][d]·kt[d][j].
            for jb in 0..kb {
                let mut acc = [[0f32; LANES]; QB];
                for d in 0..dh {
                    let k = &kt[d * kb + jb];
                    let x = &q[d];
                    for qi in 0..QB {
                        for l in 0..LANES {
                            acc[qi][l] += x[qi] * k[l];
                        }
                    }
                }
                if jb == kb - 1 {
                    for a in acc.iter_mut() {
                        for l in 0..LANES {
                            a[l] += pad[l];
                        }
                    }
                }
                for qi in 0..QB {
                    s[qi * kb + jb] = acc[qi];
                }
            }
            // e^(s − max) in place, and 1/Σ per query.
            let mut inv = [0f32; QB];
            for qi in 0..QB {
                let row = &mut s[qi * kb..][..kb];
                let mut mx = [f32::NEG_INFINITY; LANES];
                for b in row.iter() {
                    for l in 0..LANES {
                        mx[l] = mx[l].max(b[l]);
                    }
                }
                let m = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut sum = [0f32; LANES];
                for b in row.iter_mut() {
                    for l in 0..LANES {
                        b[l] = math::exp(b[l] - m);
                        sum[l] += b[l];
                    }
                }
                inv[qi] = 1.0 / sum.iter().sum::<f32>();
            }
            // Context: ctx[qi][d] = Σ_j e[qi][j]·v[j][d] / Σ_j e[qi][j].
            for dbi in 0..db {
                let mut acc = [[0f32; LANES]; QB];
                for j in 0..len {
                    let vr = &v[j * db + dbi];
                    for qi in 0..QB {
                        let e = s[qi * kb + j / LANES][j % LANES];
                        for l in 0..LANES {
                            acc[qi][l] += e * vr[l];
                        }
                    }
                }
                let n = LANES.min(dh - dbi * LANES);
                for qi in 0..block.len() {
                    let out = &mut ctx[(bi * QB + qi) * h + head * dh + dbi * LANES..][..n];
                    for (o, a) in out.iter_mut().zip(&acc[qi]) {
                        *o = a * inv[qi];
                    }
                }
            }
            if let Some(p) = probs.as_deref_mut() {
                for (qi, &i) in block.iter().enumerate() {
                    let e = s[qi * kb..][..kb].as_flattened();
                    for (o, x) in p[(head * len + i) * len..][..len].iter_mut().zip(e) {
                        *o = x * inv[qi];
                    }
                }
            }
        }
    }
}

/// Softmax attention over the fused `qkv` `[tokens, 3H]` of packed sequences, each attending
/// within itself. Returns the context rows of the queries `[queries, H]` and, with `keep` (all
/// queries only), the probabilities (per sequence `[heads, len, len]`, one after another).
pub fn attention(qkv: &[f32], p: &Packed, hd: Heads, queries: Queries, keep: bool) -> (Vec<f32>, Vec<f32>) {
    let h = hd.h();
    let q_count = |s: usize| match &queries {
        Queries::All => p.lens[s],
        Queries::Some { ranges, .. } => ranges[s].len(),
    };
    let total: usize = (0..p.seqs()).map(q_count).sum();
    let mut ctx = vec![0f32; total * h];
    let ctx_parts = split_lens(&mut ctx, (0..p.seqs()).map(|s| q_count(s) * h));
    let mut probs = vec![0f32; if keep { p.prob_offsets(hd.heads).1 } else { 0 }];
    let mut prob_parts: Vec<Option<&mut [f32]>> = if keep {
        split_lens(&mut probs, p.lens.iter().map(|&l| hd.heads * l * l)).into_iter().map(Some).collect()
    } else {
        (0..p.seqs()).map(|_| None).collect()
    };
    ctx_parts.into_par_iter().zip(prob_parts.par_iter_mut()).enumerate().for_each(|(s, (c, pp))| {
        let (start, len) = (p.starts[s], p.lens[s]);
        let rows = &qkv[start * 3 * h..(start + len) * 3 * h];
        match &queries {
            Queries::All => attend_seq(rows, len, hd, &(0..len).collect::<Vec<_>>(), c, pp.as_deref_mut()),
            Queries::Some { idx, ranges } => attend_seq(rows, len, hd, &idx[ranges[s].clone()].iter().map(|&t| t - start).collect::<Vec<_>>(), c, None),
        }
    });
    (ctx, probs)
}

/// Backward of one sequence's attention: `dqkv` `[len, 3H]` (accumulated) from `dctx` `[len, H]`.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn attend_seq_backward(dctx: &[f32], qkv: &[f32], probs: &[f32], len: usize, hd: Heads, dqkv: &mut [f32]) {
    let (h, dh) = (hd.h(), hd.dh);
    let scale = 1.0 / (dh as f32).sqrt();
    let mut dp = vec![0f32; len];
    for head in 0..hd.heads {
        for i in 0..len {
            let p = &probs[(head * len + i) * len..][..len];
            let dc = &dctx[i * h + head * dh..][..dh];
            // dP_j = dctx·V_j ; dV_j += P_j·dctx
            let mut dot = 0.0;
            for j in 0..len {
                let vrow = j * 3 * h + 2 * h + head * dh;
                dp[j] = math::dot(dc, &qkv[vrow..][..dh]);
                dot += dp[j] * p[j];
                math::axpy(p[j], dc, &mut dqkv[vrow..][..dh]);
            }
            // dS_j = P_j (dP_j − Σ_k P_k dP_k); dQ_i += scale Σ_j dS_j K_j; dK_j += scale dS_j Q_i
            let qrow = i * 3 * h + head * dh;
            for j in 0..len {
                let ds = p[j] * (dp[j] - dot) * scale;
                if ds == 0.0 {
                    continue;
                }
                let krow = j * 3 * h + h + head * dh;
                for d in 0..dh {
                    dqkv[qrow + d] += ds * qkv[krow + d];
                    dqkv[krow + d] += ds * qkv[qrow + d];
                }
            }
        }
    }
}

/// Backward of [`attention`] (all queries): `dqkv` `[tokens, 3H]` from `dctx` `[tokens, H]`.
pub fn attention_backward(dctx: &[f32], qkv: &[f32], probs: &[f32], p: &Packed, hd: Heads) -> Vec<f32> {
    let h = hd.h();
    let mut dqkv = vec![0f32; qkv.len()];
    let (poff, _) = p.prob_offsets(hd.heads);
    let parts = split_lens(&mut dqkv, p.lens.iter().map(|&l| l * 3 * h));
    parts.into_par_iter().enumerate().for_each(|(s, d)| {
        let (start, len) = (p.starts[s], p.lens[s]);
        attend_seq_backward(&dctx[start * h..(start + len) * h], &qkv[start * 3 * h..(start + len) * 3 * h], &probs[poff[s]..][..hd.heads * len * len], len, hd, d);
    });
    dqkv
}

/// Log-softmax of each row of `v` columns in place.
pub fn log_softmax(x: &mut [f32], v: usize) {
    x.par_chunks_mut(v).for_each(|row| {
        let lse = math::log_sum_exp(row);
        row.iter_mut().for_each(|z| *z -= lse);
    });
}
