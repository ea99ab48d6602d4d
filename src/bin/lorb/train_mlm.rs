//! `lorb train --objective mlm`: the MLM head transform (and LoRA pairs unless --head-only)
//! trained on sentences, with the dev loss on held-out sentences each epoch.

use crate::common::{model_dir, progress};
use crate::train::TrainArgs;
use lorb::train::fit::TimeBudget;
use lorb::train::{TrainConfig, Trainer};
use lorb::{nbest, BackendKind, Batch, Error, Result, Scorer, Slot};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Token ids of training sentences.
type Ids = Vec<Vec<u32>>;

/// What the epochs give the log and the curves.
struct Run {
    curve: Vec<serde_json::Value>,
    losses: Vec<f64>,
    dev_losses: Vec<(usize, f64)>,
    budget: Option<TimeBudget>,
    secs: f64,
}

/// Sentences for MLM: the references of n-best files; from text files, the sentences of each
/// paragraph (blank-line separated, when the file has such paragraphs) or else of each line.
fn texts(paths: &[PathBuf], limit: Option<usize>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        let mut v: Vec<String> = if name.contains(".jsonl") {
            nbest::read_file(p)?.into_iter().filter_map(|nb| nb.reference).collect()
        } else {
            let raw = std::fs::read(p).map_err(|e| Error::Io { path: name.clone(), source: e })?;
            let text = if name.ends_with(".gz") {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut s).map_err(|e| Error::Io { path: name.clone(), source: e })?;
                s
            } else {
                String::from_utf8(raw).map_err(|_| Error::Input(format!("{name}: not UTF-8")))?
            };
            lorb::train::text::sentences_of(&text)
        };
        if let Some(n) = limit {
            v.truncate(n);
        }
        out.extend(v);
    }
    Ok(out)
}

/// MLM training on sentences: the MLM head transform (and LoRA pairs unless --head-only);
/// dev loss on held-out sentences each epoch.
#[allow(clippy::too_many_arguments)]
pub fn train_mlm(a: TrainArgs, model: lorb::Model, lora: Option<lorb::Adapter>, cfg: TrainConfig, pad: u32, mask: Option<u32>, scorer: &Scorer, t0: Instant) -> Result<()> {
    let (ids, dev) = sentences(&a, scorer)?;
    let (mut t, total, trainable) = mlm_trainer(&a, &ids, &dev, model, lora, cfg, pad, mask)?;
    // Fixed dev masking: the same masked copies every epoch.
    let mut dev_masker = Trainer::new(t.model.clone(), None, None, TrainConfig { seed: 1, cls_head: false, ..t.cfg.clone() }, pad, mask)?;
    let dev_batches = dev.chunks(a.batch).map(|c| dev_masker.mask_texts(&c.iter().map(|v| v.as_slice()).collect::<Vec<_>>())).collect::<Result<Vec<_>>>()?;
    drop(dev_masker);
    let run = epochs(&a, &mut t, &ids, &dev_batches, total)?;
    write_outputs(&a, &t, (&ids, &dev), trainable, run, t0)
}

/// The training sentences' token ids (shuffled; those of 4 tokens or more) and the dev ones held
/// out of them.
fn sentences(a: &TrainArgs, scorer: &Scorer) -> Result<(Ids, Ids)> {
    let mut sents = texts(&a.train, a.limit)?;
    let mut rng = lorb::train::Rng::new(a.seed ^ 0x5eed);
    rng.shuffle(&mut sents);
    let ids = sents.iter().enumerate().map(|(i, t)| scorer.encoder.encode(i, t).map(|t| t.ids)).collect::<Result<Vec<_>>>()?;
    let mut ids: Vec<Vec<u32>> = ids.into_iter().filter(|v| v.len() >= 4).collect();
    let hold = a.holdout.min(ids.len() / 5);
    let dev = ids.split_off(ids.len() - hold);
    if ids.is_empty() {
        return Err(Error::Input("no training sentences".into()));
    }
    Ok((ids, dev))
}

/// The trainer, its schedule fitted to the steps of --epochs, on the backend asked for; with
/// its steps and trainable parameters.
#[allow(clippy::too_many_arguments)]
fn mlm_trainer(a: &TrainArgs, ids: &Ids, dev: &Ids, model: lorb::Model, lora: Option<lorb::Adapter>, cfg: TrainConfig, pad: u32, mask: Option<u32>) -> Result<(Trainer, u64, usize)> {
    let per = a.batch;
    let total = (ids.len().div_ceil(per) * a.epochs) as u64;
    let cfg = TrainConfig { warmup_steps: lorb::train::warmup_steps(a.warmup, total)?, total_steps: total, ..cfg };
    let mut t = Trainer::new(model, lora, None, cfg, pad, mask)?;
    // Full fine-tuning with MLM runs on the CPU.
    pollster::block_on(t.use_backend(if a.full { BackendKind::Cpu } else { a.m.backend }))?;
    eprintln!("lorb: training on {}", t.device());
    let trainable = t.trainable_parameters();
    eprintln!("lorb: MLM on {} sentences ({} held out), {} trainable parameters, {} steps", ids.len(), dev.len(), trainable, total);
    Ok((t, total, trainable))
}

/// The training epochs (cut short by --time-limit): every step's loss and each epoch's train
/// and dev MLM loss.
fn epochs(a: &TrainArgs, t: &mut Trainer, ids: &Ids, dev_batches: &[(Batch, Vec<Slot>)], total: u64) -> Result<Run> {
    let pb = progress(total as usize, "mlm");
    let (mut curve, mut dev_losses) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut budget = a.time_limit.map(|l| TimeBudget::new(l, t.step));
    let texts: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let on_step = |log: &lorb::train::StepLog, epoch: usize, b: Option<&TimeBudget>| {
        if let Some(b) = b {
            pb.set_length(b.cap.unwrap_or(total));
        }
        pb.set_position(log.step);
        pb.set_message(format!("epoch {epoch} loss {:.4}", log.loss));
    };
    let on_epoch = |t: &mut Trainer, epoch: usize, train_loss: f64| -> Result<()> {
        let dev_loss = if dev_batches.is_empty() {
            f64::NAN
        } else {
            dev_batches.iter().map(|(b, s)| pollster::block_on(t.mlm_loss_only(b, s))).collect::<Result<Vec<f64>>>()?.iter().sum::<f64>() / dev_batches.len() as f64
        };
        eprintln!("epoch {epoch:3}  train MLM loss {train_loss:.4}  dev MLM loss {dev_loss:.4}");
        curve.push(json!({"epoch": epoch, "steps": t.step, "train_loss": train_loss, "dev_loss": dev_loss}));
        dev_losses.push((epoch, dev_loss));
        Ok(())
    };
    let losses = pollster::block_on(lorb::train::fit::mlm_epochs(t, &texts, a.batch, a.epochs, budget.as_mut(), on_step, on_epoch))?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    Ok(Run { curve, losses, dev_losses, budget, secs })
}

/// train_log.json and the curves, with the adapter unless the run fine-tuned fully; the log is
/// printed.
fn write_outputs(a: &TrainArgs, t: &Trainer, (ids, dev): (&Ids, &Ids), trainable: usize, run: Run, t0: Instant) -> Result<()> {
    let Run { curve, losses, dev_losses, budget, secs } = run;
    let log = json!({
        "objective": "mlm",
        "model": model_dir(&a.m).display().to_string(),
        "train": a.train.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "trainer": t.device(),
        "sentences": ids.len(),
        "dev_sentences": dev.len(),
        "config": t.cfg,
        "trainable_parameters": trainable,
        "curve": curve,
        "time_limited_steps": budget.and_then(|b| b.cap),
        "ms_per_step": 1000.0 * secs / t.step.max(1) as f64,
        "train_seconds": secs,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    let log_bytes = serde_json::to_string_pretty(&log).unwrap_or_default().into_bytes();
    let svg = lorb::train::curves::svg(&losses, &lorb::train::curves::EpochCurve { title: "dev MLM loss", y_label: "loss", points: dev_losses, reference: None })?;
    let files: [(&str, &[u8]); 2] = [("train_log.json", &log_bytes), ("train_curves.svg", svg.as_bytes())];
    if a.full {
        lorb::output::write_dir(&a.out, &files)?;
    } else {
        t.adapter()?.save_dir_with(&a.out, &files)?;
    }
    println!("{log}");
    Ok(())
}
