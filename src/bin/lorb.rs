//! `lorb`: score texts, rescore n-best lists, evaluate and tune WER, benchmark.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use clap::{Args, Parser, Subcommand};
    use indicatif::{ProgressBar, ProgressStyle};
    use lorb::rescore::{first_pass_scores, grid, rescore_list, EvalSet};
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
        /// Inspect LoRA adapters
        #[command(subcommand)]
        Adapter(AdapterCmd),
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
        /// CLS head file (safetensors with `weight` [1,H] and `bias` [1]); overrides the model's
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
        /// First-pass score s1 as a weighted sum of fields, e.g. "0.6*decoder+0.4*ctc"
        #[arg(long, default_value = "score")]
        s1: FirstPass,
        /// Use only the first N utterances
        #[arg(long)]
        limit: Option<usize>,
        /// Output file for `rescore` (default: standard output)
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    }

    #[derive(Args)]
    struct TuneArgs {
        #[command(flatten)]
        list: ListArgs,
        /// λ grid as LO:HI:STEP
        #[arg(long, default_value = "0:1:0.05")]
        grid: String,
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
        /// Report GPU time per kernel (timestamp queries; one compute pass per dispatch)
        #[arg(long)]
        profile: bool,
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
            Cmd::Adapter(AdapterCmd::Info { dir, model, json }) => adapter_info(&dir, model, json),
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

    /// The head file in use: --head, else the model folder's cls_head.safetensors.
    fn head_path(m: &ModelArgs) -> PathBuf {
        m.head.clone().unwrap_or_else(|| model_dir(m).join("cls_head.safetensors"))
    }

    /// λ: given, else the one tuned with the CLS head (its .json sidecar), else 1.
    fn weight(a: &ListArgs) -> f64 {
        if let Some(w) = a.weight {
            return w;
        }
        if a.m.method == Method::Cls {
            let side = head_path(&a.m).with_extension("json");
            if let Ok(b) = std::fs::read(&side) {
                if let Some(w) = serde_json::from_slice::<serde_json::Value>(&b).ok().and_then(|v| v["weight"].as_f64()) {
                    return w;
                }
            }
        }
        1.0
    }

    fn load(m: &ModelArgs) -> Result<Scorer> {
        let dir = model_dir(m);
        if !dir.join("config.json").exists() {
            return Err(Error::Input(format!(
                "no model at {} (run scripts/fetch_model.sh for the default model, or pass --model DIR)",
                dir.display()
            )));
        }
        let mut s = pollster::block_on(Scorer::load_dir(&dir, m.backend))?;
        if let Some(h) = &m.head {
            s.cls_head = Some(ClsHead::load(h, s.model().config.hidden)?);
        }
        if m.truncate {
            s.encoder.policy = LongPolicy::Truncate;
        }
        if let Some(a) = &m.adapter {
            let adapter = lorb::Adapter::load_dir(a, &s.model().config)?;
            pollster::block_on(s.set_adapter(adapter))?;
        }
        eprintln!("lorb: {} on {}", dir.display(), s.backend.describe());
        Ok(s)
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

    /// Hypotheses per encoder batch when CLS-scoring several short lists together on the GPU.
    const CLS_GROUP: usize = 2048;

    /// Final [CLS] vectors of every list's hypotheses (`[hyps × H]` per list), several whole
    /// lists per encoder batch, up to `group` hypotheses (a longer list forms a batch alone).
    fn cls_per_list(scorer: &mut Scorer, lists: &[NBest], group: usize, what: &str) -> Result<Vec<Vec<f32>>> {
        let h = scorer.model().config.hidden;
        let pb = progress(lists.len(), what);
        let mut out = Vec::with_capacity(lists.len());
        let mut i = 0;
        while i < lists.len() {
            if lists[i].hyps.is_empty() {
                return Err(Error::EmptyNBest(lists[i].utt.clone()));
            }
            let (mut j, mut n) = (i, 0);
            while j < lists.len() && (j == i || n + lists[j].hyps.len() <= group) {
                n += lists[j].hyps.len();
                j += 1;
            }
            let texts: Vec<&str> = lists[i..j].iter().flat_map(|nb| nb.hyps.iter().map(|h| h.text.as_str())).collect();
            let cls = pollster::block_on(scorer.cls_matrix(&texts))?;
            let mut off = 0;
            for nb in &lists[i..j] {
                out.push(cls[off * h..(off + nb.hyps.len()) * h].to_vec());
                off += nb.hyps.len();
            }
            pb.inc((j - i) as u64);
            i = j;
        }
        pb.finish_and_clear();
        Ok(out)
    }

    /// s2 for every hypothesis of every list: PLL one list per batch (all its masked copies);
    /// CLS on the GPU several lists per batch (up to CLS_GROUP hypotheses: fewer, fuller
    /// submissions), on the CPU one list per batch (padding to a group's longest costs real
    /// arithmetic there). Results do not depend on the grouping.
    fn second_pass(scorer: &mut Scorer, lists: &[NBest], method: Method) -> Result<Vec<Vec<f64>>> {
        if method == Method::Cls {
            let head = scorer.cls_head.clone().ok_or_else(|| Error::NoClsHead("pass --head FILE or add cls_head.safetensors to the model folder".into()))?;
            let h = scorer.model().config.hidden;
            let group = if scorer.backend.is_gpu() { CLS_GROUP } else { 1 };
            let cls = cls_per_list(scorer, lists, group, "scoring")?;
            return Ok(cls.iter().map(|m| m.chunks_exact(h).map(|v| head.score(v)).collect()).collect());
        }
        let pb = progress(lists.len(), "scoring");
        let mut out = Vec::with_capacity(lists.len());
        for nb in lists {
            let texts: Vec<&str> = nb.hyps.iter().map(|h| h.text.as_str()).collect();
            let s = pollster::block_on(scorer.score_list(&texts, method)).map_err(|e| match e {
                Error::EmptyNBest(_) => Error::EmptyNBest(nb.utt.clone()),
                Error::NBestTooLarge { n, max, .. } => Error::NBestTooLarge { utt: nb.utt.clone(), n, max },
                e => e,
            })?;
            out.push(s);
            pb.inc(1);
        }
        pb.finish_and_clear();
        Ok(out)
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

    fn rescore(a: ListArgs) -> Result<()> {
        let lists = read_lists(&a.nbest, a.limit)?;
        let mut scorer = load(&a.m)?;
        let s2 = second_pass(&mut scorer, &lists, a.m.method)?;
        let s1 = s1_all(&lists, &a.s1)?;
        let mut w: Box<dyn Write> = match &a.out {
            Some(p) => Box::new(std::fs::File::create(p).map_err(|e| Error::Io { path: p.display().to_string(), source: e })?),
            None => Box::new(std::io::stdout().lock()),
        };
        for ((nb, a1), b2) in lists.iter().zip(&s1).zip(&s2) {
            let r = rescore_list(nb, a1, b2, weight(&a));
            writeln!(w, "{}", serde_json::to_string(&r).map_err(|e| Error::Input(e.to_string()))?)
                .map_err(|e| Error::Io { path: "output".into(), source: e })?;
        }
        Ok(())
    }

    fn eval(a: ListArgs) -> Result<()> {
        let t0 = Instant::now();
        let lists = read_lists(&a.nbest, a.limit)?;
        let s1 = s1_all(&lists, &a.s1)?;
        let w = weight(&a);
        // λ = 0 needs no model: the first pass alone decides.
        let (s2, backend) = if w == 0.0 {
            (lists.iter().map(|nb| vec![0.0; nb.hyps.len()]).collect(), "none".to_string())
        } else {
            let mut scorer = load(&a.m)?;
            let d = scorer.backend.describe();
            (second_pass(&mut scorer, &lists, a.m.method)?, d)
        };
        let r = EvalSet::new(&lists, s1, s2).report(w);
        let secs = t0.elapsed().as_secs_f64();
        if a.json {
            let mut v = serde_json::to_value(&r).map_err(|e| Error::Input(e.to_string()))?;
            v["seconds"] = json!(secs);
            v["method"] = json!(format!("{:?}", a.m.method).to_lowercase());
            v["backend"] = json!(backend);
            v["nbest"] = json!(a.nbest.display().to_string());
            println!("{v}");
        } else {
            println!("{} utterances, {} words ({})", r.utterances, r.words, a.nbest.display());
            println!("first-pass WER  {:.2}%", r.first_pass_wer);
            println!("rescored WER    {:.2}%  (λ = {}, {:?}, {backend})", r.rescored_wer, r.weight, a.m.method);
            println!("oracle WER      {:.2}%", r.oracle_wer);
            println!("{secs:.1} s");
        }
        Ok(())
    }

    fn parse_grid(s: &str) -> Result<Vec<f64>> {
        let p: Vec<f64> = s.split(':').map(|x| x.parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(|_| Error::Input(format!("grid {s:?}: expected LO:HI:STEP")))?;
        match p.as_slice() {
            [lo, hi, step] if *step > 0.0 && hi >= lo => Ok(grid(*lo, *hi, *step)),
            _ => Err(Error::Input(format!("grid {s:?}: expected LO:HI:STEP with STEP > 0"))),
        }
    }

    fn tune(a: TuneArgs) -> Result<()> {
        let g = parse_grid(&a.grid)?;
        let l = &a.list;
        let lists = read_lists(&l.nbest, l.limit)?;
        let mut scorer = load(&l.m)?;
        let s2 = second_pass(&mut scorer, &lists, l.m.method)?;
        let set = EvalSet::new(&lists, s1_all(&lists, &l.s1)?, s2);
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
        let mut scorer = load(&a.m)?;
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
            let t0 = Instant::now();
            for t in &texts[1..] {
                pollster::block_on(scorer.score_list(t, method))?;
            }
            let ms = t0.elapsed().as_secs_f64() * 1000.0 / lists_timed;
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
        if a.json {
            println!("{v}");
        } else {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Ok(())
    }

    fn fit_head(a: FitHeadArgs) -> Result<()> {
        use lorb::train::{fit_cls_head, HeadFitOptions, ListFeatures};
        use lorb::wer::{word_count, word_errors};
        let t0 = Instant::now();
        let exclude: std::collections::HashSet<String> = match &a.exclude {
            Some(p) => nbest::read_file(p)?.into_iter().map(|nb| nb.utt).collect(),
            None => Default::default(),
        };
        let mut lists = Vec::new();
        for f in &a.train {
            lists.extend(read_lists(f, a.limit)?.into_iter().filter(|nb| nb.reference.is_some() && !exclude.contains(&nb.utt)));
        }
        if lists.len() < 2 {
            return Err(Error::Input("fit-head needs at least two training lists with references".into()));
        }
        let mut scorer = load(&a.m)?;
        let hidden = scorer.model().config.hidden;
        let mut feats: Vec<ListFeatures> = Vec::with_capacity(lists.len());
        for (nb, cls) in lists.iter().zip(cls_per_list(&mut scorer, &lists, a.group, "[CLS] vectors")?) {
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

    fn adapter_info(dir: &Path, model: Option<PathBuf>, as_json: bool) -> Result<()> {
        let m = ModelArgs { model, head: None, adapter: None, backend: BackendKind::Cpu, method: Method::Cls, truncate: false };
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
        if as_json {
            println!("{v}");
        } else {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Ok(())
    }
}
