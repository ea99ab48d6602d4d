//! GPU against CPU on random inputs: varied lengths and padding, random MLM slots, and a tiny
//! per-binding budget that forces row chunking, logits chunking and vocabulary sharding.
//! Tolerance: 1e-4 max abs error on hidden states, CLS scores and log-probabilities.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use lorb::gpu::{GpuBackend, GpuOptions};
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
    use lorb::gpu::context::{GpuContext, Plan};
    use lorb::gpu::ops::matmul::{record, Act, Add, In, Out, Tiles};
    let mut rng = Lcg(5);
    let mut val = || (rng.next(2001) as f32 - 1000.0) / 1000.0;
    for trusted in [false, true] {
        let opts = GpuOptions { allow_software: true, trusted_shaders: trusted, ..Default::default() };
        let mut ctx = match block(GpuContext::new(&opts)) {
            Ok(c) => c,
            Err(e) => {
                assert!(std::env::var("LORB_REQUIRE_GPU").as_deref() != Ok("1"), "GPU required: {e}");
                return;
            }
        };
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
            let scale = want.iter().fold(1f64, |x, v| x.max(v.abs()));
            assert_eq!(lorb::gpu::ops::matmul::uses_vec4(Tiles::Vec4, k as u32, off as u32), k % 4 == 0 && off % 4 == 0, "{m}×{n}×{k} at {off}");
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
                let d = got.iter().zip(&want).fold(0f64, |x, (g, w)| x.max((*g as f64 - w).abs()));
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
