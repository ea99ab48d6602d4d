//! One interface over the two backends. Inputs are validated here, once, so that neither backend
//! ever reads out of bounds; the backends then run the same maths.

use crate::batch::{validate_slots, Batch, Slot};
use crate::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::gpu::{Dtype, GpuBackend};
use crate::model::{ClsHead, Model};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// A hardware GPU when one is found, else the CPU backend (which beats software GPUs).
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BackendKind::Auto),
            "gpu" => Ok(BackendKind::Gpu),
            "cpu" => Ok(BackendKind::Cpu),
            _ => Err(Error::Input(format!("backend {s:?}: expected gpu, cpu or auto"))),
        }
    }
}

pub enum Backend {
    Cpu(CpuBackend),
    Gpu(Box<GpuBackend>),
}

impl Backend {
    /// The backend `kind` says, f32 throughout.
    pub async fn new(model: Arc<Model>, kind: BackendKind) -> Result<Self> {
        Self::with_dtype(model, kind, Dtype::F32).await
    }

    /// The backend `kind` says, the GPU storing its weights in `dtype`. The CPU computes in f32:
    /// asking it for f16 is an input error, while `Auto` falling back to it logs the f32.
    pub async fn with_dtype(model: Arc<Model>, kind: BackendKind, dtype: Dtype) -> Result<Self> {
        match kind {
            BackendKind::Cpu if dtype == Dtype::F16 => Err(Error::Input("dtype f16 needs the GPU backend; the CPU backend computes in f32".into())),
            BackendKind::Cpu => Ok(Backend::Cpu(CpuBackend::new(model))),
            BackendKind::Gpu => Ok(Backend::Gpu(Box::new(GpuBackend::open(model, true, dtype).await?))),
            BackendKind::Auto => match GpuBackend::open(model.clone(), false, dtype).await {
                Ok(g) => Ok(Backend::Gpu(Box::new(g))),
                Err(e) => {
                    let f32_note = if dtype == Dtype::F32 { "" } else { " (in f32)" };
                    log::warn!("no usable GPU ({e}); using the CPU backend{f32_note}");
                    Ok(Backend::Cpu(CpuBackend::new(model)))
                }
            },
        }
    }

    pub fn model(&self) -> &Model {
        match self {
            Backend::Cpu(c) => c.model(),
            Backend::Gpu(g) => g.model(),
        }
    }

    /// A short description, e.g. `cpu` or `gpu: llvmpipe (Vulkan, Cpu), f16`.
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu(_) => "cpu".into(),
            Backend::Gpu(g) => format!("gpu: {}, {}", g.adapter_name(), g.dtype().as_str()),
        }
    }

    /// The weights' type: always f32 on the CPU.
    pub fn dtype(&self) -> Dtype {
        match self {
            Backend::Cpu(_) => Dtype::F32,
            Backend::Gpu(g) => g.dtype(),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Backend::Gpu(_))
    }

    /// Merges a LoRA adapter into the weights, removing the one merged before (hot-swap);
    /// `None` restores the base weights.
    pub async fn set_adapter(&mut self, adapter: Option<Arc<crate::adapter::Adapter>>) -> Result<()> {
        match self {
            Backend::Cpu(c) => {
                c.set_adapter(adapter);
                Ok(())
            }
            Backend::Gpu(g) => g.set_adapter(adapter).await,
        }
    }

    /// Applies a LoRA adapter unmerged (base products plus low-rank branches: the training
    /// path); a merged adapter is removed first. `None` removes it.
    pub async fn set_adapter_unmerged(&mut self, adapter: Option<Arc<crate::adapter::Adapter>>) -> Result<()> {
        match self {
            Backend::Cpu(c) => {
                c.set_adapter_unmerged(adapter);
                Ok(())
            }
            Backend::Gpu(g) => g.set_adapter_unmerged(adapter).await,
        }
    }

    fn check(&self, batch: &Batch) -> Result<()> {
        let c = &self.model().config;
        batch.validate(c.vocab_size, c.max_tokens())
    }

    fn check_mlm(&self, batch: &Batch, slots: &[Slot]) -> Result<()> {
        self.check(batch)?;
        if self.model().mlm.is_none() {
            return Err(Error::NoMlmHead);
        }
        validate_slots(batch, slots, self.model().config.vocab_size)
    }

    /// Final hidden states, `[rows × seq, H]`.
    pub async fn hidden_states(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.check(batch)?;
        match self {
            Backend::Cpu(c) => Ok(c.forward(batch)),
            Backend::Gpu(g) => g.hidden_states(batch).await,
        }
    }

    /// Final [CLS] (first-token) vectors, `[rows, H]`.
    pub async fn cls_vectors(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.check(batch)?;
        match self {
            Backend::Cpu(c) => Ok(c.cls_vectors(batch)),
            Backend::Gpu(g) => g.cls_vectors(batch).await,
        }
    }

    /// RescoreBERT scores `w·h_CLS + b`, one per row.
    pub async fn cls_scores(&mut self, batch: &Batch, head: &ClsHead) -> Result<Vec<f32>> {
        self.check(batch)?;
        if head.weight.len() != self.model().config.hidden {
            return Err(Error::NoClsHead(format!("head has {} weights, the model {} hidden units", head.weight.len(), self.model().config.hidden)));
        }
        match self {
            Backend::Cpu(c) => Ok(c.cls_scores(batch, head)),
            Backend::Gpu(g) => g.cls_scores(batch, head).await,
        }
    }

    /// `log P(target | row)` at each slot's position, from the MLM head.
    pub async fn masked_logprobs(&mut self, batch: &Batch, slots: &[Slot]) -> Result<Vec<f32>> {
        self.check_mlm(batch, slots)?;
        match self {
            Backend::Cpu(c) => Ok(c.masked_logprobs(batch, slots)),
            Backend::Gpu(g) => g.masked_logprobs(batch, slots, false).await,
        }
    }

    /// Whole log-softmax rows of the MLM head at the slots, `[slots, V]` (for tests and tools).
    pub async fn logprob_rows(&mut self, batch: &Batch, slots: &[Slot]) -> Result<Vec<f32>> {
        self.check_mlm(batch, slots)?;
        match self {
            Backend::Cpu(c) => Ok(c.logprob_rows(batch, slots)),
            Backend::Gpu(g) => g.masked_logprobs(batch, slots, true).await,
        }
    }
}
