//! The epoch loop around [`Trainer`]: seeded shuffling, gradient accumulation over lists, dev WER
//! after each epoch with early stopping (the best epoch's parameters are kept), λ tuned on dev at
//! the end, checkpoints that resume to the same result, cancellation between steps, and a stop
//! on NaN/Inf that keeps the last good parameters.

use super::{ListExample, Rng, StepLog, TrainConfig, Trainer};
use crate::error::{Error, Result};
use crate::model::{tensor_to_f32, Tensor};
use crate::rescore::{lambda_grid, tune_weight, wer_at};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitOptions {
    pub epochs: usize,
    /// Lists whose gradients are accumulated into one optimiser step.
    pub lists_per_step: usize,
    /// Stop after this many epochs without a better dev WER (0: never).
    pub patience: usize,
    /// Where checkpoints go (and `fit` resumes from, when one is there).
    #[serde(skip)]
    pub checkpoint: Option<PathBuf>,
    /// A budget in seconds for training (the steps and the dev evaluations between epochs; not
    /// the final one): the run is cut to the steps that fit ([`TimeBudget`]), the learning-rate
    /// schedule is fitted to that count (warm-up and decay keep their proportions), and the epoch
    /// in progress is the last.
    #[serde(default)]
    pub time_limit: Option<f64>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { epochs: 3, lists_per_step: 8, patience: 2, checkpoint: None, time_limit: None }
    }
}

impl FitOptions {
    /// At least one epoch and one list per step; a time limit, when given, ≥ 0 (0: one step).
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Input("epochs = 0: nothing would be trained".into()));
        }
        if self.lists_per_step == 0 {
            return Err(Error::Input("batch = 0: a step needs at least one list".into()));
        }
        if let Some(t) = self.time_limit {
            super::check("time_limit", t, t.is_finite() && t >= 0.0, "a number of seconds ≥ 0")?;
        }
        Ok(())
    }
}

/// Steps timed before a time limit is turned into a step count.
pub const TIMED_STEPS: u64 = 5;

/// A time budget for training, turned into a step count as the steps go: after every step (from
/// the [`TIMED_STEPS`]th on) the steps that still fit are estimated from the pace of the recent
/// steps, and the run is shortened (never lengthened) to them; once the budget is spent the run
/// ends at once. Pace changes (another job on the GPU, longer lists) are followed.
pub struct TimeBudget {
    limit: f64,
    start: f64,
    first_step: u64,
    /// When the recent steps ended (seconds, oldest first).
    recent: std::collections::VecDeque<f64>,
    /// The step the run ends at, once shortened.
    pub cap: Option<u64>,
}

/// Steps whose pace predicts the next ones.
const PACE_WINDOW: usize = 20;

impl TimeBudget {
    pub fn new(limit: f64, first_step: u64) -> Self {
        TimeBudget { limit, start: seconds(), first_step, recent: Default::default(), cap: None }
    }

    /// Called after each step: shortens the run (and its schedule) when needed, and says whether
    /// the run should end now.
    pub fn after_step(&mut self, t: &mut Trainer) -> bool {
        let now = seconds();
        self.recent.push_back(now);
        if self.recent.len() > PACE_WINDOW + 1 {
            self.recent.pop_front();
        }
        let done = t.step - self.first_step;
        let spent = now - self.start;
        if spent >= self.limit {
            self.cap = Some(t.step.min(self.cap.unwrap_or(u64::MAX)));
        } else if done >= TIMED_STEPS {
            // Pace: over the window, or since the start while the window is filling.
            let (span, n) = match (self.recent.front(), self.recent.len()) {
                (Some(&first), n) if n > PACE_WINDOW => (now - first, n - 1),
                _ => (spent, done as usize),
            };
            let per = span / n.max(1) as f64;
            let more = ((self.limit - spent) / per.max(1e-9)).floor() as u64;
            if let Some(c) = t.limit_steps(more) {
                self.cap = Some(c);
            }
        }
        self.cap.is_some_and(|c| t.step >= c)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub steps: u64,
    pub train_loss: f64,
    /// Dev WER with λ tuned on dev (the early-stopping criterion).
    pub dev_wer: f64,
    pub weight: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitReport {
    pub dev_first_pass_wer: f64,
    pub best_epoch: usize,
    pub best_dev_wer: f64,
    /// λ for `s1 + λ·s2`, tuned on dev with the best epoch's parameters.
    pub weight: f64,
    pub lambda_curve: Vec<(f64, f64)>,
    pub curve: Vec<EpochRecord>,
    /// Every optimiser step's loss.
    pub losses: Vec<f64>,
    /// Why training ended early (NaN/Inf, cancellation), if it did.
    pub stopped: Option<String>,
    /// The steps the time limit allowed, when it cut the run short.
    #[serde(default)]
    pub time_limited_steps: Option<u64>,
    pub trainable_parameters: usize,
    pub steps: u64,
}

/// Progress reported to the caller.
#[derive(Debug, Clone)]
pub enum Progress {
    Step { epoch: usize, index: usize, of: usize, log: StepLog },
    Epoch(EpochRecord),
}

/// A clock in seconds (`Instant` panics in wasm32-unknown-unknown; the browser's clock instead).
pub(crate) fn seconds() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() / 1000.0
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static T0: OnceLock<std::time::Instant> = OnceLock::new();
        T0.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
    }
}

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(module = "/src/js/web.js")]
extern "C" {
    #[wasm_bindgen(js_name = yieldToEventLoop)]
    fn yield_to_event_loop() -> js_sys::Promise;
}

/// Lets the browser's event loop run (progress redraws, a cancel click) between steps, in a
/// window or a worker; nothing natively.
async fn yield_now() {
    #[cfg(target_arch = "wasm32")]
    {
        let _ = wasm_bindgen_futures::JsFuture::from(yield_to_event_loop()).await;
    }
}

/// Asked before each optimiser step whether to stop: an `AtomicBool` (set from another thread or
/// a signal handler), or any `Fn() -> bool` (the JS API reads its CancelToken).
pub trait Cancel {
    fn cancelled(&self) -> bool;
}

impl Cancel for AtomicBool {
    fn cancelled(&self) -> bool {
        self.load(Ordering::Relaxed)
    }
}

impl<F: Fn() -> bool> Cancel for F {
    fn cancelled(&self) -> bool {
        self()
    }
}

/// The best `(λ, WER)` on `lists` over [`lambda_grid`] around `λ0` (the smaller λ on ties);
/// with no lists, `λ0` itself.
pub fn tune(lists: &[ListExample], s2: &[Vec<f64>], lambda0: f64) -> (f64, f64) {
    if lists.is_empty() {
        return (lambda0, 0.0);
    }
    tune_weight(lists, s2, &lambda_grid(lambda0)).1
}

/// Where an interrupted run stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    config: TrainConfig,
    step: u64,
    epoch: usize,
    /// Position inside the epoch's order.
    pos: usize,
    order: Vec<usize>,
    rng: Rng,
    epoch_loss: f64,
    best_epoch: usize,
    best_dev_wer: f64,
    dev_first_pass_wer: f64,
    curve: Vec<EpochRecord>,
    losses: Vec<f64>,
    /// The time limit ended the run.
    #[serde(default)]
    limited: bool,
    /// The checkpoint's tensor files, by role, with their length and FNV-1a hash.
    #[serde(default)]
    files: Vec<CheckpointFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointFile {
    role: String,
    name: String,
    len: u64,
    fnv1a: String,
}

/// A checkpoint folder is one unit. Each save writes its tensor files under new names
/// (`params.G.safetensors`, `optimizer.G.safetensors`, `best.G.safetensors`, generation G), then
/// publishes them by renaming `state.json` into place, which names them with their lengths and
/// hashes; only then are the previous generation's files removed. Killed at any instant, the
/// folder holds a complete checkpoint (the old one or the new), and a resume checks the files
/// against the manifest, refusing clearly if they were changed.
pub struct Checkpoint;

fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Serialises named tensors as safetensors bytes.
fn named_bytes(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), d.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let bad = |e: safetensors::SafeTensorError| Error::Training(format!("{}: {e}", path.display()));
    let views = bytes
        .iter()
        .map(|(n, s, d)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).map_err(bad)?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(bad)
}

/// Reads a checkpoint's tensor file, which must be the one its manifest entry `f` describes.
fn read_named(path: &Path, f: &CheckpointFile) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 != f.len || fnv1a(&bytes) != f.fnv1a {
        return Err(Error::Training(format!("checkpoint file {} does not match its state.json (changed after it was written); delete the checkpoint folder to start over", path.display())));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Training(format!("{}: {e}", path.display())))?;
    st.tensors().into_iter().map(|(n, v)| Ok((n.clone(), tensor_to_f32(&n, &v)?))).collect()
}

impl Trainer {
    /// Trainable tensors by name (as [`Trainer::loss_and_grads`] names them); what trains on the
    /// GPU is read back first.
    pub async fn named_params(&mut self) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
        self.pull().await?;
        let mut g = self.new_grads();
        let mut gc = super::ClsGrad::zeros(self.model.config.hidden);
        Ok(self.params(&mut g, &mut gc).into_iter().map(|t| (t.name, t.shape, t.p.to_vec())).collect())
    }

    /// Writes values back by name; every trainable tensor must be present with its size. (Under
    /// full fine-tuning on the GPU, AdamW's moments there are replaced by the CPU's.)
    pub fn load_named_params(&mut self, src: &[(String, Tensor)]) -> Result<()> {
        let mut g = self.new_grads();
        let mut gc = super::ClsGrad::zeros(self.model.config.hidden);
        for super::Trainable { name, p, .. } in self.params(&mut g, &mut gc) {
            let t = src.iter().find(|(n, _)| *n == name).ok_or_else(|| Error::Training(format!("checkpoint lacks {name}")))?;
            if t.1.data.len() != p.len() {
                return Err(Error::Training(format!("checkpoint tensor {name} has {} values, expected {}", t.1.data.len(), p.len())));
            }
            p.copy_from_slice(&t.1.data);
        }
        self.push()?;
        self.sync()
    }
}

impl Checkpoint {
    const ROLES: [&'static str; 3] = ["params", "optimizer", "best"];

    async fn save(dir: &Path, t: &mut Trainer, s: &mut State, best: &[(String, Tensor)]) -> Result<()> {
        let params = t.named_params().await?; // also brings the moments back from the GPU
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // AdamW's moments by place in the trainer's layout, with their tensors' shapes (a tensor
        // not stepped yet has none).
        let layout = t.layout();
        let mut moments = Vec::new();
        for (i, ((m, v), p)) in t.opt.m.iter().zip(&t.opt.v).zip(layout.iter()).enumerate() {
            let shape = if m.len() == p.len() { p.shape.clone() } else { vec![m.len()] };
            moments.push((format!("m.{i}"), shape.clone(), m.clone()));
            moments.push((format!("v.{i}"), shape, v.clone()));
        }
        let best: Vec<(String, Vec<usize>, Vec<f32>)> = best.iter().map(|(n, x)| (n.clone(), x.shape.clone(), x.data.clone())).collect();
        // The files published now are those `s` names (from the last save, or the checkpoint
        // resumed); the next generation is one past theirs.
        let published = std::mem::take(&mut s.files);
        let generation = published.iter().filter_map(|f| f.name.split('.').nth(1)?.parse::<u64>().ok()).max().map_or(0, |g| g + 1);
        let mut files = Vec::new();
        for (role, tensors) in Self::ROLES.into_iter().zip([&params[..], &moments[..], &best[..]]) {
            let name = format!("{role}.{generation}.safetensors");
            let path = dir.join(&name);
            let data = named_bytes(&path, tensors)?;
            crate::output::write_file(&path, &data)?;
            files.push(CheckpointFile { role: role.into(), name, len: data.len() as u64, fnv1a: fnv1a(&data) });
        }
        s.files = files;
        let json = serde_json::to_vec_pretty(&*s).map_err(|e| Error::Training(e.to_string()))?;
        crate::output::write_file(&dir.join("state.json"), &json)?;
        for f in published {
            let p = dir.join(&f.name);
            crate::output::remove_file(&p)?;
        }
        Ok(())
    }

    fn read_state(dir: &Path) -> Result<State> {
        let p = dir.join("state.json");
        serde_json::from_slice(&std::fs::read(&p).map_err(|e| Error::io(&p, e))?).map_err(|e| Error::Training(format!("{}: {e}", p.display())))
    }

    /// Loads a checkpoint into `t` (whose configuration must match) and returns the run state.
    fn load(dir: &Path, t: &mut Trainer) -> Result<(State, Vec<(String, Tensor)>)> {
        let s = Self::read_state(dir)?;
        let a = serde_json::to_value(&s.config).unwrap_or_default();
        let b = serde_json::to_value(&t.cfg).unwrap_or_default();
        if a != b {
            return Err(Error::Training(format!("checkpoint {} was made with another configuration", dir.display())));
        }
        let file = |role: &str| -> Result<Vec<(String, Tensor)>> {
            let f = s.files.iter().find(|f| f.role == role).ok_or_else(|| Error::Training(format!("checkpoint {}: state.json names no {role} file (made by an older lorb?)", dir.display())))?;
            read_named(&dir.join(&f.name), f)
        };
        let (params, moments, best) = (file("params")?, file("optimizer")?, file("best")?);
        t.load_named_params(&params)?;
        let n = moments.len() / 2;
        t.opt.m = (0..n).map(|i| moments.iter().find(|(k, _)| *k == format!("m.{i}")).map(|x| x.1.data.clone()).unwrap_or_default()).collect();
        t.opt.v = (0..n).map(|i| moments.iter().find(|(k, _)| *k == format!("v.{i}")).map(|x| x.1.data.clone()).unwrap_or_default()).collect();
        t.opt.step = s.step;
        t.push()?;
        t.step = s.step;
        t.rng = s.rng.clone();
        Ok((s, best))
    }
}

/// CLS scores of every dev list.
async fn dev_scores(t: &mut Trainer, dev: &[ListExample]) -> Result<Vec<Vec<f64>>> {
    t.scores_many(&dev.iter().collect::<Vec<_>>()).await
}

/// A run on n-best lists from start to end, as `lorb train`, `lorb personalize` and
/// `Rescorer.train` make it: `start` readies a copy of the scorer's base weights (the scorer's
/// adapter must already be removed) and says what trains, from the starting CLS head `cls`; the
/// encoder runs where the scorer's does; then [`fit`].
#[allow(clippy::too_many_arguments)]
pub async fn run(scorer: &crate::Scorer, start: &super::Start<'_>, cls: Option<crate::ClsHead>, cfg: super::TrainConfig, train: &[ListExample], dev: &[ListExample], o: &FitOptions, cancel: &(impl Cancel + ?Sized), progress: impl FnMut(&Progress)) -> Result<(Trainer, FitReport)> {
    let mut trainer = trainer(scorer, start, cls, cfg).await?;
    let report = fit(&mut trainer, train, dev, o, cancel, progress).await?;
    Ok((trainer, report))
}

/// Epochs of masked-LM steps over the token ids `texts` (`per_step` texts a step, shuffled by
/// the trainer's generator each epoch, masked with it), the steps cut by `budget` when the run
/// has a time limit. `after_step` sees each step's log and epoch; `after_epoch` gets the epoch (from 1) and
/// its mean training loss, and may use the trainer (e.g. for a dev loss). Returns every step's
/// loss. `lorb train --objective mlm` and MLM personalisation both train through this.
pub async fn mlm_epochs(t: &mut Trainer, texts: &[&[u32]], per_step: usize, epochs: usize, mut budget: Option<&mut TimeBudget>, mut after_step: impl FnMut(&StepLog, usize, Option<&TimeBudget>), mut after_epoch: impl FnMut(&mut Trainer, usize, f64) -> Result<()>) -> Result<Vec<f64>> {
    if per_step == 0 {
        return Err(Error::Input("texts per step must be at least 1".into()));
    }
    let mut order: Vec<usize> = (0..texts.len()).collect();
    let mut losses = Vec::new();
    for epoch in 1..=epochs {
        t.rng.shuffle(&mut order);
        let (mut sum, mut steps, mut out_of_time) = (0.0, 0usize, false);
        for c in order.chunks(per_step) {
            let batch: Vec<&[u32]> = c.iter().map(|&i| texts[i]).collect();
            let log = t.step_texts(&batch).await?;
            sum += log.loss;
            steps += 1;
            losses.push(log.loss);
            out_of_time = budget.as_mut().is_some_and(|b| b.after_step(t));
            after_step(&log, epoch, budget.as_deref());
            if out_of_time {
                break;
            }
        }
        after_epoch(t, epoch, sum / steps.max(1) as f64)?;
        if out_of_time {
            break;
        }
    }
    Ok(losses)
}

/// A trainer for `start` begun on a copy of the scorer's model (starting CLS head `cls`), on the
/// scorer's kind of backend.
pub async fn trainer(scorer: &crate::Scorer, start: &super::Start<'_>, cls: Option<crate::ClsHead>, cfg: super::TrainConfig) -> Result<Trainer> {
    let mut base = scorer.model().clone();
    let begun = start.begin(&mut base, cls)?;
    let mut trainer = Trainer::new(base, begun.lora, begun.cls, cfg, scorer.encoder.pad_id(), scorer.encoder.mask_id())?;
    if scorer.backend.is_gpu() {
        trainer.use_backend(crate::BackendKind::Gpu).await?;
    }
    Ok(trainer)
}

/// The parameters of the best epoch so far, by name.
type Best = Vec<(String, Tensor)>;

/// Trains on `train` for `o.epochs`, evaluating on `dev` after each epoch; leaves the best
/// epoch's parameters in `t`. With `o.checkpoint`, resumes from a checkpoint found there and
/// writes one after every epoch and when stopped. `cancel` is checked before each step.
pub async fn fit(t: &mut Trainer, train: &[ListExample], dev: &[ListExample], o: &FitOptions, cancel: &(impl Cancel + ?Sized), mut progress: impl FnMut(&Progress),
) -> Result<FitReport> {
    o.validate()?;
    if train.is_empty() {
        return Err(Error::Input("no training lists".into()));
    }
    let lambda0 = 1.0 / t.cfg.kappa;
    let (mut s, mut best) = begin(t, dev, o).await?;
    let mut stopped = None;
    let mut budget = o.time_limit.map(|l| TimeBudget::new(l, t.step));
    while s.epoch < o.epochs {
        let started = seconds();
        stopped = epoch_steps(t, train, o.lists_per_step, &mut s, cancel, &mut progress, &mut budget).await?;
        if stopped.is_some() || end_epoch(t, dev, o, &mut s, &mut best, lambda0, started, &mut progress).await? {
            break;
        }
    }
    if stopped.is_some() {
        s.rng = t.rng.clone();
        s.step = t.step;
        if let Some(dir) = &o.checkpoint {
            Checkpoint::save(dir, t, &mut s, &best).await?;
        }
    }
    // Keep the best epoch (or the start, if no epoch beat the first pass) unless stopped mid-way
    // with nothing evaluated.
    if s.best_epoch > 0 || stopped.is_none() {
        t.load_named_params(&best)?;
    }
    t.pull().await?;
    let scores = dev_scores(t, dev).await?;
    let lambda_curve = tune_weight(dev, &scores, &lambda_grid(lambda0)).0;
    let (weight, _) = tune(dev, &scores, lambda0);
    let trainable_parameters = t.trainable_parameters();
    Ok(FitReport {
        dev_first_pass_wer: s.dev_first_pass_wer,
        best_epoch: s.best_epoch,
        best_dev_wer: s.best_dev_wer,
        weight,
        lambda_curve,
        curve: s.curve,
        losses: s.losses,
        stopped,
        time_limited_steps: budget.and_then(|b| b.cap).filter(|_| s.limited),
        trainable_parameters,
        steps: t.step,
    })
}

/// The run's state and best parameters: from the checkpoint in `o.checkpoint` when there is one,
/// else fresh (the first pass's dev WER is the one to beat, the starting parameters the best).
async fn begin(t: &mut Trainer, dev: &[ListExample], o: &FitOptions) -> Result<(State, Best)> {
    if let Some(dir) = o.checkpoint.as_ref().filter(|d| d.join("state.json").exists()) {
        return Checkpoint::load(dir, t);
    }
    let zero: Vec<Vec<f64>> = dev.iter().map(|l| vec![0.0; l.s1.len()]).collect();
    let first = wer_at(dev, &zero, 0.0);
    let s = State {
        config: t.cfg.clone(),
        step: t.step,
        epoch: 0,
        pos: 0,
        order: Vec::new(),
        rng: t.rng.clone(),
        epoch_loss: 0.0,
        best_epoch: 0,
        best_dev_wer: first,
        dev_first_pass_wer: first,
        curve: Vec::new(),
        losses: Vec::new(),
        limited: false,
        files: Vec::new(),
    };
    let best = t.named_params().await?.into_iter().map(|(n, sh, d)| (n, Tensor::new(sh, d))).collect();
    Ok((s, best))
}

/// The steps of the current epoch from where `s` is (a new epoch shuffles the lists first), up
/// to its end or the time budget (then `s.limited`). `Some(why)` when the run stops: cancelled,
/// or a non-finite step (which changed nothing: the parameters are the last good ones).
async fn epoch_steps(t: &mut Trainer, train: &[ListExample], per: usize, s: &mut State, cancel: &(impl Cancel + ?Sized), progress: &mut impl FnMut(&Progress), budget: &mut Option<TimeBudget>) -> Result<Option<String>> {
    if s.order.is_empty() {
        s.order = (0..train.len()).collect();
        t.rng.shuffle(&mut s.order);
        s.pos = 0;
        s.epoch_loss = 0.0;
    }
    let steps_in_epoch = s.order.len().div_ceil(per);
    while s.pos < s.order.len() {
        if cancel.cancelled() {
            return Ok(Some(format!("cancelled after step {}", t.step)));
        }
        let lists: Vec<&ListExample> = s.order[s.pos..(s.pos + per).min(s.order.len())].iter().map(|&i| &train[i]).collect();
        let log = match t.step_lists(&lists).await {
            Ok(log) => log,
            Err(e @ Error::NonFinite { .. }) => return Ok(Some(e.to_string())),
            Err(e) => return Err(e),
        };
        s.epoch_loss += log.loss * lists.len() as f64;
        s.losses.push(log.loss);
        s.pos += lists.len();
        s.step = t.step;
        progress(&Progress::Step { epoch: s.epoch + 1, index: s.pos.div_ceil(per), of: steps_in_epoch, log });
        yield_now().await;
        if budget.as_mut().is_some_and(|b| b.after_step(t)) {
            s.limited = true;
            break;
        }
    }
    Ok(None)
}

/// Closes an epoch: dev WER at the tuned λ, the curve, the best parameters when it beat the
/// best so far (with no dev lists every epoch counts as the best: the last one is kept), and a
/// checkpoint. `true` when the run ends here: cut by the time budget, or no better for
/// `o.patience` epochs.
#[allow(clippy::too_many_arguments)]
async fn end_epoch(t: &mut Trainer, dev: &[ListExample], o: &FitOptions, s: &mut State, best: &mut Best, lambda0: f64, started: f64, progress: &mut impl FnMut(&Progress)) -> Result<bool> {
    let scores = dev_scores(t, dev).await?;
    let (weight, dev_wer) = tune(dev, &scores, lambda0);
    let rec = EpochRecord { epoch: s.epoch + 1, steps: t.step, train_loss: s.epoch_loss / s.pos.max(1) as f64, dev_wer, weight, seconds: seconds() - started };
    progress(&Progress::Epoch(rec.clone()));
    s.curve.push(rec);
    s.epoch += 1;
    s.order.clear();
    s.pos = 0;
    if dev_wer < s.best_dev_wer || dev.is_empty() {
        s.best_dev_wer = dev_wer;
        s.best_epoch = s.epoch;
        *best = t.named_params().await?.into_iter().map(|(n, sh, d)| (n, Tensor::new(sh, d))).collect();
    }
    s.rng = t.rng.clone();
    if let Some(dir) = &o.checkpoint {
        Checkpoint::save(dir, t, s, best).await?;
    }
    Ok(s.limited || (o.patience > 0 && !dev.is_empty() && s.epoch - s.best_epoch >= o.patience))
}
