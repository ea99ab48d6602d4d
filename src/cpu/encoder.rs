//! The encoder on the CPU, forward and backward. The forward optionally records a [`Tape`] of
//! the activations that the backward needs (each kept once); inference passes no tape.
//!
//! LoRA pairs run unmerged, as branches `s·(x·Aᵀ)·Bᵀ` beside the frozen products, so that their
//! gradients are the low-rank ones: `dB = s·dyᵀ·(x·Aᵀ)`, `dA = s·(dy·B)ᵀ·x`.

use super::ops::{self, AttnShape};
use crate::adapter::{Adapter, Target};
use crate::batch::{Batch, Slot};
use crate::model::{Layer, Linear, Model};

/// What one layer's backward needs.
#[derive(Default)]
pub struct LayerTape {
    x: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    ctx: Vec<f32>,
    ln1: (Vec<f32>, Vec<f32>),
    y: Vec<f32>,
    f0: Vec<f32>,
    f: Vec<f32>,
    ln2: (Vec<f32>, Vec<f32>),
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

/// `x·Wᵀ + b` plus the LoRA branches of `targets`; their `x·Aᵀ` go to `keep`.
fn linear_lora(x: &[f32], n: usize, l: &Linear, lora: Option<&Adapter>, li: usize, targets: &[Target], m: &Model, keep: &mut Vec<(usize, Vec<f32>)>) -> Vec<f32> {
    let mut y = ops::linear(x, n, l);
    let ld = l.out_features();
    for (i, p) in pairs_of(lora, li, targets) {
        let a = lora.expect("pairs come from an adapter");
        let t = ops::lora(x, n, &p.a.data, &p.b.data, a.r, a.scale() as f32, &mut y, ld, p.target.row_offset(&m.config));
        keep.push((i, t));
    }
    y
}

/// Final hidden states `[rows × seq, H]`; with `tape`, the activations for [`backward`].
pub fn forward(m: &Model, lora: Option<&Adapter>, batch: &Batch, mut tape: Option<&mut Tape>) -> Vec<f32> {
    let c = &m.config;
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
    let ln = ops::layer_norm(&mut x, h, &m.emb_ln, c.layer_norm_eps);
    if let Some(tp) = tape.as_deref_mut() {
        tp.emb_ln = ln;
        tp.layers.clear();
    }
    let shape = AttnShape { rows, seq: t, heads: c.heads, dh: c.head_dim() };
    for (li, layer) in m.layers.iter().enumerate() {
        let mut lt = LayerTape::default();
        let qkv = linear_lora(&x, n, &layer.qkv, lora, li, &QKV, m, &mut lt.lora_t);
        let (ctx, probs) = ops::attention(&qkv, &batch.lens, shape);
        let mut y = linear_lora(&ctx, n, &layer.attn_out, lora, li, &[Target::AttnOut], m, &mut lt.lora_t);
        y.iter_mut().zip(&x).for_each(|(a, b)| *a += b);
        let ln1 = ops::layer_norm(&mut y, h, &layer.attn_ln, c.layer_norm_eps);
        let f0 = linear_lora(&y, n, &layer.ffn_in, lora, li, &[Target::FfnIn], m, &mut lt.lora_t);
        let f: Vec<f32> = f0.iter().map(|&v| ops::gelu(v)).collect();
        let mut z = linear_lora(&f, n, &layer.ffn_out, lora, li, &[Target::FfnOut], m, &mut lt.lora_t);
        z.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        let ln2 = ops::layer_norm(&mut z, h, &layer.ffn_ln, c.layer_norm_eps);
        if let Some(tp) = tape.as_deref_mut() {
            lt.x = std::mem::take(&mut x);
            lt.qkv = qkv;
            lt.probs = probs;
            lt.ctx = ctx;
            lt.ln1 = ln1;
            lt.y = y;
            lt.f0 = f0;
            lt.f = f;
            lt.ln2 = ln2;
            tp.layers.push(lt);
        }
        x = z;
    }
    x
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
    let (h, t, rows) = (c.hidden, batch.seq, batch.rows());
    let n = rows * t;
    let shape = AttnShape { rows, seq: t, heads: c.heads, dh: c.head_dim() };
    let full = grads.full;
    let mut gm = if full { grads.model.as_mut() } else { None };
    let mut dx = d_out;
    for (li, layer) in m.layers.iter().enumerate().rev() {
        let lt = &tape.layers[li];
        let mut gl = gm.as_deref_mut().map(|g| &mut g.layers[li]);
        // out = LN(z), z = f·W2ᵀ + y
        let dz = ops::layer_norm_backward(&dx, &lt.ln2.0, &lt.ln2.1, h, &layer.ffn_ln, ln_grads(gl.as_deref_mut(), true));
        let df = linear_lora_backward(&dz, &lt.f, n, &layer.ffn_out, lora, &lt.lora_t, &[Target::FfnOut], m, linear_grads(gl.as_deref_mut(), |l| &mut l.ffn_out), &mut grads.lora);
        let df0: Vec<f32> = df.iter().zip(&lt.f0).map(|(d, &x)| d * ops::gelu_grad(x)).collect();
        let mut dy = linear_lora_backward(&df0, &lt.y, n, &layer.ffn_in, lora, &lt.lora_t, &[Target::FfnIn], m, linear_grads(gl.as_deref_mut(), |l| &mut l.ffn_in), &mut grads.lora);
        dy.iter_mut().zip(&dz).for_each(|(a, b)| *a += b);
        // y = LN(ctx·Woᵀ + x)
        let dy0 = ops::layer_norm_backward(&dy, &lt.ln1.0, &lt.ln1.1, h, &layer.attn_ln, ln_grads(gl.as_deref_mut(), false));
        let dctx = linear_lora_backward(&dy0, &lt.ctx, n, &layer.attn_out, lora, &lt.lora_t, &[Target::AttnOut], m, linear_grads(gl.as_deref_mut(), |l| &mut l.attn_out), &mut grads.lora);
        let dqkv = ops::attention_backward(&dctx, &lt.qkv, &lt.probs, &batch.lens, shape);
        let mut dxi = linear_lora_backward(&dqkv, &lt.x, n, &layer.qkv, lora, &lt.lora_t, &QKV, m, linear_grads(gl.as_deref_mut(), |l| &mut l.qkv), &mut grads.lora);
        dxi.iter_mut().zip(&dy0).for_each(|(a, b)| *a += b);
        dx = dxi;
    }
    if let Some(g) = gm {
        let de = ops::layer_norm_backward(&dx, &tape.emb_ln.0, &tape.emb_ln.1, h, &m.emb_ln, Some((&mut g.emb_ln.gamma.data[..], &mut g.emb_ln.beta.data[..])));
        for (r, row) in de.chunks_exact(h).enumerate() {
            let id = batch.ids[r] as usize;
            let pos = (r % t) + c.position_offset;
            for i in 0..h {
                g.word_emb.data[id * h + i] += row[i];
                g.pos_emb.data[pos * h + i] += row[i];
                if c.type_vocab_size > 0 {
                    g.type_emb.data[i] += row[i];
                }
            }
        }
    }
}

/// The hidden rows at `slots`, `[slots, H]`.
fn gather(x: &[f32], seq: usize, h: usize, slots: &[Slot]) -> Vec<f32> {
    let mut g = Vec::with_capacity(slots.len() * h);
    for s in slots {
        g.extend_from_slice(&x[(s.row as usize * seq + s.pos as usize) * h..][..h]);
    }
    g
}

/// MLM head log-softmax rows at `slots` (in chunks of 256 rows), each passed to `each`.
pub fn mlm_rows(m: &Model, x: &[f32], seq: usize, slots: &[Slot], mut each: impl FnMut(usize, &[f32])) {
    let mlm = m.mlm.as_ref().expect("caller checks for an MLM head");
    let dec = m.decoder_weight().expect("MLM head present");
    let (h, v) = (m.config.hidden, m.config.vocab_size);
    for (ci, chunk) in slots.chunks(256).enumerate() {
        let mut t = ops::linear(&gather(x, seq, h, chunk), chunk.len(), &mlm.dense);
        t.iter_mut().for_each(|a| *a = ops::gelu(*a));
        ops::layer_norm(&mut t, h, &mlm.ln, m.config.layer_norm_eps);
        let mut logits = vec![0f32; chunk.len() * v];
        for row in logits.chunks_exact_mut(v) {
            row.copy_from_slice(&mlm.bias.data);
        }
        ops::gemm(chunk.len(), h, v, 1.0, &t, false, &dec.data, true, 1.0, &mut logits);
        ops::log_softmax(&mut logits, v);
        for (i, row) in logits.chunks_exact(v).enumerate() {
            each(ci * 256 + i, row);
        }
    }
}

/// Masked-LM cross-entropy `Σ_slots −log P(target)·w` with weight `w` per slot (for a mean,
/// `1/count`). Adds its gradient with respect to the hidden states to `dx` and, when `grads`
/// has a model, to the head (and, in full fine-tuning, to the tied decoder). Returns the loss.
pub fn mlm_loss_backward(m: &Model, x: &[f32], seq: usize, slots: &[Slot], w: f32, dx: &mut [f32], grads: &mut Grads) -> f64 {
    let mlm = m.mlm.as_ref().expect("caller checks for an MLM head");
    let dec = m.decoder_weight().expect("MLM head present");
    let (h, v, eps) = (m.config.hidden, m.config.vocab_size, m.config.layer_norm_eps);
    let full = grads.full;
    let mut loss = 0.0;
    for chunk in slots.chunks(256) {
        let k = chunk.len();
        let g = gather(x, seq, h, chunk);
        let t0 = ops::linear(&g, k, &mlm.dense);
        let mut t = t0.iter().map(|&a| ops::gelu(a)).collect::<Vec<f32>>();
        let (xhat, rstd) = ops::layer_norm(&mut t, h, &mlm.ln, eps);
        let mut logits = vec![0f32; k * v];
        for row in logits.chunks_exact_mut(v) {
            row.copy_from_slice(&mlm.bias.data);
        }
        ops::gemm(k, h, v, 1.0, &t, false, &dec.data, true, 1.0, &mut logits);
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
        let d1 = ops::layer_norm_backward(&dt, &xhat, &rstd, h, &mlm.ln, gh.as_deref_mut().map(|g| (&mut g.ln.gamma.data[..], &mut g.ln.beta.data[..])));
        let d0: Vec<f32> = d1.iter().zip(&t0).map(|(d, &z)| d * ops::gelu_grad(z)).collect();
        let mut d_dense = vec![0f32; k * h];
        ops::linear_backward(&d0, &g, k, &mlm.dense, Some(&mut d_dense), gh.map(|g| (&mut g.dense.weight.data[..], &mut g.dense.bias.data[..])));
        for (s, row) in chunk.iter().zip(d_dense.chunks_exact(h)) {
            let o = (s.row as usize * seq + s.pos as usize) * h;
            dx[o..o + h].iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
    }
    loss
}
