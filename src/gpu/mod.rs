//! The GPU backend: the encoder as WGSL compute kernels through wgpu.
//!
//! Weights are uploaded once. Each call records the whole forward — embeddings, every layer, and
//! the requested head — for all chunks of the batch into one [`Plan`], submits it as one command
//! buffer and reads back only the final outputs (never anything inside the layer stack). Chunks
//! bound every activation by the per-binding limit; work buffers come from a pool and are reused.

pub mod context;
pub mod ops;
mod train;

use crate::batch::{Batch, Slot};
use crate::error::{Error, Result};
use crate::model::{ClsHead, LayerNorm, Linear, Model, Weight};
use context::{Buf, GpuContext, Matrix, Plan, Shard, Work};
pub use context::{Dtype, GpuOptions};
use ops::matmul::{Act, Add, In, Out};
use crate::adapter::{Adapter, Target};
use ops::{attention, embed, gather, gelu, layernorm, logsoftmax, lora, matmul};
use std::sync::Arc;

struct GLinear {
    w: Matrix,
    b: Buf,
}

struct GLn {
    g: Buf,
    b: Buf,
}

struct GLayer {
    qkv: GLinear,
    attn_out: GLinear,
    attn_ln: GLn,
    ffn_in: GLinear,
    ffn_out: GLinear,
    ffn_ln: GLn,
}

impl GLayer {
    fn linear(&self, w: Weight) -> &GLinear {
        match w {
            Weight::Qkv => &self.qkv,
            Weight::AttnOut => &self.attn_out,
            Weight::FfnIn => &self.ffn_in,
            Weight::FfnOut => &self.ffn_out,
        }
    }

    /// The weight a LoRA target lives in.
    fn weight(&self, target: Target) -> &Matrix {
        &self.linear(target.weight()).w
    }
}

struct GMlm {
    dense: GLinear,
    ln: GLn,
    /// Decoder rows (vocabulary entries) with their bias slices, sharded to fit bindings.
    decoder: Vec<Shard>,
}

pub struct GpuBackend {
    model: Arc<Model>,
    ctx: GpuContext,
    word: Vec<Shard>,
    pos: Buf,
    typ: Buf,
    emb_ln: GLn,
    layers: Vec<GLayer>,
    mlm: Option<GMlm>,
    head: Option<(ClsHead, GLinear)>,
    /// Matmul tile policy (benchmarks compare them; all are tested).
    pub tiles: matmul::Tiles,
    /// The adapter merged into the weights on the GPU.
    adapter: Option<Arc<Adapter>>,
    /// An adapter applied as separate low-rank branches (the training path).
    unmerged: Option<Unmerged>,
    /// Zeros, as the bias of the low-rank products.
    zeros: Buf,
    /// Activations kept by the last training forward.
    tape: Option<train::Tape>,
    /// `s` of the unmerged adapter (its `B` is stored pre-scaled as `s·B`).
    unmerged_scale: f32,
    /// Gradients of every encoder weight (full fine-tuning), when enabled.
    full: Option<train::FullGrads>,
}

struct GPair {
    layer: usize,
    target: Target,
    /// `[r, in]`
    a: Buf,
    /// `s·B`, `[out, r]`
    sb: Buf,
}

struct Unmerged {
    r: u32,
    pairs: Vec<GPair>,
}

/// Where `x·Aᵀ` of the unmerged LoRA branches goes: one shared scratch buffer (inference) or
/// one buffer per pair, kept for the backward (training).
#[derive(Clone, Copy)]
enum LoraT<'a> {
    Shared(&'a Buf),
    PerPair(&'a [Buf]),
}

/// Activations the backward needs beyond the layer's buffers: the two LayerNorm inputs and the
/// FFN pre-activation.
#[derive(Clone, Copy)]
struct Keep<'a> {
    y0: &'a Buf,
    z0: &'a Buf,
    f0: &'a Buf,
}

/// The buffers one encoder layer reads and writes. Inference passes `out == x` and no `keep`.
#[derive(Clone, Copy)]
struct LayerIo<'a> {
    x: &'a Buf,
    out: &'a Buf,
    qkv: &'a Buf,
    ctx: &'a Buf,
    y: &'a Buf,
    ffn: &'a Buf,
    lora_t: LoraT<'a>,
    keep: Option<Keep<'a>>,
}

/// What a forward produces.
enum Job<'a> {
    Hidden,
    ClsVectors,
    ClsScores,
    Mlm { slots: &'a [Slot], full: bool },
}

impl GpuBackend {
    /// Any adapter, software ones (lavapipe, SwiftShader) included, kernels trusted (see
    /// [`GpuOptions::trusted_shaders`]: wgpu's injected bounds checks made the forward 14×
    /// slower on an H200).
    pub async fn new(model: Arc<Model>) -> Result<Self> {
        Self::open(model, true, Dtype::F32).await
    }

    /// A hardware adapter only, kernels trusted.
    pub async fn new_hardware(model: Arc<Model>) -> Result<Self> {
        Self::open(model, false, Dtype::F32).await
    }

    /// Kernels trusted, software adapters allowed or not, weights in `dtype`.
    pub async fn open(model: Arc<Model>, allow_software: bool, dtype: Dtype) -> Result<Self> {
        Self::with_options(model, &GpuOptions { allow_software, trusted_shaders: true, dtype, ..Default::default() }).await
    }

    pub async fn with_options(model: Arc<Model>, opts: &GpuOptions) -> Result<Self> {
        let c = &model.config;
        if c.head_dim() > attention::MAX_HEAD_DIM {
            return Err(Error::GpuLimit(format!("head dimension {} exceeds the attention kernel's {}", c.head_dim(), attention::MAX_HEAD_DIM)));
        }
        if c.hidden > 128 * 8 {
            return Err(Error::GpuLimit(format!("hidden size {} is above the supported 1024", c.hidden)));
        }
        let mut ctx = GpuContext::new(opts).await?;
        if let Some(b) = opts.binding_budget {
            ctx.set_binding_budget(b);
        }
        // The layers' weights in the context's dtype; the small MLM transform in f32 (training
        // writes it).
        let linear = |name: &str, l: &Linear, in_dtype: bool| -> Result<GLinear> {
            let (w, data) = (format!("{name}.weight"), &l.weight.data);
            let w = if in_dtype { ctx.upload_matrix(&w, data)? } else { Matrix { buf: ctx.upload(&w, data)?, half: false } };
            Ok(GLinear { w, b: ctx.upload(&format!("{name}.bias"), &l.bias.data)? })
        };
        let lin = |name: &str, l: &Linear| linear(name, l, true);
        let ln = |name: &str, l: &LayerNorm| -> Result<GLn> {
            Ok(GLn { g: ctx.upload(&format!("{name}.weight"), &l.gamma.data)?, b: ctx.upload(&format!("{name}.bias"), &l.beta.data)? })
        };
        let word = ctx.upload_sharded("word_embeddings", &model.word_emb.data, c.hidden, None)?;
        let mut layers = Vec::new();
        for (i, l) in model.layers.iter().enumerate() {
            layers.push(GLayer {
                qkv: lin(&format!("layer{i}.qkv"), &l.qkv)?,
                attn_out: lin(&format!("layer{i}.attn_out"), &l.attn_out)?,
                attn_ln: ln(&format!("layer{i}.attn_ln"), &l.attn_ln)?,
                ffn_in: lin(&format!("layer{i}.ffn_in"), &l.ffn_in)?,
                ffn_out: lin(&format!("layer{i}.ffn_out"), &l.ffn_out)?,
                ffn_ln: ln(&format!("layer{i}.ffn_ln"), &l.ffn_ln)?,
            });
        }
        let mlm = match &model.mlm {
            Some(m) => Some(GMlm {
                dense: linear("mlm.dense", &m.dense, false)?,
                ln: ln("mlm.ln", &m.ln)?,
                decoder: {
                    let mut shards = Vec::new();
                    if m.decoder.is_none() {
                        // Tied: reuse the embedding shards, adding the bias slices.
                        for s in &word {
                            let b = ctx.upload("mlm.bias", &m.bias.data[s.lo as usize..s.hi as usize])?;
                            shards.push(Shard { bias: Some(b), ..s.clone() });
                        }
                    } else {
                        let d = m.decoder.as_ref().expect("untied decoder");
                        shards = ctx.upload_sharded("mlm.decoder", &d.data, c.hidden, Some(&m.bias.data))?;
                    }
                    shards
                },
            }),
            None => None,
        };
        Ok(GpuBackend {
            pos: ctx.upload("position_embeddings", &model.pos_emb.data)?,
            typ: ctx.upload("token_type_embeddings", &model.type_emb.data)?,
            emb_ln: ln("embeddings.ln", &model.emb_ln)?,
            word,
            layers,
            mlm,
            head: None,
            tiles: matmul::Tiles::Auto,
            adapter: None,
            unmerged: None,
            zeros: ctx.upload("zeros", &vec![0.0; 3 * c.hidden.max(c.intermediate)])?,
            tape: None,
            unmerged_scale: 1.0,
            full: None,
            ctx,
            model,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn adapter_name(&self) -> String {
        self.ctx.adapter_name.clone()
    }

    /// The weights' storage type: f16 or f32 (`Dtype::Auto` resolved).
    pub fn dtype(&self) -> Dtype {
        self.ctx.dtype()
    }

    /// Training reads and writes the weights in f32: an f16 backend refuses it.
    fn require_f32(&self, what: &str) -> Result<()> {
        if self.ctx.half {
            return Err(Error::Input(format!("{what} needs a GPU backend with dtype f32 (this one stores its weights in f16)")));
        }
        Ok(())
    }

    /// Per kernel: (dispatches, GPU milliseconds), when created with `profile`.
    pub fn profile(&self) -> Vec<(&'static str, u64, f64)> {
        self.ctx.profile.iter().map(|(k, (n, ns))| (*k, *n, ns / 1e6)).collect()
    }

    pub fn reset_profile(&mut self) {
        self.ctx.profile.clear();
    }

    /// Removes the merged adapter (if any) and merges `adapter` (if any), in place on the GPU
    /// with the lora_merge kernel: hot-swap without reloading the base weights.
    pub async fn set_adapter(&mut self, adapter: Option<Arc<Adapter>>) -> Result<()> {
        if self.ctx.half {
            return self.set_adapter_half(adapter).await;
        }
        let mut plan = Plan::default();
        if let Some(old) = self.adapter.take() {
            self.record_merge(&mut plan, &old, -1.0)?;
        }
        if let Some(new) = &adapter {
            self.record_merge(&mut plan, new, 1.0)?;
        }
        self.write_mlm_head(adapter.as_deref());
        self.ctx.submit(plan).await?;
        self.adapter = adapter;
        self.unmerged = None;
        Ok(())
    }

    /// [`GpuBackend::set_adapter`] for f16 weights: merging and removing in place would round
    /// twice and drift with every swap, so each weight an adapter (old or new) touches is merged
    /// on the host from the model's f32 weights and written once, rounded to f16 once.
    async fn set_adapter_half(&mut self, adapter: Option<Arc<Adapter>>) -> Result<()> {
        let c = &self.model.config;
        let mut touched: Vec<(usize, Weight)> = self.adapter.iter().chain(adapter.iter()).flat_map(|a| a.pairs.iter().map(|p| (p.layer, p.target.weight()))).collect();
        touched.sort_by_key(|&(l, w)| (l, w as usize));
        touched.dedup();
        for (layer, w) in touched {
            let mut data = self.model.layers[layer].linear(w).weight.data.clone();
            if let Some(a) = &adapter {
                for p in a.pairs.iter().filter(|p| p.layer == layer && p.target.weight() == w) {
                    let (rows, cols) = p.target.shape(c);
                    let at = p.target.row_offset(c) * cols;
                    for (x, d) in data[at..at + rows * cols].iter_mut().zip(p.delta(a.scale())) {
                        *x += d;
                    }
                }
            }
            self.ctx.write_matrix(&self.layers[layer].linear(w).w, &data);
        }
        self.write_mlm_head(adapter.as_deref());
        self.adapter = adapter;
        self.unmerged = None;
        Ok(())
    }

    /// The MLM head's trained parameters: the base model's, overwritten by the adapter's parts.
    fn write_mlm_head(&self, adapter: Option<&Adapter>) {
        let (Some(_), Some(base)) = (&self.mlm, &self.model.mlm) else { return };
        let mut head = base.clone();
        if let Some(a) = adapter {
            a.mlm_head.apply(&mut head);
        }
        self.upload_mlm_head(&head);
    }

    /// Writes `head`'s trained parameters (dense, LayerNorm, output bias) over the GPU's MLM head.
    fn upload_mlm_head(&self, head: &crate::model::MlmHead) {
        let Some(g) = &self.mlm else { return };
        let q = &self.ctx.queue;
        q.write_buffer(&g.dense.w, 0, bytemuck::cast_slice(&head.dense.weight.data));
        q.write_buffer(&g.dense.b, 0, bytemuck::cast_slice(&head.dense.bias.data));
        q.write_buffer(&g.ln.g, 0, bytemuck::cast_slice(&head.ln.gamma.data));
        q.write_buffer(&g.ln.b, 0, bytemuck::cast_slice(&head.ln.beta.data));
        for s in &g.decoder {
            if let Some(b) = &s.bias {
                q.write_buffer(b, 0, bytemuck::cast_slice(&head.bias.data[s.lo as usize..s.hi as usize]));
            }
        }
    }

    /// Applies `adapter` unmerged: every forward adds `s·(x·Aᵀ)·Bᵀ` beside each base product
    /// (the path training uses). Any merged adapter is removed first.
    pub async fn set_adapter_unmerged(&mut self, adapter: Option<Arc<Adapter>>) -> Result<()> {
        if self.adapter.is_some() {
            self.set_adapter(None).await?;
        }
        self.write_mlm_head(adapter.as_deref());
        self.tape = None;
        self.unmerged_scale = adapter.as_ref().map(|a| a.scale() as f32).unwrap_or(1.0);
        self.unmerged = match adapter {
            None => None,
            Some(a) => {
                let s = a.scale() as f32;
                let pairs = a
                    .pairs
                    .iter()
                    .map(|p| {
                        let sb: Vec<f32> = p.b.data.iter().map(|x| x * s).collect();
                        Ok(GPair { layer: p.layer, target: p.target, a: self.ctx.upload("lora_A", &p.a.data)?, sb: self.ctx.upload("lora_sB", &sb)? })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(Unmerged { r: a.r as u32, pairs })
            }
        };
        Ok(())
    }

    fn record_merge(&self, plan: &mut Plan, adapter: &Adapter, sign: f64) -> Result<()> {
        let c = &self.model.config;
        let scale = (sign * adapter.scale()) as f32;
        for p in &adapter.pairs {
            let w = self.layers[p.layer].weight(p.target);
            let (out, cols) = p.target.shape(c);
            let a = self.ctx.upload("lora_A", &p.a.data)?;
            let b = self.ctx.upload("lora_B", &p.b.data)?;
            lora::record(plan, w, &a, &b, out as u32, cols as u32, adapter.r as u32, p.target.row_offset(c) as u32, scale);
        }
        Ok(())
    }

    /// Reads back the block of a weight a LoRA target adds to (as `Model::lora_block`), as f32
    /// (tests: merge/unmerge round trips).
    pub async fn read_weight(&mut self, layer: usize, target: Target) -> Result<Vec<f32>> {
        let c = &self.model.config;
        let (rows, cols) = target.shape(c);
        let at = target.row_offset(c) * cols;
        let w = self.layers[layer].weight(target).clone();
        let n = w.size();
        let out = self.ctx.work(Work::WeightCopy, n)?;
        let mut plan = Plan::default();
        plan.copy(&w, 0, &out, 0, n);
        let raw = self.ctx.run(plan, &out, n).await?;
        Ok(if w.half {
            bytemuck::cast_slice::<f32, half::f16>(&raw)[at..at + rows * cols].iter().map(|x| x.to_f32()).collect()
        } else {
            raw[at..at + rows * cols].to_vec()
        })
    }

    pub async fn hidden_states(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.run(batch, Job::Hidden).await
    }

    pub async fn cls_vectors(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.run(batch, Job::ClsVectors).await
    }

    pub async fn cls_scores(&mut self, batch: &Batch, head: &ClsHead) -> Result<Vec<f32>> {
        if self.head.as_ref().map(|(h, _)| h != head).unwrap_or(true) {
            let g = GLinear { w: Matrix { buf: self.ctx.upload("cls_head.weight", &head.weight)?, half: false }, b: self.ctx.upload("cls_head.bias", &[head.bias])? };
            self.head = Some((head.clone(), g));
        }
        self.run(batch, Job::ClsScores).await
    }

    /// `full`: whole log-softmax rows `[slots, V]` instead of the targets' log-probabilities.
    pub async fn masked_logprobs(&mut self, batch: &Batch, slots: &[Slot], full: bool) -> Result<Vec<f32>> {
        if slots.is_empty() {
            return Ok(vec![]);
        }
        self.run(batch, Job::Mlm { slots, full }).await
    }

    /// Records encoder layer `li` for `n_rows` sequences of `seq` tokens (`lens[b0 + b]`).
    #[allow(clippy::too_many_arguments)]
    fn record_layer(&self, plan: &mut Plan, li: usize, io: &LayerIo<'_>, lens: &Buf, n_rows: u32, seq: u32, b0: u32) {
        let c = &self.model.config;
        let (h, tokens) = (c.hidden as u32, n_rows * seq);
        self.record_qkv(plan, li, io.x, io.qkv, &io.lora_t, tokens);
        attention::record(plan, io.qkv, lens, io.ctx, n_rows, seq, h, c.heads as u32, b0);
        self.record_tail(plan, li, io, tokens);
    }

    /// The last layer where only some rows of its output are read (the [CLS] rows, the masked
    /// slots): keys and values for every token, then attention, the output projection, the FFN
    /// and both LayerNorms at those `n` rows alone (`idx[idx_off..]`, chunk-local token indices),
    /// written in order to `out [n, H]`. `x` is the layer's input for the whole chunk; `io`'s
    /// `ctx`, `y` and `ffn` hold the n rows.
    #[allow(clippy::too_many_arguments)]
    fn record_last_rows(&self, plan: &mut Plan, io: &LayerIo<'_>, lens: &Buf, idx: &Buf, idx_off: u32, n: u32, n_rows: u32, seq: u32, b0: u32) {
        let c = &self.model.config;
        let li = self.layers.len() - 1;
        let h = c.hidden as u32;
        self.record_qkv(plan, li, io.x, io.qkv, &io.lora_t, n_rows * seq);
        attention::record_rows(plan, io.qkv, lens, io.ctx, idx, idx_off, n, seq, h, c.heads as u32, b0);
        gather::record(plan, io.x, idx, io.out, n, h, idx_off, 0);
        self.record_tail(plan, li, &LayerIo { x: io.out, ..*io }, n);
    }

    /// Unmerged LoRA: `s·(input·Aᵀ)·Bᵀ` of layer `li`'s pairs on `targets`, accumulated onto the
    /// base product's columns in `dest` (`rows` rows, row stride `ldc`).
    #[allow(clippy::too_many_arguments)]
    fn record_branch(&self, plan: &mut Plan, li: usize, targets: &[Target], input: &Buf, dest: &Buf, ldc: u32, lora_t: &LoraT<'_>, rows: u32) {
        let Some(u) = &self.unmerged else { return };
        let c = &self.model.config;
        for (pi, p) in u.pairs.iter().enumerate().filter(|(_, p)| p.layer == li && targets.contains(&p.target)) {
            let (out, inp) = p.target.shape(c);
            let tb = match lora_t {
                LoraT::Shared(b) => *b,
                LoraT::PerPair(v) => &v[pi],
            };
            let t = Out { buf: tb, ldc: u.r, offset: 0 };
            matmul::record(plan, In { buf: input, offset: 0 }, &p.a, &self.zeros, Add::Nothing, t, rows, u.r, inp as u32, Act::None, &self.ctx.dummy);
            let o = Out { buf: dest, ldc, offset: p.target.row_offset(c) as u32 };
            matmul::record(plan, In { buf: tb, offset: 0 }, &p.sb, &self.zeros, Add::Previous, o, rows, out as u32, u.r, Act::None, &self.ctx.dummy);
        }
    }

    /// The fused Q|K|V projection of `tokens` rows of `x` into `qkv`.
    fn record_qkv(&self, plan: &mut Plan, li: usize, x: &Buf, qkv: &Buf, lora_t: &LoraT<'_>, tokens: u32) {
        let h = self.model.config.hidden as u32;
        let l = &self.layers[li];
        matmul::record(plan, In { buf: x, offset: 0 }, &l.qkv.w, &l.qkv.b, Add::Nothing, Out { buf: qkv, ldc: 3 * h, offset: 0 }, tokens, 3 * h, h, Act::None, &self.ctx.dummy);
        self.record_branch(plan, li, &[Target::Query, Target::Key, Target::Value], x, qkv, 3 * h, lora_t, tokens);
    }

    /// After attention, for `rows` rows: the output projection with the residual `io.x`, its
    /// LayerNorm, the FFN with the residual, and the last LayerNorm, into `io.out`.
    fn record_tail(&self, plan: &mut Plan, li: usize, io: &LayerIo<'_>, rows: u32) {
        let c = &self.model.config;
        let (h, im) = (c.hidden as u32, c.intermediate as u32);
        let l = &self.layers[li];
        let dummy = &self.ctx.dummy;
        let to = |buf, ldc| Out { buf, ldc, offset: 0 };
        let from = |buf| In { buf, offset: 0 };
        let branch = |plan: &mut Plan, t: Target, input: &Buf, dest: &Buf, ldc: u32| self.record_branch(plan, li, &[t], input, dest, ldc, &io.lora_t, rows);
        let has = |t: Target| self.unmerged.as_ref().is_some_and(|u| u.pairs.iter().any(|p| p.layer == li && p.target == t));
        let bytes = |n: u32| rows as u64 * n as u64 * 4;
        matmul::record(plan, from(io.ctx), &l.attn_out.w, &l.attn_out.b, Add::Residual(io.x), to(io.y, h), rows, h, h, Act::None, dummy);
        branch(plan, Target::AttnOut, io.ctx, io.y, h);
        if let Some(k) = &io.keep {
            plan.copy(io.y, 0, k.y0, 0, bytes(h));
        }
        layernorm::record(plan, io.y, &l.attn_ln.g, &l.attn_ln.b, rows, h, c.layer_norm_eps);
        if let Some(k) = &io.keep {
            // Keep the pre-activation; GELU runs on a copy.
            matmul::record(plan, from(io.y), &l.ffn_in.w, &l.ffn_in.b, Add::Nothing, to(k.f0, im), rows, im, h, Act::None, dummy);
            branch(plan, Target::FfnIn, io.y, k.f0, im);
            plan.copy(k.f0, 0, io.ffn, 0, bytes(im));
            gelu::record(plan, io.ffn, rows * im);
        } else if has(Target::FfnIn) {
            // The branch must join the product before the activation.
            matmul::record(plan, from(io.y), &l.ffn_in.w, &l.ffn_in.b, Add::Nothing, to(io.ffn, im), rows, im, h, Act::None, dummy);
            branch(plan, Target::FfnIn, io.y, io.ffn, im);
            gelu::record(plan, io.ffn, rows * im);
        } else {
            matmul::record(plan, from(io.y), &l.ffn_in.w, &l.ffn_in.b, Add::Nothing, to(io.ffn, im), rows, im, h, Act::Gelu, dummy);
        }
        matmul::record(plan, from(io.ffn), &l.ffn_out.w, &l.ffn_out.b, Add::Residual(io.y), to(io.out, h), rows, h, im, Act::None, dummy);
        branch(plan, Target::FfnOut, io.ffn, io.out, h);
        if let Some(k) = &io.keep {
            plan.copy(io.out, 0, k.z0, 0, bytes(h));
        }
        layernorm::record(plan, io.out, &l.ffn_ln.g, &l.ffn_ln.b, rows, h, c.layer_norm_eps);
    }

    /// Long on purpose: it records one submission in order (inputs, every layer, the head, one
    /// readback) over the workspace's buffers; in pieces, a dozen buffers would pass between them.
    async fn run(&mut self, batch: &Batch, job: Job<'_>) -> Result<Vec<f32>> {
        let c = self.model.config.clone();
        let (h, im, v) = (c.hidden as u32, c.intermediate as u32, c.vocab_size as u32);
        let (rows, seq) = (batch.rows(), batch.seq);
        let budget = self.ctx.binding_budget();
        let widest = (3 * c.hidden).max(c.intermediate) as u64;
        let max_rows = (budget / (seq as u64 * widest * 4)) as usize;
        if max_rows == 0 {
            return Err(Error::GpuLimit(format!("one sequence of {seq} tokens does not fit a {budget}-byte binding")));
        }

        // Rows each chunk reads from the final hidden states, as (chunk-local row index), and
        // the MLM targets; slots are processed in row order and scattered back afterwards.
        let mut order: Vec<usize> = match &job {
            Job::Mlm { slots, .. } => (0..slots.len()).collect(),
            _ => vec![],
        };
        if let Job::Mlm { slots, .. } = &job {
            order.sort_by_key(|&i| slots[i].row);
        }
        let chunks: Vec<(usize, usize)> = (0..rows).step_by(max_rows).map(|b0| (b0, (b0 + max_rows).min(rows))).collect();
        let mut idx: Vec<u32> = Vec::new();
        let mut tgt: Vec<u32> = Vec::new();
        let mut chunk_slots: Vec<(usize, usize)> = Vec::new(); // range into idx/order per chunk
        for &(b0, b1) in &chunks {
            let start = idx.len();
            match &job {
                Job::ClsVectors | Job::ClsScores => idx.extend((0..(b1 - b0) as u32).map(|b| b * seq as u32)),
                Job::Mlm { slots, .. } => {
                    for &o in &order {
                        let s = slots[o];
                        if (b0..b1).contains(&(s.row as usize)) {
                            idx.push((s.row - b0 as u32) * seq as u32 + s.pos);
                            tgt.push(s.target);
                        }
                    }
                }
                Job::Hidden => {}
            }
            chunk_slots.push((start, idx.len()));
        }
        let out_len = match &job {
            Job::Hidden => rows * seq * c.hidden,
            Job::ClsVectors => rows * c.hidden,
            Job::ClsScores => rows,
            Job::Mlm { slots, full } => slots.len() * if *full { c.vocab_size } else { 1 },
        };
        let max_tokens = (max_rows.min(rows) * seq) as u64;
        let ctx = &mut self.ctx;
        let ids = ctx.work_with(Work::Ids, &batch.ids)?;
        let lens = ctx.work_with(Work::Lens, &batch.lens)?;
        let idx_buf = ctx.work_with(Work::GatherIdx, &idx)?;
        let tgt_buf = ctx.work_with(Work::Targets, &tgt)?;
        let x = ctx.work(Work::X, max_tokens * h as u64 * 4)?;
        let y = ctx.work(Work::Y, max_tokens * h as u64 * 4)?;
        let ctxb = ctx.work(Work::AttnCtx, max_tokens * h as u64 * 4)?;
        let qkv = ctx.work(Work::Qkv, max_tokens * 3 * h as u64 * 4)?;
        let ffn = ctx.work(Work::Ffn, max_tokens * im as u64 * 4)?;
        let out = ctx.work(Work::Out, out_len as u64 * 4)?;
        let lora_t = match &self.unmerged {
            Some(u) => ctx.work(Work::LoraT, max_tokens * u.r as u64 * 4)?,
            None => ctx.dummy.clone(),
        };
        let most_slots = chunk_slots.iter().map(|(a, b)| b - a).max().unwrap_or(0) as u64;
        let (g, t) = if most_slots > 0 {
            (ctx.work(Work::HeadIn, most_slots * h as u64 * 4)?, ctx.work(Work::HeadMid, most_slots * h as u64 * 4)?)
        } else {
            (ctx.dummy.clone(), ctx.dummy.clone())
        };
        let logit_rows = ((budget / (v as u64 * 4)) as usize).max(1);
        let logits = match &job {
            Job::Mlm { .. } => ctx.work(Work::Logits, most_slots.min(logit_rows as u64) * v as u64 * 4)?,
            _ => ctx.dummy.clone(),
        };
        let dummy = ctx.dummy.clone();
        let prune_last = !matches!(job, Job::Hidden) && most_slots <= max_tokens;

        let mut plan = Plan::default();
        plan.tiles = self.tiles;
        let mut done_slots = 0u32;
        for (ci, &(b0, b1)) in chunks.iter().enumerate() {
            let n_rows = (b1 - b0) as u32;
            let tokens = n_rows * seq as u32;
            let (s0, s1) = chunk_slots[ci];
            let ns = (s1 - s0) as u32;
            if matches!(job, Job::Mlm { .. }) && ns == 0 {
                continue;
            }
            embed::record(&mut plan, &ids, &self.word, &self.pos, &self.typ, &x, tokens, h, seq as u32, c.position_offset as u32, (b0 * seq) as u32);
            layernorm::record(&mut plan, &x, &self.emb_ln.g, &self.emb_ln.b, tokens, h, c.layer_norm_eps);
            // Every layer at every token, but the last only at the rows read, into g (unless the
            // whole hidden states are read, or more rows than the chunk has tokens: slots that
            // repeat a position).
            let io = LayerIo { x: &x, out: &x, qkv: &qkv, ctx: &ctxb, y: &y, ffn: &ffn, lora_t: LoraT::Shared(&lora_t), keep: None };
            let layers = self.layers.len();
            if prune_last {
                for li in 0..layers - 1 {
                    self.record_layer(&mut plan, li, &io, &lens, n_rows, seq as u32, b0 as u32);
                }
                self.record_last_rows(&mut plan, &LayerIo { out: &g, ..io }, &lens, &idx_buf, s0 as u32, ns, n_rows, seq as u32, b0 as u32);
            } else {
                for li in 0..layers {
                    self.record_layer(&mut plan, li, &io, &lens, n_rows, seq as u32, b0 as u32);
                }
                if !matches!(job, Job::Hidden) {
                    gather::record(&mut plan, &x, &idx_buf, &g, ns, h, s0 as u32, 0);
                }
            }
            match &job {
                Job::Hidden => plan.copy(&x, 0, &out, (b0 * seq * c.hidden * 4) as u64, tokens as u64 * h as u64 * 4),
                Job::ClsVectors => plan.copy(&g, 0, &out, (b0 * c.hidden * 4) as u64, n_rows as u64 * h as u64 * 4),
                Job::ClsScores => {
                    let head = &self.head.as_ref().expect("cls_scores uploads the head").1;
                    let o = Out { buf: &out, ldc: 1, offset: b0 as u32 };
                    matmul::record(&mut plan, In { buf: &g, offset: 0 }, &head.w, &head.b, Add::Nothing, o, n_rows, 1, h, Act::None, &dummy);
                }
                Job::Mlm { full, .. } => {
                    let mlm = self.mlm.as_ref().ok_or(Error::NoMlmHead)?;
                    let o = Out { buf: &t, ldc: h, offset: 0 };
                    matmul::record(&mut plan, In { buf: &g, offset: 0 }, &mlm.dense.w, &mlm.dense.b, Add::Nothing, o, ns, h, h, Act::Gelu, &dummy);
                    layernorm::record(&mut plan, &t, &mlm.ln.g, &mlm.ln.b, ns, h, c.layer_norm_eps);
                    for r0 in (0..ns).step_by(logit_rows) {
                        let nr = (ns - r0).min(logit_rows as u32);
                        for s in &mlm.decoder {
                            let o = Out { buf: &logits, ldc: v, offset: s.lo };
                            let bias = s.bias.as_ref().expect("decoder shards carry their bias");
                            matmul::record(&mut plan, In { buf: &t, offset: r0 * h }, &s.buf, bias, Add::Nothing, o, nr, s.hi - s.lo, h, Act::None, &dummy);
                        }
                        let first = done_slots + r0;
                        let out_off = if *full { first * v } else { first };
                        logsoftmax::record(&mut plan, &logits, &tgt_buf, &out, nr, v, *full, s0 as u32 + r0, out_off);
                    }
                    done_slots += ns;
                }
            }
        }
        let res = self.ctx.run(plan, &out, out_len as u64 * 4).await?;
        let mut res = res[..out_len].to_vec();
        if let Job::Mlm { full, .. } = job {
            let w = if full { c.vocab_size } else { 1 };
            let mut un = vec![0f32; out_len];
            for (k, &o) in order.iter().enumerate() {
                un[o * w..(o + 1) * w].copy_from_slice(&res[k * w..(k + 1) * w]);
            }
            res = un;
        }
        Ok(res)
    }
}
