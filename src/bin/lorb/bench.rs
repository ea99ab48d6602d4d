//! `lorb bench`: milliseconds per n-best list for CLS and PLL scoring, or with --train per
//! optimiser step for each way of training.

use crate::common::{examples, load, model_dir, print_json, read_lists, ModelArgs};
use clap::Args;
use lorb::train::{Objective, TrainConfig, Trainer};
use lorb::{BackendKind, Error, FirstPass, Method, NBest, Result, Scorer};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
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
    /// GPU matmul tiles: auto, small (64×64), wide (128×128) or vec4 (the forward's products
    /// with 16-byte loads, 64×64)
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

pub fn bench(a: BenchArgs) -> Result<()> {
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
    gpu_options(&a, &mut scorer)?;
    let mut profiles = serde_json::Map::new();
    let h = scorer.model().config.hidden;
    let texts: Vec<Vec<&str>> = lists.iter().map(|nb| nb.hyps.iter().map(|h| h.text.as_str()).collect()).collect();
    let tokens: usize = texts[1..].iter().flatten().map(|t| scorer.encoder.encode(0, t).map(|x| x.len()).unwrap_or(0)).sum();
    let n_hyps: usize = texts[1..].iter().map(|t| t.len()).sum();
    let cls = time_lists(&mut scorer, &texts, Method::Cls, a.profile, &mut profiles)?;
    let pll = if a.no_pll { None } else { Some(time_lists(&mut scorer, &texts, Method::Pll, a.profile, &mut profiles)?) };
    let c = &scorer.model().config;
    let v = json!({
        "backend": scorer.backend.describe(),
        "dtype": scorer.backend.dtype().as_str(),
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

/// A GPU backend rebuilt with the checked shaders or kernel profiling asked for, and the matmul
/// tiles.
fn gpu_options(a: &BenchArgs, scorer: &mut Scorer) -> Result<()> {
    if scorer.backend.is_gpu() && (a.checked_shaders || a.profile) {
        let opts = lorb::gpu::GpuOptions { allow_software: true, trusted_shaders: !a.checked_shaders, profile: a.profile, dtype: scorer.backend.dtype(), ..Default::default() };
        let model = std::sync::Arc::new(scorer.model().clone());
        scorer.backend = lorb::Backend::Gpu(Box::new(pollster::block_on(lorb::gpu::GpuBackend::with_options(model, &opts))?));
    }
    if let lorb::Backend::Gpu(g) = &mut scorer.backend {
        g.tiles = a.tiles;
    }
    Ok(())
}

/// Milliseconds per list for `method` over `texts[1..]` (after `texts[0]` warms up), with the
/// per-kernel (GPU) or per-op (CPU, when `profile`) times recorded in `profiles`.
fn time_lists(scorer: &mut Scorer, texts: &[Vec<&str>], method: Method, profile: bool, profiles: &mut serde_json::Map<String, serde_json::Value>) -> Result<f64> {
    let lists_timed = (texts.len() - 1) as f64;
    pollster::block_on(scorer.score_list(&texts[0], method))?; // warm-up: pipelines, buffers
    if let lorb::Backend::Gpu(g) = &mut scorer.backend {
        g.reset_profile();
    }
    lorb::cpu::profile::enable(profile && !scorer.backend.is_gpu());
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
}

/// `lorb bench --train`: milliseconds per optimiser step (one list, MWER + L_cor) for each
/// way of training, with the trainable-parameter counts.
fn bench_train(a: &BenchArgs, lists: &[NBest], scorer: &Scorer, path: &Path) -> Result<()> {
    let ex = examples(scorer, lists, &FirstPass::default(), None)?;
    let model = scorer.model().clone();
    let base = model.parameter_count();
    let modes = train_modes(a, scorer, &model)?;
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

/// The trainers `bench --train` times, by name: LoRA, the CLS head alone and (unless --no-full)
/// full fine-tuning, on the GPU when the backend is one, then on the CPU.
fn train_modes(a: &BenchArgs, scorer: &Scorer, model: &lorb::Model) -> Result<Vec<(&'static str, Trainer)>> {
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
    Ok(modes)
}
