//! `lorb`: score texts, rescore n-best lists, evaluate and tune WER, benchmark.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use clap::{Args, Parser, Subcommand};
    use indicatif::{ProgressBar, ProgressStyle};
    use lorb::rescore::{first_pass_scores, rescore_list, EvalSet};
    use lorb::{nbest, BackendKind, ClsHead, Error, FirstPass, LongPolicy, Method, NBest, Result, Scorer};
    use serde_json::json;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    #[derive(Parser)]
    #[command(name = "lorb", version, about = "Rescore ASR n-best lists with BERT-family models on the GPU (WGSL) or CPU")]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Score texts (one per argument, or one per line of --file) with s2
        Score(ScoreArgs),
        /// Rescore n-best lists and write them re-ranked (JSON Lines)
        Rescore(ListArgs),
        /// WER of the first pass, the rescored lists and the oracle
        Eval(ListArgs),
        /// Grid-search the weight λ on a dev set
        Tune(TuneArgs),
        /// Milliseconds per n-best list for CLS and PLL scoring (JSON)
        Bench(BenchArgs),
        /// Fit a CLS head on a frozen encoder with MWER (RescoreBERT's head; LoRB's head-only baseline)
        FitHead(FitHeadArgs),
        /// Train a LoRB adapter (LoRA + CLS head; MWER, MWED, MD) or an MLM head, or fine-tune fully
        Train(Box<TrainArgs>),
        /// Inspect LoRA adapters
        #[command(subcommand)]
        Adapter(AdapterCmd),
        /// Personalisation, measured: per chapter (or speaker, or --group REGEX), train on the
        /// first part's references from the global adapter, and report the WER of the rest
        /// (first pass, global adapter, personalised; JSON with --json)
        Personalize(Box<PersonalizeArgs>),
        /// What n-best files look like to an adapter tuned on them (fields, s1 scale, top-2 gap;
        /// JSON): the profile `train` records in train_log.json and list commands compare
        Profile {
            /// N-best files (their lists are pooled)
            #[arg(required = true)]
            files: Vec<PathBuf>,
            /// First-pass score expression
            #[arg(long, default_value = "score")]
            s1: FirstPass,
            /// Keep the top K hypotheses of each list
            #[arg(long)]
            depth: Option<usize>,
        },
    }

    #[derive(Args)]
    struct TrainArgs {
        #[command(flatten)]
        m: ModelArgs,
        /// mwer, mwed, md (distil the teacher's PLL into the CLS score) or mlm (text)
        #[arg(long, default_value = "mwer")]
        objective: lorb::train::Objective,
        /// Training data: n-best files with references (mwer/mwed/md), or for mlm text files (one
        /// sentence per line, gzip or plain) or n-best files (their references); repeat for several
        #[arg(long, required = true)]
        train: Vec<PathBuf>,
        /// Dev n-best file for early stopping and tuning λ (default: hold out --holdout lists)
        #[arg(long)]
        dev: Option<PathBuf>,
        /// Lists held out of --train (after a seeded shuffle) when no --dev is given
        #[arg(long, default_value_t = 200)]
        holdout: usize,
        /// Report WER on this n-best file at the end, with λ tuned on dev (never trained or tuned on)
        #[arg(long)]
        test: Option<PathBuf>,
        /// Leave out the utterances of this n-best file (e.g. the demo sample)
        #[arg(long)]
        exclude: Option<PathBuf>,
        /// Use only the first N utterances (or text lines) of each training file
        #[arg(long)]
        limit: Option<usize>,
        /// Use only the first N utterances of the dev and test files
        #[arg(long)]
        eval_limit: Option<usize>,
        /// Keep the top K hypotheses of every list (train, dev and test alike)
        #[arg(long)]
        depth: Option<usize>,
        #[arg(long, default_value = "score")]
        s1: FirstPass,
        /// After training, also tune these terms' coefficients of --s1 (comma-separated, e.g.
        /// "lm") jointly with λ on the dev lists; train_log.json keeps the chosen --s1, which
        /// eval, rescore and tune then use
        #[arg(long, value_delimiter = ',')]
        tune_s1: Vec<String>,
        /// Output adapter folder (PEFT format) with train_log.json
        #[arg(long)]
        out: PathBuf,
        /// Replace the adapter already at --out (only a folder of files lorb writes)
        #[arg(long)]
        force: bool,
        /// LoRA rank
        #[arg(long, default_value_t = 4)]
        r: usize,
        /// LoRA α (scale α/r)
        #[arg(long, default_value_t = 8.0)]
        alpha: f64,
        /// LoRA targets: query, key, value, attn_out, ffn_in, ffn_out (comma-separated)
        #[arg(long, default_value = "query,value", value_delimiter = ',')]
        targets: Vec<String>,
        /// Scale α/√r (rsLoRA)
        #[arg(long)]
        rslora: bool,
        /// Train no LoRA pairs: the CLS head (and MLM head) only, encoder frozen
        #[arg(long, conflicts_with = "full")]
        head_only: bool,
        /// Full fine-tuning: every encoder weight trainable (for comparison; writes weights)
        #[arg(long)]
        full: bool,
        /// Train the MLM head transform (a fresh one is made for encoder-only models)
        #[arg(long)]
        mlm_head: bool,
        /// Teacher model folder with an MLM head, for md (its PLL is computed once)
        #[arg(long)]
        teacher: Option<PathBuf>,
        /// An adapter for the teacher (e.g. a trained MLM head for an encoder-only model)
        #[arg(long, requires = "teacher")]
        teacher_adapter: Option<PathBuf>,
        /// Cache of the teacher's PLL scores (JSON lines by utterance and hypothesis texts): read
        /// when present, extended with every list scored
        #[arg(long, requires = "teacher")]
        teacher_cache: Option<PathBuf>,
        /// Scale of s1 inside MWER/MWED (λ = 1/κ at inference, then tuned)
        #[arg(long, default_value_t = 1.0)]
        kappa: f64,
        /// Weight of the correlation regulariser L_cor
        #[arg(long, default_value_t = 0.0)]
        cor_weight: f64,
        #[arg(long, default_value_t = 2e-4)]
        lr: f64,
        /// Learning rate of the CLS/MLM heads (default: --lr); e.g. a larger one with --full
        #[arg(long)]
        head_lr: Option<f64>,
        #[arg(long, default_value_t = 0.01)]
        weight_decay: f64,
        /// Warm-up as a fraction of all steps (then linear decay to 0)
        #[arg(long, default_value_t = 0.1)]
        warmup: f64,
        #[arg(long, default_value_t = 1.0)]
        clip: f64,
        #[arg(long, default_value_t = 2)]
        epochs: usize,
        /// Lists (or, for mlm, texts) per optimiser step
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Epochs without a better dev WER before stopping (0: never)
        #[arg(long, default_value_t = 2)]
        patience: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Checkpoint folder: written every epoch and on stop; an existing one is resumed
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Seconds for training (steps and per-epoch dev evaluations): the run is cut to the steps
        /// that fit at the recent pace, with the learning-rate schedule fitted to them (not resumable)
        #[arg(long, conflicts_with = "checkpoint")]
        time_limit: Option<f64>,
        #[arg(long)]
        json: bool,
    }

    #[derive(Subcommand)]
    enum AdapterCmd {
        /// Rank, α, targets and trainable parameters (count and fraction of the base model)
        Info {
            /// Adapter folder (adapter_config.json, adapter_model.safetensors)
            dir: PathBuf,
            /// The base model (default: the default model)
            #[arg(long, env = "LORB_MODEL")]
            model: Option<PathBuf>,
            #[arg(long)]
            json: bool,
        },
    }

    #[derive(Args)]
    struct FitHeadArgs {
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

    #[derive(Args, Clone)]
    struct ModelArgs {
        /// Model folder (config.json, model.safetensors, tokenizer.json[, cls_head.safetensors])
        #[arg(long, env = "LORB_MODEL")]
        model: Option<PathBuf>,
        /// CLS head file (safetensors with `weight` [1,H] and `bias` [1]); overrides the model's and the adapter's
        #[arg(long)]
        head: Option<PathBuf>,
        /// LoRA adapter folder in PEFT's format (merged into the weights; its CLS head is used)
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// gpu, cpu or auto (GPU when an adapter is found)
        #[arg(long, default_value = "auto")]
        backend: BackendKind,
        /// cls, pll or pll-word (whole-word masking, word-l2r)
        #[arg(long, default_value = "cls")]
        method: Method,
        /// Cut hypotheses longer than the model's positions instead of refusing them
        #[arg(long)]
        truncate: bool,
        /// Most hypotheses per list (CLS and PLL alike; longer lists are refused, not cut)
        #[arg(long, default_value_t = lorb::score::DEFAULT_MAX_HYPS)]
        max_hyps: usize,
    }

    #[derive(Args)]
    struct ScoreArgs {
        #[command(flatten)]
        m: ModelArgs,
        /// Texts to score
        texts: Vec<String>,
        /// Read texts from a file, one per line
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print the final [CLS] vectors instead of scores
        #[arg(long)]
        vectors: bool,
        #[arg(long)]
        json: bool,
    }

    #[derive(Args)]
    struct ListArgs {
        #[command(flatten)]
        m: ModelArgs,
        /// N-best file: JSON Lines (gzip or plain) or SCORE<TAB>TEXT lines
        #[arg(long)]
        nbest: PathBuf,
        /// Weight λ of s2 in s1 + λ·s2 (default: the λ tuned with the head, else 1)
        #[arg(long)]
        weight: Option<f64>,
        /// First-pass score s1 as a weighted sum of fields, e.g. "0.6*decoder+0.4*ctc" (default:
        /// the one the adapter was tuned with, its train_log.json, else "score")
        #[arg(long)]
        s1: Option<FirstPass>,
        /// Use only the first N utterances
        #[arg(long)]
        limit: Option<usize>,
        /// Keep the top K hypotheses of each list (default: the depth the adapter was trained at)
        #[arg(long)]
        depth: Option<usize>,
        /// Do not use the shipped LoRB adapter when no model, head or adapter is given
        #[arg(long)]
        no_adapter: bool,
        /// Output file for `rescore` (default: standard output)
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    }

    #[derive(Args)]
    struct PersonalizeArgs {
        #[command(flatten)]
        list: ListArgs,
        /// chapter (SPEAKER-CHAPTER of LibriSpeech ids), speaker, or a regular expression whose
        /// first capture group (else whole match) names an utterance's group
        #[arg(long, default_value = "chapter")]
        group: String,
        /// The first part of each group (in file order) whose references train
        #[arg(long, default_value_t = 0.5)]
        adapt_fraction: f64,
        /// Epochs over each group's first part
        #[arg(long, default_value_t = 2)]
        epochs: usize,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
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

    #[derive(Args)]
    struct TuneArgs {
        #[command(flatten)]
        list: ListArgs,
        /// λ grid as LO:HI:STEP (0:0:1 tunes the first pass alone, with no model loaded)
        #[arg(long, default_value = "0:1:0.05")]
        grid: String,
        /// Also tune these terms' coefficients of the --s1 expression (comma-separated, e.g.
        /// "lm" or "lm,ctc") jointly with λ, by coordinate descent on the dev WER
        #[arg(long, value_delimiter = ',')]
        tune_s1: Vec<String>,
    }

    #[derive(Args)]
    struct BenchArgs {
        #[command(flatten)]
        m: ModelArgs,
        /// N-best file whose first lists are scored (default: the ESPnet 30-best dev_clean)
        #[arg(long)]
        nbest: Option<PathBuf>,
        /// Lists to time (after one warm-up list)
        #[arg(long, default_value_t = 5)]
        lists: usize,
        /// Skip PLL (slow on CPU)
        #[arg(long)]
        no_pll: bool,
        /// GPU matmul tiles: auto, small (64×64) or wide (128×128)
        #[arg(long, default_value = "auto")]
        tiles: lorb::gpu::ops::matmul::Tiles,
        /// Keep wgpu's injected bounds checks in the kernels (slower; the default trusts them)
        #[arg(long)]
        checked_shaders: bool,
        /// Report time per kernel: GPU time (timestamp queries; one compute pass per dispatch), or
        /// on the CPU backend wall-clock time per op
        #[arg(long)]
        profile: bool,
        /// Time training steps instead: LoRA, the CLS head alone and full fine-tuning, on the GPU
        /// (when the backend is one) and on the CPU
        #[arg(long)]
        train: bool,
        /// With --train: lists per step (the GPU runs a step's lists as one batch)
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// With --train: skip full fine-tuning (slow on CPU)
        #[arg(long)]
        no_full: bool,
        #[arg(long)]
        json: bool,
    }

    pub fn main() -> i32 {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
        // matrixmultiply counts physical cores (1 on many VMs); use every logical one unless told.
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
        }
        let cli = Cli::parse();
        let r = match cli.cmd {
            Cmd::Score(a) => score(a),
            Cmd::Rescore(a) => rescore(a),
            Cmd::Eval(a) => eval(a),
            Cmd::Tune(a) => tune(a),
            Cmd::Bench(a) => bench(a),
            Cmd::FitHead(a) => fit_head(a),
            Cmd::Train(a) => train(*a),
            Cmd::Adapter(AdapterCmd::Info { dir, model, json }) => adapter_info(&dir, model, json),
            Cmd::Profile { files, s1, depth } => profile(&files, &s1, depth),
            Cmd::Personalize(a) => personalize(*a),
        };
        match r {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("lorb: error [{}]: {e}", e.kind());
                1
            }
        }
    }

    /// The default model folder: $LORB_MODEL, else models/all-MiniLM-L6-v2 here or in the repo.
    fn model_dir(m: &ModelArgs) -> PathBuf {
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
    fn adapter_log(m: &ModelArgs) -> Result<Option<lorb::adapter::TrainLog>> {
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
    fn weight(a: &ListArgs) -> Result<f64> {
        let side = head_path(&a.m).with_extension("json");
        let w = match (a.weight, adapter_log(&a.m)?.and_then(|l| l.weight)) {
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

    /// s1: given, else the one tuned with the adapter (its train_log.json "s1"), else `score`.
    fn first_pass(a: &ListArgs) -> Result<FirstPass> {
        if let Some(s) = &a.s1 {
            return Ok(s.clone());
        }
        match adapter_log(&a.m)?.and_then(|l| l.s1) {
            Some(e) => e.parse(),
            None => Ok(FirstPass::default()),
        }
    }

    fn load(m: &ModelArgs) -> Result<Scorer> {
        let dir = model_dir(m);
        if !dir.join("config.json").exists() {
            return Err(Error::Input(format!(
                "no model at {} (run scripts/fetch_model.sh for the default model, or pass --model DIR)",
                dir.display()
            )));
        }
        let mut s = pollster::block_on(Scorer::load_dir_with(&dir, m.backend, m.adapter.as_deref()))?;
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
    fn training_lists(files: &[PathBuf], limit: Option<usize>, exclude: Option<&Path>) -> Result<Vec<NBest>> {
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
    fn print_json(v: &serde_json::Value, compact: bool) {
        if compact {
            println!("{v}");
        } else {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        }
    }

    fn progress(n: usize, what: &str) -> ProgressBar {
        let pb = ProgressBar::new(n as u64);
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        pb
    }

    fn read_lists(path: &Path, limit: Option<usize>) -> Result<Vec<NBest>> {
        let mut lists = nbest::read_file(path)?;
        if let Some(n) = limit {
            lists.truncate(n);
        }
        Ok(lists)
    }

    /// Final [CLS] vectors of every list's hypotheses (`[hyps × H]` per list), `group`
    /// hypotheses per encoder batch ([`Scorer::cls_lists`]), with a progress bar.
    fn cls_vectors_per_list(scorer: &mut Scorer, lists: &[NBest], group: usize) -> Result<Vec<Vec<f32>>> {
        let pb = progress(lists.len(), "[CLS] vectors");
        let v = pollster::block_on(scorer.cls_lists(lists, group, None, &mut |n| pb.inc(n as u64)))?;
        pb.finish_and_clear();
        Ok(v)
    }

    /// s2 for every hypothesis of every list ([`Scorer::score_lists`]), with a progress bar.
    fn second_pass(scorer: &mut Scorer, lists: &[NBest], method: Method) -> Result<Vec<Vec<f64>>> {
        let pb = progress(lists.len(), "scoring");
        let s = pollster::block_on(scorer.score_lists(lists, method, &mut |n| pb.inc(n as u64)))?;
        pb.finish_and_clear();
        Ok(s)
    }

    fn score(a: ScoreArgs) -> Result<()> {
        let mut texts = a.texts.clone();
        if let Some(f) = &a.file {
            let s = std::fs::read(f).map_err(|e| Error::Io { path: f.display().to_string(), source: e })?;
            let s = String::from_utf8(s).map_err(|_| Error::Input(format!("{} is not valid UTF-8", f.display())))?;
            texts.extend(s.lines().map(str::to_string));
        }
        if texts.is_empty() {
            return Err(Error::Input("no texts to score".into()));
        }
        let mut scorer = load(&a.m)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        if a.vectors {
            let v = pollster::block_on(scorer.cls_vectors(&refs))?;
            for (t, v) in texts.iter().zip(v) {
                if a.json {
                    println!("{}", json!({"text": t, "cls": v}));
                } else {
                    println!("{t}\t{}", v.iter().map(|x| format!("{x:.6}")).collect::<Vec<_>>().join(" "));
                }
            }
        } else {
            let s = pollster::block_on(scorer.score_texts(&refs, a.m.method))?;
            for (t, s) in texts.iter().zip(s) {
                if a.json {
                    println!("{}", json!({"text": t, "score": s}));
                } else {
                    println!("{s:.6}\t{t}");
                }
            }
        }
        Ok(())
    }

    fn s1_all(lists: &[NBest], fp: &FirstPass) -> Result<Vec<Vec<f64>>> {
        lists.iter().map(|nb| first_pass_scores(nb, fp)).collect()
    }

    /// The LoRB adapters that ship with lorb for CLS rescoring, the default first. With no model,
    /// head or adapter given (and the CLS method), list commands use the one whose training
    /// lists are most like the input's ([`lorb::rescore::ListProfile`]).
    const SHIPPED_ADAPTERS: [&str; 2] = ["adapters/minilm-blstm-lorb", "adapters/minilm-espnet30-lorb-cor"];

    fn shipped(rel: &str) -> PathBuf {
        let local = PathBuf::from(rel);
        if local.exists() {
            local
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
        }
    }

    /// The profile of `lists` next to the one an adapter's log recorded (under the adapter's s1,
    /// or `--s1`): `None` when the log has none or the lists lack a field its s1 needs.
    fn profiles(log: &lorb::adapter::TrainLog, lists: &[NBest], s1: Option<&FirstPass>) -> Option<(lorb::rescore::ListProfile, lorb::rescore::ListProfile)> {
        let trained = log.list_profile.clone()?;
        let fp = match s1 {
            Some(f) => f.clone(),
            None => trained.s1.parse().ok()?,
        };
        Some((trained, lorb::rescore::ListProfile::of(lists, &fp).ok()?))
    }

    /// The lists of a list command (first `--limit`), with the adapter to use: the shipped one
    /// whose training lists are most like these when the user gave no model, head or adapter;
    /// a warning when the given adapter was trained on unlike lists. The lists are then cut to
    /// `--depth` or to the depth the adapter was trained at: train, tune and test at one depth.
    fn list_inputs(mut a: ListArgs) -> Result<(ListArgs, Vec<NBest>)> {
        if a.limit == Some(0) || a.depth == Some(0) {
            return Err(Error::Input("--limit and --depth must be at least 1".into()));
        }
        let mut lists = read_lists(&a.nbest, a.limit)?;
        if lists.is_empty() {
            return Err(Error::Input(format!("{}: no n-best lists", a.nbest.display())));
        }
        let file = a.nbest.display().to_string();
        // A shipped adapter is chosen (and says so) when the user gave none.
        let chose = a.m.adapter.is_none() && a.m.model.is_none() && a.m.head.is_none() && a.m.method == Method::Cls && !a.no_adapter && a.weight != Some(0.0);
        if chose {
            let mut best: Option<(f64, PathBuf, Option<String>)> = None;
            for rel in SHIPPED_ADAPTERS {
                let dir = shipped(rel);
                let Some(log) = lorb::adapter::TrainLog::read(&dir)? else { continue };
                let Some((trained, here)) = profiles(&log, &lists, a.s1.as_ref()) else { continue };
                let d = trained.distance(&here);
                if best.as_ref().is_none_or(|b| d < b.0) {
                    best = Some((d, dir, trained.unlike(&here)));
                }
            }
            match &best {
                Some((_, dir, None)) => eprintln!("lorb: using the shipped LoRB adapter {}: it was trained on lists like {file}'s (--adapter DIR for another, --no-adapter for the bare model)", dir.display()),
                Some((_, dir, Some(why))) => eprintln!("lorb: warning: no shipped adapter was trained on lists like {file}'s; the nearest, {}, differs ({why}), and its λ may raise the WER here: tune λ on your own dev lists (`lorb tune --adapter {} --nbest DEV`) and pass --weight, or --no-adapter", dir.display(), dir.display()),
                None => {}
            }
            a.m.adapter = best.map(|b| b.1);
        }
        let log = adapter_log(&a.m)?;
        let given = if chose { None } else { a.m.adapter.as_ref().zip(log.as_ref().and_then(|l| profiles(l, &lists, a.s1.as_ref()))) };
        if let Some((dir, (trained, here))) = given {
            if let Some(why) = trained.unlike(&here) {
                eprintln!("lorb: warning: {} was trained on lists unlike {file}'s ({why}); its λ may raise the WER here: tune λ on your own dev lists (`lorb tune --adapter {} --nbest DEV`) and pass --weight, or pick an adapter trained on lists like these", dir.display(), dir.display());
            }
        }
        let trained = log.and_then(|l| l.depth);
        if let Some(k) = a.depth.or(trained) {
            for nb in &mut lists {
                nb.hyps.truncate(k.max(1));
            }
        }
        Ok((a, lists))
    }

    fn rescore(a: ListArgs) -> Result<()> {
        let (a, lists) = list_inputs(a)?;
        let lambda = weight(&a)?;
        let mut scorer = load(&a.m)?;
        let s2 = second_pass(&mut scorer, &lists, a.m.method)?;
        let s1 = s1_all(&lists, &first_pass(&a)?)?;
        let mut w: Box<dyn Write> = match &a.out {
            Some(p) => Box::new(std::fs::File::create(p).map_err(|e| Error::Io { path: p.display().to_string(), source: e })?),
            None => Box::new(std::io::stdout().lock()),
        };
        for ((nb, a1), b2) in lists.iter().zip(&s1).zip(&s2) {
            let r = rescore_list(nb, a1, b2, lambda);
            writeln!(w, "{}", serde_json::to_string(&r).map_err(|e| Error::Input(e.to_string()))?)
                .map_err(|e| Error::Io { path: "output".into(), source: e })?;
        }
        Ok(())
    }

    fn eval(a: ListArgs) -> Result<()> {
        let t0 = Instant::now();
        let (a, lists) = list_inputs(a)?;
        let fp = first_pass(&a)?;
        let s1 = s1_all(&lists, &fp)?;
        let w = weight(&a)?;
        // λ = 0 needs no model: the first pass alone decides.
        let (s2, backend) = if w == 0.0 {
            (lists.iter().map(|nb| vec![0.0; nb.hyps.len()]).collect(), "none".to_string())
        } else {
            let mut scorer = load(&a.m)?;
            let d = scorer.backend.describe();
            (second_pass(&mut scorer, &lists, a.m.method)?, d)
        };
        let set = EvalSet::new(&lists, s1, s2);
        set.require_references(&a.nbest.display().to_string())?;
        if set.unreferenced > 0 {
            eprintln!("lorb: {} of {} lists have no reference and are not counted", set.unreferenced, lists.len());
        }
        let r = set.report(w);
        let secs = t0.elapsed().as_secs_f64();
        if a.json {
            let mut v = serde_json::to_value(&r).map_err(|e| Error::Input(e.to_string()))?;
            v["seconds"] = json!(secs);
            v["method"] = json!(format!("{:?}", a.m.method).to_lowercase());
            v["backend"] = json!(backend);
            v["nbest"] = json!(a.nbest.display().to_string());
            v["adapter"] = json!(a.m.adapter.as_ref().map(|p| p.display().to_string()));
            v["depth"] = json!(lists.iter().map(|nb| nb.hyps.len()).max());
            v["s1"] = json!(fp.to_string());
            println!("{v}");
        } else {
            println!("{} utterances, {} words ({})", r.utterances, r.words, a.nbest.display());
            println!("first-pass WER  {:.2}%  (s1 = {fp})", r.first_pass_wer);
            println!("rescored WER    {:.2}%  (λ = {}, {:?}, {backend})", r.rescored_wer, r.weight, a.m.method);
            println!("oracle WER      {:.2}%", r.oracle_wer);
            println!("{secs:.1} s");
        }
        Ok(())
    }

    fn tune(a: TuneArgs) -> Result<()> {
        let g = lorb::rescore::parse_grid(&a.grid)?;
        let first_pass_only = g.iter().all(|&w| w == 0.0);
        let (l, lists) = list_inputs(ListArgs { weight: if first_pass_only { Some(0.0) } else { a.list.weight }, ..a.list })?;
        let l = &l;
        let s2 = if first_pass_only {
            lists.iter().map(|nb| vec![0.0; nb.hyps.len()]).collect()
        } else {
            let mut scorer = load(&l.m)?;
            second_pass(&mut scorer, &lists, l.m.method)?
        };
        let fp = first_pass(l)?;
        if !a.tune_s1.is_empty() {
            let t = lorb::rescore::tune_first_pass(&lists, &fp, &a.tune_s1, s2, &g)?;
            if l.json {
                println!("{}", json!({"s1": t.first_pass.to_string(), "weight": t.weight, "dev_wer": t.wer, "given_s1": fp.to_string(), "given_s1_dev_wer": t.start_wer}));
            } else {
                println!("given  --s1 {:?}: dev WER {:.3}% at its best λ", fp.to_string(), t.start_wer);
                println!("chosen --s1 {:?} --weight {}: dev WER {:.3}%", t.first_pass.to_string(), t.weight, t.wer);
            }
            return Ok(());
        }
        let set = EvalSet::new(&lists, s1_all(&lists, &fp)?, s2);
        set.require_references(&l.nbest.display().to_string())?;
        let (curve, best) = set.tune(&g);
        let r = set.report(best);
        if l.json {
            let c: Vec<_> = curve.iter().map(|(w, e)| json!({"weight": w, "wer": e})).collect();
            println!("{}", json!({"weight": best, "dev_wer": r.rescored_wer, "first_pass_wer": r.first_pass_wer, "oracle_wer": r.oracle_wer, "curve": c}));
        } else {
            for (w, e) in &curve {
                println!("λ = {w:<8.4} WER {e:.3}%");
            }
            println!("chosen λ = {best} (dev WER {:.3}%, first pass {:.3}%)", r.rescored_wer, r.first_pass_wer);
        }
        Ok(())
    }

    fn bench(a: BenchArgs) -> Result<()> {
        let path = a.nbest.clone().unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/librispeech-espnet-30best/dev_clean.jsonl.gz")
        });
        let lists = read_lists(&path, Some(a.lists + 1))?;
        if lists.len() < 2 {
            return Err(Error::Input(format!("{}: bench needs at least 2 n-best lists (one warms up, the rest are timed); it has {}", path.display(), lists.len())));
        }
        let mut scorer = load(&a.m)?;
        if a.train {
            return bench_train(&a, &lists, &scorer, &path);
        }
        let synthetic = lorb::bench::ensure_heads(&mut scorer);
        if scorer.backend.is_gpu() && (a.checked_shaders || a.profile) {
            let opts = lorb::gpu::GpuOptions { allow_software: true, trusted_shaders: !a.checked_shaders, profile: a.profile, ..Default::default() };
            let model = std::sync::Arc::new(scorer.model().clone());
            scorer.backend = lorb::Backend::Gpu(Box::new(pollster::block_on(lorb::gpu::GpuBackend::with_options(model, &opts))?));
        }
        if let lorb::Backend::Gpu(g) = &mut scorer.backend {
            g.tiles = a.tiles;
        }
        let mut profiles = serde_json::Map::new();
        let h = scorer.model().config.hidden;
        let texts: Vec<Vec<&str>> = lists.iter().map(|nb| nb.hyps.iter().map(|h| h.text.as_str()).collect()).collect();
        let tokens: usize = texts[1..].iter().flatten().map(|t| scorer.encoder.encode(0, t).map(|x| x.len()).unwrap_or(0)).sum();
        let n_hyps: usize = texts[1..].iter().map(|t| t.len()).sum();
        let lists_timed = (texts.len() - 1) as f64;
        let mut time = |method: Method| -> Result<f64> {
            pollster::block_on(scorer.score_list(&texts[0], method))?; // warm-up: pipelines, buffers
            if let lorb::Backend::Gpu(g) = &mut scorer.backend {
                g.reset_profile();
            }
            lorb::cpu::profile::enable(a.profile && !scorer.backend.is_gpu());
            let t0 = Instant::now();
            for t in &texts[1..] {
                pollster::block_on(scorer.score_list(t, method))?;
            }
            let ms = t0.elapsed().as_secs_f64() * 1000.0 / lists_timed;
            lorb::cpu::profile::enable(false);
            let cpu: serde_json::Map<String, serde_json::Value> = lorb::cpu::profile::take()
                .into_iter()
                .map(|(k, n, s)| (k.to_string(), json!({"calls_per_list": n as f64 / lists_timed, "ms_per_list": 1000.0 * s / lists_timed})))
                .collect();
            if !cpu.is_empty() {
                profiles.insert(format!("{method:?}").to_lowercase(), serde_json::Value::Object(cpu));
            }
            if let lorb::Backend::Gpu(g) = &scorer.backend {
                let p: serde_json::Map<String, serde_json::Value> = g
                    .profile()
                    .into_iter()
                    .map(|(k, n, ms)| (k.to_string(), json!({"dispatches_per_list": n as f64 / lists_timed, "gpu_ms_per_list": ms / lists_timed})))
                    .collect();
                if !p.is_empty() {
                    profiles.insert(format!("{method:?}").to_lowercase(), serde_json::Value::Object(p));
                }
            }
            Ok(ms)
        };
        let cls = time(Method::Cls)?;
        let pll = if a.no_pll { None } else { Some(time(Method::Pll)?) };
        let c = &scorer.model().config;
        let v = json!({
            "backend": scorer.backend.describe(),
            "model": model_dir(&a.m).display().to_string(),
            "shape": {"layers": c.layers, "hidden": h, "heads": c.heads, "intermediate": c.intermediate, "vocab": c.vocab_size},
            "nbest": path.display().to_string(),
            "lists": texts.len() - 1,
            "hyps_per_list": n_hyps as f64 / (texts.len() - 1) as f64,
            "mean_tokens": tokens as f64 / n_hyps as f64,
            "cls_ms_per_list": cls,
            "pll_ms_per_list": pll,
            "synthetic_heads": synthetic,
            "matmul_tiles": format!("{:?}", a.tiles).to_lowercase(),
            "trusted_shaders": scorer.backend.is_gpu() && !a.checked_shaders,
            "profile": profiles,
        });
        print_json(&v, a.json);
        Ok(())
    }

    /// `lorb bench --train`: milliseconds per optimiser step (one list, MWER + L_cor) for each
    /// way of training, with the trainable-parameter counts.
    fn bench_train(a: &BenchArgs, lists: &[NBest], scorer: &Scorer, path: &Path) -> Result<()> {
        use lorb::train::{Objective, TrainConfig, Trainer};
        let ex = examples(scorer, lists, &FirstPass::default(), None)?;
        let model = scorer.model().clone();
        let base = model.parameter_count();
        let cfg = TrainConfig { objective: Objective::Mwer, kappa: 1.0 / 6.0, cor_weight: 0.1, ..Default::default() };
        let (pad, mask) = (scorer.encoder.pad_id(), scorer.encoder.mask_id());
        let lora = || lorb::Adapter::new_lora(&model.config, 4, 8.0, false, &[lorb::adapter::Target::Query, lorb::adapter::Target::Value], 0);
        let mut modes: Vec<(&str, Trainer)> = Vec::new();
        if scorer.backend.is_gpu() {
            let on_gpu = |mut t: Trainer| -> Result<Trainer> {
                pollster::block_on(t.use_backend(BackendKind::Gpu))?;
                Ok(t)
            };
            modes.push(("lora_gpu", on_gpu(Trainer::new(model.clone(), Some(lora()?), None, cfg.clone(), pad, mask)?)?));
            modes.push(("head_only_gpu", on_gpu(Trainer::new(model.clone(), None, None, cfg.clone(), pad, mask)?)?));
            if !a.no_full {
                modes.push(("full_gpu", on_gpu(Trainer::new(model.clone(), None, None, TrainConfig { full: true, ..cfg.clone() }, pad, mask)?)?));
            }
        }
        modes.push(("lora_cpu", Trainer::new(model.clone(), Some(lora()?), None, cfg.clone(), pad, mask)?));
        modes.push(("head_only_cpu", Trainer::new(model.clone(), None, None, cfg.clone(), pad, mask)?));
        if !a.no_full {
            modes.push(("full_cpu", Trainer::new(model.clone(), None, None, TrainConfig { full: true, ..cfg.clone() }, pad, mask)?));
        }
        let mut out = serde_json::Map::new();
        let per = a.batch.max(1);
        let timed: Vec<&lorb::train::ListExample> = ex[1..].iter().collect();
        // Warm-up: a step of the timed size (its buffers and tape are then allocated).
        let warm: Vec<&lorb::train::ListExample> = std::iter::once(&ex[0]).chain(timed.iter().copied()).take(per).collect();
        for (name, mut t) in modes {
            pollster::block_on(t.step_lists(&warm))?;
            let t0 = Instant::now();
            let mut steps = 0;
            for step in timed.chunks(per) {
                pollster::block_on(t.step_lists(step))?;
                steps += 1;
            }
            let secs = t0.elapsed().as_secs_f64();
            let (ms, ms_list) = (1000.0 * secs / steps.max(1) as f64, 1000.0 * secs / timed.len().max(1) as f64);
            let n = t.trainable_parameters();
            eprintln!("lorb: {name}: {ms:.1} ms per step of {per} lists ({ms_list:.1} ms per list), {n} trainable parameters");
            out.insert(name.into(), json!({"ms_per_step": ms, "ms_per_list": ms_list, "trainable_parameters": n, "trainable_percent": 100.0 * n as f64 / base as f64, "device": t.device()}));
        }
        let c = &model.config;
        let v = json!({
            "train": out,
            "model": model_dir(&a.m).display().to_string(),
            "shape": {"layers": c.layers, "hidden": c.hidden, "heads": c.heads, "intermediate": c.intermediate, "vocab": c.vocab_size},
            "nbest": path.display().to_string(),
            "lists": ex.len() - 1,
            "hyps_per_list": ex[1..].iter().map(|e| e.ids.len()).sum::<usize>() as f64 / (ex.len() - 1).max(1) as f64,
            "objective": "mwer + 0.1·L_cor, LoRA r=4 α=8 on query/value plus the CLS head",
            "lists_per_step": per,
            "base_parameters": base,
        });
        print_json(&v, a.json);
        Ok(())
    }

    fn fit_head(a: FitHeadArgs) -> Result<()> {
        use lorb::train::{fit_cls_head, HeadFitOptions, ListFeatures};
        use lorb::wer::{word_count, word_errors};
        let t0 = Instant::now();
        let lists = training_lists(&a.train, a.limit, a.exclude.as_deref())?;
        if lists.len() < 2 {
            return Err(Error::Input("fit-head needs at least two training lists with references".into()));
        }
        let mut scorer = load(&a.m)?;
        let hidden = scorer.model().config.hidden;
        let mut feats: Vec<ListFeatures> = Vec::with_capacity(lists.len());
        for (nb, cls) in lists.iter().zip(cls_vectors_per_list(&mut scorer, &lists, a.group)?) {
            let r = nb.reference.as_deref().unwrap_or_default();
            feats.push(ListFeatures {
                s1: first_pass_scores(nb, &a.s1)?,
                errors: nb.hyps.iter().map(|h| word_errors(r, &h.text) as f64).collect(),
                words: word_count(r),
                cls,
            });
        }
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

    /// Tokenised n-best lists with their errors, for training and evaluation.
    fn examples(scorer: &Scorer, lists: &[NBest], s1: &FirstPass, depth: Option<usize>) -> Result<Vec<lorb::train::ListExample>> {
        lists.iter().map(|nb| lorb::train::ListExample::from_nbest(nb, s1, &scorer.encoder, depth)).collect()
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

    /// MD's teacher scores kept on disk: one JSON line per list, `{"utt", "key", "pll"}`, where
    /// `key` hashes the hypothesis texts (so another depth or n-best file does not match).
    struct TeacherCache {
        path: Option<PathBuf>,
        map: std::collections::HashMap<(String, u64), Vec<f64>>,
        hits: usize,
    }

    impl TeacherCache {
        fn key(texts: &[&str]) -> u64 {
            // FNV-1a over the texts, each ended by a 0 byte.
            texts.iter().flat_map(|t| t.bytes().chain([0u8])).fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
        }

        fn open(path: Option<&Path>) -> Result<Self> {
            let mut map = std::collections::HashMap::new();
            if let Some(p) = path.filter(|p| p.exists()) {
                let io = |e| Error::Io { path: p.display().to_string(), source: e };
                for (i, line) in std::fs::read_to_string(p).map_err(io)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Input(format!("{}:{}: {e}", p.display(), i + 1)))?;
                    let (Some(utt), Some(key), Some(pll)) = (v["utt"].as_str(), v["key"].as_str().and_then(|k| u64::from_str_radix(k, 16).ok()), v["pll"].as_array()) else {
                        return Err(Error::Input(format!("{}:{}: expected {{\"utt\", \"key\", \"pll\"}}", p.display(), i + 1)));
                    };
                    map.insert((utt.to_string(), key), pll.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect());
                }
            }
            Ok(TeacherCache { path: path.map(Path::to_path_buf), map, hits: 0 })
        }

        fn get(&mut self, utt: &str, texts: &[&str]) -> Option<Vec<f64>> {
            let v = self.map.get(&(utt.to_string(), Self::key(texts))).filter(|v| v.len() == texts.len()).cloned();
            self.hits += v.is_some() as usize;
            v
        }

        fn put(&mut self, utt: &str, texts: &[&str], pll: &[f64]) -> Result<()> {
            let Some(p) = &self.path else { return Ok(()) };
            let line = json!({"utt": utt, "key": format!("{:016x}", Self::key(texts)), "pll": pll});
            let io = |e| Error::Io { path: p.display().to_string(), source: e };
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(io)?;
            std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()).map_err(io)
        }
    }

    fn train(a: TrainArgs) -> Result<()> {
        use lorb::train::{fit, FitOptions, Objective, TrainConfig, Trainer};
        let t0 = Instant::now();
        // Everything the arguments alone decide is checked before any work.
        let cfg = TrainConfig {
            objective: a.objective,
            kappa: a.kappa,
            cor_weight: a.cor_weight,
            cls_head: a.objective != Objective::Mlm,
            mlm_head: a.mlm_head || (a.objective == Objective::Mlm && !a.full),
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
        let lora = begun.lora;
        if let Some(st) = &start {
            if begun.continues {
                eprintln!("lorb: continuing the adapter's LoRA pairs (r {}, α {}; --r/--alpha/--targets are ignored)", st.r, st.alpha);
            }
            eprintln!("lorb: starting from the adapter ({} LoRA pairs{}{})", st.pairs.len(), if st.cls_head.is_some() { ", CLS head" } else { "" }, if st.mlm_head.is_empty() { "" } else { ", MLM head" });
        }
        let mask = scorer.encoder.mask_id();
        let pad = scorer.encoder.pad_id();
        let head = scorer.cls_head.clone();
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if a.objective == Objective::Mlm {
            return train_mlm(a, model, lora, cfg, pad, mask, &scorer, t0);
        }
        let lists = training_lists(&a.train, a.limit, a.exclude.as_deref())?;
        let mut train_ex = examples(&scorer, &lists, &a.s1, a.depth)?;
        let dev_lists = match &a.dev {
            Some(d) => read_lists(d, a.eval_limit)?,
            None => Vec::new(),
        };
        let mut dev_ex = examples(&scorer, &dev_lists, &a.s1, a.depth)?;
        if a.objective == Objective::Md {
            let dir = a.teacher.as_ref().ok_or_else(|| Error::Input("md needs --teacher MODEL_DIR (a model with an MLM head)".into()))?;
            let mut teacher = pollster::block_on(Scorer::load_dir_with(dir, a.m.backend, a.teacher_adapter.as_deref()))?;
            teacher.encoder.policy = scorer.encoder.policy;
            let mut cache = TeacherCache::open(a.teacher_cache.as_deref())?;
            let pb = progress(lists.len() + dev_lists.len(), "teacher PLL");
            for (nb, ex) in lists.iter().zip(train_ex.iter_mut()).chain(dev_lists.iter().zip(dev_ex.iter_mut())) {
                let texts: Vec<&str> = nb.hyps[..ex.s1.len()].iter().map(|h| h.text.as_str()).collect();
                ex.teacher = Some(match cache.get(&nb.utt, &texts) {
                    Some(v) => v,
                    None => {
                        let v = pollster::block_on(teacher.score_list(&texts, Method::Pll))?;
                        cache.put(&nb.utt, &texts, &v)?;
                        v
                    }
                });
                pb.inc(1);
            }
            pb.finish_and_clear();
            if cache.hits > 0 {
                eprintln!("lorb: teacher PLL of {} lists from the cache", cache.hits);
            }
        }
        // The dev lists' n-best entries go along (their first-pass terms, for --tune-s1).
        let dev_nb: Vec<NBest> = if a.dev.is_none() {
            let mut pairs: Vec<(lorb::train::ListExample, usize)> = std::mem::take(&mut train_ex).into_iter().zip(0..).collect();
            let held = lorb::train::hold_out(&mut pairs, a.holdout, a.seed);
            train_ex = pairs.into_iter().map(|p| p.0).collect();
            let (ex, idx): (Vec<_>, Vec<usize>) = held.into_iter().unzip();
            dev_ex = ex;
            idx.into_iter().map(|i| lists[i].clone()).collect()
        } else {
            dev_lists
        };
        let steps_per_epoch = train_ex.len().div_ceil(a.batch) as u64;
        let total = steps_per_epoch * a.epochs as u64;
        let cfg = TrainConfig { warmup_steps: lorb::train::warmup_steps(a.warmup, total)?, total_steps: total, ..cfg };
        let mut trainer = Trainer::new(model, lora, head, cfg, pad, mask)?;
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
            train_ex.len(),
            dev_ex.len(),
            total
        );
        let pb = progress(total as usize, "train");
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> "),
        );
        let train_started = Instant::now();
        let quiet = pb.is_hidden();
        let report = pollster::block_on(fit(&mut trainer, &train_ex, &dev_ex, &opts, &*cancel, |p| match p {
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
        let train_secs = train_started.elapsed().as_secs_f64();
        // The first pass re-weighted with λ on dev (--tune-s1), at the lists' training depth.
        let (mut s1, mut weight, mut s1_tuning) = (a.s1.clone(), report.weight, serde_json::Value::Null);
        if !a.tune_s1.is_empty() && !dev_ex.is_empty() {
            let s2 = pollster::block_on(trainer.scores_many(&dev_ex.iter().collect::<Vec<_>>()))?;
            let cut: Vec<NBest> = dev_nb.iter().zip(&dev_ex).map(|(nb, ex)| NBest { hyps: nb.hyps[..ex.s1.len()].to_vec(), ..nb.clone() }).collect();
            let t = lorb::rescore::tune_first_pass(&cut, &a.s1, &a.tune_s1, s2, &lorb::rescore::lambda_grid(1.0 / a.kappa))?;
            eprintln!("lorb: first pass re-weighted on dev: --s1 {:?} --weight {} (dev WER {:.3}%; {:.3}% with the given --s1)", t.first_pass.to_string(), t.weight, t.wer, t.start_wer);
            s1_tuning = json!({"given_s1": a.s1.to_string(), "given_s1_dev_wer": t.start_wer, "dev_wer": t.wer, "terms": a.tune_s1});
            (s1, weight) = (t.first_pass, t.weight);
        }
        // What the training lists look like, at the training depth, under the final s1: list
        // commands compare it with their input's.
        let cut: Vec<NBest> = lists.iter().map(|nb| NBest { hyps: nb.hyps[..a.depth.unwrap_or(usize::MAX).min(nb.hyps.len())].to_vec(), ..nb.clone() }).collect();
        let profile = lorb::rescore::ListProfile::of(&cut, &s1)?;
        let mut log = json!({
            "weight": weight,
            "s1": s1.to_string(),
            "list_profile": profile,
            "s1_tuning": s1_tuning,
            "kappa": a.kappa,
            "objective": a.objective,
            "model": model_dir(&a.m).display().to_string(),
            "trainer": trainer.device(),
            "train": a.train.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "dev": a.dev.as_ref().map(|p| p.display().to_string()),
            "depth": a.depth,
            "train_lists": train_ex.len(),
            "dev_lists": dev_ex.len(),
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
        });
        // The adapter and its log are written as one unit, before the test evaluation (which
        // can be long); the test's figures are added to the log afterwards.
        let log_bytes = |log: &serde_json::Value| serde_json::to_string_pretty(log).unwrap_or_default().into_bytes();
        let dev_curve = lorb::train::curves::EpochCurve {
            title: "dev WER (%)",
            y_label: "WER %",
            points: report.curve.iter().map(|e| (e.epoch, e.dev_wer)).collect(),
            reference: report.dev_first_pass_wer.is_finite().then_some((report.dev_first_pass_wer, "first pass")),
        };
        let svg = lorb::train::curves::svg(&report.losses, &dev_curve)?;
        let files: [(&str, &[u8]); 2] = [("train_log.json", &log_bytes(&log)), ("train_curves.svg", svg.as_bytes())];
        if a.full {
            eprintln!("lorb: full fine-tuning: weights are not written (comparison runs only)");
            lorb::output::write_dir(&a.out, &files)?;
        } else {
            trainer.adapter()?.save_dir_with(&a.out, &files)?;
        }
        let side = a.out.join("train_log.json");
        let write_log = |log: &serde_json::Value| lorb::output::write_file(&side, &log_bytes(log));
        let test = match &a.test {
            Some(p) => {
                let test_lists = read_lists(p, a.eval_limit)?;
                let ex = examples(&scorer, &test_lists, &s1, a.depth)?;
                let s2 = pollster::block_on(trainer.scores_many(&ex.iter().collect::<Vec<_>>()))?;
                let zero: Vec<Vec<f64>> = ex.iter().map(|l| vec![0.0; l.s1.len()]).collect();
                let mut t = json!({
                    "file": p.display().to_string(),
                    "utterances": ex.len(),
                    "first_pass_wer": lorb::rescore::wer_at(&ex, &zero, 0.0),
                    "wer": lorb::rescore::wer_at(&ex, &s2, weight),
                    "weight": weight,
                });
                if s1 != a.s1 {
                    // The first pass as given, and the rescorer with the given --s1 and fit's λ.
                    // The same tokens and error counts; only s1 differs.
                    let given = ex
                        .iter()
                        .zip(&test_lists)
                        .map(|(e, nb)| Ok(lorb::train::ListExample { s1: first_pass_scores(nb, &a.s1)?[..e.s1.len()].to_vec(), ..e.clone() }))
                        .collect::<Result<Vec<_>>>()?;
                    t["first_pass_wer_tuned_s1"] = t["first_pass_wer"].clone();
                    t["first_pass_wer"] = json!(lorb::rescore::wer_at(&given, &zero, 0.0));
                    t["wer_given_s1"] = json!(lorb::rescore::wer_at(&given, &s2, report.weight));
                    t["s1"] = json!(s1.to_string());
                }
                Some(t)
            }
            None => None,
        };
        log["test"] = test.unwrap_or(serde_json::Value::Null);
        log["seconds"] = json!(t0.elapsed().as_secs_f64());
        write_log(&log)?;
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

    /// MLM training on sentences: the MLM head transform (and LoRA pairs unless --head-only);
    /// dev loss on held-out sentences each epoch.
    #[allow(clippy::too_many_arguments)]
    fn train_mlm(a: TrainArgs, model: lorb::Model, lora: Option<lorb::Adapter>, cfg: lorb::train::TrainConfig, pad: u32, mask: Option<u32>, scorer: &Scorer, t0: Instant) -> Result<()> {
        use lorb::train::Trainer;
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
        let per = a.batch;
        let total = (ids.len().div_ceil(per) * a.epochs) as u64;
        let cfg = lorb::train::TrainConfig { warmup_steps: lorb::train::warmup_steps(a.warmup, total)?, total_steps: total, ..cfg };
        let mut t = Trainer::new(model, lora, None, cfg, pad, mask)?;
        // Full fine-tuning with MLM runs on the CPU.
        pollster::block_on(t.use_backend(if a.full { BackendKind::Cpu } else { a.m.backend }))?;
        eprintln!("lorb: training on {}", t.device());
        let trainable = t.trainable_parameters();
        eprintln!("lorb: MLM on {} sentences ({} held out), {} trainable parameters, {} steps", ids.len(), dev.len(), trainable, total);
        // Fixed dev masking: the same masked copies every epoch.
        let mut dev_masker = Trainer::new(t.model.clone(), None, None, lorb::train::TrainConfig { seed: 1, cls_head: false, ..t.cfg.clone() }, pad, mask)?;
        let dev_batches = dev.chunks(per).map(|c| dev_masker.mask_texts(&c.iter().map(|v| v.as_slice()).collect::<Vec<_>>())).collect::<Result<Vec<_>>>()?;
        drop(dev_masker);
        let pb = progress(total as usize, "mlm");
        let (mut curve, mut losses, mut dev_losses) = (Vec::new(), Vec::new(), Vec::new());
        let started = Instant::now();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        let mut budget = a.time_limit.map(|l| lorb::train::fit::TimeBudget::new(l, t.step));
        let mut out_of_time = false;
        for epoch in 1..=a.epochs {
            if out_of_time {
                break;
            }
            t.rng.shuffle(&mut order);
            let (mut sum, mut steps) = (0.0, 0usize);
            for c in order.chunks(per) {
                if out_of_time {
                    break;
                }
                let batch: Vec<&[u32]> = c.iter().map(|&i| ids[i].as_slice()).collect();
                let log = pollster::block_on(t.step_texts(&batch))?;
                sum += log.loss;
                losses.push(log.loss);
                steps += 1;
                if let Some(b) = budget.as_mut() {
                    out_of_time = b.after_step(&mut t);
                    pb.set_length(b.cap.unwrap_or(total));
                }
                pb.set_position(log.step);
                pb.set_message(format!("epoch {epoch} loss {:.4}", log.loss));
            }
            let dev_loss = if dev_batches.is_empty() {
                f64::NAN
            } else {
                dev_batches.iter().map(|(b, s)| pollster::block_on(t.mlm_loss_only(b, s))).collect::<Result<Vec<f64>>>()?.iter().sum::<f64>() / dev_batches.len() as f64
            };
            let train_loss = sum / steps.max(1) as f64;
            eprintln!("epoch {epoch:3}  train MLM loss {train_loss:.4}  dev MLM loss {dev_loss:.4}");
            curve.push(json!({"epoch": epoch, "steps": t.step, "train_loss": train_loss, "dev_loss": dev_loss}));
            dev_losses.push((epoch, dev_loss));
        }
        pb.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
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

    fn personalize(a: PersonalizeArgs) -> Result<()> {
        let grouping: lorb::personalize::Grouping = a.group.parse()?;
        let (l, lists) = list_inputs(a.list)?;
        let (weight, fp) = (weight(&l)?, first_pass(&l)?);
        let targets = a.targets.iter().map(|t| lorb::adapter::Target::parse(t)).collect::<Result<Vec<_>>>()?;
        let train = lorb::train::TrainConfig { kappa: a.kappa, optim: lorb::train::AdamWConfig { lr: a.lr, ..Default::default() }, seed: a.seed, ..Default::default() };
        train.validate()?;
        let fit = lorb::train::FitOptions { epochs: a.epochs, lists_per_step: a.batch, patience: 0, checkpoint: None, time_limit: a.time_limit };
        fit.validate()?;
        let o = lorb::personalize::Options { grouping, adapt_fraction: a.adapt_fraction, first_pass: fp, depth: None, weight, r: a.r, alpha: a.alpha, targets, train, fit };
        let mut scorer = load(&l.m)?;
        let backend = scorer.backend.describe();
        let r = pollster::block_on(lorb::personalize::personalize(&mut scorer, &lists, &o, |g| {
            eprintln!("{}: {} adapt, {} eval, {} words: first pass {:.2}%, global {:.2}%, personal {:.2}% ({:.1} s)", g.group, g.adapt_utterances.len(), g.eval_utterances.len(), g.words, g.first_pass_wer, g.base_wer, g.personalized_wer, g.seconds);
        }))?;
        let mut v = serde_json::to_value(&r).map_err(|e| Error::Input(e.to_string()))?;
        v["backend"] = json!(backend);
        v["adapter"] = json!(l.m.adapter.as_ref().map(|p| p.display().to_string()));
        v["nbest"] = json!(l.nbest.display().to_string());
        if l.json {
            println!("{v}");
        } else {
            println!("{} groups ({} skipped), {} utterances adapted, {} evaluated ({} words)", r.chapters, r.skipped_groups, r.adapt_utterances, r.eval_utterances, r.words);
            println!("first pass {:.2}%, global adapter {:.2}%, personalised {:.2}% (λ = {}, {:.1} s per group, {backend})", r.first_pass_wer, r.base_wer, r.personalized_wer, r.weight, r.seconds_per_chapter);
        }
        Ok(())
    }

    fn profile(files: &[PathBuf], s1: &FirstPass, depth: Option<usize>) -> Result<()> {
        if depth == Some(0) {
            return Err(Error::Input("--depth must be at least 1".into()));
        }
        let mut lists = Vec::new();
        for f in files {
            lists.extend(read_lists(f, None)?);
        }
        if lists.is_empty() {
            return Err(Error::Input("no n-best lists".into()));
        }
        for nb in &mut lists {
            nb.hyps.truncate(depth.unwrap_or(usize::MAX));
        }
        println!("{}", serde_json::to_string(&lorb::rescore::ListProfile::of(&lists, s1)?).map_err(|e| Error::Input(e.to_string()))?);
        Ok(())
    }

    fn adapter_info(dir: &Path, model: Option<PathBuf>, as_json: bool) -> Result<()> {
        let m = ModelArgs { model, head: None, adapter: None, backend: BackendKind::Cpu, method: Method::Cls, truncate: false, max_hyps: lorb::score::DEFAULT_MAX_HYPS };
        let mdir = model_dir(&m);
        let bytes = std::fs::read(mdir.join("config.json")).map_err(|e| Error::Io { path: mdir.join("config.json").display().to_string(), source: e })?;
        let config = lorb::ModelConfig::from_json(&bytes)?;
        let adapter = lorb::Adapter::load_dir(dir, &config)?;
        let base = lorb::Model::load_dir(&mdir)?.parameter_count();
        let n = adapter.parameter_count();
        let lora: usize = adapter.pairs.iter().map(|p| p.a.data.len() + p.b.data.len()).sum();
        let targets: serde_json::Map<String, serde_json::Value> = adapter.targets().into_iter().map(|(t, l)| (t.to_string(), json!(l))).collect();
        let v = json!({
            "adapter": dir.display().to_string(),
            "base_model": mdir.display().to_string(),
            "r": adapter.r,
            "lora_alpha": adapter.alpha,
            "use_rslora": adapter.use_rslora,
            "scale": adapter.scale(),
            "targets": targets,
            "pairs": adapter.pairs.len(),
            "cls_head": adapter.cls_head.is_some(),
            "lora_parameters": lora,
            "trainable_parameters": n,
            "base_parameters": base,
            "trainable_percent": 100.0 * n as f64 / base as f64,
            "lora_percent": 100.0 * lora as f64 / base as f64,
        });
        print_json(&v, as_json);
        Ok(())
    }
}
