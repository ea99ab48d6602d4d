//! LoRB training: adapter-only (or full) discriminative training of the rescorer.
//!
//! A [`Trainer`] owns the trainable state — LoRA pairs applied unmerged, the CLS head, optionally
//! the MLM head transform, or every encoder weight in full fine-tuning — and takes one optimiser
//! step at a time ([`Trainer::step_lists`], [`Trainer::step_texts`]), so that a native loop, a
//! progress bar or a browser's event loop can drive it and stop it between steps. [`fit`] is the
//! epoch loop: seeded shuffling, dev WER each epoch, early stopping, checkpoints.
//!
//! One list's step: tokens → padded [`Batch`] → encoder forward with a tape → [CLS] vectors →
//! `s2 = w·h + b` → list loss ([`loss`]) → `∂L/∂h` → encoder backward → gradients of the
//! trainable tensors → clip → AdamW. Gradients are checked against PyTorch + PEFT autograd in
//! `tests/training.rs`.
//!
//! Scores inside MWER/MWED are `s_j = κ·s1_j + s2_j`: κ scales the first-pass log-scores, whose
//! gaps are often so large that the list posterior is one-hot and MWER has no gradient. The
//! matching inference weight is `s1 + λ·s2` with `λ = 1/κ` (then tuned on dev).

#[cfg(feature = "svg")]
pub mod curves;
pub mod engine;
pub mod fit;
pub mod head;
pub mod loss;
pub mod optim;
pub mod text;

pub use fit::{fit, Checkpoint, EpochRecord, FitOptions, FitReport};
pub use head::{fit_cls_head, head_loss_grad, EpochLog, HeadFit, HeadFitOptions, ListFeatures};
pub use loss::mwer;
pub use optim::{AdamW, AdamWConfig};

use crate::adapter::{Adapter, MlmHeadUpdate};
use crate::batch::{Batch, Slot};
use crate::cpu::encoder::Grads;
use crate::gpu::GpuBackend;
use engine::{Engine, State};
use crate::error::{Error, Result};
use crate::layout::{lora_name, Group, Layout};
use crate::model::{ClsHead, Model, Tensor};
use serde::{Deserialize, Serialize};

/// SplitMix64: small, seedable, the same on every platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Minimum word error rate over the list (s2 = CLS score).
    Mwer,
    /// RescoreBERT's matching word error distribution.
    Mwed,
    /// Distillation of the teacher's PLL into the CLS score.
    Md,
    /// Masked-LM cross-entropy on text.
    Mlm,
}

impl std::str::FromStr for Objective {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mwer" => Ok(Objective::Mwer),
            "mwed" => Ok(Objective::Mwed),
            "md" => Ok(Objective::Md),
            "mlm" => Ok(Objective::Mlm),
            _ => Err(Error::Input(format!("unknown objective {s:?} (mwer, mwed, md, mlm)"))),
        }
    }
}

/// What is trained and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub objective: Objective,
    /// Scale of s1 inside MWER/MWED.
    pub kappa: f64,
    /// Weight of the correlation regulariser L_cor on each list's [CLS] vectors.
    pub cor_weight: f64,
    /// Train the CLS head (`score`).
    pub cls_head: bool,
    /// Train the MLM head transform (dense + LayerNorm; the decoder stays tied).
    pub mlm_head: bool,
    /// Also train the MLM head's output bias (`mlm.bias`, one logit offset per token: a unigram
    /// prior, which personalisation moves towards the user's words). Needs `mlm_head`.
    #[serde(default)]
    pub mlm_bias: bool,
    /// Full fine-tuning: every encoder weight is trainable (no LoRA).
    pub full: bool,
    pub optim: AdamWConfig,
    /// Learning rate of the heads (`cls.*`, `mlm.*`) when it should differ from the encoder's
    /// (full fine-tuning uses a small encoder rate, and the heads start at zero).
    #[serde(default)]
    pub head_lr: Option<f64>,
    pub warmup_steps: u64,
    /// Steps over which the learning rate decays to 0 (0: constant after warm-up).
    pub total_steps: u64,
    /// Global gradient-norm clip (0: none).
    pub clip: f64,
    pub seed: u64,
    /// Fraction of tokens masked for MLM (80% [MASK], 10% random, 10% unchanged).
    pub mask_prob: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            objective: Objective::Mwer,
            kappa: 1.0,
            cor_weight: 0.0,
            cls_head: true,
            mlm_head: false,
            mlm_bias: false,
            full: false,
            optim: AdamWConfig::default(),
            head_lr: None,
            warmup_steps: 0,
            total_steps: 0,
            clip: 1.0,
            seed: 0,
            mask_prob: 0.15,
        }
    }
}

/// `Err` naming `what` unless `ok(x)`: one message shape for every hyperparameter.
pub(crate) fn check(what: &str, x: f64, ok: bool, want: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Input(format!("{what} = {x}: must be {want}")))
    }
}

impl TrainConfig {
    /// Every hyperparameter in its range, checked before any work (a NaN learning rate or a
    /// zero κ would otherwise train to NaN parameters or write a NaN λ).
    pub fn validate(&self) -> Result<()> {
        let o = &self.optim;
        let pos = |x: f64| x.is_finite() && x > 0.0;
        let nonneg = |x: f64| x.is_finite() && x >= 0.0;
        check("kappa", self.kappa, pos(self.kappa), "a positive number")?;
        check("cor_weight", self.cor_weight, nonneg(self.cor_weight), "a number ≥ 0")?;
        check("lr", o.lr, nonneg(o.lr), "a number ≥ 0")?;
        if let Some(h) = self.head_lr {
            check("head_lr", h, nonneg(h), "a number ≥ 0")?;
        }
        check("weight_decay", o.weight_decay, nonneg(o.weight_decay), "a number ≥ 0")?;
        check("beta1", o.beta1, (0.0..1.0).contains(&o.beta1), "in [0, 1)")?;
        check("beta2", o.beta2, (0.0..1.0).contains(&o.beta2), "in [0, 1)")?;
        check("adam eps", o.eps, pos(o.eps), "a positive number")?;
        check("clip", self.clip, nonneg(self.clip), "a number ≥ 0 (0: no clipping)")?;
        check("mask_prob", self.mask_prob, self.mask_prob > 0.0 && self.mask_prob < 1.0, "in (0, 1)")?;
        if self.total_steps > 0 && self.warmup_steps > self.total_steps {
            return Err(Error::Input(format!("{} warm-up steps are more than the {} steps planned", self.warmup_steps, self.total_steps)));
        }
        Ok(())
    }
}

/// Warm-up steps for a `fraction` of `total` steps; the fraction must lie in [0, 1].
pub fn warmup_steps(fraction: f64, total: u64) -> Result<u64> {
    check("warmup", fraction, (0.0..=1.0).contains(&fraction), "a fraction of the steps, in [0, 1]")?;
    Ok((fraction * total as f64).round() as u64)
}

/// One n-best list, tokenised.
#[derive(Debug, Clone)]
pub struct ListExample {
    pub ids: Vec<Vec<u32>>,
    pub s1: Vec<f64>,
    /// Word errors of each hypothesis against the reference.
    pub errors: Vec<f64>,
    /// Reference words (for WER).
    pub words: usize,
    /// Teacher PLL of each hypothesis (MD).
    pub teacher: Option<Vec<f64>>,
}

/// Consecutive groups of `lists` whose hypotheses, padded to the group's longest, stay within
/// `budget` tokens (a list over it forms a group alone).
fn token_groups(lists: &[&ListExample], budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < lists.len() {
        let (mut end, mut rows, mut seq) = (start, 0usize, 0usize);
        while end < lists.len() {
            let ex = lists[end];
            let (r, sq) = (rows + ex.ids.len(), seq.max(ex.ids.iter().map(|v| v.len()).max().unwrap_or(0)));
            if end > start && r * sq > budget {
                break;
            }
            (rows, seq, end) = (r, sq, end + 1);
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Fewer lists than this are all trained on: a `fraction` held out of them ([`holdout_count`])
/// would be too few to measure a WER on, and missed by training.
pub const MIN_LISTS_TO_HOLD_OUT: usize = 10;

/// How many of `len` lists a dev `fraction` holds out: none below [`MIN_LISTS_TO_HOLD_OUT`].
pub fn holdout_count(len: usize, fraction: f64) -> usize {
    if len < MIN_LISTS_TO_HOLD_OUT {
        0
    } else {
        (fraction * len as f64).round() as usize
    }
}

/// Splits off `n` lists (at most half) chosen by a seeded shuffle, for early stopping and λ
/// tuning; the rest stay in `lists` (shuffled).
pub fn hold_out<T>(lists: &mut Vec<T>, n: usize, seed: u64) -> Vec<T> {
    let mut rng = Rng::new(seed ^ 0xd1b5);
    rng.shuffle(lists);
    let n = n.min(lists.len() / 2);
    lists.split_off(lists.len() - n)
}

crate::rescore::judged_by_fields!(ListExample);

impl ListExample {
    /// The top `depth` hypotheses of `nb` (all without a depth), tokenised, with their word errors
    /// against the reference and the first-pass scores `fp` chooses.
    pub fn from_nbest(nb: &crate::nbest::NBest, fp: &crate::nbest::FirstPass, encoder: &crate::tokenize::TextEncoder, depth: Option<usize>) -> Result<Self> {
        use crate::wer::{word_count, word_errors};
        let r = nb.reference.as_deref().ok_or_else(|| Error::Input(format!("utterance {:?} has no reference", nb.utt)))?;
        let k = depth.unwrap_or(usize::MAX).min(nb.hyps.len());
        if k == 0 {
            return Err(Error::EmptyNBest(nb.utt.clone()));
        }
        crate::score::check_list_size(k, crate::score::DEFAULT_MAX_HYPS).map_err(|e| e.in_list(&nb.utt))?;
        let mut s1 = crate::rescore::first_pass_scores(nb, fp)?;
        s1.truncate(k);
        Ok(ListExample {
            ids: nb.hyps[..k].iter().enumerate().map(|(i, h)| encoder.encode(i, &h.text).map(|t| t.ids)).collect::<Result<_>>().map_err(|e| e.in_list(&nb.utt))?,
            s1,
            errors: nb.hyps[..k].iter().map(|h| word_errors(r, &h.text) as f64).collect(),
            words: word_count(r),
            teacher: None,
        })
    }
}

/// How a run begins: what trains, and from where (shared by `lorb train` and the JS API).
#[derive(Debug, Clone)]
pub struct Start<'a> {
    /// Fresh LoRA pairs: rank, α, rsLoRA scaling, targets and seed (unused when `from` brings
    /// pairs, which then continue, or when nothing but heads or every weight trains).
    pub r: usize,
    pub alpha: f64,
    pub rslora: bool,
    pub targets: &'a [crate::adapter::Target],
    pub seed: u64,
    /// The heads alone train (the encoder stays frozen).
    pub head_only: bool,
    /// Every weight trains (no LoRA pairs).
    pub full: bool,
    /// A trained adapter to start from: its LoRA pairs go on training (merged into the weights
    /// under `full`), its heads are the starting heads.
    pub from: Option<&'a Adapter>,
}

/// What a run starts with.
pub struct Begun {
    /// The LoRA adapter that trains (`None`: heads only, or full fine-tuning).
    pub lora: Option<Adapter>,
    /// The starting CLS head: `from`'s, else the one given.
    pub cls: Option<ClsHead>,
    /// `from`'s LoRA pairs continue (rather than fresh pairs of `r`, `α`, `targets`).
    pub continues: bool,
}

impl Start<'_> {
    /// Readies `model` (the start adapter's MLM head applied; its pairs merged under full
    /// fine-tuning) and returns what trains and the starting CLS head (`cls` unless the start
    /// adapter brings one). Heads only from an adapter with LoRA pairs is refused: the pairs
    /// would be dropped.
    pub fn begin(&self, model: &mut Model, cls: Option<ClsHead>) -> Result<Begun> {
        let continues = self.from.is_some_and(|st| !st.pairs.is_empty());
        let mut lora = if self.head_only || self.full {
            None
        } else if continues {
            Some(Adapter::heads_only(&model.config))
        } else {
            Some(Adapter::new_lora(&model.config, self.r, self.alpha, self.rslora, self.targets, self.seed)?)
        };
        let mut cls = cls;
        if let Some(st) = self.from {
            if let (Some(h), false) = (model.mlm.as_mut(), st.mlm_head.is_empty()) {
                st.mlm_head.apply(h);
            }
            if st.cls_head.is_some() {
                cls = st.cls_head.clone();
            }
            if !st.pairs.is_empty() {
                match (&mut lora, self.full) {
                    (_, true) => model.merge_lora(st, 1.0),
                    (Some(l), false) => {
                        let mut c = st.clone();
                        c.cls_head = None;
                        c.mlm_head = Default::default();
                        *l = c;
                    }
                    (None, false) => return Err(Error::Input("training the heads alone from an adapter with LoRA pairs would drop them; train LoRA too, or start from a head-only adapter".into())),
                }
            }
        }
        Ok(Begun { lora, cls, continues: continues && !self.full })
    }
}

/// What one optimiser step reports.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
}

/// The trainable state and the optimiser.
pub struct Trainer {
    /// Base weights (trained in full fine-tuning; frozen otherwise). When the engine keeps the
    /// weights under full fine-tuning (the GPU), they train there: this copy is brought up to
    /// date by [`Trainer::pull`] ([`Trainer::named_params`] and [`fit`] do it).
    pub model: Model,
    /// LoRA pairs, applied unmerged.
    pub lora: Option<Adapter>,
    pub cls: ClsHead,
    pub cfg: TrainConfig,
    pub opt: AdamW,
    /// Optimiser steps taken.
    pub step: u64,
    pub rng: Rng,
    pad_id: u32,
    mask_id: Option<u32>,
    /// Where the encoder's forward and backward run.
    engine: Engine,
    /// Padded tokens per training forward where lists share one (the GPU: its kept activations
    /// grow with it, about 150 KB per token for all-MiniLM-L6-v2); a longer list still forms a
    /// batch alone.
    pub batch_tokens: usize,
    /// The engine's encoder weights and AdamW moments (full fine-tuning there) have moved on
    /// since this copy was last brought up to date.
    stale: bool,
}

/// One trainable tensor of a run, with its gradient ([`Trainer::params`]).
struct Trainable<'a> {
    name: String,
    shape: Vec<usize>,
    p: &'a mut [f32],
    g: &'a mut [f32],
}

/// The CLS head's gradient.
struct ClsGrad {
    w: Vec<f32>,
    b: f32,
}

impl ClsGrad {
    fn zeros(hidden: usize) -> Self {
        ClsGrad { w: vec![0.0; hidden], b: 0.0 }
    }
}

impl Trainer {
    /// `lora`: the pairs to train (e.g. [`Adapter::new_lora`]); `None` with `cfg.full` for full
    /// fine-tuning, or for head-only training. `cls`: a starting head (zeros if `None`). The
    /// encoder runs on the CPU until [`Trainer::use_backend`] says otherwise.
    pub fn new(model: Model, lora: Option<Adapter>, cls: Option<ClsHead>, cfg: TrainConfig, pad_id: u32, mask_id: Option<u32>) -> Result<Self> {
        cfg.validate()?;
        if cfg.full && lora.is_some() {
            return Err(Error::Training("full fine-tuning trains every weight: give no LoRA adapter".into()));
        }
        if (cfg.objective == Objective::Mlm || cfg.mlm_head) && model.mlm.is_none() {
            return Err(Error::NoMlmHead);
        }
        if cfg.mlm_bias && !cfg.mlm_head {
            return Err(Error::Input("training the MLM output bias needs the MLM head trained too (mlm_head)".into()));
        }
        if cfg.objective == Objective::Mlm && mask_id.is_none() {
            return Err(Error::Training("MLM training needs a tokenizer with a mask token".into()));
        }
        let h = model.config.hidden;
        let cls = cls.unwrap_or(ClsHead { weight: vec![0.0; h], bias: 0.0 });
        if cls.weight.len() != h {
            return Err(Error::ShapeMismatch { name: "cls head".into(), expected: vec![1, h], got: vec![1, cls.weight.len()] });
        }
        let rng = Rng::new(cfg.seed);
        Ok(Trainer { model, lora, cls, cfg, opt: AdamW::default(), step: 0, rng, pad_id, mask_id, engine: Engine::Cpu, batch_tokens: 8192, stale: false })
    }

    /// Runs the encoder where `kind` says, as [`crate::Backend::new`] chooses: `Auto` takes a
    /// hardware GPU when there is one, else the CPU.
    pub async fn use_backend(&mut self, kind: crate::BackendKind) -> Result<()> {
        use crate::BackendKind::*;
        let model = || std::sync::Arc::new(self.model.clone());
        let gpu = match kind {
            Cpu => None,
            Gpu => Some(GpuBackend::new(model()).await?),
            Auto => GpuBackend::new_hardware(model()).await.ok(),
        };
        match gpu {
            Some(g) => self.use_gpu(g).await,
            None => self.set_engine(Engine::Cpu).await,
        }
    }

    /// Runs the encoder on `gpu` (made for this model): forward and backward for LoRA, the MLM
    /// head and full fine-tuning of n-best objectives; the forward alone when only the CLS head
    /// trains. In full fine-tuning the encoder's weights, gradients and AdamW moments stay on the
    /// GPU (the optimiser steps there; only the gradient norm is read back each step). Full
    /// fine-tuning with MLM stays on the CPU.
    pub async fn use_gpu(&mut self, gpu: GpuBackend) -> Result<()> {
        if self.cfg.full && self.cfg.objective == Objective::Mlm {
            return Err(Error::Unsupported("full fine-tuning with the MLM objective runs on the CPU trainer".into()));
        }
        let layout = self.cfg.full.then(|| engine::full_layout(&self.model));
        let engine = Engine::gpu(gpu, layout.as_ref(), self.lora.as_ref(), self.model.mlm.as_ref()).await?;
        self.set_engine(engine).await
    }

    /// Moves the run to `engine`: what trained on the old one comes back first, and under full
    /// fine-tuning the weights and any moments of steps taken so far go to the new one.
    async fn set_engine(&mut self, engine: Engine) -> Result<()> {
        self.pull().await?;
        self.engine = engine;
        self.push()
    }

    /// Where the encoder runs: "gpu (adapter name)" or "cpu".
    pub fn device(&self) -> String {
        self.engine.describe()
    }

    /// The trainable tensors that step in the engine (full fine-tuning there): each one's index
    /// in [`Trainer::layout`] (that of its AdamW moments) and its float range in the engine's
    /// layout ([`engine::full_layout`]).
    fn engine_slots(&mut self) -> Vec<(usize, std::ops::Range<usize>)> {
        let full = engine::full_layout(&self.model);
        let kept = self.engine_owns_weights();
        let mine = self.layout();
        mine.iter().enumerate().filter(|(_, p)| Self::steps_in_engine(kept, &p.name)).filter_map(|(i, p)| full.get(&p.name).map(|f| (i, f.range()))).collect()
    }

    /// Whether the encoder's weights and their AdamW moments live in the engine (full
    /// fine-tuning on the GPU).
    fn engine_owns_weights(&self) -> bool {
        self.cfg.full && self.engine.keeps_weights()
    }

    /// Whether the named trainable tensor steps in the engine (an encoder weight when the engine
    /// owns the weights; the heads always step here).
    fn steps_in_engine(kept: bool, name: &str) -> bool {
        kept && Group::of(name) == Group::Encoder
    }

    /// Brings this copy of what trains in the engine under full fine-tuning — every encoder
    /// weight and its AdamW moments — up to date (a no-op otherwise, or when nothing moved).
    pub async fn pull(&mut self) -> Result<()> {
        if !self.stale {
            return Ok(());
        }
        let [w, m, v] = self.engine.read_full_state().await?;
        engine::unpack_encoder(&mut self.model, &w);
        for (i, r) in self.engine_slots() {
            let opt = &mut self.opt;
            while opt.m.len() <= i {
                opt.m.push(Vec::new());
                opt.v.push(Vec::new());
            }
            opt.m[i] = m[r.clone()].to_vec();
            opt.v[i] = v[r].to_vec();
        }
        self.stale = false;
        Ok(())
    }

    /// Writes this copy's encoder weights and AdamW moments to the engine when it owns them
    /// (after parameters or a checkpoint were loaded).
    pub(crate) fn push(&mut self) -> Result<()> {
        if !self.engine_owns_weights() {
            return Ok(());
        }
        // Moments not taken yet (no step, or a fresh tensor) stay zero.
        let slots = self.engine_slots();
        let floats = slots.iter().map(|(_, r)| r.end).max().unwrap_or(0);
        let (mut m, mut v) = (vec![0f32; floats], vec![0f32; floats]);
        for (i, r) in slots {
            for (dst, src) in [(&mut m, self.opt.m.get(i)), (&mut v, self.opt.v.get(i))] {
                if let Some(x) = src.filter(|x| x.len() == r.len()) {
                    dst[r.clone()].copy_from_slice(x);
                }
            }
        }
        self.engine.write_full_state(&self.model, &m, &v)?;
        self.stale = false;
        Ok(())
    }

    /// Brings the engine's copy of what stepped here (LoRA pairs, a trained MLM head) up to date.
    pub(crate) fn sync(&mut self) -> Result<()> {
        let mlm = self.model.mlm.as_ref().filter(|_| self.cfg.mlm_head);
        self.engine.sync(self.lora.as_ref(), mlm)
    }

    /// Whether gradients flow into the encoder (LoRA or full); otherwise only heads train.
    fn encoder_trains(&self) -> bool {
        self.cfg.full || self.has_pairs()
    }

    fn has_pairs(&self) -> bool {
        self.lora.as_ref().is_some_and(|a| !a.pairs.is_empty())
    }

    /// Zero gradients for what steps here (the gradients of weights the engine owns stay there).
    fn new_grads(&self) -> Grads {
        Grads::new(&self.model, self.lora.as_ref(), self.cfg.mlm_head, self.cfg.full && !self.engine_owns_weights())
    }

    /// The list loss `L_disc + λ_cor·L_cor` from its final [CLS] vectors `cls` (`[n, H]`); with
    /// `gc`, adds `weight·∂L/∂(head)` to it and returns `weight·∂L/∂cls` (else an empty vector).
    fn list_objective(&self, ex: &ListExample, cls: &[f32], weight: f64, gc: Option<&mut ClsGrad>) -> Result<(f64, Vec<f32>)> {
        let h = self.model.config.hidden;
        let rows = cls.len() / h;
        let c = &self.cfg;
        let s2: Vec<f64> = cls.chunks_exact(h).map(|v| self.cls.score(v)).collect();
        let (mut loss, ds2) = match c.objective {
            Objective::Mwer | Objective::Mwed => {
                let s: Vec<f64> = ex.s1.iter().zip(&s2).map(|(a, b)| c.kappa * a + b).collect();
                if c.objective == Objective::Mwer { loss::mwer(&s, &ex.errors) } else { loss::mwed(&s, &ex.errors) }
            }
            Objective::Md => {
                let t = ex.teacher.as_ref().ok_or_else(|| Error::Training("MD needs the teacher's PLL scores of every hypothesis".into()))?;
                loss::md(&s2, t)
            }
            Objective::Mlm => return Err(Error::Training("the MLM objective trains on text, not n-best lists".into())),
        };
        let mut dcls = vec![0f32; cls.len()];
        if c.cor_weight > 0.0 {
            let (lc, dh) = loss::correlation(cls, rows, h);
            loss += c.cor_weight * lc;
            dcls.iter_mut().zip(&dh).for_each(|(a, b)| *a = (c.cor_weight * weight * *b as f64) as f32);
        }
        let Some(gc) = gc else { return Ok((loss, Vec::new())) };
        for (j, v) in cls.chunks_exact(h).enumerate() {
            let g = ds2[j] * weight;
            if c.cls_head {
                gc.w.iter_mut().zip(v).for_each(|(a, b)| *a += (g * *b as f64) as f32);
                gc.b += g as f32;
            }
            dcls[j * h..(j + 1) * h].iter_mut().zip(&self.cls.weight).for_each(|(a, w)| *a += (g * *w as f64) as f32);
        }
        Ok((loss, dcls))
    }

    /// The loss of `lists`, each weighted by `weight`, adding `weight·∂L/∂θ` to `g` and `gc` (the
    /// engine's own accumulators hold what it keeps). Lists share a forward and backward up to
    /// the engine's token budget ([`Engine::list_budget`]).
    async fn lists_loss(&mut self, lists: &[&ListExample], weight: f64, g: &mut Grads, gc: &mut ClsGrad) -> Result<f64> {
        let h = self.model.config.hidden;
        let keep = self.encoder_trains();
        let mut total = 0.0;
        for range in token_groups(lists, self.engine.list_budget(self.batch_tokens)) {
            let group = &lists[range];
            let batch = self.group_batch(group)?;
            let (cls, tape) = self.engine.forward(State { model: &self.model, lora: self.lora.as_ref() }, &batch, keep).await?;
            let mut d_cls = Vec::with_capacity(cls.len());
            let mut row = 0;
            for ex in group {
                let n = ex.ids.len();
                let (loss, d) = self.list_objective(ex, &cls[row * h..(row + n) * h], weight, Some(&mut *gc))?;
                total += weight * loss;
                d_cls.extend(d);
                row += n;
            }
            if let Some(tape) = tape {
                self.engine.backward(State { model: &self.model, lora: self.lora.as_ref() }, &batch, tape, &d_cls, g).await?;
            }
        }
        Ok(total)
    }

    /// The hypotheses of `group` (each list's counts checked) padded into one batch, checked
    /// against the vocabulary and the position table.
    fn group_batch(&self, group: &[&ListExample]) -> Result<Batch> {
        for ex in group {
            let n = ex.ids.len();
            if n == 0 || ex.s1.len() != n || ex.errors.len() != n || ex.teacher.as_ref().is_some_and(|t| t.len() != n) {
                return Err(Error::Input(format!("n-best example: {} hypotheses, {} first-pass scores, {} error counts", n, ex.s1.len(), ex.errors.len())));
            }
        }
        let seqs: Vec<&[u32]> = group.iter().flat_map(|ex| ex.ids.iter().map(|v| v.as_slice())).collect();
        let batch = Batch::pad(&seqs, self.pad_id)?;
        batch.validate(self.model.config.vocab_size, self.model.config.max_tokens())?;
        Ok(batch)
    }

    /// CLS scores `s2` of many lists with the current parameters; lists share a forward as in
    /// training.
    pub async fn scores_many(&mut self, lists: &[&ListExample]) -> Result<Vec<Vec<f64>>> {
        let h = self.model.config.hidden;
        let mut out = Vec::with_capacity(lists.len());
        for range in token_groups(lists, self.engine.list_budget(self.batch_tokens)) {
            let group = &lists[range];
            let batch = self.group_batch(group)?;
            let (cls, _) = self.engine.forward(State { model: &self.model, lora: self.lora.as_ref() }, &batch, false).await?;
            let mut rows = cls.chunks_exact(h);
            for ex in group {
                out.push(rows.by_ref().take(ex.ids.len()).map(|v| self.cls.score(v)).collect());
            }
        }
        Ok(out)
    }

    /// CLS scores `s2` of a list with the current parameters.
    pub async fn scores(&mut self, ex: &ListExample) -> Result<Vec<f64>> {
        Ok(self.scores_many(&[ex]).await?.remove(0))
    }

    /// Mean loss of `lists` and, for tests, the gradients by tensor name (see
    /// [`Trainer::named_grads`]); parameters are not changed.
    pub async fn loss_and_grads(&mut self, lists: &[&ListExample]) -> Result<(f64, Vec<(String, Vec<f32>)>)> {
        let (loss, mut g, mut gc, _) = self.accumulate_lists(lists, true).await?;
        Ok((loss, self.params(&mut g, &mut gc).into_iter().map(|t| (t.name, t.g.to_vec())).collect()))
    }

    /// The mean loss of `lists` with its gradients accumulated and brought here — but for the
    /// gradients of weights the engine owns, of which only the sum of squares comes back (the
    /// last value), unless `read_all` (for tests).
    async fn accumulate_lists(&mut self, lists: &[&ListExample], read_all: bool) -> Result<(f64, Grads, ClsGrad, f64)> {
        if lists.is_empty() {
            return Err(Error::Input("a training step needs at least one list".into()));
        }
        let owned = self.engine_owns_weights();
        let mut g = if owned && read_all { Grads::new(&self.model, None, self.cfg.mlm_head, true) } else { self.new_grads() };
        let mut gc = ClsGrad::zeros(self.model.config.hidden);
        self.engine.zero_grads()?;
        let w = 1.0 / lists.len() as f64;
        let total = self.lists_loss(lists, w, &mut g, &mut gc).await?;
        let want = engine::Wanted { lora: self.has_pairs(), mlm_head: false, mlm_bias: false, full: read_all };
        let kept_sumsq = self.engine.read_grads(&mut g, want).await?;
        Ok((total, g, gc, kept_sumsq))
    }

    /// One optimiser step on the mean loss of `lists` (gradient accumulation over them).
    pub async fn step_lists(&mut self, lists: &[&ListExample]) -> Result<StepLog> {
        let (loss, mut g, mut gc, kept_sumsq) = self.accumulate_lists(lists, false).await?;
        let log = self.apply(loss, &mut g, &mut gc, kept_sumsq).await?;
        self.sync()?;
        Ok(log)
    }

    /// Masks `texts` for MLM (seeded): `mask_prob` of the non-special positions (at least one per
    /// text), 80% → [MASK], 10% → a random token, 10% unchanged. Returns the batch and slots.
    pub fn mask_texts(&mut self, texts: &[&[u32]]) -> Result<(Batch, Vec<Slot>)> {
        let mask = self.mask_id.ok_or_else(|| Error::Training("no mask token".into()))?;
        let v = self.model.config.vocab_size;
        let mut batch = Batch::pad(texts, self.pad_id)?;
        let mut slots = Vec::new();
        for (r, t) in texts.iter().enumerate() {
            let inner: Vec<usize> = (1..t.len().saturating_sub(1)).collect();
            if inner.is_empty() {
                continue;
            }
            let mut chosen: Vec<usize> = inner.iter().copied().filter(|_| self.rng.uniform() < self.cfg.mask_prob).collect();
            if chosen.is_empty() {
                chosen.push(inner[self.rng.below(inner.len())]);
            }
            for p in chosen {
                slots.push(Slot { row: r as u32, pos: p as u32, target: t[p] });
                let u = self.rng.uniform();
                let id = &mut batch.ids[r * batch.seq + p];
                if u < 0.8 {
                    *id = mask;
                } else if u < 0.9 {
                    *id = self.rng.below(v) as u32;
                }
            }
        }
        if slots.is_empty() {
            return Err(Error::Input("no maskable tokens in these texts".into()));
        }
        Ok((batch, slots))
    }

    /// Mean masked-LM cross-entropy over `slots` of an already masked batch, with gradients.
    async fn mlm_loss(&mut self, batch: &Batch, slots: &[Slot]) -> Result<(f64, Grads)> {
        batch.validate(self.model.config.vocab_size, self.model.config.max_tokens())?;
        crate::batch::validate_slots(batch, slots, self.model.config.vocab_size)?;
        let mut g = self.new_grads();
        let w = 1.0 / slots.len() as f32;
        self.engine.zero_grads()?;
        let st = State { model: &self.model, lora: self.lora.as_ref() };
        let want = engine::Wanted { lora: self.has_pairs(), mlm_head: self.cfg.mlm_head, mlm_bias: self.cfg.mlm_head && self.cfg.mlm_bias, full: false };
        let loss = self.engine.mlm(st, batch, slots, w, want, self.encoder_trains(), &mut g).await?;
        self.engine.read_grads(&mut g, want).await?;
        Ok((loss, g))
    }

    /// Mean MLM loss of a masked batch with the current parameters (no gradients).
    pub async fn mlm_loss_only(&mut self, batch: &Batch, slots: &[Slot]) -> Result<f64> {
        batch.validate(self.model.config.vocab_size, self.model.config.max_tokens())?;
        crate::batch::validate_slots(batch, slots, self.model.config.vocab_size)?;
        self.engine.mlm_loss(State { model: &self.model, lora: self.lora.as_ref() }, batch, slots).await
    }

    /// MLM loss and named gradients of a given masked batch (no update; for tests).
    pub async fn mlm_loss_and_grads(&mut self, batch: &Batch, slots: &[Slot]) -> Result<(f64, Vec<(String, Vec<f32>)>)> {
        let (loss, mut g) = self.mlm_loss(batch, slots).await?;
        let mut gc = ClsGrad::zeros(self.model.config.hidden);
        Ok((loss, self.params(&mut g, &mut gc).into_iter().map(|t| (t.name, t.g.to_vec())).collect()))
    }

    /// One MLM optimiser step on `texts` (masked here, seeded).
    pub async fn step_texts(&mut self, texts: &[&[u32]]) -> Result<StepLog> {
        let (batch, slots) = self.mask_texts(texts)?;
        self.step_masked(&batch, &slots).await
    }

    /// One MLM optimiser step on an already masked batch.
    pub async fn step_masked(&mut self, batch: &Batch, slots: &[Slot]) -> Result<StepLog> {
        let (loss, mut g) = self.mlm_loss(batch, slots).await?;
        let mut gc = ClsGrad::zeros(self.model.config.hidden);
        let log = self.apply(loss, &mut g, &mut gc, 0.0).await?;
        self.sync()?;
        Ok(log)
    }

    /// The trainable tensors with their gradients, in the order of [`Trainer::layout`]: LoRA
    /// pairs (`layers.L.TARGET.lora_A`/`lora_B`), the CLS head (`cls.weight`, `cls.bias`), the
    /// MLM head transform (`mlm.*`), and in full fine-tuning every encoder tensor
    /// ([`Model::tensors`]). AdamW's moments are kept by place in this order.
    fn params<'a>(&'a mut self, g: &'a mut Grads, gc: &'a mut ClsGrad) -> Vec<Trainable<'a>> {
        let mut out: Vec<Trainable<'a>> = Vec::new();
        if let Some(a) = self.lora.as_mut() {
            for (p, (ga, gb)) in a.pairs.iter_mut().zip(g.lora.iter_mut()) {
                out.push(Trainable { name: lora_name(p.layer, p.target, false), shape: p.a.shape.clone(), p: &mut p.a.data[..], g: &mut ga[..] });
                out.push(Trainable { name: lora_name(p.layer, p.target, true), shape: p.b.shape.clone(), p: &mut p.b.data[..], g: &mut gb[..] });
            }
        }
        if self.cfg.cls_head {
            out.push(Trainable { name: "cls.weight".into(), shape: vec![1, self.cls.weight.len()], p: &mut self.cls.weight[..], g: &mut gc.w[..] });
            out.push(Trainable { name: "cls.bias".into(), shape: vec![1], p: std::slice::from_mut(&mut self.cls.bias), g: std::slice::from_mut(&mut gc.b) });
        }
        // Under full fine-tuning on the GPU the encoder's gradients stay there: its tensors come
        // with empty gradients unless `g` holds them (read back for tests).
        let (full, mlm) = (self.cfg.full, self.cfg.mlm_head || (self.cfg.full && self.cfg.objective == Objective::Mlm));
        let mut gts: Vec<Option<&'a mut Tensor>> = g.model.as_mut().map(|gm| gm.tensors_mut().into_iter().map(|(_, t)| Some(t)).collect()).unwrap_or_default();
        for (k, (name, p)) in self.model.tensors_mut().into_iter().enumerate() {
            let group = Group::of(&name);
            let is_head = group.is_head();
            let head_part = group == Group::MlmTransform || (self.cfg.mlm_bias && name == "mlm.bias");
            let take = if is_head { mlm && (full || head_part) } else { full };
            let shape = p.shape.clone();
            match gts.get_mut(k).and_then(Option::take) {
                Some(gt) if take => out.push(Trainable { name, shape, p: &mut p.data[..], g: &mut gt.data[..] }),
                None if take && !is_head => out.push(Trainable { name, shape, p: &mut p.data[..], g: &mut [][..] }),
                _ => {}
            }
        }
        out
    }

    /// Names, shapes, groups and offsets of what this run trains ([`Trainer::params`]).
    pub fn layout(&mut self) -> Layout {
        let mut g = self.new_grads();
        let mut gc = ClsGrad::zeros(self.model.config.hidden);
        Layout::new(self.params(&mut g, &mut gc).into_iter().map(|t| (t.name, t.shape)))
    }

    /// Number of trainable parameters.
    pub fn trainable_parameters(&mut self) -> usize {
        self.layout().floats()
    }

    /// Clips, checks for NaN/Inf (then nothing changes and [`Error::NonFinite`] says so), and
    /// takes the AdamW step. `kept_sumsq`: the sum of squares of the gradients the engine kept
    /// (full fine-tuning on the GPU), whose tensors step there.
    async fn apply(&mut self, loss: f64, g: &mut Grads, gc: &mut ClsGrad, kept_sumsq: f64) -> Result<StepLog> {
        // The engine is held apart while this copy's tensors are borrowed, so that both steps —
        // here and, for the weights it owns, there — are checked before either is made.
        let mut engine = std::mem::take(&mut self.engine);
        let r = self.apply_with(loss, g, gc, kept_sumsq, &mut engine).await;
        self.engine = engine;
        self.stale |= r.is_ok() && self.engine_owns_weights();
        r
    }

    async fn apply_with(&mut self, loss: f64, g: &mut Grads, gc: &mut ClsGrad, kept_sumsq: f64, engine: &mut Engine) -> Result<StepLog> {
        let lr = self.cfg.optim.lr * self.lr_factor();
        let head_lr = self.cfg.head_lr.map_or(lr, |h| h * self.lr_factor());
        let step = self.step + 1;
        let (clip, oc) = (self.cfg.clip, self.cfg.optim);
        let kept = self.cfg.full && engine.keeps_weights();
        let mut opt = std::mem::take(&mut self.opt);
        let mut params = self.params(g, gc);
        let (norm, scale) = {
            let mut gs: Vec<&mut [f32]> = params.iter_mut().filter(|t| !Self::steps_in_engine(kept, &t.name)).map(|t| &mut *t.g).collect();
            optim::clip(&mut gs, clip, kept_sumsq)
        };
        let bad = if !loss.is_finite() { Some("loss") } else if !norm.is_finite() { Some("gradient") } else { None };
        if let Some(what) = bad {
            drop(params);
            self.opt = opt;
            return Err(Error::NonFinite { step, what: what.into(), last_good: step - 1 });
        }
        let lr_of = |name: &str| if Group::of(name).is_head() { head_lr } else { lr };
        // Finite gradients can still carry parameters to ±∞: the update is checked before it is
        // made, and then nothing changes.
        let stays_finite = params.iter().enumerate().all(|(i, t)| Self::steps_in_engine(kept, &t.name) || opt.update_stays_finite(i, t.p, t.g, &oc, lr_of(&t.name)));
        // The engine's weights step there, checked the same way: all of the step or none of it.
        let engine_made = if kept && stays_finite { engine.full_adamw(&oc, crate::gpu::ops::adamw::Step { t: opt.step + 1, lr, scale }).await } else { Ok(true) };
        if !(stays_finite && engine_made.as_ref().is_ok_and(|&made| made)) {
            drop(params);
            self.opt = opt;
            engine_made?;
            return Err(Error::NonFinite { step, what: "parameters or moments after the update".into(), last_good: step - 1 });
        }
        opt.begin();
        for (i, t) in params.iter_mut().enumerate() {
            if Self::steps_in_engine(kept, &t.name) {
                continue;
            }
            opt.update(i, t.p, t.g, &oc, lr_of(&t.name));
        }
        drop(params);
        self.opt = opt;
        self.step = step;
        Ok(StepLog { step, loss, grad_norm: norm, lr })
    }

    /// Ends the run `more` steps from now when that comes before the planned total (or none was
    /// planned): returns the step it ends at and fits the schedule to it (warm-up and decay keep
    /// their proportions); `None` when the plan fits.
    pub fn limit_steps(&mut self, more: u64) -> Option<u64> {
        let cap = self.step.saturating_add(more);
        let total = self.cfg.total_steps;
        if total > 0 && cap >= total {
            return None;
        }
        let frac = if total > 0 { self.cfg.warmup_steps as f64 / total as f64 } else { 0.0 };
        self.cfg.warmup_steps = (frac * cap as f64).round() as u64;
        self.cfg.total_steps = cap;
        Some(cap)
    }

    /// The learning-rate factor of the next step.
    pub fn lr_factor(&self) -> f64 {
        if self.cfg.total_steps == 0 {
            if self.step < self.cfg.warmup_steps { self.step as f64 / self.cfg.warmup_steps as f64 } else { 1.0 }
        } else {
            optim::schedule(self.step, self.cfg.warmup_steps, self.cfg.total_steps)
        }
    }

    /// The trained state as a PEFT adapter: the LoRA pairs, the CLS head as `score`, and the MLM
    /// head transform when it is trained. (Full fine-tuning saves weights instead.)
    pub fn adapter(&self) -> Result<Adapter> {
        let mut a = match &self.lora {
            Some(a) => a.clone(),
            None if self.cfg.full => return Err(Error::Training("full fine-tuning has no adapter; save the weights".into())),
            None => Adapter::heads_only(&self.model.config),
        };
        a.cls_head = self.cfg.cls_head.then(|| self.cls.clone());
        if self.cfg.mlm_head {
            let h = self.model.mlm.as_ref().ok_or(Error::NoMlmHead)?;
            a.mlm_head = MlmHeadUpdate {
                dense_weight: Some(h.dense.weight.clone()),
                dense_bias: Some(h.dense.bias.clone()),
                ln_gamma: Some(h.ln.gamma.clone()),
                ln_beta: Some(h.ln.beta.clone()),
                // Always: a bias the starting adapter brought stays with the head it trained.
                bias: Some(h.bias.clone()),
            };
        }
        a.sync_modules_to_save();
        Ok(a)
    }
}

/// A fresh MLM head for an encoder-only checkpoint (e.g. all-MiniLM-L6-v2): dense `N(0, 0.02²)`
/// as BERT initialises it, LayerNorm (1, 0), zero output bias, decoder tied to the embeddings.
pub fn init_mlm_head(model: &mut Model, seed: u64) {
    let h = model.config.hidden;
    let v = model.config.vocab_size;
    let mut rng = Rng::new(seed);
    let w = (0..h * h).map(|_| (0.02 * rng.normal()) as f32).collect();
    model.mlm = Some(crate::model::MlmHead {
        dense: crate::model::Linear { weight: Tensor::new(vec![h, h], w), bias: Tensor::zeros(vec![h]) },
        ln: crate::model::LayerNorm { gamma: Tensor::new(vec![h], vec![1.0; h]), beta: Tensor::zeros(vec![h]) },
        decoder: None,
        bias: Tensor::zeros(vec![v]),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_fraction_holds_out_lists_only_from_ten() {
        assert_eq!(holdout_count(9, 0.5), 0);
        assert_eq!(holdout_count(10, 0.1), 1);
        assert_eq!(holdout_count(25, 0.1), 3);
        assert_eq!(holdout_count(100, 0.0), 0);
    }
}
