//! The argument groups several subcommands share (`ModelArgs`, `ListArgs`) and their helpers:
//! the model, head and adapter in use, λ and s1, loading the scorer, reading lists, output.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lorb::{nbest, BackendKind, ClsHead, Error, FirstPass, LongPolicy, Method, NBest, Result, Scorer};
use std::path::{Path, PathBuf};

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model folder (config.json, model.safetensors, tokenizer.json[, cls_head.safetensors])
    #[arg(long, env = "LORB_MODEL")]
    pub model: Option<PathBuf>,
    /// CLS head file (safetensors with `weight` [1,H] and `bias` [1]); overrides the model's and the adapter's
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// LoRA adapter folder in PEFT's format (merged into the weights; its CLS head is used)
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// gpu, cpu or auto (GPU when an adapter is found)
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    /// The GPU's weights: f32, f16 (needs shader-f16; products multiply in f16 and accumulate in
    /// f32) or auto (f16 where the GPU has it)
    #[arg(long, default_value = "f32")]
    pub dtype: lorb::gpu::Dtype,
    /// cls, pll or pll-word (whole-word masking, word-l2r)
    #[arg(long, default_value = "cls")]
    pub method: Method,
    /// Cut hypotheses longer than the model's positions instead of refusing them
    #[arg(long)]
    pub truncate: bool,
    /// Most hypotheses per list (CLS and PLL alike; longer lists are refused, not cut)
    #[arg(long, default_value_t = lorb::score::DEFAULT_MAX_HYPS)]
    pub max_hyps: usize,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// N-best file: JSON Lines (gzip or plain) or SCORE<TAB>TEXT lines
    #[arg(long)]
    pub nbest: PathBuf,
    /// Weight λ of s2 in s1 + λ·s2 (default: the λ tuned with the head, else 1)
    #[arg(long)]
    pub weight: Option<f64>,
    /// First-pass score s1 as a weighted sum of fields, e.g. "0.6*decoder+0.4*ctc" (default:
    /// the one the adapter was tuned with, its train_log.json, else "score")
    #[arg(long)]
    pub s1: Option<FirstPass>,
    /// Use only the first N utterances
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep the top K hypotheses of each list (default: the depth the adapter was trained at)
    #[arg(long)]
    pub depth: Option<usize>,
    /// Do not use the shipped LoRB adapter when no model, head or adapter is given
    #[arg(long)]
    pub no_adapter: bool,
    /// Output file for `rescore` (default: standard output)
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// The default model folder: $LORB_MODEL, else models/all-MiniLM-L6-v2 here or in the repo.
pub fn model_dir(m: &ModelArgs) -> PathBuf {
    if let Some(d) = &m.model {
        return d.clone();
    }
    let local = PathBuf::from("models/all-MiniLM-L6-v2");
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

/// The adapter in use: --adapter (list commands fill in a shipped one, see `list_inputs`).
fn adapter_dir(m: &ModelArgs) -> Option<PathBuf> {
    m.adapter.clone()
}

/// The adapter's train_log.json (what it was tuned with: λ, depth, s1), when there is one.
pub fn adapter_log(m: &ModelArgs) -> Result<Option<lorb::adapter::TrainLog>> {
    match adapter_dir(m) {
        Some(d) => lorb::adapter::TrainLog::read(&d),
        None => Ok(None),
    }
}

/// The head file in use: --head, else the model folder's cls_head.safetensors.
fn head_path(m: &ModelArgs) -> PathBuf {
    m.head.clone().unwrap_or_else(|| model_dir(m).join("cls_head.safetensors"))
}

/// λ: given, else the one tuned when the adapter was trained (its train_log.json), else the
/// one tuned with the CLS head (its .json sidecar), else 1.
pub fn weight(a: &ListArgs, log: Option<&lorb::adapter::TrainLog>) -> Result<f64> {
    let side = head_path(&a.m).with_extension("json");
    let w = match (a.weight, log.and_then(|l| l.weight)) {
        (Some(w), _) | (None, Some(w)) => w,
        (None, None) if a.m.method == Method::Cls && side.exists() => {
            let b = std::fs::read(&side).map_err(|e| Error::Io { path: side.display().to_string(), source: e })?;
            serde_json::from_slice::<serde_json::Value>(&b).ok().and_then(|v| v["weight"].as_f64()).ok_or_else(|| Error::Input(format!("{}: no numeric \"weight\"", side.display())))?
        }
        (None, None) => 1.0,
    };
    lorb::rescore::check_weight(w)?;
    Ok(w)
}

/// β of the user's words' boost: given, else the one chosen with the adapter (its
/// train_log.json "lexicon_weight"), else [`lorb::personalize::DEFAULT_LEXICON_WEIGHT`].
pub fn lexicon_weight(given: Option<f64>, log: Option<&lorb::adapter::TrainLog>) -> Result<f64> {
    let b = given.or(log.and_then(|l| l.lexicon_weight)).unwrap_or(lorb::personalize::DEFAULT_LEXICON_WEIGHT);
    lorb::personalize::check_lexicon_weight(b)?;
    Ok(b)
}

/// s1: given, else the one tuned with the adapter (its train_log.json "s1"), else `score`.
pub fn first_pass(a: &ListArgs, log: Option<&lorb::adapter::TrainLog>) -> Result<FirstPass> {
    if let Some(s) = &a.s1 {
        return Ok(s.clone());
    }
    match log.and_then(|l| l.s1.as_ref()) {
        Some(e) => e.parse(),
        None => Ok(FirstPass::default()),
    }
}

pub fn load(m: &ModelArgs) -> Result<Scorer> {
    let dir = model_dir(m);
    if !dir.join("config.json").exists() {
        return Err(Error::Input(format!(
            "no model at {} (run scripts/fetch_model.sh for the default model, or pass --model DIR)",
            dir.display()
        )));
    }
    let mut s = pollster::block_on(Scorer::load_dir_with(&dir, m.backend, m.dtype, m.adapter.as_deref()))?;
    if let Some(h) = &m.head {
        s.cls_head = Some(ClsHead::load(h, s.model().config.hidden)?);
    }
    if m.truncate {
        s.encoder.policy = LongPolicy::Truncate;
    }
    s.max_hyps = m.max_hyps;
    eprintln!("lorb: {} on {}", dir.display(), s.backend.describe());
    Ok(s)
}

/// The lists with references of `files` (first `limit` of each), minus the utterances of
/// `exclude`.
pub fn training_lists(files: &[PathBuf], limit: Option<usize>, exclude: Option<&Path>) -> Result<Vec<NBest>> {
    let exclude: std::collections::HashSet<String> = match exclude {
        Some(p) => nbest::read_file(p)?.into_iter().map(|nb| nb.utt).collect(),
        None => Default::default(),
    };
    let mut lists = Vec::new();
    for f in files {
        lists.extend(read_lists(f, limit)?.into_iter().filter(|nb| nb.reference.is_some() && !exclude.contains(&nb.utt)));
    }
    Ok(lists)
}

/// One compact line (`--json`) or pretty-printed.
pub fn print_json(v: &serde_json::Value, compact: bool) {
    if compact {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}

pub fn progress(n: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

pub fn read_lists(path: &Path, limit: Option<usize>) -> Result<Vec<NBest>> {
    let mut lists = nbest::read_file(path)?;
    if let Some(n) = limit {
        lists.truncate(n);
    }
    Ok(lists)
}

/// Tokenised n-best lists with their errors, for training and evaluation.
pub fn examples(scorer: &Scorer, lists: &[NBest], s1: &FirstPass, depth: Option<usize>) -> Result<Vec<lorb::train::ListExample>> {
    lists.iter().map(|nb| lorb::train::ListExample::from_nbest(nb, s1, &scorer.encoder, depth)).collect()
}
