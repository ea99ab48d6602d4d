//! `lorb train`: a LoRB adapter (LoRA + CLS head) trained with MWER, MWED or MD on n-best lists,
//! an MLM head on text (`train_mlm`), or full fine-tuning for comparison.

use crate::common::{examples, load, model_dir, progress, read_lists, training_lists, ModelArgs};
use crate::teacher::teacher_scores;
use crate::train_mlm::train_mlm;
use clap::Args;
use indicatif::ProgressStyle;
use lorb::rescore::first_pass_scores;
use lorb::train::{fit, FitOptions, FitReport, ListExample, Objective, TrainConfig, Trainer};
use lorb::{Error, FirstPass, NBest, Result, Scorer};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// mwer, mwed, md (distil the teacher's PLL into the CLS score) or mlm (text)
    #[arg(long, default_value = "mwer")]
    pub objective: lorb::train::Objective,
    /// Training data: n-best files with references (mwer/mwed/md), or for mlm text files (one
    /// sentence per line, gzip or plain) or n-best files (their references); repeat for several
    #[arg(long, required = true)]
    pub train: Vec<PathBuf>,
    /// Dev n-best file for early stopping and tuning λ (default: hold out --holdout lists)
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// Lists held out of --train (after a seeded shuffle) when no --dev is given
    #[arg(long, default_value_t = 200)]
    pub holdout: usize,
    /// Report WER on this n-best file at the end, with λ tuned on dev (never trained or tuned on)
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Leave out the utterances of this n-best file (e.g. the demo sample)
    #[arg(long)]
    pub exclude: Option<PathBuf>,
    /// Use only the first N utterances (or text lines) of each training file
    #[arg(long)]
    pub limit: Option<usize>,
    /// Use only the first N utterances of the dev and test files
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Keep the top K hypotheses of every list (train, dev and test alike)
    #[arg(long)]
    pub depth: Option<usize>,
    #[arg(long, default_value = "score")]
    pub s1: FirstPass,
    /// After training, also tune these terms' coefficients of --s1 (comma-separated, e.g.
    /// "lm") jointly with λ on the dev lists; train_log.json keeps the chosen --s1, which
    /// eval, rescore and tune then use
    #[arg(long, value_delimiter = ',')]
    pub tune_s1: Vec<String>,
    /// Output adapter folder (PEFT format) with train_log.json
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the adapter already at --out (only a folder of files lorb writes)
    #[arg(long)]
    pub force: bool,
    /// LoRA rank
    #[arg(long, default_value_t = 4)]
    pub r: usize,
    /// LoRA α (scale α/r)
    #[arg(long, default_value_t = 8.0)]
    pub alpha: f64,
    /// LoRA targets: query, key, value, attn_out, ffn_in, ffn_out (comma-separated)
    #[arg(long, default_value = "query,value", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Scale α/√r (rsLoRA)
    #[arg(long)]
    pub rslora: bool,
    /// Train no LoRA pairs: the CLS head (and MLM head) only, encoder frozen
    #[arg(long, conflicts_with = "full")]
    pub head_only: bool,
    /// Full fine-tuning: every encoder weight trainable (for comparison; writes weights)
    #[arg(long)]
    pub full: bool,
    /// Train the MLM head transform (a fresh one is made for encoder-only models)
    #[arg(long)]
    pub mlm_head: bool,
    /// Also train the MLM output bias (a logit offset per token; needs an MLM head trained)
    #[arg(long)]
    pub mlm_bias: bool,
    /// Teacher model folder with an MLM head, for md (its PLL is computed once)
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// An adapter for the teacher (e.g. a trained MLM head for an encoder-only model)
    #[arg(long, requires = "teacher")]
    pub teacher_adapter: Option<PathBuf>,
    /// Cache of the teacher's PLL scores (JSON lines by utterance and hypothesis texts): read
    /// when present, extended with every list scored
    #[arg(long, requires = "teacher")]
    pub teacher_cache: Option<PathBuf>,
    /// Scale of s1 inside MWER/MWED (λ = 1/κ at inference, then tuned)
    #[arg(long, default_value_t = 1.0)]
    pub kappa: f64,
    /// Weight of the correlation regulariser L_cor
    #[arg(long, default_value_t = 0.0)]
    pub cor_weight: f64,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Learning rate of the CLS/MLM heads (default: --lr); e.g. a larger one with --full
    #[arg(long)]
    pub head_lr: Option<f64>,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Warm-up as a fraction of all steps (then linear decay to 0)
    #[arg(long, default_value_t = 0.1)]
    pub warmup: f64,
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Lists (or, for mlm, texts) per optimiser step
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Epochs without a better dev WER before stopping (0: never)
    #[arg(long, default_value_t = 2)]
    pub patience: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint folder: written every epoch and on stop; an existing one is resumed
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Seconds for training (steps and per-epoch dev evaluations): the run is cut to the steps
    /// that fit at the recent pace, with the learning-rate schedule fitted to them (not resumable)
    #[arg(long, conflicts_with = "checkpoint")]
    pub time_limit: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

/// The training and dev lists as examples, with the lists they came from.
struct Data {
    /// The training lists as read (before the dev lists are held out of them).
    lists: Vec<NBest>,
    train_ex: Vec<ListExample>,
    dev_ex: Vec<ListExample>,
    /// The dev lists' n-best entries (their first-pass terms, for --tune-s1).
    dev_nb: Vec<NBest>,
}

/// The trainer, with the step count and parameter counts the log reports.
struct Built {
    trainer: Trainer,
    total: u64,
    trainable: usize,
    base: usize,
}

/// The first pass and λ the adapter is used with: --s1 and fit's λ, or those re-tuned on dev.
struct Tuned {
    s1: FirstPass,
    weight: f64,
    s1_tuning: serde_json::Value,
}

pub fn train(a: TrainArgs) -> Result<()> {
    let t0 = Instant::now();
    let (cfg, opts) = check_args(&a)?;
    let (scorer, model, lora) = start(&a)?;
    let mask = scorer.encoder.mask_id();
    let pad = scorer.encoder.pad_id();
    let cancel = AtomicBool::new(false);
    if a.objective == Objective::Mlm {
        return train_mlm(a, model, lora, cfg, pad, mask, &scorer, t0);
    }
    let data = load_data(&a, &scorer)?;
    let mut built = build_trainer(&a, &scorer, &data, cfg, model, lora)?;
    let (report, train_secs) = run(&mut built, &data, &opts, &cancel)?;
    let tuned = tune_s1(&a, &mut built.trainer, &data, &report)?;
    let mut log = train_log(&a, &data, &built, &tuned, &report, train_secs, t0)?;
    write_adapter(&a, &built.trainer, &log, &report)?;
    log["test"] = test_report(&a, &scorer, &mut built.trainer, &tuned, &report)?.unwrap_or(serde_json::Value::Null);
    log["seconds"] = json!(t0.elapsed().as_secs_f64());
    lorb::output::write_file(&a.out.join("train_log.json"), &log_bytes(&log))?;
    if a.json {
        println!("{log}");
    } else {
        println!("{}", serde_json::to_string_pretty(&json!({"dev": {"first_pass_wer": report.dev_first_pass_wer, "wer": report.best_dev_wer, "best_epoch": report.best_epoch}, "weight": report.weight, "test": log["test"], "stopped": report.stopped, "adapter": a.out.display().to_string()})).unwrap_or_default());
    }
    // A run stopped by NaN/Inf saved its last finite state, and fails.
    match &report.stopped {
        Some(why) if !cancel.load(std::sync::atomic::Ordering::Relaxed) => Err(Error::Training(format!("{why}; that state is in {}", a.out.display()))),
        _ => Ok(()),
    }
}

/// Everything the arguments alone decide, checked before any work (the output folder included):
/// the training configuration (its schedule is set once the steps are known) and fit's options.
fn check_args(a: &TrainArgs) -> Result<(TrainConfig, FitOptions)> {
    if a.mlm_bias && (a.objective != Objective::Mlm || a.full) {
        let why = if a.full { "full fine-tuning trains it already" } else { "it learns only from the MLM objective (--objective mlm)" };
        return Err(Error::Input(format!("--mlm-bias: {why}")));
    }
    let cfg = TrainConfig {
        objective: a.objective,
        kappa: a.kappa,
        cor_weight: a.cor_weight,
        cls_head: a.objective != Objective::Mlm,
        mlm_head: a.mlm_head || (a.objective == Objective::Mlm && !a.full),
        mlm_bias: a.mlm_bias,
        full: a.full,
        optim: lorb::train::AdamWConfig { lr: a.lr, weight_decay: a.weight_decay, ..Default::default() },
        head_lr: a.head_lr,
        warmup_steps: 0,
        total_steps: 0,
        clip: a.clip,
        seed: a.seed,
        mask_prob: 0.15,
    };
    cfg.validate()?;
    let opts = FitOptions { epochs: a.epochs, lists_per_step: a.batch, patience: a.patience, checkpoint: a.checkpoint.clone(), time_limit: a.time_limit };
    opts.validate()?;
    lorb::train::warmup_steps(a.warmup, 0)?;
    if !(a.head_only || a.full || a.m.adapter.is_some()) {
        lorb::adapter::check_lora_shape(a.r, a.alpha)?;
    }
    lorb::output::prepare_out_dir(&a.out, a.force)?;
    Ok((cfg, opts))
}

/// The scorer (its model, tokeniser and CLS head), the model readied for training and the LoRA
/// pairs that train.
fn start(a: &TrainArgs) -> Result<(Scorer, lorb::Model, Option<lorb::Adapter>)> {
    // `--adapter DIR` is where training starts, not something merged for scoring: its LoRA
    // pairs are the starting pairs (merged into the weights with --full), its heads the
    // starting heads.
    let start = a.m.adapter.clone();
    let mut scorer = load(&ModelArgs { adapter: None, ..a.m.clone() })?;
    let mut model = scorer.model().clone();
    let config = model.config.clone();
    let start = start.map(|d| lorb::Adapter::load_dir(&d, &config)).transpose()?;
    let targets = a.targets.iter().map(|t| lorb::adapter::Target::parse(t)).collect::<Result<Vec<_>>>()?;
    if (a.mlm_head || a.objective == Objective::Mlm) && model.mlm.is_none() {
        eprintln!("lorb: the model has no MLM head; starting a fresh one (tied decoder)");
        lorb::train::init_mlm_head(&mut model, a.seed);
    }
    let begun = lorb::train::Start { r: a.r, alpha: a.alpha, rslora: a.rslora, targets: &targets, seed: a.seed, head_only: a.head_only, full: a.full, from: start.as_ref() }
        .begin(&mut model, scorer.cls_head.clone())?;
    scorer.cls_head = begun.cls;
    if let Some(st) = &start {
        if begun.continues {
            eprintln!("lorb: continuing the adapter's LoRA pairs (r {}, α {}; --r/--alpha/--targets are ignored)", st.r, st.alpha);
        }
        eprintln!("lorb: starting from the adapter ({} LoRA pairs{}{})", st.pairs.len(), if st.cls_head.is_some() { ", CLS head" } else { "" }, if st.mlm_head.is_empty() { "" } else { ", MLM head" });
    }
    Ok((scorer, model, begun.lora))
}

/// The training and dev examples: --dev's lists, else --holdout lists held out of --train; for
/// md, each with the teacher's PLL.
fn load_data(a: &TrainArgs, scorer: &Scorer) -> Result<Data> {
    let lists = training_lists(&a.train, a.limit, a.exclude.as_deref())?;
    let mut train_ex = examples(scorer, &lists, &a.s1, a.depth)?;
    let dev_lists = match &a.dev {
        Some(d) => read_lists(d, a.eval_limit)?,
        None => Vec::new(),
    };
    let mut dev_ex = examples(scorer, &dev_lists, &a.s1, a.depth)?;
    if a.objective == Objective::Md {
        teacher_scores(a, scorer, &lists, &mut train_ex, &dev_lists, &mut dev_ex)?;
    }
    // The dev lists' n-best entries go along (their first-pass terms, for --tune-s1).
    let dev_nb: Vec<NBest> = if a.dev.is_none() {
        let mut pairs: Vec<(ListExample, usize)> = std::mem::take(&mut train_ex).into_iter().zip(0..).collect();
        let held = lorb::train::hold_out(&mut pairs, a.holdout, a.seed);
        train_ex = pairs.into_iter().map(|p| p.0).collect();
        let (ex, idx): (Vec<_>, Vec<usize>) = held.into_iter().unzip();
        dev_ex = ex;
        idx.into_iter().map(|i| lists[i].clone()).collect()
    } else {
        dev_lists
    };
    Ok(Data { lists, train_ex, dev_ex, dev_nb })
}

/// The trainer, its schedule fitted to the steps of --epochs, on the backend asked for.
fn build_trainer(a: &TrainArgs, scorer: &Scorer, data: &Data, cfg: TrainConfig, model: lorb::Model, lora: Option<lorb::Adapter>) -> Result<Built> {
    let steps_per_epoch = data.train_ex.len().div_ceil(a.batch) as u64;
    let total = steps_per_epoch * a.epochs as u64;
    let cfg = TrainConfig { warmup_steps: lorb::train::warmup_steps(a.warmup, total)?, total_steps: total, ..cfg };
    let (pad, mask) = (scorer.encoder.pad_id(), scorer.encoder.mask_id());
    let mut trainer = Trainer::new(model, lora, scorer.cls_head.clone(), cfg, pad, mask)?;
    // The encoder runs on the GPU when one is there (--backend gpu accepts software adapters;
    // auto only hardware ones): forward and backward for LoRA and full fine-tuning, the
    // forward for a CLS head alone.
    pollster::block_on(trainer.use_backend(a.m.backend))?;
    eprintln!("lorb: training on {}", trainer.device());
    let trainable = trainer.trainable_parameters();
    let base = scorer.model().parameter_count();
    eprintln!(
        "lorb: training {} parameters ({:.3}% of {}) on {} lists, {} dev lists, {} steps",
        trainable,
        100.0 * trainable as f64 / base as f64,
        base,
        data.train_ex.len(),
        data.dev_ex.len(),
        total
    );
    Ok(Built { trainer, total, trainable, base })
}

/// Trains (fit: epochs, dev WER, early stopping, checkpoints) with a progress bar, or a line
/// every 25 steps when the bar is hidden; returns fit's report and the training seconds.
fn run(built: &mut Built, data: &Data, opts: &FitOptions, cancel: &AtomicBool) -> Result<(FitReport, f64)> {
    let total = built.total;
    let pb = progress(total as usize, "train");
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> "),
    );
    let train_started = Instant::now();
    let quiet = pb.is_hidden();
    let report = pollster::block_on(fit(&mut built.trainer, &data.train_ex, &data.dev_ex, opts, cancel, |p| match p {
        lorb::train::fit::Progress::Step { log, epoch, .. } => {
            pb.set_position(log.step);
            pb.set_message(format!("epoch {epoch} loss {:+.4} |g| {:.3}", log.loss, log.grad_norm));
            if quiet && log.step % 25 == 0 {
                eprintln!("step {:5}/{total}  epoch {epoch}  loss {:+.4}  |g| {:.3}  lr {:.2e}  {:.0} ms/step", log.step, log.loss, log.grad_norm, log.lr, 1000.0 * train_started.elapsed().as_secs_f64() / log.step as f64);
            }
        }
        lorb::train::fit::Progress::Epoch(r) => {
            eprintln!("epoch {:3}  train loss {:+.4}  dev WER {:.3}% at λ {:.3}  ({:.0} s)", r.epoch, r.train_loss, r.dev_wer, r.weight, r.seconds);
        }
    }))?;
    pb.finish_and_clear();
    Ok((report, train_started.elapsed().as_secs_f64()))
}

/// The first pass re-weighted with λ on dev (--tune-s1), at the lists' training depth; else
/// --s1 and fit's λ.
fn tune_s1(a: &TrainArgs, trainer: &mut Trainer, data: &Data, report: &FitReport) -> Result<Tuned> {
    let (mut s1, mut weight, mut s1_tuning) = (a.s1.clone(), report.weight, serde_json::Value::Null);
    if !a.tune_s1.is_empty() && !data.dev_ex.is_empty() {
        let s2 = pollster::block_on(trainer.scores_many(&data.dev_ex.iter().collect::<Vec<_>>()))?;
        let cut: Vec<NBest> = data.dev_nb.iter().zip(&data.dev_ex).map(|(nb, ex)| NBest { hyps: nb.hyps[..ex.s1.len()].to_vec(), ..nb.clone() }).collect();
        let t = lorb::rescore::tune_first_pass(&cut, &a.s1, &a.tune_s1, s2, &lorb::rescore::lambda_grid(1.0 / a.kappa))?;
        eprintln!("lorb: first pass re-weighted on dev: --s1 {:?} --weight {} (dev WER {:.3}%; {:.3}% with the given --s1)", t.first_pass.to_string(), t.weight, t.wer, t.start_wer);
        s1_tuning = json!({"given_s1": a.s1.to_string(), "given_s1_dev_wer": t.start_wer, "dev_wer": t.wer, "terms": a.tune_s1});
        (s1, weight) = (t.first_pass, t.weight);
    }
    Ok(Tuned { s1, weight, s1_tuning })
}

/// train_log.json (its "test" filled in after the test evaluation).
fn train_log(a: &TrainArgs, data: &Data, built: &Built, tuned: &Tuned, report: &FitReport, train_secs: f64, t0: Instant) -> Result<serde_json::Value> {
    let (trainer, trainable, base) = (&built.trainer, built.trainable, built.base);
    // What the training lists look like, at the training depth, under the final s1: list
    // commands compare it with their input's.
    let cut: Vec<NBest> = data.lists.iter().map(|nb| NBest { hyps: nb.hyps[..a.depth.unwrap_or(usize::MAX).min(nb.hyps.len())].to_vec(), ..nb.clone() }).collect();
    let profile = lorb::rescore::ListProfile::of(&cut, &tuned.s1)?;
    Ok(json!({
        "weight": tuned.weight,
        "s1": tuned.s1.to_string(),
        "list_profile": profile,
        "s1_tuning": tuned.s1_tuning,
        "kappa": a.kappa,
        "objective": a.objective,
        "model": model_dir(&a.m).display().to_string(),
        "trainer": trainer.device(),
        "train": a.train.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "dev": a.dev.as_ref().map(|p| p.display().to_string()),
        "depth": a.depth,
        "train_lists": data.train_ex.len(),
        "dev_lists": data.dev_ex.len(),
        "config": trainer.cfg,
        "lists_per_step": a.batch,
        "trainable_parameters": trainable,
        "base_parameters": base,
        "trainable_percent": 100.0 * trainable as f64 / base as f64,
        "report": report,
        "test": null,
        "ms_per_step": 1000.0 * train_secs / report.steps.max(1) as f64,
        "train_seconds": train_secs,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}

fn log_bytes(log: &serde_json::Value) -> Vec<u8> {
    serde_json::to_string_pretty(log).unwrap_or_default().into_bytes()
}

/// The adapter and its log (with the training curves) written as one unit, before the test
/// evaluation (which can be long); the test's figures are added to the log afterwards. Full
/// fine-tuning writes the log and curves alone.
fn write_adapter(a: &TrainArgs, trainer: &Trainer, log: &serde_json::Value, report: &FitReport) -> Result<()> {
    let dev_curve = lorb::train::curves::EpochCurve {
        title: "dev WER (%)",
        y_label: "WER %",
        points: report.curve.iter().map(|e| (e.epoch, e.dev_wer)).collect(),
        reference: report.dev_first_pass_wer.is_finite().then_some((report.dev_first_pass_wer, "first pass")),
    };
    let svg = lorb::train::curves::svg(&report.losses, &dev_curve)?;
    let files: [(&str, &[u8]); 2] = [("train_log.json", &log_bytes(log)), ("train_curves.svg", svg.as_bytes())];
    if a.full {
        eprintln!("lorb: full fine-tuning: weights are not written (comparison runs only)");
        lorb::output::write_dir(&a.out, &files)?;
    } else {
        trainer.adapter()?.save_dir_with(&a.out, &files)?;
    }
    Ok(())
}

/// The WER on --test (never trained or tuned on) with the tuned s1 and λ; with a re-tuned s1,
/// also the first pass and the rescorer under the given --s1.
fn test_report(a: &TrainArgs, scorer: &Scorer, trainer: &mut Trainer, tuned: &Tuned, report: &FitReport) -> Result<Option<serde_json::Value>> {
    let Some(p) = &a.test else { return Ok(None) };
    let (s1, weight) = (&tuned.s1, tuned.weight);
    let test_lists = read_lists(p, a.eval_limit)?;
    let ex = examples(scorer, &test_lists, s1, a.depth)?;
    let s2 = pollster::block_on(trainer.scores_many(&ex.iter().collect::<Vec<_>>()))?;
    let zero: Vec<Vec<f64>> = ex.iter().map(|l| vec![0.0; l.s1.len()]).collect();
    let mut t = json!({
        "file": p.display().to_string(),
        "utterances": ex.len(),
        "first_pass_wer": lorb::rescore::wer_at(&ex, &zero, 0.0),
        "wer": lorb::rescore::wer_at(&ex, &s2, weight),
        "weight": weight,
    });
    if *s1 != a.s1 {
        // The first pass as given, and the rescorer with the given --s1 and fit's λ.
        // The same tokens and error counts; only s1 differs.
        let given = ex
            .iter()
            .zip(&test_lists)
            .map(|(e, nb)| Ok(ListExample { s1: first_pass_scores(nb, &a.s1)?[..e.s1.len()].to_vec(), ..e.clone() }))
            .collect::<Result<Vec<_>>>()?;
        t["first_pass_wer_tuned_s1"] = t["first_pass_wer"].clone();
        t["first_pass_wer"] = json!(lorb::rescore::wer_at(&given, &zero, 0.0));
        t["wer_given_s1"] = json!(lorb::rescore::wer_at(&given, &s2, report.weight));
        t["s1"] = json!(s1.to_string());
    }
    Ok(Some(t))
}
