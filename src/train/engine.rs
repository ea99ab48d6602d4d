//! The training face of the two backends: the one interface a [`super::Trainer`] calls, so that
//! the trainer itself never asks where it runs.
//!
//! - [`Engine::forward`] runs the encoder over a batch and returns its final [CLS] vectors with,
//!   when asked, a [`Tape`] value; [`Engine::backward`] consumes that tape with `∂L/∂cls`.
//! - [`Engine::mlm`] is the masked-LM forward and backward in one call.
//! - Gradients: the CPU adds them straight into [`Grads`]; the GPU accumulates them on the device
//!   over a step's batches, and [`Engine::read_grads`] brings back what the optimiser steps on
//!   the CPU (LoRA pairs, MLM head) — under full fine-tuning there, only the norm's sum of squares,
//!   since every encoder weight steps on the GPU ([`Engine::full_adamw`]).
//!
//! The trainable state (model, LoRA pairs, heads) is the trainer's: the CPU reads it from the
//! [`State`] passed in, the GPU from its copy, which [`Engine::sync`] keeps in step after each
//! optimiser step. (The CPU has no copy of its own: a second model, and the transposed weights
//! inference keeps, would double its memory for nothing.)

use crate::adapter::Adapter;
use crate::batch::{Batch, Slot};
use crate::cpu::encoder::{self, Grads};
use crate::error::{Error, Result};
use crate::gpu::GpuBackend;
use crate::layout::{Group, Layout};
use crate::model::{MlmHead, Model};

/// What the CPU's forward reads: the trainer's weights and LoRA pairs.
#[derive(Clone, Copy)]
pub struct State<'a> {
    pub model: &'a Model,
    pub lora: Option<&'a Adapter>,
}

/// The activations a forward kept for its backward. Each forward gives one; the backward takes
/// it by value, so a backward without its forward, or twice for one, does not compile.
pub enum Tape {
    Cpu(encoder::Tape),
    /// Kept on the device, in the GPU backend's reusable buffers.
    Gpu,
}

/// Which gradients [`Engine::read_grads`] brings into the [`Grads`] value.
#[derive(Clone, Copy)]
pub struct Wanted {
    pub lora: bool,
    /// The MLM head transform's (dense, LayerNorm).
    pub mlm_head: bool,
    /// The MLM output bias's (a column sum over the vocabulary, computed only when wanted).
    pub mlm_bias: bool,
    /// Every encoder weight's gradient (full fine-tuning on the GPU; for tests), rather than
    /// only their sum of squares.
    pub full: bool,
}

/// Where the encoder of a training run computes.
#[derive(Default)]
pub enum Engine {
    #[default]
    Cpu,
    Gpu(Box<GpuBackend>),
}

/// Full fine-tuning's layout: every encoder tensor of [`Model::layout`], without the MLM head.
/// The GPU keeps the gradients, moments and weights it steps at these offsets.
pub(crate) fn full_layout(m: &Model) -> Layout {
    m.layout().only(|g| g == Group::Encoder)
}

/// Writes `flat`, in [`full_layout`], into the encoder tensors of `m`.
pub(crate) fn unpack_encoder(m: &mut Model, flat: &[f32]) {
    let layout = full_layout(m);
    for ((_, t), p) in m.tensors_mut().into_iter().filter(|(n, _)| Group::of(n) == Group::Encoder).zip(layout.iter()) {
        t.data.copy_from_slice(&flat[p.range()]);
    }
}

impl Engine {
    /// The GPU `gpu` (made for this model) readied for a run: full fine-tuning's gradient and
    /// moment buffers in `full` ([`full_layout`], when given), the LoRA pairs unmerged, the MLM head.
    pub async fn gpu(mut gpu: GpuBackend, full: Option<&Layout>, lora: Option<&Adapter>, mlm: Option<&MlmHead>) -> Result<Self> {
        if let Some(layout) = full {
            gpu.enable_full_grads(layout)?;
        }
        let mut pairs_only = lora.cloned().unwrap_or_else(|| Adapter::heads_only(&gpu.model().config));
        pairs_only.cls_head = None;
        pairs_only.mlm_head = Default::default();
        gpu.set_adapter_unmerged(Some(std::sync::Arc::new(pairs_only))).await?;
        if let Some(h) = mlm {
            gpu.update_mlm_head(h)?;
        }
        Ok(Engine::Gpu(Box::new(gpu)))
    }

    /// "cpu" or "gpu (adapter name)".
    pub fn describe(&self) -> String {
        match self {
            Engine::Cpu => "cpu".into(),
            Engine::Gpu(g) => format!("gpu ({})", g.adapter_name()),
        }
    }

    /// Whether full fine-tuning's weights and AdamW moments live here rather than in the
    /// trainer's copy (the GPU: only the gradient norm crosses the bus each step).
    pub fn keeps_weights(&self) -> bool {
        matches!(self, Engine::Gpu(_))
    }

    /// Padded tokens per forward when lists share one: the GPU fills its batches up to `budget`;
    /// the CPU takes one list at a time (0), since it pads nothing anyway, its tape grows with the
    /// batch, and one list per backward keeps its gradients' summation order.
    pub fn list_budget(&self, budget: usize) -> usize {
        match self {
            Engine::Cpu => 0,
            Engine::Gpu(_) => budget,
        }
    }

    /// Final [CLS] vectors `[rows, H]` with the current parameters, and the tape when `keep`.
    pub async fn forward(&mut self, st: State<'_>, batch: &Batch, keep: bool) -> Result<(Vec<f32>, Option<Tape>)> {
        match self {
            Engine::Cpu => {
                let mut tape = encoder::Tape::default();
                let x = encoder::forward(st.model, st.lora, batch, keep.then_some(&mut tape));
                let h = st.model.config.hidden;
                let cls = (0..batch.rows()).flat_map(|b| x[b * batch.seq * h..][..h].iter().copied()).collect();
                Ok((cls, keep.then_some(Tape::Cpu(tape))))
            }
            Engine::Gpu(g) if keep => Ok((g.train_forward(batch).await?, Some(Tape::Gpu))),
            Engine::Gpu(g) => Ok((g.cls_vectors(batch).await?, None)),
        }
    }

    /// Backpropagates `d_cls` (`[rows, H]`, at the [CLS] vectors of the forward that gave
    /// `tape`) into the trainable encoder tensors' gradients.
    pub async fn backward(&mut self, st: State<'_>, batch: &Batch, tape: Tape, d_cls: &[f32], g: &mut Grads) -> Result<()> {
        match (self, tape) {
            (Engine::Cpu, Tape::Cpu(tape)) => {
                let d_out = crate::batch::at_first_positions(d_cls, batch.rows(), batch.seq, st.model.config.hidden);
                encoder::backward(st.model, st.lora, batch, &tape, d_out, g);
                Ok(())
            }
            (Engine::Gpu(gpu), Tape::Gpu) => gpu.train_backward(d_cls).await,
            _ => Err(Error::Training("a tape from another backend".into())),
        }
    }

    /// Masked-LM cross-entropy `Σ w·(−log P(target))` over `slots` of a masked batch, with its
    /// gradients: into the MLM head transform when `head`, into the encoder when `encoder`.
    #[allow(clippy::too_many_arguments)]
    pub async fn mlm(&mut self, st: State<'_>, batch: &Batch, slots: &[Slot], w: f32, want: Wanted, encoder_trains: bool, g: &mut Grads) -> Result<f64> {
        match self {
            Engine::Cpu => {
                let mut tape = encoder::Tape::default();
                let x = encoder::forward(st.model, st.lora, batch, encoder_trains.then_some(&mut tape));
                let mut dx = vec![0f32; x.len()];
                let loss = encoder::mlm_loss_backward(st.model, &x, batch.seq, slots, w, &mut dx, g);
                if encoder_trains {
                    encoder::backward(st.model, st.lora, batch, &tape, dx, g);
                }
                Ok(loss)
            }
            Engine::Gpu(gpu) => gpu.train_mlm(batch, slots, w, want.mlm_head, want.mlm_bias).await,
        }
    }

    /// Mean `−log P(target)` over `slots` with the current parameters (no gradients).
    pub async fn mlm_loss(&mut self, st: State<'_>, batch: &Batch, slots: &[Slot]) -> Result<f64> {
        let lp = match self {
            Engine::Cpu => {
                let x = encoder::forward(st.model, st.lora, batch, None);
                let mut lp = Vec::with_capacity(slots.len());
                encoder::mlm_rows(st.model, &x, batch.seq, slots, |i, row| lp.push(row[slots[i].target as usize]));
                lp
            }
            Engine::Gpu(g) => g.masked_logprobs(batch, slots, false).await?,
        };
        Ok(-lp.iter().map(|&x| x as f64).sum::<f64>() / slots.len() as f64)
    }

    /// Zeroes the gradients kept here, at the start of a step (the CPU keeps none).
    pub fn zero_grads(&mut self) -> Result<()> {
        match self {
            Engine::Cpu => Ok(()),
            Engine::Gpu(g) => g.zero_grads(),
        }
    }

    /// Brings the gradients accumulated here into `g` (the CPU's are there already). Returns the
    /// sum of squares of those that stay here (full fine-tuning on the GPU, unless `want.full`
    /// reads them all back), else 0.
    pub async fn read_grads(&mut self, g: &mut Grads, want: Wanted) -> Result<f64> {
        let Engine::Gpu(gpu) = self else { return Ok(0.0) };
        if want.lora {
            g.lora = gpu.read_lora_grads().await?;
        }
        if let (true, Some(head)) = (want.mlm_head, g.model.as_mut().and_then(|m| m.mlm.as_mut())) {
            let ([dw, db, dg, dbeta], dbias) = gpu.read_mlm_grads(want.mlm_bias).await?;
            head.dense.weight.data = dw;
            head.dense.bias.data = db;
            head.ln.gamma.data = dg;
            head.ln.beta.data = dbeta;
            if let Some(d) = dbias {
                head.bias.data = d;
            }
        }
        if !gpu.full_enabled() {
            return Ok(0.0);
        }
        if !want.full {
            return gpu.full_grad_sumsq().await;
        }
        let all = gpu.read_full_grads().await?;
        let gm = g.model.as_mut().ok_or_else(|| Error::Training("no gradient model".into()))?;
        unpack_encoder(gm, &all);
        Ok(0.0)
    }

    /// Brings this copy of the trained LoRA pairs and MLM head up to date after a step on the CPU.
    pub fn sync(&mut self, lora: Option<&Adapter>, mlm: Option<&MlmHead>) -> Result<()> {
        let Engine::Gpu(g) = self else { return Ok(()) };
        if let Some(a) = lora {
            g.update_lora(a)?;
        }
        if let Some(h) = mlm {
            g.update_mlm_head(h)?;
        }
        Ok(())
    }

    fn kept(&mut self) -> Result<&mut GpuBackend> {
        match self {
            Engine::Gpu(g) => Ok(g),
            Engine::Cpu => Err(Error::Training("the CPU keeps no weights of its own: they are the trainer's".into())),
        }
    }

    /// Full fine-tuning's state kept here, in the layout given to [`Engine::gpu`]: the weights
    /// and AdamW's two moments.
    pub async fn read_full_state(&mut self) -> Result<[Vec<f32>; 3]> {
        self.kept()?.read_full_state().await
    }

    /// Replaces full fine-tuning's weights (from `model`) and moments kept here.
    pub fn write_full_state(&mut self, model: &Model, m: &[f32], v: &[f32]) -> Result<()> {
        let g = self.kept()?;
        g.update_weights(model)?;
        g.write_full_moments(m, v)
    }

    /// One AdamW step of the weights kept here, whole or not at all (`false`: a weight or moment
    /// would not be finite, and nothing changed).
    pub async fn full_adamw(&mut self, c: &super::AdamWConfig, step: crate::gpu::ops::adamw::Step) -> Result<bool> {
        self.kept()?.full_adamw(c, step).await
    }
}
