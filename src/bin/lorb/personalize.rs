//! `lorb personalize`: per group, train on the first part's references from the global adapter,
//! and report the WER of the rest.

use crate::common::{load, ListArgs};
use crate::lists::list_inputs;
use clap::Args;
use lorb::{Error, Result};
use serde_json::json;

#[derive(Args)]
pub struct PersonalizeArgs {
    #[command(flatten)]
    list: ListArgs,
    /// chapter (SPEAKER-CHAPTER of LibriSpeech ids), speaker, or a regular expression whose
    /// first capture group (else whole match) names an utterance's group
    #[arg(long, default_value = "chapter")]
    group: String,
    /// The first part of each group (in file order) whose references train
    #[arg(long, default_value_t = 0.5)]
    adapt_fraction: f64,
    /// How a group's first part personalises: mwer (LoRB on the corrected lists; s2 = CLS),
    /// mlm (MLM on the corrected transcripts; s2 = PLL, which needs an MLM head, e.g. an
    /// adapter with one) or none (no training: the global adapter and the user's words' boost)
    #[arg(long, default_value = "mwer")]
    adapt: lorb::personalize::Adapt,
    /// β of the user's words' boost: s1 + β·boost + λ·s2, where boost sums the rarity of the
    /// hypothesis' words that occur in the group's corrected transcripts (0: off). In s1's
    /// units: choose it on dev chapters (the JSON's lexicon_weights), like λ. Default: the
    /// adapter's (its train_log.json "lexicon_weight"), else 0.5
    #[arg(long)]
    lexicon_weight: Option<f64>,
    /// Epochs over each group's first part
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning rate of the heads (CLS, or the MLM head transform with --adapt mlm); default --lr
    #[arg(long)]
    head_lr: Option<f64>,
    /// With --adapt mlm, also train the MLM output bias (a logit offset per token, which moves
    /// towards the user's words)
    #[arg(long)]
    mlm_bias: bool,
    /// Lists per optimiser step
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// κ, the first pass's scale inside the MWER loss
    #[arg(long, default_value_t = 1.0)]
    kappa: f64,
    /// Fresh LoRA pairs when no global adapter is used: rank, α, targets
    #[arg(long, default_value_t = 4)]
    r: usize,
    #[arg(long, default_value_t = 8.0)]
    alpha: f64,
    #[arg(long, value_delimiter = ',', default_value = "query,value")]
    targets: Vec<String>,
    /// Seconds of training per group (the run is fitted to the steps that fit)
    #[arg(long)]
    time_limit: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn personalize(a: PersonalizeArgs) -> Result<()> {
    let grouping: lorb::personalize::Grouping = a.group.parse()?;
    if let Some(b) = a.lexicon_weight {
        lorb::personalize::check_lexicon_weight(b)?;
    }
    let inputs = list_inputs(a.list)?;
    let (weight, fp, lexicon_weight) = (inputs.weight()?, inputs.first_pass()?, inputs.lexicon_weight(a.lexicon_weight)?);
    let (l, lists) = (inputs.a, inputs.lists);
    let targets = a.targets.iter().map(|t| lorb::adapter::Target::parse(t)).collect::<Result<Vec<_>>>()?;
    let train = lorb::train::TrainConfig { kappa: a.kappa, optim: lorb::train::AdamWConfig { lr: a.lr, ..Default::default() }, head_lr: a.head_lr, seed: a.seed, mlm_bias: a.mlm_bias, ..Default::default() };
    train.validate()?;
    let fit = lorb::train::FitOptions { epochs: a.epochs, lists_per_step: a.batch, patience: 0, checkpoint: None, time_limit: a.time_limit };
    fit.validate()?;
    let o = lorb::personalize::Options { grouping, adapt_fraction: a.adapt_fraction, adapt: a.adapt, first_pass: fp, depth: None, weight, lexicon_weight, r: a.r, alpha: a.alpha, targets, train, fit };
    let mut scorer = load(&l.m)?;
    let backend = scorer.backend.describe();
    let r = pollster::block_on(lorb::personalize::personalize(&mut scorer, &lists, &o, |g| {
        eprintln!("{}: {} adapt, {} eval, {} words: first pass {:.2}%, global {:.2}%, with the user's words {:.2}%, personal adapter {:.2}%, both {:.2}% ({:.1} s)", g.group, g.adapt_utterances.len(), g.eval_utterances.len(), g.words, g.first_pass_wer, g.base_wer, g.lexicon_wer, g.adapter_wer, g.personalized_wer, g.seconds);
    }))?;
    let mut v = serde_json::to_value(&r).map_err(|e| Error::Input(e.to_string()))?;
    v["backend"] = json!(backend);
    v["adapter"] = json!(l.m.adapter.as_ref().map(|p| p.display().to_string()));
    v["nbest"] = json!(l.nbest.display().to_string());
    if l.json {
        println!("{v}");
    } else {
        println!("{} groups ({} skipped), {} utterances adapted, {} evaluated ({} words)", r.chapters, r.skipped_groups, r.adapt_utterances, r.eval_utterances, r.words);
        println!("first pass {:.2}%, global adapter {:.2}%, with the user's words {:.2}%, personal adapter {:.2}%, personalised (both) {:.2}% (λ = {}, β = {}, {:.1} s per group, {backend})", r.first_pass_wer, r.base_wer, r.lexicon_wer, r.adapter_wer, r.personalized_wer, r.weight, r.lexicon_weight, r.seconds_per_chapter);
    }
    Ok(())
}
