//! Training on the GPU: a forward that keeps what the backward needs in per-layer buffers (a
//! tape), and the backward through the encoder into the gradients of the unmerged LoRA pairs or,
//! for full fine-tuning, of every encoder weight. The loss itself is computed on the CPU from the
//! [CLS] vectors (a few KiB read back per list); its gradient is uploaded and the whole backward
//! is one submission. Gradients accumulate on the GPU over the lists of a step. LoRA and MLM-head
//! gradients are read back once per step (the optimiser steps them on the CPU); full
//! fine-tuning's stay on the GPU, where AdamW steps every weight (`ops/adamw.rs`) after the
//! global norm's partial sums (1 KiB) are read back for clipping and the NaN/Inf check.
//!
//! Per layer, in reverse (each op's backward kernel sits beside its forward in `ops/`):
//! LayerNorm₂ → FFN-out (dX = dY·W, LoRA dA, dB, dX) → GELU → FFN-in → LayerNorm₁ → attention-out
//! → attention (dQ, dK, dV) → QKV.

use super::context::{Buf, Plan, Work};
use super::ops::matmul::{self, Add, Operand, Out};
use super::ops::{adamw, attention, colsum, embed, gather, gelu, layernorm, logsoftmax};
use super::{GpuBackend, Keep, LayerIo, LoraT};
use crate::adapter::{Adapter, Target};
use crate::layout::Layout;
use crate::model::Weight;
use crate::batch::Batch;
use crate::error::{Error, Result};

/// A row-major operand at the start of its buffer.
fn row_major(buf: &Buf, ld: u32) -> Operand<'_> {
    Operand { buf, offset: 0, ld, trans: false }
}

/// One layer's kept activations.
struct TapeLayer {
    x: Buf,
    qkv: Buf,
    ctx: Buf,
    y0: Buf,
    y: Buf,
    f0: Buf,
    f: Buf,
    z0: Buf,
    /// `x·Aᵀ` of each pair (by pair index; pairs of other layers get a 16-byte placeholder).
    t: Vec<Buf>,
}

pub(super) struct Tape {
    tokens: u32,
    layers: Vec<TapeLayer>,
    /// The embeddings' sum before their LayerNorm (full fine-tuning).
    emb0: Buf,
    /// Groups of the batch's tokens by word, position and token-type row (full fine-tuning).
    emb_groups: [u32; 3],
    out: Buf,
    /// The batch of the last training forward: rows, seq, lens.
    rows: u32,
    seq: u32,
    lens: Buf,
}

/// Full fine-tuning: the gradient of every encoder tensor in one buffer, at float offsets by the
/// trainer's tensor names (`word_emb`, `layers.3.qkv.weight`, …), and AdamW's two moments in the
/// same layout (the optimiser runs on the GPU).
pub(super) struct FullGrads {
    buf: Buf,
    m: Buf,
    v: Buf,
    floats: u64,
    /// Every encoder tensor's place in the three buffers.
    layout: Layout,
}

impl FullGrads {
    /// Where the named tensor starts in the three buffers.
    fn at(&self, name: &str) -> Result<u32> {
        self.layout.get(name).map(|p| p.offset as u32).ok_or_else(|| Error::Training(format!("no gradient slot for {name}")))
    }
}

/// The embedding tables whose rows the backward groups by token: word, position, token type
/// (`Work::EmbStarts(k)` and the others hold table `k`'s groups).
const EMB_TABLES: [&str; 3] = ["word_emb", "pos_emb", "type_emb"];

/// Where each pair's `dA` and `dB` live in the gradient buffer (floats).
#[derive(Clone)]
struct GradSlot {
    a_off: u32,
    a_len: u32,
    b_off: u32,
    b_len: u32,
}

/// One GPU buffer of an encoder tensor: the range of the tensor's floats it holds, and those
/// floats of a model ([`GpuBackend::weight_pieces`]).
type Piece<'a> = (&'a Buf, std::ops::Range<usize>, &'a [f32]);

impl GpuBackend {
    fn alloc(&self, label: &str, floats: u64) -> Result<Buf> {
        let bytes = (floats * 4).max(16).div_ceil(256) * 256;
        if bytes > self.ctx.binding_budget() {
            return Err(Error::GpuLimit(format!("training buffer {label} needs {bytes} bytes; the binding limit is {} (use fewer or shorter hypotheses per list)", self.ctx.binding_budget())));
        }
        Ok(self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    fn grad_slots(&self) -> Vec<GradSlot> {
        let Some(u) = &self.unmerged else { return vec![] };
        let c = &self.model.config;
        let mut off = 0u32;
        u.pairs
            .iter()
            .map(|p| {
                let (out, inp) = p.target.shape(c);
                let a_len = u.r * inp as u32;
                let b_len = out as u32 * u.r;
                let s = GradSlot { a_off: off, a_len, b_off: off + a_len, b_len };
                off += a_len + b_len;
                s
            })
            .collect()
    }

    /// Writes new LoRA values into the unmerged pairs' buffers (after an optimiser step).
    pub fn update_lora(&mut self, adapter: &Adapter) -> Result<()> {
        let u = self.unmerged.as_ref().ok_or_else(|| Error::Training("no unmerged adapter on the GPU".into()))?;
        if u.pairs.len() != adapter.pairs.len() {
            return Err(Error::Training("the adapter's pairs changed; set it again".into()));
        }
        let s = adapter.scale() as f32;
        for (g, p) in u.pairs.iter().zip(&adapter.pairs) {
            self.ctx.queue.write_buffer(&g.a, 0, bytemuck::cast_slice(&p.a.data));
            let sb: Vec<f32> = p.b.data.iter().map(|x| x * s).collect();
            self.ctx.queue.write_buffer(&g.sb, 0, bytemuck::cast_slice(&sb));
        }
        Ok(())
    }

    /// Full fine-tuning: keeps gradients and AdamW moments (zero) at the offsets of `layout`
    /// (the encoder's tensors, in the order of [`crate::Model::layout`]), in one buffer each (a
    /// GPU limit error when that exceeds one binding).
    pub fn enable_full_grads(&mut self, layout: &Layout) -> Result<()> {
        self.require_f32("full fine-tuning")?;
        let off = layout.floats() as u64;
        if u32::try_from(off).is_err() {
            return Err(Error::GpuLimit("too many parameters for one gradient buffer".into()));
        }
        // The buffers are listed in the layout's order: tensor by tensor, the same sizes.
        let pieces = self.weight_pieces(&self.model);
        if pieces.len() != layout.len() || pieces.iter().zip(layout.iter()).any(|(t, p)| t.iter().map(|(_, r, _)| r.len()).sum::<usize>() != p.len()) {
            return Err(Error::Training("the full fine-tuning layout is not this encoder's".into()));
        }
        let (buf, m, v) = (self.alloc("full_grads", off)?, self.alloc("adamw.m", off)?, self.alloc("adamw.v", off)?);
        self.full = Some(FullGrads { buf, m, v, floats: off, layout: layout.clone() });
        self.tape = None; // the next tape keeps what full fine-tuning needs
        Ok(())
    }

    /// Whether full fine-tuning's gradients and moments are kept here.
    pub fn full_enabled(&self) -> bool {
        self.full.is_some()
    }

    fn full_grads(&self) -> Result<&FullGrads> {
        self.full.as_ref().ok_or_else(|| Error::Training("full fine-tuning gradients are not enabled".into()))
    }

    /// The accumulated gradients of full fine-tuning, in the order of the layout given to
    /// [`GpuBackend::enable_full_grads`].
    pub async fn read_full_grads(&mut self) -> Result<Vec<f32>> {
        let (buf, floats) = self.full_grads().map(|f| (f.buf.clone(), f.floats))?;
        self.ctx.run(Plan::default(), &buf, floats * 4).await
    }

    /// Every encoder weight's GPU buffers, tensor by tensor in the order of the encoder part of
    /// [`crate::Model::layout`]: each buffer with the range of the tensor's floats it holds (the
    /// word embeddings come in row shards) and those floats of `m`.
    fn weight_pieces<'a>(&'a self, m: &'a crate::model::Model) -> Vec<Vec<Piece<'a>>> {
        let h = m.config.hidden;
        let whole = |b: &'a Buf, t: &'a crate::model::Tensor| vec![(b, 0..t.data.len(), &t.data[..])];
        let pair = |b: &'a super::GLn, n: &'a crate::model::LayerNorm| [whole(&b.g, &n.gamma), whole(&b.b, &n.beta)];
        let mut v = vec![self.word.iter().map(|s| (&s.buf.buf, s.lo as usize * h..s.hi as usize * h, &m.word_emb.data[s.lo as usize * h..s.hi as usize * h])).collect(), whole(&self.pos, &m.pos_emb)];
        if m.config.type_vocab_size > 0 {
            v.push(whole(&self.typ, &m.type_emb));
        }
        v.extend(pair(&self.emb_ln, &m.emb_ln));
        for (g, l) in self.layers.iter().zip(&m.layers) {
            let lin = |w: Weight| [whole(&g.linear(w).w, &l.linear(w).weight), whole(&g.linear(w).b, &l.linear(w).bias)];
            v.extend(lin(Weight::Qkv).into_iter().chain(lin(Weight::AttnOut)).chain(pair(&g.attn_ln, &l.attn_ln)));
            v.extend(lin(Weight::FfnIn).into_iter().chain(lin(Weight::FfnOut)).chain(pair(&g.ffn_ln, &l.ffn_ln)));
        }
        v
    }

    /// Writes every encoder weight of `m` (same shapes as the model this backend was made for)
    /// to the GPU (full fine-tuning: a checkpoint or the best epoch restored).
    pub fn update_weights(&mut self, m: &crate::model::Model) -> Result<()> {
        self.require_f32("full fine-tuning")?;
        for (buf, _, data) in self.weight_pieces(m).into_iter().flatten() {
            self.ctx.queue.write_buffer(buf, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Sum of squares of the accumulated full fine-tuning gradients (NaN or ∞ when one is not
    /// finite): 256 partials read back and added in f64.
    pub async fn full_grad_sumsq(&mut self) -> Result<f64> {
        let (buf, floats) = self.full_grads().map(|f| (f.buf.clone(), f.floats))?;
        let out = self.ctx.work(Work::SumSqPartials, adamw::SUMSQ_GROUPS as u64 * 4)?;
        let mut plan = Plan::default();
        adamw::record_sumsq(&mut plan, &buf, &out, floats as u32);
        let parts = self.ctx.run(plan, &out, adamw::SUMSQ_GROUPS as u64 * 4).await?;
        Ok(parts.iter().map(|&x| x as f64).sum())
    }

    /// One AdamW step of every encoder weight from the accumulated gradients, in one submission,
    /// made whole or not at all: `false` (nothing changed) when any weight or moment would not be
    /// finite after it. The flag comes back with the submission's one readback.
    pub async fn full_adamw(&mut self, c: &crate::train::AdamWConfig, step: adamw::Step) -> Result<bool> {
        let flag = self.ctx.work(Work::AdamWFlag, 4)?;
        self.ctx.queue.write_buffer(&flag, 0, &[0u8; 4]);
        let f = self.full_grads()?;
        let mut pieces = Vec::new();
        for (tensor, p) in self.weight_pieces(&self.model).into_iter().zip(f.layout.iter()) {
            for (buf, range, _) in tensor {
                pieces.push(adamw::Piece { w: buf, n: range.len() as u32, g_off: (p.offset + range.start) as u32 });
            }
        }
        let mut plan = Plan::default();
        adamw::record(&mut plan, &pieces, &f.buf, &f.m, &f.v, &flag, c, step);
        let flagged = self.ctx.run(plan, &flag, 4).await?;
        Ok(flagged[0].to_bits() == 0)
    }

    /// Full fine-tuning's state on the GPU, each in the layout of
    /// [`GpuBackend::enable_full_grads`]: the weights, AdamW's first and second moments.
    pub async fn read_full_state(&mut self) -> Result<[Vec<f32>; 3]> {
        let floats = self.full_grads()?.floats;
        let dst = self.ctx.work(Work::FullWeights, floats * 4)?;
        let f = self.full_grads()?;
        let (m, v) = (f.m.clone(), f.v.clone());
        let mut plan = Plan::default();
        for (tensor, p) in self.weight_pieces(&self.model).into_iter().zip(f.layout.iter()) {
            for (buf, range, _) in tensor {
                plan.copy(buf, 0, &dst, (p.offset + range.start) as u64 * 4, range.len() as u64 * 4);
            }
        }
        let w = self.ctx.run(plan, &dst, floats * 4).await?;
        let m = self.ctx.run(Plan::default(), &m, floats * 4).await?;
        let v = self.ctx.run(Plan::default(), &v, floats * 4).await?;
        Ok([w, m, v])
    }

    /// Writes AdamW's moments for full fine-tuning (layout of [`GpuBackend::enable_full_grads`]).
    pub fn write_full_moments(&mut self, m: &[f32], v: &[f32]) -> Result<()> {
        let f = self.full_grads()?;
        if m.len() as u64 != f.floats || v.len() as u64 != f.floats {
            return Err(Error::Training(format!("AdamW moments of {} and {} floats for a layout of {}", m.len(), v.len(), f.floats)));
        }
        self.ctx.queue.write_buffer(&f.m, 0, bytemuck::cast_slice(m));
        self.ctx.queue.write_buffer(&f.v, 0, bytemuck::cast_slice(v));
        Ok(())
    }

    /// Zeroes the gradient accumulators — LoRA pairs, MLM head transform, and every weight under
    /// full fine-tuning — at the start of an optimiser step.
    pub fn zero_grads(&mut self) -> Result<()> {
        if let Some(f) = &self.full {
            let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("zero full_grads") });
            enc.clear_buffer(&f.buf, 0, None);
            self.ctx.queue.submit([enc.finish()]);
        }
        let n: u32 = self.grad_slots().iter().map(|s| s.a_len + s.b_len).sum();
        for (name, len) in [(Work::LoraGrads, n as usize), (Work::MlmGrads, self.mlm_grads_len())] {
            let g = self.ctx.work(name, len as u64 * 4)?;
            self.ctx.queue.write_buffer(&g, 0, bytemuck::cast_slice(&vec![0f32; len]));
        }
        Ok(())
    }

    /// Length of the MLM head's gradient buffer: `[dW (H·H) | db (H) | dγ (H) | dβ (H) | d bias (V)]`.
    fn mlm_grads_len(&self) -> usize {
        let (h, v) = (self.model.config.hidden, self.model.config.vocab_size);
        h * h + 3 * h + v
    }

    /// Reads the MLM head's accumulated gradients: dense weight and bias, LayerNorm γ and β, and
    /// (`with_bias`) the output bias.
    pub async fn read_mlm_grads(&mut self, with_bias: bool) -> Result<([Vec<f32>; 4], Option<Vec<f32>>)> {
        let (h, n) = (self.model.config.hidden, self.mlm_grads_len());
        let g = self.ctx.work(Work::MlmGrads, n as u64 * 4)?;
        let read = if with_bias { n } else { h * h + 3 * h };
        let all = self.ctx.run(Plan::default(), &g, read as u64 * 4).await?;
        let at = |i: usize, len: usize| all[i..i + len].to_vec();
        Ok(([at(0, h * h), at(h * h, h), at(h * h + h, h), at(h * h + 2 * h, h)], with_bias.then(|| all[h * h + 3 * h..read].to_vec())))
    }

    /// Writes a trained MLM head (dense, LayerNorm, output bias) to the GPU.
    pub fn update_mlm_head(&mut self, head: &crate::model::MlmHead) -> Result<()> {
        if self.mlm.is_none() {
            return Err(Error::NoMlmHead);
        }
        self.upload_mlm_head(head);
        Ok(())
    }

    /// One masked-LM forward and backward in one submission: the encoder with its tape, the
    /// MLM head at `slots`, the cross-entropy `Σ w·(−log P(target))` (returned), and gradients
    /// into the MLM head transform (when `head_grads`) and the LoRA pairs.
    pub async fn train_mlm(&mut self, batch: &Batch, slots: &[crate::batch::Slot], w: f32, head_grads: bool, bias_grads: bool) -> Result<f64> {
        self.require_f32("training")?;
        let v = self.model.config.vocab_size as u32;
        let ns = slots.len() as u32;
        if ns == 0 {
            return Err(Error::Input("no masked slots".into()));
        }
        if ns as u64 * v as u64 * 4 > self.ctx.binding_budget() {
            return Err(Error::GpuLimit(format!("{ns} masked slots × {v} logits exceed one binding; use fewer texts per step")));
        }
        let mut tape = self.ensure_tape(batch.rows() as u32, batch.seq as u32)?;
        let res = self.record_train_mlm(batch, slots, w, (head_grads, bias_grads), &mut tape).await;
        self.tape = Some(tape);
        res
    }

    async fn record_train_mlm(&mut self, batch: &Batch, slots: &[crate::batch::Slot], w: f32, (head_grads, bias_grads): (bool, bool), tape: &mut Tape) -> Result<f64> {
        let c = self.model.config.clone();
        let (h, v, eps) = (c.hidden as u32, c.vocab_size as u32, c.layer_norm_eps);
        let ns = slots.len() as u32;
        let seq = batch.seq as u32;
        let tokens = batch.rows() as u32 * seq;
        let mut plan = Plan::default();
        plan.tiles = self.tiles;
        self.record_forward_tape(&mut plan, batch, tape)?;
        let idx: Vec<u32> = slots.iter().map(|s| s.row * seq + s.pos).collect();
        let tgt: Vec<u32> = slots.iter().map(|s| s.target).collect();
        let grads_len = self.mlm_grads_len() as u64;
        let ctx = &mut self.ctx;
        let idx_buf = ctx.work_with(Work::GatherIdx, &idx)?;
        let tgt_buf = ctx.work_with(Work::Targets, &tgt)?;
        let sh = ns as u64 * h as u64 * 4;
        let (g, t0, t1, t2) = (ctx.work(Work::MlmG, sh)?, ctx.work(Work::MlmT0, sh)?, ctx.work(Work::MlmT1, sh)?, ctx.work(Work::MlmT2, sh)?);
        let (dt2, dt1, xhat, dg) = (ctx.work(Work::MlmDt2, sh)?, ctx.work(Work::MlmDt1, sh)?, ctx.work(Work::MlmXhat, sh)?, ctx.work(Work::MlmDg, sh)?);
        let logits = ctx.work(Work::MlmLogits, ns as u64 * v as u64 * 4)?;
        let loss = ctx.work(Work::MlmLoss, ns as u64 * 4)?;
        let grads = ctx.work(Work::MlmGrads, grads_len * 4)?;
        let dx = ctx.work(Work::BwDx, tokens as u64 * h as u64 * 4)?;
        ctx.queue.write_buffer(&dx, 0, bytemuck::cast_slice(&vec![0f32; (tokens * h) as usize]));
        let dummy = ctx.dummy.clone();
        let mlm = self.mlm.as_ref().ok_or(Error::NoMlmHead)?;
        let zeros = &self.zeros;
        // Forward: gather → dense → GELU → LayerNorm → decoder shards → cross-entropy.
        gather::record(&mut plan, &tape.out, &idx_buf, &g, ns, h, 0, 0);
        let out = |buf, ldc, offset| Out { buf, ldc, offset };
        matmul::record(&mut plan, matmul::In { buf: &g, offset: 0 }, &mlm.dense.w, &mlm.dense.b, Add::Nothing, out(&t0, h, 0), ns, h, h, matmul::Act::None, &dummy);
        plan.copy(&t0, 0, &t1, 0, sh);
        gelu::record(&mut plan, &t1, ns * h);
        plan.copy(&t1, 0, &t2, 0, sh);
        layernorm::record(&mut plan, &t2, &mlm.ln.g, &mlm.ln.b, ns, h, eps);
        for sd in &mlm.decoder {
            let bias = sd.bias.as_ref().expect("decoder shards carry their bias");
            matmul::record(&mut plan, matmul::In { buf: &t2, offset: 0 }, &sd.buf, bias, Add::Nothing, out(&logits, v, sd.lo), ns, sd.hi - sd.lo, h, matmul::Act::None, &dummy);
        }
        logsoftmax::record_cross_entropy(&mut plan, &logits, &tgt_buf, &loss, ns, v, w, 0, 0);
        // Backward: dT2 = dlogits·Dec over the shards.
        for (k, sd) in mlm.decoder.iter().enumerate() {
            let a = Operand { buf: &logits, offset: sd.lo, ld: v, trans: false };
            let add = if k == 0 { Add::Nothing } else { Add::Previous };
            matmul::record_general(&mut plan, a, row_major(&sd.buf, h), 1.0, add, out(&dt2, h, 0), ns, h, sd.hi - sd.lo, zeros, &dummy);
        }
        layernorm::record_backward(&mut plan, &t1, &mlm.ln.g, &dt2, &dt1, head_grads.then_some(&xhat), ns, h, eps, &dummy);
        gelu::record_backward(&mut plan, &t0, &dt1, ns * h);
        if head_grads {
            // [dW (H·H) | db (H) | dγ (H) | dβ (H) | d bias (V)]; `logits` holds dlogits now.
            let hh = h * h;
            if bias_grads {
                colsum::record(&mut plan, &logits, None, &grads, ns, v, hh + 3 * h, &dummy);
            }
            colsum::record(&mut plan, &dt2, Some(&xhat), &grads, ns, h, hh + h, &dummy);
            colsum::record(&mut plan, &dt2, None, &grads, ns, h, hh + 2 * h, &dummy);
            colsum::record(&mut plan, &dt1, None, &grads, ns, h, hh, &dummy);
            let a = Operand { buf: &dt1, offset: 0, ld: h, trans: true };
            matmul::record_general(&mut plan, a, row_major(&g, h), 1.0, Add::Previous, out(&grads, h, 0), h, h, ns, zeros, &dummy);
        }
        // dG = dT0·W_dense, scattered to the slots' rows of dX, then through the encoder.
        matmul::record_general(&mut plan, row_major(&dt1, h), row_major(&mlm.dense.w, h), 1.0, Add::Nothing, out(&dg, h, 0), ns, h, h, zeros, &dummy);
        gather::record_scatter_add(&mut plan, &dg, &idx_buf, &dx, ns, h);
        self.record_encoder_backward(&mut plan, tape)?;
        let l = self.ctx.run(plan, &loss, ns as u64 * 4).await?;
        Ok(l[..ns as usize].iter().map(|x| *x as f64).sum::<f64>() * w as f64)
    }

    /// Reads the accumulated `(dA, dB)` of every pair.
    pub async fn read_lora_grads(&mut self) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let slots = self.grad_slots();
        let n: u32 = slots.iter().map(|s| s.a_len + s.b_len).sum();
        let g = self.ctx.work(Work::LoraGrads, n as u64 * 4)?;
        let all = self.ctx.run(Plan::default(), &g, n as u64 * 4).await?;
        Ok(slots.iter().map(|s| (all[s.a_off as usize..(s.a_off + s.a_len) as usize].to_vec(), all[s.b_off as usize..(s.b_off + s.b_len) as usize].to_vec())).collect())
    }

    /// The tape for `rows × seq` tokens: the kept one when large enough, else new buffers.
    fn ensure_tape(&mut self, rows: u32, seq: u32) -> Result<Tape> {
        let tokens = rows * seq;
        if let Some(t) = self.tape.take().filter(|t| t.tokens >= tokens) {
            return Ok(Tape { rows, seq, ..t });
        }
        let c = self.model.config.clone();
        let (h, im) = (c.hidden as u64, c.intermediate as u64);
        let r = self.unmerged.as_ref().map(|u| u.r).unwrap_or(1) as u64;
        let n = tokens as u64;
        let npairs = self.unmerged.as_ref().map(|u| u.pairs.len()).unwrap_or(0);
        let mut layers = Vec::new();
        for li in 0..c.layers {
            let t = (0..npairs)
                .map(|pi| {
                    let mine = self.unmerged.as_ref().map(|u| u.pairs[pi].layer == li).unwrap_or(false);
                    self.alloc("tape.lora_t", if mine { n * r } else { 4 })
                })
                .collect::<Result<Vec<_>>>()?;
            layers.push(TapeLayer {
                x: self.alloc("tape.x", n * h)?,
                qkv: self.alloc("tape.qkv", n * 3 * h)?,
                ctx: self.alloc("tape.ctx", n * h)?,
                y0: self.alloc("tape.y0", n * h)?,
                y: self.alloc("tape.y", n * h)?,
                f0: self.alloc("tape.f0", n * im)?,
                f: self.alloc("tape.f", n * im)?,
                z0: self.alloc("tape.z0", n * h)?,
                t,
            });
        }
        let emb0 = self.alloc("tape.emb0", if self.full.is_some() { n * h } else { 4 })?;
        Ok(Tape { tokens, layers, emb0, emb_groups: [0; 3], out: self.alloc("tape.out", n * h)?, rows, seq, lens: self.alloc("tape.lens", rows as u64)? })
    }

    /// The training forward: final [CLS] vectors `[rows, H]`, with the tape kept for
    /// [`GpuBackend::train_backward`]. The batch must fit one chunk.
    pub async fn train_forward(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.require_f32("training")?;
        let mut tape = self.ensure_tape(batch.rows() as u32, batch.seq as u32)?;
        let res = self.record_train_forward(batch, &mut tape).await;
        self.tape = Some(tape);
        res
    }

    /// Records the embeddings and every layer of `batch` with the tape kept (lens uploaded).
    fn record_forward_tape(&mut self, plan: &mut Plan, batch: &Batch, tape: &mut Tape) -> Result<()> {
        let c = self.model.config.clone();
        let h = c.hidden as u32;
        let (rows, seq) = (batch.rows() as u32, batch.seq as u32);
        let tokens = rows * seq;
        self.ctx.queue.write_buffer(&tape.lens, 0, bytemuck::cast_slice(&batch.lens));
        let ids = self.ctx.work_with(Work::Ids, &batch.ids)?;
        let x0 = &tape.layers[0].x;
        embed::record(plan, &ids, &self.word, &self.pos, &self.typ, x0, tokens, h, seq, c.position_offset as u32, 0);
        if self.full.is_some() {
            plan.copy(x0, 0, &tape.emb0, 0, tokens as u64 * h as u64 * 4);
            let po = c.position_offset as u32;
            let groups = [
                embed::RowGroups::new(tokens, |t| batch.ids[t as usize]),
                embed::RowGroups::new(tokens, |t| t % seq + po),
                embed::RowGroups::new(if c.type_vocab_size > 0 { tokens } else { 0 }, |_| 0),
            ];
            for (k, g) in groups.iter().enumerate() {
                self.ctx.work_with(Work::EmbStarts(k as u8), &g.starts)?;
                self.ctx.work_with(Work::EmbToks(k as u8), &g.toks)?;
                self.ctx.work_with(Work::EmbRows(k as u8), &g.rows)?;
                tape.emb_groups[k] = g.rows.len() as u32;
            }
        }
        let x0 = &tape.layers[0].x;
        layernorm::record(plan, x0, &self.emb_ln.g, &self.emb_ln.b, tokens, h, c.layer_norm_eps);
        for li in 0..self.layers.len() {
            let l = &tape.layers[li];
            let next = tape.layers.get(li + 1).map(|n| &n.x).unwrap_or(&tape.out);
            let io = LayerIo {
                x: &l.x,
                out: next,
                qkv: &l.qkv,
                ctx: &l.ctx,
                y: &l.y,
                ffn: &l.f,
                lora_t: LoraT::PerPair(&l.t),
                keep: Some(Keep { y0: &l.y0, z0: &l.z0, f0: &l.f0 }),
            };
            self.record_layer(plan, li, &io, &tape.lens, rows, seq, 0);
        }
        Ok(())
    }

    async fn record_train_forward(&mut self, batch: &Batch, tape: &mut Tape) -> Result<Vec<f32>> {
        let h = self.model.config.hidden as u32;
        let (rows, seq) = (batch.rows() as u32, batch.seq as u32);
        let mut plan = Plan::default();
        plan.tiles = self.tiles;
        self.record_forward_tape(&mut plan, batch, tape)?;
        let idx: Vec<u32> = (0..rows).map(|b| b * seq).collect();
        let idx_buf = self.ctx.work_with(Work::GatherIdx, &idx)?;
        let out = self.ctx.work(Work::Out, rows as u64 * h as u64 * 4)?;
        gather::record(&mut plan, &tape.out, &idx_buf, &out, rows, h, 0, 0);
        let v = self.ctx.run(plan, &out, rows as u64 * h as u64 * 4).await?;
        Ok(v[..(rows * h) as usize].to_vec())
    }

    /// Backpropagates `d_cls` (`[rows, H]`, the loss gradient at the final [CLS] vectors of the
    /// last [`GpuBackend::train_forward`]) and adds the LoRA gradients to the accumulators.
    pub async fn train_backward(&mut self, d_cls: &[f32]) -> Result<()> {
        let tape = self.tape.take().ok_or_else(|| Error::Training("train_backward before train_forward".into()))?;
        let r = self.record_train_backward(&tape, d_cls).await;
        self.tape = Some(tape);
        r
    }

    async fn record_train_backward(&mut self, tape: &Tape, d_cls: &[f32]) -> Result<()> {
        let h = self.model.config.hidden as u32;
        let (rows, seq) = (tape.rows, tape.seq);
        let tokens = rows * seq;
        if d_cls.len() != (rows * h) as usize {
            return Err(Error::Training(format!("d_cls has {} values, expected {}", d_cls.len(), rows * h)));
        }
        let d_out = crate::batch::at_first_positions(d_cls, rows as usize, seq as usize, h as usize);
        let dx = self.ctx.work(Work::BwDx, tokens as u64 * h as u64 * 4)?;
        self.ctx.queue.write_buffer(&dx, 0, bytemuck::cast_slice(&d_out));
        let mut plan = Plan::default();
        plan.tiles = self.tiles;
        self.record_encoder_backward(&mut plan, tape)?;
        self.ctx.submit(plan).await
    }

    /// Records the backward of every layer from the gradient in the pooled `bw.dx` buffer,
    /// accumulating the LoRA pairs' gradients and, under full fine-tuning, every weight's
    /// (`dW += dYᵀ·X`, `db += Σ dY`, LayerNorm `dγ += Σ dY⊙x̂`, `dβ += Σ dY`, embedding rows).
    ///
    /// Long on purpose: one submission recorded layer by layer in reverse over the workspace's
    /// buffers; in pieces, a dozen buffers would pass between them.
    fn record_encoder_backward(&mut self, plan: &mut Plan, tape: &Tape) -> Result<()> {
        let c = self.model.config.clone();
        let (h, im) = (c.hidden as u32, c.intermediate as u32);
        let (rows, seq) = (tape.rows, tape.seq);
        let tokens = rows * seq;
        let lora = self.unmerged.as_ref().filter(|u| !u.pairs.is_empty());
        let full = self.full.as_ref();
        if lora.is_none() && full.is_none() {
            return Ok(());
        }
        let r = lora.map(|u| u.r).unwrap_or(1);
        let slots = self.grad_slots();
        let ngrad: u32 = slots.iter().map(|s| s.a_len + s.b_len).sum();
        let n = tokens as u64;
        let ctx = &mut self.ctx;
        let grads = ctx.work(Work::LoraGrads, ngrad as u64 * 4)?;
        let mut dx = ctx.work(Work::BwDx, n * h as u64 * 4)?;
        let mut dx2 = ctx.work(Work::BwDx2, n * h as u64 * 4)?;
        let dz = ctx.work(Work::BwDz, n * h as u64 * 4)?;
        let df = ctx.work(Work::BwDf, n * im as u64 * 4)?;
        let dy = ctx.work(Work::BwDy, n * h as u64 * 4)?;
        let dy0 = ctx.work(Work::BwDy0, n * h as u64 * 4)?;
        let dctx = ctx.work(Work::BwDctx, n * h as u64 * 4)?;
        let dqkv = ctx.work(Work::BwDqkv, n * 3 * h as u64 * 4)?;
        let du = ctx.work(Work::BwDu, n * r as u64 * 4)?;
        let xhat = ctx.work(Work::BwXhat, if full.is_some() { n * h as u64 * 4 } else { 16 })?;
        let stats = ctx.work(Work::BwStats, 2 * rows as u64 * c.heads as u64 * seq as u64 * 4)?;
        let emb_groups = match full {
            Some(_) => (0..EMB_TABLES.len() as u8).map(|k| Ok((ctx.work(Work::EmbStarts(k), 4)?, ctx.work(Work::EmbToks(k), 4)?, ctx.work(Work::EmbRows(k), 4)?))).collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let dummy = ctx.dummy.clone();
        let zeros = &self.zeros;
        // dX = dY·W (+ R): W stored [out, in] is B = [k = out, n = in] row-major.
        let dx_of = |plan: &mut Plan, dyb: &Buf, w: &Buf, add: Add<'_>, dst: &Buf, out: u32, inp: u32| {
            matmul::record_general(plan, row_major(dyb, out), row_major(w, inp), 1.0, add, Out { buf: dst, ldc: inp, offset: 0 }, tokens, inp, out, zeros, &dummy);
        };
        // Full fine-tuning: a linear's `dW += dYᵀ·X` and `db += Σ_rows dY`.
        let weight_grads = |plan: &mut Plan, dyb: &Buf, xin: &Buf, name: &str, out: u32, inp: u32| -> Result<()> {
            if let Some(f) = full {
                let a = Operand { buf: dyb, offset: 0, ld: out, trans: true };
                let ow = f.at(&format!("{name}.weight"))?;
                matmul::record_general(plan, a, row_major(xin, inp), 1.0, Add::Previous, Out { buf: &f.buf, ldc: inp, offset: ow }, out, inp, tokens, zeros, &dummy);
                colsum::record(plan, dyb, None, &f.buf, tokens, out, f.at(&format!("{name}.bias"))?, &dummy);
            }
            Ok(())
        };
        // ... and a LayerNorm's `dγ += Σ dY⊙x̂`, `dβ += Σ dY` (x̂ from the backward just recorded).
        let ln_grads = |plan: &mut Plan, dyb: &Buf, name: &str| -> Result<()> {
            if let Some(f) = full {
                colsum::record(plan, dyb, Some(&xhat), &f.buf, tokens, h, f.at(&format!("{name}.gamma"))?, &dummy);
                colsum::record(plan, dyb, None, &f.buf, tokens, h, f.at(&format!("{name}.beta"))?, &dummy);
            }
            Ok(())
        };
        let keep_xhat = full.map(|_| &xhat);
        let eps = c.layer_norm_eps;
        for li in (0..self.layers.len()).rev() {
            let l = &self.layers[li];
            let t = &tape.layers[li];
            // The LoRA pairs of `targets`: dY columns `off..off+out` of `dyb` (row stride `ld`), input `xin`.
            let branches = |plan: &mut Plan, targets: &[Target], dyb: &Buf, ld: u32, xin: &Buf, dxin: Option<&Buf>| {
                let Some(u) = lora else { return };
                for (pi, p) in u.pairs.iter().enumerate().filter(|(_, p)| p.layer == li && targets.contains(&p.target)) {
                    let (out, inp) = p.target.shape(&c);
                    let (out, inp) = (out as u32, inp as u32);
                    let off = p.target.row_offset(&c) as u32;
                    let s = &slots[pi];
                    let scale = self.unmerged_scale;
                    // dB += s·dYᵀ·t
                    let a = Operand { buf: dyb, offset: off, ld, trans: true };
                    matmul::record_general(plan, a, row_major(&t.t[pi], r), scale, Add::Previous, Out { buf: &grads, ldc: r, offset: s.b_off }, out, r, tokens, zeros, &dummy);
                    // u = dY·(sB)
                    let a = Operand { buf: dyb, offset: off, ld, trans: false };
                    matmul::record_general(plan, a, row_major(&p.sb, r), 1.0, Add::Nothing, Out { buf: &du, ldc: r, offset: 0 }, tokens, r, out, zeros, &dummy);
                    // dA += uᵀ·X
                    let a = Operand { buf: &du, offset: 0, ld: r, trans: true };
                    matmul::record_general(plan, a, row_major(xin, inp), 1.0, Add::Previous, Out { buf: &grads, ldc: inp, offset: s.a_off }, r, inp, tokens, zeros, &dummy);
                    // dX += u·A
                    if let Some(dxin) = dxin {
                        matmul::record_general(plan, row_major(&du, r), row_major(&p.a, inp), 1.0, Add::Previous, Out { buf: dxin, ldc: inp, offset: 0 }, tokens, inp, r, zeros, &dummy);
                    }
                }
            };
            let name = |part: &str| format!("layers.{li}.{part}");
            // The first layer's input gradient is needed only for the embeddings.
            let input_grad = li > 0 || full.is_some();
            layernorm::record_backward(plan, &t.z0, &l.ffn_ln.g, &dx, &dz, keep_xhat, tokens, h, eps, &dummy);
            ln_grads(plan, &dx, &name("ffn_ln"))?;
            dx_of(plan, &dz, &l.ffn_out.w, Add::Nothing, &df, h, im);
            branches(plan, &[Target::FfnOut], &dz, h, &t.f, Some(&df));
            weight_grads(plan, &dz, &t.f, &name("ffn_out"), h, im)?;
            gelu::record_backward(plan, &t.f0, &df, tokens * im);
            dx_of(plan, &df, &l.ffn_in.w, Add::Residual(&dz), &dy, im, h);
            branches(plan, &[Target::FfnIn], &df, im, &t.y, Some(&dy));
            weight_grads(plan, &df, &t.y, &name("ffn_in"), im, h)?;
            layernorm::record_backward(plan, &t.y0, &l.attn_ln.g, &dy, &dy0, keep_xhat, tokens, h, eps, &dummy);
            ln_grads(plan, &dy, &name("attn_ln"))?;
            dx_of(plan, &dy0, &l.attn_out.w, Add::Nothing, &dctx, h, h);
            branches(plan, &[Target::AttnOut], &dy0, h, &t.ctx, Some(&dctx));
            weight_grads(plan, &dy0, &t.ctx, &name("attn_out"), h, h)?;
            attention::record_backward(plan, &t.qkv, &tape.lens, &dctx, &stats, &dqkv, rows, seq, h, c.heads as u32);
            if input_grad {
                dx_of(plan, &dqkv, &l.qkv.w, Add::Residual(&dy0), &dx2, 3 * h, h);
            }
            branches(plan, &[Target::Query, Target::Key, Target::Value], &dqkv, 3 * h, &t.x, input_grad.then_some(&dx2));
            weight_grads(plan, &dqkv, &t.x, &name("qkv"), 3 * h, h)?;
            std::mem::swap(&mut dx, &mut dx2);
        }
        if let Some(f) = full {
            // Embeddings: their LayerNorm, then each table's rows (grouped by the forward).
            layernorm::record_backward(plan, &tape.emb0, &self.emb_ln.g, &dx, &dx2, keep_xhat, tokens, h, eps, &dummy);
            ln_grads(plan, &dx, "emb_ln")?;
            for ((table, (starts, toks, rws)), &groups) in EMB_TABLES.iter().zip(&emb_groups).zip(&tape.emb_groups) {
                if groups > 0 {
                    embed::record_backward(plan, &dx2, starts, toks, rws, &f.buf, groups, h, f.at(table)?);
                }
            }
        }
        Ok(())
    }
}
