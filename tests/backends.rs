//! GPU against CPU on random inputs: varied lengths and padding, random MLM slots, and a tiny
//! per-binding budget that forces row chunking, logits chunking and vocabulary sharding.
//! Tolerance: 1e-4 max abs error on hidden states, CLS scores and log-probabilities. With the
//! weights in f16 (`Dtype::F16`, where the adapter has shader-f16): CLS scores within 1e-2 and
//! the same ranking, log-probabilities within 1e-2 of their largest magnitude.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use lorb::gpu::{Dtype, GpuBackend, GpuOptions};
use lorb::{Backend, Batch, ClsHead, Model, Slot};
use std::sync::Arc;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn random_batch(rng: &mut Lcg, rows: usize, max_len: usize, vocab: usize, pad: u32) -> Batch {
    let seqs: Vec<Vec<u32>> = (0..rows)
        .map(|_| {
            let len = 1 + rng.next(max_len);
            (0..len).map(|_| 5 + rng.next(vocab - 5) as u32).collect()
        })
        .collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    Batch::pad(&refs, pad).unwrap()
}

fn random_slots(rng: &mut Lcg, batch: &Batch, vocab: usize) -> Vec<Slot> {
    (0..batch.rows() * 20)
        .map(|_| {
            let row = rng.next(batch.rows());
            Slot { row: row as u32, pos: rng.next(batch.lens[row] as usize) as u32, target: rng.next(vocab) as u32 }
        })
        .collect()
}

/// The largest |got − want| (`got` from the GPU in f32, `want` an f64 reference).
fn max_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter().zip(want).fold(0f64, |x, (g, w)| x.max((*g as f64 - w).abs()))
}

/// The largest |value| of a reference, at least 1: the scale its tolerances are relative to.
fn largest(want: &[f64]) -> f64 {
    want.iter().fold(1f64, |x, v| x.max(v.abs()))
}

/// A GPU context made with `opts`, or `None` (the test skips, saying why) where there is no GPU,
/// or f16 was asked of an adapter without shader-f16. With `LORB_REQUIRE_GPU=1` a missing GPU
/// fails instead.
fn gpu_context(opts: &GpuOptions) -> Option<lorb::gpu::context::GpuContext> {
    match block(lorb::gpu::context::GpuContext::new(opts)) {
        Ok(c) => Some(c),
        Err(e) => {
            let no_f16 = opts.dtype == Dtype::F16 && !block(lorb::gpu::context::GpuContext::probe()).is_ok_and(|r| r.f16);
            assert!(no_f16 || std::env::var("LORB_REQUIRE_GPU").as_deref() != Ok("1"), "GPU required: {e}");
            eprintln!("note: skipping ({e})");
            None
        }
    }
}

fn compare(arch: &str, budget: Option<u64>) {
    compare_tiles(arch, budget, lorb::gpu::ops::matmul::Tiles::Auto)
}

fn compare_tiles(arch: &str, budget: Option<u64>, tiles: lorb::gpu::ops::matmul::Tiles) {
    let model = Arc::new(Model::load_dir(fixture_dir(arch)).unwrap());
    let c = model.config.clone();
    let opts = GpuOptions { allow_software: true, binding_budget: budget, ..Default::default() };
    let gpu = match block(GpuBackend::with_options(model.clone(), &opts)) {
        Ok(mut g) => {
            g.tiles = tiles;
            g
        }
        Err(e) => {
            assert!(std::env::var("LORB_REQUIRE_GPU").as_deref() != Ok("1"), "GPU required: {e}");
            eprintln!("note: no GPU ({e}); skipping");
            return;
        }
    };
    let mut gpu = Backend::Gpu(Box::new(gpu));
    let mut cpu = block(Backend::new(model.clone(), lorb::BackendKind::Cpu)).unwrap();
    let head = ClsHead { weight: (0..c.hidden).map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0).collect(), bias: 0.3 };
    let mut rng = Lcg(42);
    for (rows, max_len) in [(1, 1), (3, 9), (7, 23), (12, 40)] {
        let b = random_batch(&mut rng, rows, max_len.min(c.max_tokens()), c.vocab_size, c.pad_token_id);
        let what = format!("{arch}, {rows} rows up to {max_len} tokens, budget {budget:?}");
        if budget.is_none() {
            let (g, r) = (block(gpu.hidden_states(&b)).unwrap(), block(cpu.hidden_states(&b)).unwrap());
            for row in 0..rows {
                let n = b.lens[row] as usize * c.hidden;
                let o = row * b.seq * c.hidden;
                let d = max_abs_diff(&g[o..o + n], &r[o..o + n]);
                assert!(d <= 1e-4, "{what}: hidden states differ by {d}");
            }
        }
        let d = max_abs_diff(&block(gpu.cls_scores(&b, &head)).unwrap(), &block(cpu.cls_scores(&b, &head)).unwrap());
        assert!(d <= 1e-4, "{what}: CLS scores differ by {d}");
        let d = max_abs_diff(&block(gpu.cls_vectors(&b)).unwrap(), &block(cpu.cls_vectors(&b)).unwrap());
        assert!(d <= 1e-4, "{what}: CLS vectors differ by {d}");
        let slots = random_slots(&mut rng, &b, c.vocab_size);
        let (g, r) = (block(gpu.masked_logprobs(&b, &slots)).unwrap(), block(cpu.masked_logprobs(&b, &slots)).unwrap());
        let d = max_abs_diff(&g, &r);
        assert!(d <= 1e-4 * r.iter().fold(1f32, |a, x| a.max(x.abs())), "{what}: log-probs differ by {d}");
    }
}

#[test]
fn gpu_matches_cpu_bert() {
    compare("bert", None);
}

#[test]
fn gpu_matches_cpu_roberta() {
    compare("roberta", None);
}

#[test]
fn gpu_matches_cpu_distilbert() {
    compare("distilbert", None);
}

/// 48 KiB bindings: 2-3 sequences per chunk, the 400-row vocabulary in shards, logits in pieces.
#[test]
fn gpu_chunked_and_sharded_matches_cpu() {
    compare("bert", Some(48 << 10));
    compare("distilbert", Some(64 << 10));
}

/// Kernels compiled without wgpu's injected bounds checks (the native default, as
/// `Backend::new` builds it) compute the same results; the other tests here run them checked.
#[test]
fn gpu_trusted_shaders_match_cpu() {
    let model = Arc::new(Model::load_dir(fixture_dir("distilbert")).unwrap());
    let opts = GpuOptions { allow_software: true, trusted_shaders: true, profile: true, ..Default::default() };
    let Ok(gpu) = block(GpuBackend::with_options(model.clone(), &opts)) else { return };
    let mut gpu = Backend::Gpu(Box::new(gpu));
    let mut cpu = block(Backend::new(model.clone(), lorb::BackendKind::Cpu)).unwrap();
    let mut rng = Lcg(9);
    let b = random_batch(&mut rng, 5, 30, model.config.vocab_size, 0);
    let slots = random_slots(&mut rng, &b, model.config.vocab_size);
    let d = max_abs_diff(&block(gpu.masked_logprobs(&b, &slots)).unwrap(), &block(cpu.masked_logprobs(&b, &slots)).unwrap());
    assert!(d <= 1e-3, "log-probs differ by {d}");
    if let Backend::Gpu(g) = &gpu {
        // Profiling (timestamp queries) saw every kernel of the forward.
        let names: Vec<&str> = g.profile().iter().map(|p| p.0).collect();
        for k in ["embed", "layernorm", "matmul", "attention", "gather", "logsoftmax"] {
            assert!(names.contains(&k), "{k} missing from the profile {names:?}");
        }
    }
}

/// Every matmul tile variant (64×64, 128×128, and the forward's 16-byte loads), whichever the
/// automatic choice would take.
#[test]
fn gpu_matmul_tile_variants_match_cpu() {
    use lorb::gpu::ops::matmul::Tiles;
    compare_tiles("bert", None, Tiles::Small);
    compare_tiles("distilbert", None, Tiles::Wide);
    compare_tiles("roberta", None, Tiles::Vec4);
    compare_tiles("bert", Some(48 << 10), Tiles::Vec4);
}

/// The matmul kernels alone against a product in f64 written here: `A·Wᵀ + bias` with A at an
/// offset, on shapes that leave partial tiles in every direction (k not a multiple of 16, m and
/// n not of 64), with a residual and with GELU; each tile variant (vec4: 16-byte loads along k,
/// when k is a multiple of 4), checked and trusted shaders. Tolerance 1e-4 relative to the
/// largest |C|.
#[test]
fn gpu_matmul_kernels_match_a_plain_product() {
    use lorb::gpu::context::Plan;
    use lorb::gpu::ops::matmul::{record, Act, Add, In, Out, Tiles};
    let mut rng = Lcg(5);
    let mut val = || (rng.next(2001) as f32 - 1000.0) / 1000.0;
    for trusted in [false, true] {
        let opts = GpuOptions { allow_software: true, trusted_shaders: trusted, ..Default::default() };
        let Some(mut ctx) = gpu_context(&opts) else { return };
        for (m, n, k, off, gelu, residual) in [(1, 1, 4, 0, false, false), (5, 7, 20, 4, true, false), (70, 65, 36, 8, false, true), (130, 129, 100, 0, true, true), (3, 9, 6, 2, false, false)] {
            let a: Vec<f32> = (0..off + m * k).map(|_| val()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| val()).collect();
            let bias: Vec<f32> = (0..n).map(|_| val()).collect();
            let r: Vec<f32> = (0..m * n).map(|_| val()).collect();
            let erf_gelu = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let want: Vec<f64> = (0..m * n)
                .map(|e| {
                    let (i, j) = (e / n, e % n);
                    let dot: f64 = (0..k).map(|t| a[off + i * k + t] as f64 * w[j * k + t] as f64).sum::<f64>() + bias[j] as f64;
                    (if gelu { erf_gelu(dot) } else { dot }) + if residual { r[e] as f64 } else { 0.0 }
                })
                .collect();
            let scale = largest(&want);
            let vec4 = lorb::gpu::ops::matmul::kernel_of(Tiles::Vec4, k as u32, off as u32, false) == lorb::gpu::ops::Kernel::MatmulVec4;
            assert_eq!(vec4, k % 4 == 0 && off % 4 == 0, "{m}×{n}×{k} at {off}");
            for tiles in [Tiles::Small, Tiles::Wide, Tiles::Vec4] {
                let (ab, wb, bb, rb) = (ctx.upload("a", &a).unwrap(), ctx.upload("w", &w).unwrap(), ctx.upload("bias", &bias).unwrap(), ctx.upload("r", &r).unwrap());
                let cb = ctx.upload("c", &vec![0.0; m * n]).unwrap();
                let dummy = ctx.upload("dummy", &[0.0; 4]).unwrap();
                let mut plan = Plan::default();
                plan.tiles = tiles;
                let add = if residual { Add::Residual(&rb) } else { Add::Nothing };
                let act = if gelu { Act::Gelu } else { Act::None };
                record(&mut plan, In { buf: &ab, offset: off as u32 }, &wb, &bb, add, Out { buf: &cb, ldc: n as u32, offset: 0 }, m as u32, n as u32, k as u32, act, &dummy);
                let got = block(ctx.run(plan, &cb, (m * n * 4) as u64)).unwrap();
                let d = max_diff(&got, &want);
                assert!(d <= 1e-4 * scale, "{tiles:?} (trusted {trusted}) {m}×{n}×{k}, A at {off}: differs by {d} (largest |C| {scale})");
            }
        }
    }
}

/// A sequence that cannot fit the binding budget is a typed GPU-limit error, not a panic.
#[test]
fn gpu_budget_too_small_is_a_typed_error() {
    let model = Arc::new(Model::load_dir(fixture_dir("bert")).unwrap());
    let opts = GpuOptions { allow_software: true, binding_budget: Some(20 << 10), ..Default::default() };
    let Ok(gpu) = block(GpuBackend::with_options(model.clone(), &opts)) else { return };
    let mut gpu = Backend::Gpu(Box::new(gpu));
    let ids: Vec<u32> = (0..60).map(|i| 5 + i).collect();
    let b = Batch::pad(&[&ids], 0).unwrap();
    let e = block(gpu.cls_vectors(&b)).unwrap_err();
    assert_eq!(e.kind(), lorb::ErrorKind::Gpu, "{e}");
}

/// A GPU backend with f16 weights, or `None` with the reason printed where the adapter has no
/// shader-f16 (SwiftShader) or there is no GPU.
fn f16_backend(model: Arc<Model>, budget: Option<u64>) -> Option<GpuBackend> {
    let has_f16 = match block(lorb::gpu::context::GpuContext::probe()) {
        Ok(r) => r.f16,
        Err(e) => {
            assert!(std::env::var("LORB_REQUIRE_GPU").as_deref() != Ok("1"), "GPU required: {e}");
            eprintln!("note: no GPU ({e}); skipping the f16 check");
            return None;
        }
    };
    let opts = GpuOptions { allow_software: true, binding_budget: budget, dtype: Dtype::F16, ..Default::default() };
    match block(GpuBackend::with_options(model, &opts)) {
        Ok(g) => {
            assert_eq!(g.dtype(), Dtype::F16);
            Some(g)
        }
        Err(e) => {
            assert!(!has_f16, "the adapter has shader-f16, yet: {e}");
            eprintln!("note: the adapter has no shader-f16; skipping the f16 check ({e})");
            None
        }
    }
}

/// Pairs whose order the f32 scores decide by more than `margin` keep their order in `got`.
fn same_ranking(want: &[f32], got: &[f32], margin: f32) -> bool {
    (0..want.len()).all(|i| (0..want.len()).all(|j| want[i] - want[j] <= margin || got[i] > got[j]))
}

/// f16 weights against the CPU's f32, on the three fixtures and with a tiny binding budget
/// (f16 word-embedding shards read by the embedding and the tied decoder): hidden states, CLS
/// scores within 1e-2 and ranked the same (pairs more than 2e-2 apart), log-probabilities
/// within 1e-2 of their largest magnitude. `auto` takes f16 where the adapter has it.
#[test]
fn gpu_f16_weights_match_f32() {
    for (arch, budget) in [("bert", None), ("roberta", None), ("distilbert", None), ("bert", Some(48 << 10))] {
        let model = Arc::new(Model::load_dir(fixture_dir(arch)).unwrap());
        let c = model.config.clone();
        let Some(gpu) = f16_backend(model.clone(), budget) else { return };
        let mut gpu = Backend::Gpu(Box::new(gpu));
        let mut cpu = block(Backend::new(model.clone(), lorb::BackendKind::Cpu)).unwrap();
        let head = ClsHead { weight: (0..c.hidden).map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0).collect(), bias: 0.3 };
        let mut rng = Lcg(7);
        for (rows, max_len) in [(1, 1), (6, 17), (12, 40)] {
            let b = random_batch(&mut rng, rows, max_len.min(c.max_tokens()), c.vocab_size, c.pad_token_id);
            let what = format!("{arch} f16, {rows} rows up to {max_len} tokens, budget {budget:?}");
            let (g, r) = (block(gpu.cls_scores(&b, &head)).unwrap(), block(cpu.cls_scores(&b, &head)).unwrap());
            let d = max_abs_diff(&g, &r);
            eprintln!("{what}: CLS scores within {d:.1e}");
            assert!(d <= 1e-2, "{what}: CLS scores differ by {d}");
            assert!(d > 0.0, "{what}: f16 scores equal f32 to the bit: the weights were not rounded");
            assert!(same_ranking(&r, &g, 2e-2), "{what}: ranking changed: {r:?} against {g:?}");
            let d = max_abs_diff(&block(gpu.cls_vectors(&b)).unwrap(), &block(cpu.cls_vectors(&b)).unwrap());
            assert!(d <= 2e-2, "{what}: CLS vectors differ by {d}");
            let slots = random_slots(&mut rng, &b, c.vocab_size);
            let (g, r) = (block(gpu.masked_logprobs(&b, &slots)).unwrap(), block(cpu.masked_logprobs(&b, &slots)).unwrap());
            let d = max_abs_diff(&g, &r);
            eprintln!("{what}: log-probs within {d:.1e}");
            assert!(d <= 1e-2 * r.iter().fold(1f32, |a, x| a.max(x.abs())), "{what}: log-probs differ by {d}");
        }
    }
    let model = Arc::new(Model::load_dir(fixture_dir("bert")).unwrap());
    let has_f16 = block(lorb::gpu::context::GpuContext::probe()).map(|r| r.f16).unwrap_or(false);
    let opts = GpuOptions { allow_software: true, dtype: Dtype::Auto, ..Default::default() };
    if let Ok(g) = block(GpuBackend::with_options(model, &opts)) {
        assert_eq!(g.dtype(), if has_f16 { Dtype::F16 } else { Dtype::F32 }, "auto");
    }
}

/// With f16 weights, merging an adapter rounds once from the f32 weights (against the CPU's
/// merge: within f16 rounding, 2⁻¹¹ of each weight), swapping adapters and removing them never
/// drifts (the base comes back bit for bit as f16-rounded f32), outputs follow the adapter, and
/// training is refused with an input error.
#[test]
fn gpu_f16_adapters_merge_without_drift() {
    use lorb::adapter::Target;
    let model = Arc::new(Model::load_dir(fixture_dir("bert")).unwrap());
    let Some(mut gpu) = f16_backend(model.clone(), None) else { return };
    let first = Arc::new(lorb::Adapter::load_dir(fixture_dir("bert").join("adapter"), &model.config).unwrap());
    let mut second = (*first).clone();
    second.pairs.iter_mut().for_each(|p| p.b.data.iter_mut().for_each(|x| *x *= -0.5));
    let second = Arc::new(second);
    let rounded = |v: &[f32]| v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect::<Vec<f32>>();
    let base: Vec<Vec<f32>> = Target::ALL.iter().map(|&t| model.lora_block(1, t).to_vec()).collect();
    let mut cpu = block(Backend::new(model.clone(), lorb::BackendKind::Cpu)).unwrap();
    for _ in 0..3 {
        block(gpu.set_adapter(Some(first.clone()))).unwrap();
        block(gpu.set_adapter(Some(second.clone()))).unwrap();
    }
    block(cpu.set_adapter(Some(second.clone()))).unwrap();
    for (ti, &t) in Target::ALL.iter().enumerate() {
        let (got, want) = (block(gpu.read_weight(1, t)).unwrap(), cpu.model().lora_block(1, t).to_vec());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= w.abs() / 2048.0 + 1e-7, "{t:?}: merged weight {g} against {w}");
        }
        assert!(max_abs_diff(&want, &base[ti]) > 1e-4 || ti > 1, "the adapter must change query and key");
    }
    let ids: Vec<u32> = vec![2, 40, 51, 60, 77, 3];
    let batch = Batch::pad(&[&ids, &ids[..4]], 0).unwrap();
    let d = max_abs_diff(&block(gpu.cls_vectors(&batch)).unwrap(), &block(cpu.cls_vectors(&batch)).unwrap());
    assert!(d <= 2e-2, "f16 with the second adapter differs from the CPU's merge by {d}");
    block(gpu.set_adapter(None)).unwrap();
    for (ti, &t) in Target::ALL.iter().enumerate() {
        assert_eq!(block(gpu.read_weight(1, t)).unwrap(), rounded(&base[ti]), "{t:?}: the base weights did not come back");
    }
    let e = block(gpu.train_forward(&batch)).unwrap_err();
    assert_eq!(e.kind(), lorb::ErrorKind::Input, "{e}");
}

/// The f16 matmul kernels (16-byte loads when k and A's offset are multiples of 4, else the
/// scalar one) against a product in f64 of the f16-rounded weights: within 2e-3 of the largest
/// |C| (A rounded to f16 and 4-term sums in f16 in the vec4 kernel; about 5e-4 seen).
#[test]
fn gpu_f16_matmul_matches_a_plain_product() {
    use lorb::gpu::context::Plan;
    use lorb::gpu::ops::matmul::{kernel_of, record, Act, Add, In, Out, Tiles};
    use lorb::gpu::ops::Kernel;
    let opts = GpuOptions { allow_software: true, trusted_shaders: true, dtype: Dtype::F16, ..Default::default() };
    let Some(mut ctx) = gpu_context(&opts) else { return };
    let mut rng = Lcg(11);
    let mut val = || (rng.next(2001) as f32 - 1000.0) / 1000.0;
    for (m, n, k, off, gelu, residual) in [(1, 1, 4, 0, false, false), (70, 65, 36, 8, false, true), (130, 129, 384, 0, true, true), (3, 9, 6, 2, false, false), (5, 7, 20, 2, true, false)] {
        let a: Vec<f32> = (0..off + m * k).map(|_| val()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| val()).collect();
        let bias: Vec<f32> = (0..n).map(|_| val()).collect();
        let r: Vec<f32> = (0..m * n).map(|_| val()).collect();
        let w16: Vec<f64> = w.iter().map(|&x| half::f16::from_f32(x).to_f64()).collect();
        let erf_gelu = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        let want: Vec<f64> = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                let dot: f64 = (0..k).map(|t| a[off + i * k + t] as f64 * w16[j * k + t]).sum::<f64>() + bias[j] as f64;
                (if gelu { erf_gelu(dot) } else { dot }) + if residual { r[e] as f64 } else { 0.0 }
            })
            .collect();
        let scale = largest(&want);
        let kernel = kernel_of(Tiles::Auto, k as u32, off as u32, true);
        assert_eq!(kernel, if k % 4 == 0 && off % 4 == 0 { Kernel::MatmulVec4F16 } else { Kernel::MatmulF16 });
        let wb = ctx.upload_matrix("w", &w).unwrap();
        assert!(wb.half && wb.size() as usize <= 2 * n * k + 4, "f16 weights take half the bytes");
        let (ab, bb, rb) = (ctx.upload("a", &a).unwrap(), ctx.upload("bias", &bias).unwrap(), ctx.upload("r", &r).unwrap());
        let cb = ctx.upload("c", &vec![0.0; m * n]).unwrap();
        let dummy = ctx.upload("dummy", &[0.0; 4]).unwrap();
        let mut plan = Plan::default();
        let add = if residual { Add::Residual(&rb) } else { Add::Nothing };
        let act = if gelu { Act::Gelu } else { Act::None };
        record(&mut plan, In { buf: &ab, offset: off as u32 }, &wb, &bb, add, Out { buf: &cb, ldc: n as u32, offset: 0 }, m as u32, n as u32, k as u32, act, &dummy);
        let got = block(ctx.run(plan, &cb, (m * n * 4) as u64)).unwrap();
        let d = max_diff(&got, &want);
        eprintln!("{kernel:?} {m}×{n}×{k}: {:.2e} of the largest |C|", d / scale);
        assert!(d <= 2e-3 * scale, "{kernel:?} {m}×{n}×{k}, A at {off}: differs by {d} (largest |C| {scale})");
    }
}

/// The attention kernels against a softmax in f64 written here: head dimensions 12 (read from
/// the parameters), 32 and 64 (fixed per pipeline), padded sequences (padding query rows are
/// zeros), and the last layer's attention at chosen query rows (repeats included). Tolerance 1e-5
/// of the largest |value|.
#[test]
fn gpu_attention_kernels_match_a_plain_softmax() {
    use lorb::gpu::context::{Plan, Work};
    use lorb::gpu::ops::attention::{kernel_for, record, record_rows};
    use lorb::gpu::ops::Kernel;
    let opts = GpuOptions { allow_software: true, trusted_shaders: true, ..Default::default() };
    let Some(mut ctx) = gpu_context(&opts) else { return };
    let mut rng = Lcg(3);
    for (heads, dh, kernel) in [(2usize, 12usize, Kernel::Attention), (3, 32, Kernel::Attention32), (2, 64, Kernel::Attention64)] {
        assert_eq!(kernel_for(dh as u32), kernel);
        let (rows, seq, h) = (3usize, 37usize, heads * dh);
        let lens: Vec<u32> = vec![37, 1, 20];
        let qkv: Vec<f32> = (0..rows * seq * 3 * h).map(|_| (rng.next(2001) as f32 - 1000.0) / 500.0).collect();
        let at = |b: usize, i: usize, part: usize, head: usize, d: usize| qkv[(b * seq + i) * 3 * h + part * h + head * dh + d] as f64;
        // want[b][i][head·dh + d]
        let want = |b: usize, i: usize| -> Vec<f64> {
            let mut out = vec![0f64; h];
            if i >= lens[b] as usize {
                return out;
            }
            for head in 0..heads {
                let s: Vec<f64> = (0..lens[b] as usize).map(|j| (0..dh).map(|d| at(b, i, 0, head, d) * at(b, j, 1, head, d)).sum::<f64>() / (dh as f64).sqrt()).collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..dh {
                    out[head * dh + d] = (0..e.len()).map(|j| e[j] / z * at(b, j, 2, head, d)).sum();
                }
            }
            out
        };
        let qb = ctx.upload("qkv", &qkv).unwrap();
        let lb = ctx.work_with(Work::Lens, &lens).unwrap();
        let out = ctx.upload("ctx", &vec![7.0; rows * seq * h]).unwrap();
        let mut plan = Plan::default();
        record(&mut plan, &qb, &lb, &out, rows as u32, seq as u32, h as u32, heads as u32, 0);
        let got = block(ctx.run(plan, &out, (rows * seq * h * 4) as u64)).unwrap();
        let expect: Vec<f64> = (0..rows).flat_map(|b| (0..seq).flat_map(move |i| want(b, i))).collect();
        let scale = largest(&expect);
        let d = max_diff(&got, &expect);
        assert!(d <= 1e-5 * scale, "{kernel:?}, head dim {dh}: differs by {d}");
        let picks: Vec<(usize, usize)> = vec![(0, 36), (1, 0), (2, 19), (0, 0), (2, 19), (2, 5)];
        let idx: Vec<u32> = [9, 9].into_iter().chain(picks.iter().map(|&(b, i)| (b * seq + i) as u32)).collect();
        let ib = ctx.work_with(Work::GatherIdx, &idx).unwrap();
        let out = ctx.upload("ctx_rows", &vec![7.0; picks.len() * h]).unwrap();
        let mut plan = Plan::default();
        record_rows(&mut plan, &qb, &lb, &out, &ib, 2, picks.len() as u32, seq as u32, h as u32, heads as u32, 0);
        let got = block(ctx.run(plan, &out, (picks.len() * h * 4) as u64)).unwrap();
        let expect: Vec<f64> = picks.iter().flat_map(|&(b, i)| want(b, i)).collect();
        let d = max_diff(&got, &expect);
        assert!(d <= 1e-5 * scale, "attention at rows, head dim {dh}: differs by {d}");
    }
}
