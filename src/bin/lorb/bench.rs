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
    /// Time a forward of random token batches on a model of this shape with random weights
    /// instead of scoring lists: bert-base (12 layers, hidden 768, FFN 3072)
    #[arg(long, value_parser = ["bert-base"])]
    shape: Option<String>,
    /// Time products of the GPU's matmul kernel instead: `A [M, K]·Wᵀ` (W `[N, K]` in --dtype),
    /// shapes as N (N×N×N) or MxNxK, comma-separated
    #[arg(long, value_delimiter = ',')]
    matmul: Vec<String>,
    /// With --shape: sequences per batch, each of 32 tokens (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "30,960")]
    rows: Vec<usize>,
    #[arg(long)]
    json: bool,
}

pub fn bench(a: BenchArgs) -> Result<()> {
    if a.shape.is_some() {
        return bench_shape(&a);
    }
    if !a.matmul.is_empty() {
        return bench_matmul(&a);
    }
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
    gpu_options(&a, &mut scorer.backend)?;
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
fn gpu_options(a: &BenchArgs, backend: &mut lorb::Backend) -> Result<()> {
    if backend.is_gpu() && (a.checked_shaders || a.profile) {
        let opts = lorb::gpu::GpuOptions { allow_software: true, trusted_shaders: !a.checked_shaders, profile: a.profile, dtype: backend.dtype(), ..Default::default() };
        let model = std::sync::Arc::new(backend.model().clone());
        *backend = lorb::Backend::Gpu(Box::new(pollster::block_on(lorb::gpu::GpuBackend::with_options(model, &opts))?));
    }
    if let lorb::Backend::Gpu(g) = backend {
        g.tiles = a.tiles;
    }
    Ok(())
}

/// `lorb bench --matmul SHAPES`: milliseconds and TFLOP/s of `A·Wᵀ` products on the GPU, per
/// shape (`--lists` products recorded in one submission, after one warm-up submission).
fn bench_matmul(a: &BenchArgs) -> Result<()> {
    use lorb::gpu::context::GpuContext;
    use lorb::gpu::ops::matmul::kernel_of;
    if a.m.backend == BackendKind::Cpu {
        return Err(Error::Input("--matmul times the GPU's kernel; use --backend gpu or auto".into()));
    }
    let shapes = a
        .matmul
        .iter()
        .map(|s| {
            let d: Vec<u32> = s.split('x').map(|x| x.trim().parse::<u32>()).collect::<std::result::Result<_, _>>().map_err(|_| Error::Input(format!("--matmul {s:?}: expected N or MxNxK")))?;
            match d[..] {
                [n] if n > 0 => Ok([n, n, n]),
                [m, n, k] if m > 0 && n > 0 && k > 0 => Ok([m, n, k]),
                _ => Err(Error::Input(format!("--matmul {s:?}: expected N or MxNxK"))),
            }
        })
        .collect::<Result<Vec<[u32; 3]>>>()?;
    let opts = lorb::gpu::GpuOptions { allow_software: true, trusted_shaders: !a.checked_shaders, dtype: a.m.dtype, ..Default::default() };
    let mut ctx = pollster::block_on(GpuContext::new(&opts))?;
    let reps = a.lists.max(1);
    let mut rows = Vec::new();
    for [m, n, k] in shapes {
        // A shape that cannot run here (an operand over the binding limit) is reported as such;
        // the others are still timed.
        match time_product(&mut ctx, a, m, n, k, reps) {
            Ok(ms) => {
                let tflops = 2.0 * m as f64 * n as f64 * k as f64 / ms / 1e9;
                let kernel = kernel_of(a.tiles, k, 0, ctx.half).name();
                eprintln!("lorb: {m}×{n}×{k} ({kernel}): {ms:.3} ms, {tflops:.2} TFLOP/s");
                rows.push(json!({"m": m, "n": n, "k": k, "ms": ms, "tflops": tflops, "kernel": kernel}));
            }
            Err(e) => {
                eprintln!("lorb: {m}×{n}×{k}: {e}");
                rows.push(json!({"m": m, "n": n, "k": k, "error": e.to_string()}));
            }
        }
    }
    let v = json!({"matmul": rows, "products": reps, "dtype": ctx.dtype().as_str(), "adapter": ctx.adapter_name, "matmul_tiles": format!("{:?}", a.tiles).to_lowercase()});
    print_json(&v, a.json);
    Ok(())
}

/// Milliseconds per `A [m, k]·Wᵀ` product (`reps` in one submission, after a warm-up one).
fn time_product(ctx: &mut lorb::gpu::context::GpuContext, a: &BenchArgs, m: u32, n: u32, k: u32, reps: usize) -> Result<f64> {
    use lorb::gpu::context::Plan;
    use lorb::gpu::ops::matmul::{record, Act, Add, In, Out};
    let values = |len: usize| -> Vec<f32> { (0..len).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 1001.0).collect() };
    let (x, w) = (ctx.upload("a", &values(m as usize * k as usize))?, ctx.upload_matrix("w", &values(n as usize * k as usize))?);
    let (bias, c) = (ctx.upload("bias", &vec![0.0; n as usize])?, ctx.upload("c", &vec![0.0; m as usize * n as usize])?);
    let dummy = ctx.dummy.clone();
    let mut time = |count: usize| -> Result<f64> {
        let mut plan = Plan::default();
        plan.tiles = a.tiles;
        for _ in 0..count {
            record(&mut plan, In { buf: &x, offset: 0 }, &w, &bias, Add::Nothing, Out { buf: &c, ldc: n, offset: 0 }, m, n, k, Act::None, &dummy);
        }
        let t0 = Instant::now();
        pollster::block_on(ctx.run(plan, &c, 16))?;
        Ok(t0.elapsed().as_secs_f64() * 1000.0)
    };
    time(1)?;
    Ok(time(reps)? / reps as f64)
}

/// `lorb bench --shape bert-base`: milliseconds per forward of `rows` random sequences of 32
/// tokens on a randomly initialised model of that shape (after one warm-up forward), reading
/// back the final [CLS] vectors; `--lists` forwards are timed per batch size.
fn bench_shape(a: &BenchArgs) -> Result<()> {
    if a.rows.is_empty() || a.rows.contains(&0) {
        return Err(Error::Input(format!("--rows {:?}: every batch needs at least one sequence", a.rows)));
    }
    let model = std::sync::Arc::new(lorb::bench::bert_base());
    let mut backend = pollster::block_on(lorb::Backend::with_dtype(model.clone(), a.m.backend, a.m.dtype))?;
    gpu_options(a, &mut backend)?;
    let mut forwards = Vec::new();
    let mut profiles = serde_json::Map::new();
    for &rows in &a.rows {
        let mut s = rows as u64;
        let seqs: Vec<Vec<u32>> = (0..rows)
            .map(|_| {
                (0..32)
                    .map(|_| {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        1000 + ((s >> 33) % 19000) as u32
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[u32]> = seqs.iter().map(|x| x.as_slice()).collect();
        let batch = lorb::Batch::pad(&refs, 0)?;
        pollster::block_on(backend.cls_vectors(&batch))?;
        if let lorb::Backend::Gpu(g) = &mut backend {
            g.reset_profile();
        }
        let mut times = Vec::new();
        for _ in 0..a.lists.max(1) {
            let t0 = Instant::now();
            pollster::block_on(backend.cls_vectors(&batch))?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
        eprintln!("lorb: bert-base {rows}×32: {mean:.2} ms per forward (min {min:.2})");
        forwards.push(json!({"rows": rows, "tokens_per_row": 32, "ms": mean, "min_ms": min}));
        if let lorb::Backend::Gpu(g) = &backend {
            let n = times.len() as f64;
            let p: serde_json::Map<String, serde_json::Value> = g.profile().into_iter().map(|(k, d, ms)| (k.to_string(), json!({"dispatches": d as f64 / n, "gpu_ms": ms / n}))).collect();
            if !p.is_empty() {
                profiles.insert(format!("{rows}x32"), serde_json::Value::Object(p));
            }
        }
    }
    let c = &model.config;
    let v = json!({
        "shape": {"name": "bert-base", "layers": c.layers, "hidden": c.hidden, "heads": c.heads, "intermediate": c.intermediate, "vocab": c.vocab_size},
        "backend": backend.describe(),
        "dtype": backend.dtype().as_str(),
        "reads_back": "the final [CLS] vectors",
        "matmul_tiles": format!("{:?}", a.tiles).to_lowercase(),
        "forward": forwards,
        "profile": profiles,
    });
    print_json(&v, a.json);
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
