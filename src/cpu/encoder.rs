//! The encoder on the CPU, forward and backward, over packed tokens (no padding: see
//! [`ops::Packed`]). The forward optionally records a [`Tape`] of the activations that the
//! backward needs (each kept once); inference passes no tape and asks only for the output rows
//! it uses ([`forward_rows`]): the last layer then runs its attention queries, output product
//! and FFN on those rows alone (the [CLS] row for CLS scores, the masked slot for PLL).
//!
//! LoRA pairs run unmerged, as branches `s·(x·Aᵀ)·Bᵀ` beside the frozen products, so that their
//! gradients are the low-rank ones: `dB = s·dyᵀ·(x·Aᵀ)`, `dA = s·(dy·B)ᵀ·x`.

use super::ops::{self, Heads, Packed, Queries, Transposed};
use super::profile::scope;
use crate::adapter::{Adapter, Target};
use crate::batch::{Batch, Slot};
use crate::model::{Layer, Linear, Model};
use rayon::prelude::*;
use std::ops::Range;

/// What one layer's backward needs (packed rows).
#[derive(Default)]
pub struct LayerTape {
    x: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    ctx: Vec<f32>,
    /// `(x̂, 1/σ)` of the attention block's LayerNorm.
    ln_attn: (Vec<f32>, Vec<f32>),
    y: Vec<f32>,
    f0: Vec<f32>,
    f: Vec<f32>,
    /// `(x̂, 1/σ)` of the FFN block's LayerNorm.
    ln_ffn: (Vec<f32>, Vec<f32>),
    /// `x·Aᵀ` of each LoRA pair of this layer, by pair index.
    lora_t: Vec<(usize, Vec<f32>)>,
}

#[derive(Default)]
pub struct Tape {
    emb_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<LayerTape>,
}

/// Gradients of the trainable tensors. `lora[i]` is `(dA, dB)` of pair `i`; `model` (same shape
/// as the model) receives encoder weight gradients in full fine-tuning and MLM head gradients
/// when the head is trained.
pub struct Grads {
    pub lora: Vec<(Vec<f32>, Vec<f32>)>,
    pub model: Option<Model>,
    /// Whether encoder weights (not only the MLM head) are trainable.
    pub full: bool,
}

impl Grads {
    pub fn new(model: &Model, lora: Option<&Adapter>, model_grads: bool, full: bool) -> Self {
        let lora = lora.map(|a| a.pairs.iter().map(|p| (vec![0.0; p.a.data.len()], vec![0.0; p.b.data.len()])).collect()).unwrap_or_default();
        let model = (model_grads || full).then(|| {
            let mut z = model.clone();
            z.tensors_mut().into_iter().for_each(|(_, t)| t.data.iter_mut().for_each(|v| *v = 0.0));
            z
        });
        Grads { lora, model, full }
    }
}

fn pairs_of<'a>(lora: Option<&'a Adapter>, li: usize, targets: &'a [Target]) -> impl Iterator<Item = (usize, &'a crate::adapter::LoraPair)> + 'a {
    lora.into_iter().flat_map(move |a| a.pairs.iter().enumerate().filter(move |(_, p)| p.layer == li && targets.contains(&p.target)))
}

const QKV: [Target; 3] = [Target::Query, Target::Key, Target::Value];

/// `x·Wᵀ + b (+ add)` plus the LoRA branches of `targets`; their `x·Aᵀ` go to `keep`.
#[allow(clippy::too_many_arguments)]
fn linear_lora(x: &[f32], n: usize, l: &Linear, add: Option<&[f32]>, wt: Option<&[f32]>, lora: Option<&Adapter>, li: usize, targets: &[Target], m: &Model, keep: &mut Vec<(usize, Vec<f32>)>) -> Vec<f32> {
    let mut y = ops::linear(x, n, l, add, wt);
    let ld = l.out_features();
    for (i, p) in pairs_of(lora, li, targets) {
        let a = lora.expect("pairs come from an adapter");
        let t = ops::lora(x, n, &p.a.data, &p.b.data, a.r, a.scale() as f32, &mut y, ld, p.target.row_offset(&m.config));
        keep.push((i, t));
    }
    y
}

/// The packed layout of a padded batch's real tokens.
pub fn packed(batch: &Batch) -> Packed {
    Packed::new(batch.lens.iter().map(|&l| l as usize))
}

/// `[rows × seq, h]` from packed rows (padding rows are zero).
fn unpack(x: &[f32], p: &Packed, seq: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; p.seqs() * seq * h];
    for (s, (&st, &l)) in p.starts.iter().zip(&p.lens).enumerate() {
        out[s * seq * h..][..l * h].copy_from_slice(&x[st * h..][..l * h]);
    }
    out
}

/// Packed rows of a `[rows × seq, h]` tensor.
fn pack(x: &[f32], p: &Packed, seq: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; p.tokens * h];
    for (s, (&st, &l)) in p.starts.iter().zip(&p.lens).enumerate() {
        out[st * h..][..l * h].copy_from_slice(&x[s * seq * h..][..l * h]);
    }
    out
}

fn heads(m: &Model) -> Heads {
    Heads { heads: m.config.heads, dh: m.config.head_dim() }
}

/// Embeddings (word + position + type 0) of the packed tokens, LayerNormed; with `keep`, also
/// the LayerNorm's `(x̂, 1/σ)`.
fn embed(m: &Model, batch: &Batch, p: &Packed, keep: bool) -> (Vec<f32>, (Vec<f32>, Vec<f32>)) {
    let _sc = scope("embeddings + layernorm");
    let c = &m.config;
    let h = c.hidden;
    let mut x = vec![0f32; p.tokens * h];
    x.par_chunks_mut(h).enumerate().for_each(|(t, row)| {
        let s = p.starts.partition_point(|&st| st <= t) - 1;
        let i = t - p.starts[s];
        let id = batch.ids[s * batch.seq + i] as usize;
        let pos = i + c.position_offset;
        let (w, ps, ty) = (&m.word_emb.data[id * h..][..h], &m.pos_emb.data[pos * h..][..h], &m.type_emb.data[..h]);
        for k in 0..h {
            row[k] = w[k] + ps[k] + ty[k];
        }
    });
    let ln = ops::layer_norm(&mut x, h, &m.emb_ln, c.layer_norm_eps, keep);
    (x, ln)
}

/// Output rows of a layer: every token, or per sequence the packed indices `idx[ranges[s]]`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    idx: &'a [usize],
    ranges: &'a [Range<usize>],
}

/// One encoder layer over packed `x`. With `rows`, only those rows come out (the keys and
/// values still come from every token); with `tape`, the layer's activations are kept.
#[allow(clippy::too_many_arguments)]
fn layer_forward(m: &Model, li: usize, lora: Option<&Adapter>, wt: Option<&Transposed>, x: Vec<f32>, p: &Packed, rows: Option<Rows>, tape: Option<&mut LayerTape>) -> Vec<f32> {
    let (c, layer) = (&m.config, &m.layers[li]);
    let w = |i: usize| wt.map(|t| &t.layers[li][i][..]);
    let (h, keep) = (c.hidden, tape.is_some());
    let mut lora_t = Vec::new();
    let sc = scope("linear qkv");
    let qkv = linear_lora(&x, p.tokens, &layer.qkv, None, w(0), lora, li, &QKV, m, &mut lora_t);
    drop(sc);
    let (queries, n, resid) = match rows {
        Some(r) => (Queries::Some { idx: r.idx, ranges: r.ranges }, r.idx.len(), Some(ops::gather_rows(&x, h, r.idx))),
        None => (Queries::All, p.tokens, None),
    };
    let sc = scope("attention");
    let (ctx, probs) = ops::attention(&qkv, p, heads(m), queries, keep);
    drop(sc);
    let sc = scope("linear attn_out + residual");
    let mut y = linear_lora(&ctx, n, &layer.attn_out, Some(resid.as_deref().unwrap_or(&x)), w(1), lora, li, &[Target::AttnOut], m, &mut lora_t);
    drop(sc);
    let sc = scope("layernorm");
    let ln_attn = ops::layer_norm(&mut y, h, &layer.attn_ln, c.layer_norm_eps, keep);
    drop(sc);
    let sc = scope("linear ffn_in");
    let f0 = linear_lora(&y, n, &layer.ffn_in, None, w(2), lora, li, &[Target::FfnIn], m, &mut lora_t);
    drop(sc);
    let sc = scope("gelu");
    let (f0, mut f) = if keep { (f0.clone(), f0) } else { (Vec::new(), f0) };
    ops::gelu(&mut f);
    drop(sc);
    let sc = scope("linear ffn_out + residual");
    let mut z = linear_lora(&f, n, &layer.ffn_out, Some(&y), w(3), lora, li, &[Target::FfnOut], m, &mut lora_t);
    drop(sc);
    let sc = scope("layernorm");
    let ln_ffn = ops::layer_norm(&mut z, h, &layer.ffn_ln, c.layer_norm_eps, keep);
    drop(sc);
    if let Some(tp) = tape {
        *tp = LayerTape { x, qkv, probs, ctx, ln_attn, y, f0, f, ln_ffn, lora_t };
    }
    z
}

/// The encoder over the packed tokens of `batch`: every token's final hidden state, or with
/// `rows` only those (packed indices, ascending); with `tape`, the activations for [`backward`].
fn run(m: &Model, lora: Option<&Adapter>, wt: Option<&Transposed>, batch: &Batch, p: &Packed, rows: Option<Rows>, mut tape: Option<&mut Tape>) -> Vec<f32> {
    let (mut x, ln) = embed(m, batch, p, tape.is_some());
    if let Some(tp) = tape.as_deref_mut() {
        tp.emb_ln = ln;
        tp.layers.clear();
    }
    let last = m.layers.len().saturating_sub(1);
    for li in 0..m.layers.len() {
        let r = if li == last { rows } else { None };
        let mut lt = tape.is_some().then(LayerTape::default);
        x = layer_forward(m, li, lora, wt, x, p, r, lt.as_mut());
        if let (Some(tp), Some(lt)) = (tape.as_deref_mut(), lt) {
            tp.layers.push(lt);
        }
    }
    match (rows, m.layers.is_empty()) {
        (Some(r), true) => ops::gather_rows(&x, m.config.hidden, r.idx),
        _ => x,
    }
}

/// Final hidden states `[rows × seq, H]` (padding rows are zero); with `tape`, the activations
/// for [`backward`].
pub fn forward(m: &Model, lora: Option<&Adapter>, batch: &Batch, tape: Option<&mut Tape>) -> Vec<f32> {
    let p = packed(batch);
    let x = run(m, lora, None, batch, &p, None, tape);
    unpack(&x, &p, batch.seq, m.config.hidden)
}

/// Final hidden states at `(row, position)` pairs only, `[at, H]`; `at` must be ascending
/// (the caller sorts it once). The last layer computes just these rows. `wt`: the layers'
/// weights transposed (faster), if at hand.
pub fn forward_rows(m: &Model, lora: Option<&Adapter>, wt: Option<&Transposed>, batch: &Batch, at: &[(usize, usize)]) -> Vec<f32> {
    debug_assert!(at.windows(2).all(|w| w[0] <= w[1]), "forward_rows: positions must be ascending");
    let p = packed(batch);
    let idx: Vec<usize> = at.iter().map(|&(r, pos)| p.starts[r] + pos).collect();
    let mut ranges = Vec::with_capacity(p.seqs());
    let mut k = 0;
    for s in 0..p.seqs() {
        let lo = k;
        while k < at.len() && at[k].0 == s {
            k += 1;
        }
        ranges.push(lo..k);
    }
    run(m, lora, wt, batch, &p, Some(Rows { idx: &idx, ranges: &ranges }), None)
}

/// The `[out, in]` weight and `[out]` bias gradients of one of a layer's linear maps.
fn linear_grads<'a>(g: Option<&'a mut Layer>, pick: fn(&mut Layer) -> &mut Linear) -> Option<(&'a mut [f32], &'a mut [f32])> {
    g.map(|l| {
        let lin = pick(l);
        (&mut lin.weight.data[..], &mut lin.bias.data[..])
    })
}

/// The `γ`, `β` gradients of a layer's attention (`second` false) or FFN LayerNorm.
fn ln_grads(g: Option<&mut Layer>, second: bool) -> Option<(&mut [f32], &mut [f32])> {
    g.map(|l| {
        let ln = if second { &mut l.ffn_ln } else { &mut l.attn_ln };
        (&mut ln.gamma.data[..], &mut ln.beta.data[..])
    })
}

/// Backward of `linear_lora`: `dx += dy·W` (+ branch terms), weight gradients when `gl` is given,
/// and the LoRA pair gradients.
#[allow(clippy::too_many_arguments)]
fn linear_lora_backward(dy: &[f32], x: &[f32], n: usize, l: &Linear, lora: Option<&Adapter>, kept: &[(usize, Vec<f32>)], targets: &[Target], m: &Model, gl: Option<(&mut [f32], &mut [f32])>, glora: &mut [(Vec<f32>, Vec<f32>)]) -> Vec<f32> {
    let mut dx = vec![0f32; n * l.in_features()];
    ops::linear_backward(dy, x, n, l, Some(&mut dx), gl);
    if let Some(a) = lora {
        for (i, t) in kept {
            let p = &a.pairs[*i];
            if !targets.contains(&p.target) {
                continue;
            }
            let (o, _) = p.target.shape(&m.config);
            let dyb = ops::columns(dy, l.out_features(), p.target.row_offset(&m.config), o);
            let (da, db) = &mut glora[*i];
            ops::lora_backward(&dyb, x, t, n, &p.a.data, &p.b.data, a.r, a.scale() as f32, da, db, &mut dx);
        }
    }
    dx
}

/// Backpropagates `d_out` (gradient of the final hidden states, `[rows × seq, H]`) through the
/// encoder recorded in `tape`, accumulating into `grads`.
pub fn backward(m: &Model, lora: Option<&Adapter>, batch: &Batch, tape: &Tape, d_out: Vec<f32>, grads: &mut Grads) {
    let c = &m.config;
    let h = c.hidden;
    let p = packed(batch);
    let n = p.tokens;
    let full = grads.full;
    let mut gm = if full { grads.model.as_mut() } else { None };
    let mut dx = pack(&d_out, &p, batch.seq, h);
    drop(d_out);
    for (li, layer) in m.layers.iter().enumerate().rev() {
        let lt = &tape.layers[li];
        let mut gl = gm.as_deref_mut().map(|g| &mut g.layers[li]);
        // out = LN(z), z = f·W2ᵀ + y
        let dz = ops::layer_norm_backward(&dx, &lt.ln_ffn.0, &lt.ln_ffn.1, h, &layer.ffn_ln, ln_grads(gl.as_deref_mut(), true));
        let mut df = linear_lora_backward(&dz, &lt.f, n, &layer.ffn_out, lora, &lt.lora_t, &[Target::FfnOut], m, linear_grads(gl.as_deref_mut(), |l| &mut l.ffn_out), &mut grads.lora);
        ops::gelu_backward(&mut df, &lt.f0);
        let mut dy = linear_lora_backward(&df, &lt.y, n, &layer.ffn_in, lora, &lt.lora_t, &[Target::FfnIn], m, linear_grads(gl.as_deref_mut(), |l| &mut l.ffn_in), &mut grads.lora);
        dy.iter_mut().zip(&dz).for_each(|(a, b)| *a += b);
        // y = LN(ctx·Woᵀ + x)
        let dy0 = ops::layer_norm_backward(&dy, &lt.ln_attn.0, &lt.ln_attn.1, h, &layer.attn_ln, ln_grads(gl.as_deref_mut(), false));
        let dctx = linear_lora_backward(&dy0, &lt.ctx, n, &layer.attn_out, lora, &lt.lora_t, &[Target::AttnOut], m, linear_grads(gl.as_deref_mut(), |l| &mut l.attn_out), &mut grads.lora);
        let dqkv = ops::attention_backward(&dctx, &lt.qkv, &lt.probs, &p, heads(m));
        let mut dxi = linear_lora_backward(&dqkv, &lt.x, n, &layer.qkv, lora, &lt.lora_t, &QKV, m, linear_grads(gl.as_deref_mut(), |l| &mut l.qkv), &mut grads.lora);
        dxi.iter_mut().zip(&dy0).for_each(|(a, b)| *a += b);
        dx = dxi;
    }
    if let Some(g) = gm {
        let de = ops::layer_norm_backward(&dx, &tape.emb_ln.0, &tape.emb_ln.1, h, &m.emb_ln, Some((&mut g.emb_ln.gamma.data[..], &mut g.emb_ln.beta.data[..])));
        for (s, (&st, &l)) in p.starts.iter().zip(&p.lens).enumerate() {
            for i in 0..l {
                let row = &de[(st + i) * h..][..h];
                let id = batch.ids[s * batch.seq + i] as usize;
                let pos = i + c.position_offset;
                for k in 0..h {
                    g.word_emb.data[id * h + k] += row[k];
                    g.pos_emb.data[pos * h + k] += row[k];
                    if c.type_vocab_size > 0 {
                        g.type_emb.data[k] += row[k];
                    }
                }
            }
        }
    }
}

/// The hidden rows at `slots` of padded `[rows × seq, H]` states, `[slots, H]`.
fn gather(x: &[f32], seq: usize, h: usize, slots: &[Slot]) -> Vec<f32> {
    let idx: Vec<usize> = slots.iter().map(|s| s.row as usize * seq + s.pos as usize).collect();
    ops::gather_rows(x, h, &idx)
}

/// MLM chunk: rows of the head evaluated together (bounds the `[rows, V]` logits).
const MLM_CHUNK: usize = 256;

/// The MLM head's logits `[k, V]` for hidden rows `g` `[k, H]`; with `keep`, also the head's
/// `(pre-GELU, post-LayerNorm, (x̂, 1/σ))` activations for the backward.
fn mlm_logits(m: &Model, g: &[f32], k: usize, keep: bool) -> (Vec<f32>, Option<(Vec<f32>, Vec<f32>, (Vec<f32>, Vec<f32>))>) {
    let mlm = m.mlm.as_ref().expect("caller checks for an MLM head");
    let dec = m.decoder_weight().expect("MLM head present");
    let (h, v) = (m.config.hidden, m.config.vocab_size);
    let t0 = ops::linear(g, k, &mlm.dense, None, None);
    let (t0, mut t) = if keep { (t0.clone(), t0) } else { (Vec::new(), t0) };
    ops::gelu(&mut t);
    let ln = ops::layer_norm(&mut t, h, &mlm.ln, m.config.layer_norm_eps, keep);
    let mut logits = vec![0f32; k * v];
    logits.par_chunks_mut(v).for_each(|row| row.copy_from_slice(&mlm.bias.data));
    ops::gemm(k, h, v, 1.0, &t, false, &dec.data, true, 1.0, &mut logits);
    (logits, keep.then_some((t0, t, ln)))
}

/// `log P(target_i)` from the MLM head at hidden rows `x` `[targets, H]`.
pub fn mlm_logprobs(m: &Model, x: &[f32], targets: &[u32]) -> Vec<f32> {
    let (h, v) = (m.config.hidden, m.config.vocab_size);
    let mut out = Vec::with_capacity(targets.len());
    for (xc, tc) in x.chunks(MLM_CHUNK * h).zip(targets.chunks(MLM_CHUNK)) {
        let sc = scope("mlm head (dense, decoder)");
        let (logits, _) = mlm_logits(m, xc, tc.len(), false);
        drop(sc);
        let _sc = scope("mlm log-softmax");
        let lp: Vec<f32> = logits.par_chunks(v).zip(tc.par_iter()).map(|(row, &t)| row[t as usize] - super::math::log_sum_exp(row)).collect();
        out.extend(lp);
    }
    out
}

/// MLM head log-softmax rows at `slots` of padded states `x` (in chunks of rows), each passed
/// to `each`.
pub fn mlm_rows(m: &Model, x: &[f32], seq: usize, slots: &[Slot], mut each: impl FnMut(usize, &[f32])) {
    let (h, v) = (m.config.hidden, m.config.vocab_size);
    for (ci, chunk) in slots.chunks(MLM_CHUNK).enumerate() {
        let (mut logits, _) = mlm_logits(m, &gather(x, seq, h, chunk), chunk.len(), false);
        ops::log_softmax(&mut logits, v);
        for (i, row) in logits.chunks_exact(v).enumerate() {
            each(ci * MLM_CHUNK + i, row);
        }
    }
}

/// Masked-LM cross-entropy `Σ_slots −log P(target)·w` with weight `w` per slot (for a mean,
/// `1/count`). Adds its gradient with respect to the hidden states to `dx` and, when `grads`
/// has a model, to the head (and, in full fine-tuning, to the tied decoder). Returns the loss.
pub fn mlm_loss_backward(m: &Model, x: &[f32], seq: usize, slots: &[Slot], w: f32, dx: &mut [f32], grads: &mut Grads) -> f64 {
    let mlm = m.mlm.as_ref().expect("caller checks for an MLM head");
    let dec = m.decoder_weight().expect("MLM head present");
    let (h, v) = (m.config.hidden, m.config.vocab_size);
    let full = grads.full;
    let mut loss = 0.0;
    for chunk in slots.chunks(MLM_CHUNK) {
        let k = chunk.len();
        let g = gather(x, seq, h, chunk);
        let (mut logits, kept) = mlm_logits(m, &g, k, true);
        let (t0, t, (xhat, rstd)) = kept.expect("kept");
        ops::log_softmax(&mut logits, v);
        // d logits = w·(softmax − onehot)
        for (row, s) in logits.chunks_exact_mut(v).zip(chunk) {
            loss -= w as f64 * row[s.target as usize] as f64;
            row.iter_mut().for_each(|z| *z = w * z.exp());
            row[s.target as usize] -= w;
        }
        let dlogits = logits;
        let mut dt = vec![0f32; k * h];
        ops::gemm(k, v, h, 1.0, &dlogits, false, &dec.data, false, 0.0, &mut dt);
        let mut gmod = grads.model.as_mut();
        if full {
            if let Some(gm) = gmod.as_deref_mut() {
                let dd = match gm.mlm.as_mut().and_then(|h| h.decoder.as_mut()) {
                    Some(d) => &mut d.data,
                    None => &mut gm.word_emb.data,
                };
                ops::gemm(v, k, h, 1.0, &dlogits, true, &t, false, 1.0, dd);
            }
        }
        let mut gh = gmod.map(|g| g.mlm.as_mut().expect("grads mirror the model"));
        if let Some(gh) = gh.as_deref_mut() {
            for row in dlogits.chunks_exact(v) {
                gh.bias.data.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
        let mut d0 = ops::layer_norm_backward(&dt, &xhat, &rstd, h, &mlm.ln, gh.as_deref_mut().map(|g| (&mut g.ln.gamma.data[..], &mut g.ln.beta.data[..])));
        ops::gelu_backward(&mut d0, &t0);
        let mut d_dense = vec![0f32; k * h];
        ops::linear_backward(&d0, &g, k, &mlm.dense, Some(&mut d_dense), gh.map(|g| (&mut g.dense.weight.data[..], &mut g.dense.bias.data[..])));
        for (s, row) in chunk.iter().zip(d_dense.chunks_exact(h)) {
            let o = (s.row as usize * seq + s.pos as usize) * h;
            dx[o..o + h].iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
    }
    loss
}
