//! `lorb fit-head`: a CLS head fitted with MWER on a frozen encoder's [CLS] vectors.

use crate::common::{load, model_dir, progress, training_lists, ModelArgs};
use clap::Args;
use lorb::rescore::first_pass_scores;
use lorb::train::{fit_cls_head, HeadFitOptions, ListFeatures};
use lorb::{Error, FirstPass, NBest, Result, Scorer};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct FitHeadArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Training n-best files (JSONL with references); repeat for several
    #[arg(long, required = true)]
    train: Vec<PathBuf>,
    /// Leave out the utterances of this n-best file (e.g. a demo sample)
    #[arg(long)]
    exclude: Option<PathBuf>,
    /// Utterances held out (after a seeded shuffle) for early stopping and tuning λ
    #[arg(long, default_value_t = 500)]
    holdout: usize,
    /// Use only the first N utterances of each training file
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value = "score")]
    s1: FirstPass,
    /// Scale of s1 inside the MWER softmax (λ = 1/κ at inference, then tuned)
    #[arg(long, default_value_t = 1.0)]
    kappa: f64,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Lists per optimiser step
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hypotheses per encoder batch when computing [CLS] vectors
    #[arg(long, default_value_t = 1024)]
    group: usize,
    /// Output head (.safetensors); a .json beside it records λ and the training log
    #[arg(long)]
    out: PathBuf,
}

/// Final [CLS] vectors of every list's hypotheses (`[hyps × H]` per list), `group`
/// hypotheses per encoder batch ([`Scorer::cls_lists`]), with a progress bar.
fn cls_vectors_per_list(scorer: &mut Scorer, lists: &[NBest], group: usize) -> Result<Vec<Vec<f32>>> {
    let pb = progress(lists.len(), "[CLS] vectors");
    let v = pollster::block_on(scorer.cls_lists(lists, group, None, &mut |n| pb.inc(n as u64)))?;
    pb.finish_and_clear();
    Ok(v)
}

/// What the head is fitted on, per list: s1, each hypothesis's word errors, the reference's
/// words and the hypotheses' [CLS] vectors.
fn list_features(a: &FitHeadArgs, scorer: &mut Scorer, lists: &[NBest]) -> Result<Vec<ListFeatures>> {
    use lorb::wer::{word_count, word_errors};
    let mut feats: Vec<ListFeatures> = Vec::with_capacity(lists.len());
    for (nb, cls) in lists.iter().zip(cls_vectors_per_list(scorer, lists, a.group)?) {
        let r = nb.reference.as_deref().unwrap_or_default();
        feats.push(ListFeatures {
            s1: first_pass_scores(nb, &a.s1)?,
            errors: nb.hyps.iter().map(|h| word_errors(r, &h.text) as f64).collect(),
            words: word_count(r),
            cls,
        });
    }
    Ok(feats)
}

pub fn fit_head(a: FitHeadArgs) -> Result<()> {
    let t0 = Instant::now();
    let lists = training_lists(&a.train, a.limit, a.exclude.as_deref())?;
    if lists.len() < 2 {
        return Err(Error::Input("fit-head needs at least two training lists with references".into()));
    }
    let mut scorer = load(&a.m)?;
    let hidden = scorer.model().config.hidden;
    let mut feats = list_features(&a, &mut scorer, &lists)?;
    let feature_secs = t0.elapsed().as_secs_f64();
    // Seeded shuffle, then hold out the last `holdout` lists.
    let mut rng = a.seed.wrapping_add(0x9e3779b97f4a7c15);
    for k in (1..feats.len()).rev() {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        feats.swap(k, (rng >> 33) as usize % (k + 1));
    }
    let hold = a.holdout.min(feats.len() / 2).max(1);
    let dev = feats.split_off(feats.len() - hold);
    let opts = HeadFitOptions { kappa: a.kappa, lr: a.lr, epochs: a.epochs, batch_lists: a.batch, weight_decay: 0.0, seed: a.seed };
    let fit = fit_cls_head(&feats, &dev, hidden, &opts, |l| {
        eprintln!("epoch {:3}  train MWER {:+.4}  held-out WER {:.3}%", l.epoch, l.train_loss, l.dev_wer)
    });
    fit.head.save(&a.out)?;
    let log = json!({
        "weight": fit.weight,
        "kappa": a.kappa,
        "method": "cls",
        "objective": "mwer",
        "model": model_dir(&a.m).display().to_string(),
        "backend": scorer.backend.describe(),
        "train": a.train.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "exclude": a.exclude.as_ref().map(|p| p.display().to_string()),
        "s1": format!("{:?}", a.s1.terms),
        "train_lists": feats.len(),
        "heldout_lists": dev.len(),
        "options": opts,
        "fit": fit,
        "feature_seconds": feature_secs,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    let side = a.out.with_extension("json");
    std::fs::write(&side, serde_json::to_string_pretty(&log).unwrap_or_default()).map_err(|e| Error::Io { path: side.display().to_string(), source: e })?;
    println!("{log}");
    Ok(())
}
