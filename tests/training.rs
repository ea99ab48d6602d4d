//! Training against PyTorch + PEFT autograd (tests/fixtures/make_training_fixtures.py, float64):
//! the loss and the gradient of every trainable tensor for MWER, MWED, MD, MWER + L_cor and MLM
//! with LoRA, and for full fine-tuning; central finite differences on the CPU backend; a
//! 10-step AdamW loss trajectory; NaN/Inf handling, cancellation and resume.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::fixture_dir;
use lorb::adapter::Adapter;
use lorb::batch::{Batch, Slot};
use lorb::model::Tensor;
use lorb::train::{fit, FitOptions, ListExample, Objective, TrainConfig, Trainer};
use lorb::{BackendKind, Error, Model};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

const ARCHS: [&str; 3] = ["bert", "roberta", "distilbert"];

struct Fixture {
    model: Model,
    meta: Value,
    grads: BTreeMap<String, Vec<f32>>,
}

fn fixture(arch: &str) -> Fixture {
    let d = fixture_dir(arch);
    let model = Model::load_dir(&d).unwrap();
    let meta: Value = serde_json::from_slice(&std::fs::read(d.join("training.json")).unwrap()).unwrap();
    let bytes = std::fs::read(d.join("grads.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let grads = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
        .collect();
    Fixture { model, meta, grads }
}

fn lists(meta: &Value) -> Vec<ListExample> {
    let f = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    meta["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| ListExample {
            ids: l["ids"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect(),
            s1: f(&l["s1"]),
            errors: f(&l["errors"]),
            words: 8,
            teacher: Some(f(&l["teacher"])),
        })
        .collect()
}

fn mlm_batch(meta: &Value) -> (Batch, Vec<Slot>) {
    let m = &meta["mlm"];
    let ids: Vec<Vec<u32>> = m["masked_ids"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let batch = Batch::pad(&seqs, meta["pad_id"].as_u64().unwrap() as u32).unwrap();
    let slots = m["slots"].as_array().unwrap().iter().map(|s| Slot { row: s[0].as_u64().unwrap() as u32, pos: s[1].as_u64().unwrap() as u32, target: s[2].as_u64().unwrap() as u32 }).collect();
    (batch, slots)
}

/// The fixture's LoRA adapter (without its head) and its `score` head, with its MLM transform
/// applied to the model.
fn trainer(arch: &str, f: &Fixture, cfg: TrainConfig, lora: bool) -> Trainer {
    let mut model = f.model.clone();
    let mut a = Adapter::load_dir(fixture_dir(arch).join("train_adapter"), &model.config).unwrap();
    a.mlm_head.apply(model.mlm.as_mut().unwrap());
    let cls = a.cls_head.take();
    let pad = f.meta["pad_id"].as_u64().unwrap() as u32;
    let mask = f.meta["mask_id"].as_u64().unwrap() as u32;
    Trainer::new(model, lora.then_some(a), cls, cfg, pad, Some(mask)).unwrap()
}

fn cfg(objective: Objective, cor: f64) -> TrainConfig {
    TrainConfig { objective, kappa: 0.5, cor_weight: cor, ..Default::default() }
}

/// The backends every test here runs on, as [`common::backends`] finds them: the CPU, and the
/// GPU when there is one (lavapipe in CI, where `LORB_REQUIRE_GPU=1` makes a missing one fail).
fn kinds(model: &Model) -> Vec<BackendKind> {
    common::backends(std::sync::Arc::new(model.clone())).iter().map(|b| if b.is_gpu() { BackendKind::Gpu } else { BackendKind::Cpu }).collect()
}

/// `t` with its encoder on `kind`.
fn on(kind: BackendKind, mut t: Trainer) -> Trainer {
    common::block(t.use_backend(kind)).unwrap();
    assert_eq!(t.device().starts_with("gpu"), kind == BackendKind::Gpu, "{}", t.device());
    t
}

/// Every reference gradient of `case` matches: max |g − ref| ≤ 1e-3 · max |ref| per tensor, and
/// lorb trains exactly the tensors PyTorch has gradients for.
fn compare(arch: &str, f: &Fixture, case: &str, loss: f64, grads: &[(String, Vec<f32>)]) {
    let want = f.meta["losses"][case].as_f64().unwrap();
    assert!((loss - want).abs() <= 1e-4 * want.abs().max(1.0), "{arch} {case}: loss {loss} vs PyTorch {want}");
    let prefix = format!("{case}/");
    let reference: BTreeMap<&str, &Vec<f32>> = f.grads.iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n, v))).collect();
    let ours: BTreeMap<&str, &Vec<f32>> = grads.iter().map(|(n, g)| (n.as_str(), g)).collect();
    assert_eq!(reference.keys().collect::<Vec<_>>(), ours.keys().collect::<Vec<_>>(), "{arch} {case}: trainable tensors");
    for (name, r) in reference {
        let g = ours[name];
        assert_eq!(g.len(), r.len(), "{arch} {case} {name}: size");
        let scale = r.iter().fold(0f32, |a, b| a.max(b.abs()));
        let err = g.iter().zip(r.iter()).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(err <= 1e-3 * scale + 1e-7, "{arch} {case} {name}: max |Δ| {err} vs max |ref| {scale}");
    }
}

/// Each backend's backward gives PyTorch's LoRA and head gradients for every n-best loss and
/// for MLM (LoRA and the MLM head transform).
#[test]
fn lora_gradients_match_pytorch() {
    for arch in ARCHS {
        let f = fixture(arch);
        let ls = lists(&f.meta);
        let refs: Vec<&ListExample> = ls.iter().collect();
        for kind in kinds(&f.model) {
            let at = format!("{arch} on {kind:?}");
            for (case, obj, cor) in [("mwer", Objective::Mwer, 0.0), ("mwed", Objective::Mwed, 0.0), ("md", Objective::Md, 0.0), ("mwer_cor", Objective::Mwer, 0.5)] {
                let mut t = on(kind, trainer(arch, &f, cfg(obj, cor), true));
                let (loss, g) = common::block(t.loss_and_grads(&refs)).unwrap();
                compare(&at, &f, case, loss, &g);
                // Where the lists of a step share one forward and backward (the GPU), a budget
                // of one token makes each list its own batch, with the same result.
                t.batch_tokens = 1;
                let (loss, g) = common::block(t.loss_and_grads(&refs)).unwrap();
                compare(&at, &f, case, loss, &g);
            }
            let mut t = on(kind, trainer(arch, &f, TrainConfig { objective: Objective::Mlm, cls_head: false, mlm_head: true, ..Default::default() }, true));
            let (b, s) = mlm_batch(&f.meta);
            let (loss, g) = common::block(t.mlm_loss_and_grads(&b, &s)).unwrap();
            compare(&at, &f, "mlm", loss, &g);
        }
    }
}

/// Training the MLM output bias too (`mlm_bias`): the same loss and PyTorch's gradients for the
/// LoRA pairs and head transform, plus `mlm.bias`. Its gradient, `Σ_slots w·(softmax − one-hot)`,
/// sums to 0 over the vocabulary and is negative at every slot's target; the GPU's column sum
/// matches the CPU's (whose bias gradient `full_mlm` checks against PyTorch) within 1e-3 of its
/// largest entry. Three AdamW steps on each backend then give the same losses and biases.
#[test]
fn mlm_output_bias_trains_on_both_backends() {
    for arch in ARCHS {
        let f = fixture(arch);
        let cfg = TrainConfig { objective: Objective::Mlm, cls_head: false, mlm_head: true, mlm_bias: true, optim: lorb::train::AdamWConfig { lr: 1e-2, ..Default::default() }, ..Default::default() };
        let (b, s) = mlm_batch(&f.meta);
        let mut reference: Option<(f64, Vec<f32>)> = None;
        let mut stepped: Option<(Vec<f64>, Vec<f32>)> = None;
        for kind in kinds(&f.model) {
            let at = format!("{arch} on {kind:?}");
            let mut t = on(kind, trainer(arch, &f, cfg.clone(), true));
            let (loss, mut g) = common::block(t.mlm_loss_and_grads(&b, &s)).unwrap();
            let k = g.iter().position(|(n, _)| n == "mlm.bias").unwrap_or_else(|| panic!("{at}: mlm.bias is not trained"));
            let (_, db) = g.remove(k);
            compare(&at, &f, "mlm", loss, &g);
            assert_eq!(db.len(), f.model.config.vocab_size, "{at}: bias gradient size");
            let scale = db.iter().fold(0f32, |m, x| m.max(x.abs()));
            let sum: f32 = db.iter().sum();
            assert!(scale > 0.0 && sum.abs() <= 1e-4 * scale * db.len() as f32, "{at}: bias gradient sums to {sum} (scale {scale})");
            for sl in &s {
                assert!(db[sl.target as usize] < 0.0, "{at}: the gradient at target {} is {}", sl.target, db[sl.target as usize]);
            }
            match &reference {
                None => reference = Some((loss, db)),
                Some((_, cpu)) => {
                    let err = cpu.iter().zip(&db).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(err <= 1e-3 * scale, "{at}: bias gradient off the CPU's by {err} (scale {scale})");
                }
            }
            let mut t = on(kind, trainer(arch, &f, cfg.clone(), true));
            let losses: Vec<f64> = (0..3).map(|_| common::block(t.step_masked(&b, &s)).unwrap().loss).collect();
            let bias = t.adapter().unwrap().mlm_head.bias.expect("the adapter carries the trained bias").data;
            let base = &f.model.mlm.as_ref().unwrap().bias.data;
            assert!(bias.iter().zip(base).any(|(x, y)| x != y), "{at}: the bias did not move");
            match &stepped {
                None => stepped = Some((losses, bias)),
                Some((l0, b0)) => {
                    for (x, y) in l0.iter().zip(&losses) {
                        assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{at}: loss {y} vs CPU {x}");
                    }
                    let err = b0.iter().zip(&bias).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(err <= 1e-4, "{at}: bias after 3 steps off the CPU's by {err}");
                }
            }
        }
    }
    let f = fixture("bert");
    let bad = TrainConfig { mlm_bias: true, mlm_head: false, ..Default::default() };
    let t = Trainer::new(f.model.clone(), None, None, bad, 0, Some(f.meta["mask_id"].as_u64().unwrap() as u32));
    assert!(matches!(t, Err(Error::Input(_))), "mlm_bias without mlm_head is refused");
}

/// Full fine-tuning on each backend: the gradient of every tensor is PyTorch's (on the GPU: the
/// weight-gradient products, bias and LayerNorm column sums and the embedding-row kernel); three
/// AdamW steps follow the CPU reference's losses and norms (the GPU steps its weights itself,
/// AdamW there); and the weights it holds after them are the trainer's. MLM under full
/// fine-tuning runs on the CPU only, and the GPU refuses it.
#[test]
fn full_fine_tuning_matches_pytorch_and_the_cpu() {
    for arch in ARCHS {
        let f = fixture(arch);
        let ls = lists(&f.meta);
        let refs: Vec<&ListExample> = ls.iter().collect();
        let full = || TrainConfig { full: true, ..cfg(Objective::Mwer, 0.5) };
        let full_mlm = TrainConfig { full: true, cls_head: false, objective: Objective::Mlm, ..Default::default() };
        for kind in kinds(&f.model) {
            let at = format!("{arch} on {kind:?}");
            let mut t = on(kind, trainer(arch, &f, full(), false));
            let (loss, g) = common::block(t.loss_and_grads(&refs)).unwrap();
            compare(&at, &f, "full_mwer_cor", loss, &g);
            let mut t = trainer(arch, &f, full_mlm.clone(), false);
            if kind == BackendKind::Gpu {
                assert!(matches!(common::block(t.use_backend(kind)), Err(Error::Unsupported(_))), "{at}: full MLM is refused on the GPU");
            } else {
                let (b, s) = mlm_batch(&f.meta);
                let (loss, g) = common::block(t.mlm_loss_and_grads(&b, &s)).unwrap();
                compare(&at, &f, "full_mlm", loss, &g);
            }

            let adam = TrainConfig { optim: lorb::train::AdamWConfig { lr: 1e-3, ..Default::default() }, ..full() };
            let mut reference = trainer(arch, &f, adam.clone(), false);
            let mut t = on(kind, trainer(arch, &f, adam.clone(), false));
            for step in 0..3 {
                let (a, b) = (common::block(reference.step_lists(&refs)).unwrap(), common::block(t.step_lists(&refs)).unwrap());
                assert!((a.loss - b.loss).abs() <= 1e-4 * a.loss.abs().max(1.0), "{at} step {step}: loss {} vs CPU {}", b.loss, a.loss);
                assert!((a.grad_norm - b.grad_norm).abs() <= 1e-3 * a.grad_norm, "{at} step {step}: gradient norm {} vs CPU {}", b.grad_norm, a.grad_norm);
            }
            // A CPU trainer given the parameters read back computes the same loss and gradients.
            // (Parameters are not compared directly: tensors with no true gradient, such as the
            // key bias, take noise-driven Adam steps.)
            let mut check = trainer(arch, &f, adam, false);
            let params: Vec<(String, Tensor)> = common::block(t.named_params()).unwrap().into_iter().map(|(n, sh, d)| (n, Tensor::new(sh, d))).collect();
            check.load_named_params(&params).unwrap();
            let (lg, gg) = common::block(t.loss_and_grads(&refs)).unwrap();
            let (lc, gc) = common::block(check.loss_and_grads(&refs)).unwrap();
            assert!((lg - lc).abs() <= 1e-4 * lc.abs().max(1.0), "{at}: after 3 steps loss {lg} vs CPU {lc} with the same parameters");
            // Tolerance: 1e-3 of each tensor's largest gradient, floored at 1e-6 of the largest of
            // all (tensors with no true gradient hold rounding noise only).
            let global = gc.iter().flat_map(|(_, g)| g.iter()).fold(0f32, |m, x| m.max(x.abs()));
            for ((name, a), (_, b)) in gc.iter().zip(&gg) {
                let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3 * global);
                let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(diff <= 1e-3 * scale, "{at} {name}: gradient off by {diff} (scale {scale}) after 3 steps");
            }
        }
    }
}

/// Central differences of the f32 CPU forward at a few coordinates of each kind of tensor.
#[test]
fn gradients_match_finite_differences() {
    let f = fixture("bert");
    let ls = lists(&f.meta);
    let refs: Vec<&ListExample> = ls.iter().collect();
    for (full, picks) in [(false, &["layers.0.query.lora_A", "layers.1.ffn_out.lora_B", "cls.weight"][..]), (true, &["layers.0.qkv.weight", "layers.1.ffn_ln.gamma", "word_emb"][..])] {
        let mut t = trainer("bert", &f, TrainConfig { full, ..cfg(Objective::Mwer, 0.5) }, !full);
        let (_, grads) = common::block(t.loss_and_grads(&refs)).unwrap();
        let base = common::block(t.named_params()).unwrap();
        for name in picks {
            let g = &grads.iter().find(|(n, _)| n == name).unwrap().1;
            // The coordinate with the largest gradient, and one in the middle.
            let top = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
            for k in [top, g.len() / 2] {
                let h = 1e-2f32;
                let mut at = |delta: f32| {
                    let params: Vec<(String, Tensor)> = base
                        .iter()
                        .map(|(n, s, d)| {
                            let mut d = d.clone();
                            if n == name {
                                d[k] += delta;
                            }
                            (n.clone(), Tensor::new(s.clone(), d))
                        })
                        .collect();
                    t.load_named_params(&params).unwrap();
                    common::block(t.loss_and_grads(&refs)).unwrap().0
                };
                let fd = (at(h) - at(-h)) / (2.0 * h as f64);
                let an = g[k] as f64;
                assert!((fd - an).abs() <= 2e-2 * fd.abs().max(an.abs()) + 2e-4, "{name}[{k}]: analytic {an} vs central difference {fd}");
            }
        }
    }
}

fn traj_trainer(arch: &str, f: &Fixture) -> Trainer {
    let tj = &f.meta["trajectory"];
    let mut a = Adapter::load_dir(fixture_dir(arch).join("traj_adapter"), &f.model.config).unwrap();
    let cls = a.cls_head.take();
    let cfg = TrainConfig {
        objective: Objective::Mwer,
        kappa: tj["kappa"].as_f64().unwrap(),
        cor_weight: tj["cor_weight"].as_f64().unwrap(),
        optim: lorb::train::AdamWConfig { lr: tj["lr"].as_f64().unwrap(), weight_decay: tj["weight_decay"].as_f64().unwrap(), ..Default::default() },
        warmup_steps: tj["warmup"].as_u64().unwrap(),
        total_steps: tj["total"].as_u64().unwrap(),
        clip: tj["clip"].as_f64().unwrap(),
        ..Default::default()
    };
    Trainer::new(f.model.clone(), Some(a), cls, cfg, f.meta["pad_id"].as_u64().unwrap() as u32, None).unwrap()
}

/// llm.c's check: ten AdamW steps (warm-up, decay, clipping, weight decay) from PEFT's own
/// initialisation reproduce PyTorch's loss trajectory.
#[test]
fn ten_adamw_steps_reproduce_the_pytorch_trajectory() {
    for arch in ARCHS {
        let f = fixture(arch);
        let ls = lists(&f.meta);
        let refs: Vec<&ListExample> = ls.iter().collect();
        let want: Vec<f64> = f.meta["trajectory"]["losses"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        for kind in kinds(&f.model) {
            let mut t = on(kind, traj_trainer(arch, &f));
            let got: Vec<f64> = (0..10).map(|_| common::block(t.step_lists(&refs)).unwrap().loss).collect();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-3, "{arch} on {kind:?} step {i}: loss {g} vs PyTorch {w}\nlorb    {got:?}\nPyTorch {want:?}");
            }
            assert!(got[9] < got[0] - 0.05, "{arch} on {kind:?}: the loss went down ({got:?})");
        }
    }
}

#[test]
fn non_finite_losses_stop_training_and_keep_the_last_good_parameters() {
    let f = fixture("bert");
    for kind in kinds(&f.model) {
        let mut ls = lists(&f.meta);
        let mut t = on(kind, traj_trainer("bert", &f));
        let refs: Vec<&ListExample> = ls.iter().collect();
        for _ in 0..3 {
            common::block(t.step_lists(&refs)).unwrap();
        }
        let before = common::block(t.named_params()).unwrap();
        ls[1].s1[2] = f64::NAN;
        let refs: Vec<&ListExample> = ls.iter().collect();
        match common::block(t.step_lists(&refs)) {
            Err(Error::NonFinite { step: 4, last_good: 3, .. }) => {}
            other => panic!("expected NonFinite at step 4, got {other:?}"),
        }
        assert_eq!(t.step, 3);
        assert!(before == common::block(t.named_params()).unwrap(), "parameters changed by a non-finite step");

        // In the loop: the run stops, says why, and leaves finite parameters.
        let mut t = on(kind, traj_trainer("bert", &f));
        let train = vec![lists(&f.meta)[0].clone(), ls[1].clone()];
        let o = FitOptions { epochs: 2, lists_per_step: 1, patience: 0, checkpoint: None, time_limit: None };
        let r = common::block(fit(&mut t, &train, &lists(&f.meta), &o, &AtomicBool::new(false), |_| {})).unwrap();
        let why = r.stopped.expect("stopped");
        assert!(why.contains("non-finite"), "{why}");
        assert!(common::block(t.named_params())
            .unwrap()
            .iter()
            .all(|(_, _, d)| d.iter().all(|x| x.is_finite())));
    }
}

/// Finite gradients can still carry parameters to ±∞ (here a weight decay of 10^6 at a
/// learning rate of 10^38): the update is checked before it is made and then not made
/// (parameters and AdamW moments unchanged), and a run in the loop stops with finite parameters.
#[test]
fn an_update_to_infinite_parameters_is_not_made() {
    let f = fixture("bert");
    for kind in kinds(&f.model) {
        let ls = lists(&f.meta);
        let refs: Vec<&ListExample> = ls.iter().collect();
        let huge = TrainConfig {
            optim: lorb::train::AdamWConfig {
                lr: 1e38,
                weight_decay: 1e6,
                ..Default::default()
            },
            clip: 0.0,
            ..cfg(Objective::Mwer, 0.0)
        };
        let mut t = on(kind, trainer("bert", &f, huge.clone(), true));
        let before = common::block(t.named_params()).unwrap();
        match common::block(t.step_lists(&refs)) {
            Err(Error::NonFinite {
                step: 1,
                last_good: 0,
                what,
            }) => assert!(what.contains("parameters"), "{what}"),
            other => panic!("expected NonFinite at step 1, got {other:?}"),
        }
        assert_eq!(t.step, 0);
        assert!(
            before == common::block(t.named_params()).unwrap(),
            "a non-finite update was kept"
        );
        let mut t = on(kind, trainer("bert", &f, huge.clone(), true));
        let o = FitOptions {
            epochs: 1,
            lists_per_step: 1,
            patience: 0,
            checkpoint: None,
            time_limit: None, };
        let r = common::block(fit(&mut t, &ls, &ls, &o, &AtomicBool::new(false), |_| {})).unwrap();
        assert!(r.stopped.is_some_and(|w| w.contains("non-finite")));
        assert!(common::block(t.named_params())
            .unwrap()
            .iter()
            .all(|(_, _, d)| d.iter().all(|x| x.is_finite())));
        assert!(r.weight.is_finite());
    }
}

/// Hyperparameters out of range are refused before any step, with the name and the value.
#[test]
fn hyperparameters_are_checked_before_training() {
    let f = fixture("bert");
    let pad = f.meta["pad_id"].as_u64().unwrap() as u32;
    let base = cfg(Objective::Mwer, 0.0);
    let with_optim = |lr: f64, wd: f64| TrainConfig {
        optim: lorb::train::AdamWConfig {
            lr,
            weight_decay: wd,
            ..Default::default()
        },
        ..base.clone()
    };
    for (what, c) in [
        ("lr", with_optim(f64::NAN, 0.0)),
        ("lr", with_optim(-1.0, 0.0)),
        ("weight_decay", with_optim(1e-3, f64::INFINITY)),
        (
            "kappa",
            TrainConfig {
                kappa: 0.0,
                ..base.clone()
            },
        ),
        (
            "kappa",
            TrainConfig {
                kappa: f64::NAN,
                ..base.clone()
            },
        ),
        (
            "clip",
            TrainConfig {
                clip: f64::NAN,
                ..base.clone()
            },
        ),
        (
            "cor_weight",
            TrainConfig {
                cor_weight: -1.0,
                ..base.clone()
            },
        ),
        (
            "head_lr",
            TrainConfig {
                head_lr: Some(f64::INFINITY),
                ..base.clone()
            },
        ),
        (
            "warm-up",
            TrainConfig {
                warmup_steps: 11,
                total_steps: 10,
                ..base.clone()
            },
        ),
    ] {
        let e = Trainer::new(f.model.clone(), None, None, c, pad, None)
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert_eq!(e.kind(), lorb::ErrorKind::Input, "{what}: {e}");
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
    assert!(
        lorb::train::warmup_steps(5.0, 10).is_err()
            && lorb::train::warmup_steps(f64::NAN, 10).is_err()
    );
    assert_eq!(lorb::train::warmup_steps(0.1, 10).unwrap(), 1);
    let ls = lists(&f.meta);
    for o in [
        FitOptions {
            epochs: 0,
            ..Default::default()
        },
        FitOptions {
            lists_per_step: 0,
            ..Default::default()
        },
        FitOptions {
            time_limit: Some(f64::NAN),
            ..Default::default()
        },
    ] {
        let mut t = trainer("bert", &f, base.clone(), true);
        let e =
            common::block(fit(&mut t, &ls, &ls, &o, &AtomicBool::new(false), |_| {})).unwrap_err();
        assert_eq!(e.kind(), lorb::ErrorKind::Input, "{e}");
        assert_eq!(t.step, 0);
    }
    assert!(
        lorb::adapter::check_lora_shape(0, 8.0).is_err()
            && lorb::adapter::check_lora_shape(4, f64::NAN).is_err()
            && lorb::adapter::check_lora_shape(4, 8.0).is_ok()
    );
}

/// A time limit ends the run once spent (here at once: one step), and the epoch in progress is
/// the last, still evaluated on dev; a generous one changes nothing. Shortening fits the
/// learning-rate schedule to the steps that remain, keeping the warm-up's proportion.
#[test]
fn a_time_limit_cuts_the_run_and_fits_the_schedule() {
    let f = fixture("bert");
    let base = lists(&f.meta);
    let train: Vec<ListExample> = (0..12).map(|i| base[i % 2].clone()).collect();
    let mut t = traj_trainer("bert", &f);
    t.cfg.total_steps = 24;
    let o = FitOptions { epochs: 2, lists_per_step: 1, patience: 0, checkpoint: None, time_limit: Some(0.0) };
    let mut epochs = 0;
    let r = common::block(fit(&mut t, &train, &base, &o, &AtomicBool::new(false), |p| epochs += matches!(p, lorb::train::fit::Progress::Epoch(_)) as usize)).unwrap();
    assert_eq!((r.steps, r.time_limited_steps), (1, Some(1)));
    assert_eq!((r.curve.len(), epochs), (1, 1), "the epoch in progress is the last, and it is evaluated");
    assert!(r.stopped.is_none());

    let mut t = traj_trainer("bert", &f);
    t.cfg.total_steps = 24;
    let o = FitOptions { time_limit: Some(1e6), ..o };
    let r = common::block(fit(&mut t, &train, &base, &o, &AtomicBool::new(false), |_| {})).unwrap();
    assert_eq!((r.steps, r.time_limited_steps, t.cfg.total_steps), (24, None, 24));

    // Shortening: from step 2 of a 24-step plan with 4 warm-up steps, 3 more steps fit.
    let mut t = traj_trainer("bert", &f);
    (t.cfg.total_steps, t.cfg.warmup_steps, t.step) = (24, 4, 2);
    assert_eq!(t.limit_steps(30), None, "the plan fits");
    assert_eq!(t.limit_steps(3), Some(5));
    assert_eq!((t.cfg.total_steps, t.cfg.warmup_steps), (5, 1), "5 steps with the same 1/6 warm-up");
    assert_eq!(t.limit_steps(4), None, "never lengthened");
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = common::root().join("target/tmp").join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `n` lists: the fixture's lists in turn, with shifted first-pass scores.
fn shifted_lists(base: &[ListExample], n: usize) -> Vec<ListExample> {
    (0..n)
        .map(|i| {
            let mut l = base[i % base.len()].clone();
            l.s1.iter_mut().enumerate().for_each(|(j, s)| *s += 0.3 * ((i * 7 + j) % 5) as f64);
            l
        })
        .collect()
}

/// Cancelling mid-epoch writes a checkpoint; resuming from it finishes with exactly the
/// parameters of an uninterrupted run with the same seed.
#[test]
fn cancel_and_resume_give_the_uninterrupted_result() {
    let f = fixture("bert");
    for kind in kinds(&f.model) {
        let base = lists(&f.meta);
        let train = shifted_lists(&base, 6);
        let o = |ck: Option<std::path::PathBuf>| FitOptions { epochs: 2, lists_per_step: 2, patience: 0, checkpoint: ck, time_limit: None };
        let never = AtomicBool::new(false);

        let mut straight = on(kind, traj_trainer("bert", &f));
        let r0 = common::block(fit(&mut straight, &train, &base, &o(None), &never, |_| {})).unwrap();
        assert_eq!(r0.steps, 6);

        let dir = tmp(&format!("lorb-resume-{kind:?}"));
        let cancel = AtomicBool::new(false);
        let mut first = on(kind, traj_trainer("bert", &f));
        let r1 = common::block(fit(&mut first, &train, &base, &o(Some(dir.clone())), &cancel, |p| {
            if let lorb::train::fit::Progress::Step { log, .. } = p {
                if log.step == 4 {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }))
        .unwrap();
        assert!(r1.stopped.as_deref().unwrap_or("").contains("cancelled"), "{:?}", r1.stopped);
        assert!(dir.join("state.json").exists());

        let mut resumed = on(kind, traj_trainer("bert", &f));
        let r2 = common::block(fit(&mut resumed, &train, &base, &o(Some(dir.clone())), &never, |_| {})).unwrap();
        assert_eq!(r2.steps, 6);
        assert_eq!(r2.losses, r0.losses, "loss curve of the resumed run");
        assert!(common::block(straight.named_params()).unwrap() == common::block(resumed.named_params()).unwrap(), "resumed parameters differ from the uninterrupted run");

        // A checkpoint made with another configuration is refused.
        let mut other = on(kind, traj_trainer("bert", &f));
        other.cfg.kappa = 2.0;
        let e = common::block(fit(&mut other, &train, &base, &o(Some(dir)), &never, |_| {})).unwrap_err();
        assert_eq!(e.kind(), lorb::ErrorKind::Training);
    }
}

/// A checkpoint is one unit: the run is killed before its k-th checkpoint file operation (each
/// write, rename and removal), for every k, then resumed; every resumed run ends with the
/// parameters of the uninterrupted one. A tensor file changed afterwards is refused on resume.
#[test]
fn a_run_killed_at_any_checkpoint_file_operation_resumes_to_the_same_result() {
    let f = fixture("bert");
    let base = lists(&f.meta);
    let train = shifted_lists(&base, 4);
    let o = |ck: Option<std::path::PathBuf>| FitOptions {
        epochs: 3,
        lists_per_step: 2,
        patience: 0,
        checkpoint: ck,
        time_limit: None,
    };
    let never = AtomicBool::new(false);
    let mut straight = traj_trainer("bert", &f);
    common::block(fit(&mut straight, &train, &base, &o(None), &never, |_| {})).unwrap();
    let want = common::block(straight.named_params()).unwrap();
    let mut faults = 0;
    for k in 0..200 {
        let dir = tmp(&format!("lorb-fault-{k}"));
        lorb::output::fail_file_ops_after(Some(k));
        let mut killed = traj_trainer("bert", &f);
        let first = common::block(fit(
            &mut killed,
            &train,
            &base,
            &o(Some(dir.clone())),
            &never,
            |_| {},
        ));
        lorb::output::fail_file_ops_after(None);
        let mut resumed = traj_trainer("bert", &f);
        common::block(fit(
            &mut resumed,
            &train,
            &base,
            &o(Some(dir.clone())),
            &never,
            |_| {},
        ))
        .unwrap_or_else(|e| panic!("resume after a fault at file operation {k}: {e}"));
        assert!(
            common::block(resumed.named_params()).unwrap() == want,
            "fault at file operation {k}: the resumed run differs"
        );
        let _ = std::fs::remove_dir_all(&dir);
        match first {
            Err(e) => {
                assert!(e.to_string().contains("injected fault"), "{e}");
                faults += 1;
            }
            Ok(_) => break,
        }
    }
    // Three checkpoints (one per epoch), each with 3 files written and renamed, state.json
    // written and renamed, and the previous generation's 3 files removed.
    assert_eq!(faults, 3 * 8 + 2 * 3, "file operations of the run");

    let dir = tmp("lorb-tampered");
    let mut t = traj_trainer("bert", &f);
    common::block(fit(
        &mut t,
        &train,
        &base,
        &FitOptions {
            epochs: 1,
            ..o(Some(dir.clone()))
        },
        &never,
        |_| {},
    ))
    .unwrap();
    let params = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("params."))
        .unwrap();
    let mut bytes = std::fs::read(&params).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&params, bytes).unwrap();
    let mut t = traj_trainer("bert", &f);
    let e = common::block(fit(&mut t, &train, &base, &o(Some(dir)), &never, |_| {})).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
}

/// Full fine-tuning keeps the weights and AdamW's moments where the backend keeps them (the
/// GPU's stay there): a clipped step matches the CPU reference's, a run moved there after a CPU
/// step takes its weights and moments along, a non-finite step changes nothing, and cancelling
/// and resuming from a checkpoint (weights and moments read back, then written again) gives
/// exactly the uninterrupted run.
#[test]
fn full_fine_tuning_clips_stops_and_resumes() {
    let f = fixture("roberta");
    let base = lists(&f.meta);
    let refs: Vec<&ListExample> = base.iter().collect();
    // A clip far below the gradient norm: every step is scaled.
    let full = TrainConfig { full: true, clip: 1e-3, optim: lorb::train::AdamWConfig { lr: 1e-3, ..Default::default() }, ..cfg(Objective::Mwer, 0.5) };
    for kind in kinds(&f.model) {
        let on_kind = |cfg: TrainConfig| on(kind, trainer("roberta", &f, cfg, false));
        let mut cpu = trainer("roberta", &f, full.clone(), false);
        let mut g = on_kind(full.clone());
        for step in 0..2 {
            let (a, b) = (common::block(cpu.step_lists(&refs)).unwrap(), common::block(g.step_lists(&refs)).unwrap());
            assert!(a.grad_norm > 10.0 * full.clip, "the clip binds (norm {})", a.grad_norm);
            assert!((a.loss - b.loss).abs() <= 1e-4 * a.loss.abs().max(1.0) && (a.grad_norm - b.grad_norm).abs() <= 1e-3 * a.grad_norm, "{kind:?} step {step}: {b:?} vs CPU {a:?}");
        }
        let mut mixed = trainer("roberta", &f, full.clone(), false);
        common::block(mixed.step_lists(&refs)).unwrap();
        let mut mixed = on(kind, mixed);
        common::block(mixed.step_lists(&refs)).unwrap();
        let (lc, _) = common::block(cpu.loss_and_grads(&refs)).unwrap();
        for (what, t) in [("straight", &mut g), ("CPU, then moved", &mut mixed)] {
            let (lg, _) = common::block(t.loss_and_grads(&refs)).unwrap();
            assert!((lc - lg).abs() <= 1e-4 * lc.abs().max(1.0), "{kind:?} after two clipped steps: {what} loss {lg} vs CPU {lc}");
        }

        let before = common::block(g.named_params()).unwrap();
        let mut bad = base.clone();
        bad[0].s1[1] = f64::INFINITY;
        let bad_refs: Vec<&ListExample> = bad.iter().collect();
        assert!(matches!(common::block(g.step_lists(&bad_refs)), Err(Error::NonFinite { step: 3, .. })));
        assert!(before == common::block(g.named_params()).unwrap(), "{kind:?}: a non-finite step changed the weights");
        // Finite gradients that would carry the encoder's weights to ±∞ (a learning rate of
        // 10^38 with a weight decay of 10^6; the heads step at a sane rate): the whole step is
        // checked before any of it is made, so nothing changes anywhere.
        let huge = TrainConfig { full: true, clip: 0.0, head_lr: Some(1e-3), optim: lorb::train::AdamWConfig { lr: 1e38, weight_decay: 1e6, ..Default::default() }, ..cfg(Objective::Mwer, 0.0) };
        let mut h = on_kind(huge);
        let before = common::block(h.named_params()).unwrap();
        let (loss_before, _) = common::block(h.loss_and_grads(&refs)).unwrap();
        match common::block(h.step_lists(&refs)) {
            Err(Error::NonFinite { step: 1, what, .. }) => assert!(what.contains("parameters"), "{what}"),
            other => panic!("{kind:?}: expected NonFinite at step 1, got {other:?}"),
        }
        assert!(before == common::block(h.named_params()).unwrap(), "{kind:?}: a non-finite update was made");
        // The forward runs on the backend's own weights: the same loss, so they did not change.
        let (loss_after, _) = common::block(h.loss_and_grads(&refs)).unwrap();
        assert_eq!(loss_before, loss_after, "{kind:?}: a non-finite update was made");
        assert_eq!(h.step, 0);

        let train: Vec<ListExample> = (0..6).map(|i| base[i % 2].clone()).collect();
        let o = |ck: Option<std::path::PathBuf>| FitOptions { epochs: 2, lists_per_step: 2, patience: 0, checkpoint: ck, time_limit: None };
        let never = AtomicBool::new(false);
        let full = TrainConfig { clip: 1.0, ..full.clone() };
        let mut straight = on_kind(full.clone());
        let r0 = common::block(fit(&mut straight, &train, &base, &o(None), &never, |_| {})).unwrap();
        let dir = tmp(&format!("lorb-resume-full-{kind:?}"));
        let cancel = AtomicBool::new(false);
        let mut first = on_kind(full.clone());
        common::block(fit(&mut first, &train, &base, &o(Some(dir.clone())), &cancel, |p| {
            if let lorb::train::fit::Progress::Step { log, .. } = p {
                if log.step == 4 {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }))
        .unwrap();
        let mut resumed = on_kind(full);
        let r2 = common::block(fit(&mut resumed, &train, &base, &o(Some(dir)), &never, |_| {})).unwrap();
        assert_eq!((r2.steps, &r2.losses), (6, &r0.losses), "{kind:?}: loss curve of the resumed run");
        assert!(common::block(straight.named_params()).unwrap() == common::block(resumed.named_params()).unwrap(), "{kind:?}: resumed weights differ from the uninterrupted run");
    }
}

/// Dev and test scoring batch several lists per forward where the backend shares one (the GPU):
/// the scores equal those of one list at a time, and of the CPU.
#[test]
fn scores_of_many_lists_equal_one_at_a_time() {
    let f = fixture("roberta");
    let ls = lists(&f.meta);
    let many: Vec<&ListExample> = ls.iter().chain(ls.iter().rev()).collect();
    let mut cpu = trainer("roberta", &f, cfg(Objective::Mwer, 0.0), true);
    for kind in kinds(&f.model) {
        let mut t = on(kind, trainer("roberta", &f, cfg(Objective::Mwer, 0.0), true));
        let batched = common::block(t.scores_many(&many)).unwrap();
        for (i, l) in many.iter().enumerate() {
            let (one, c) = (common::block(t.scores(l)).unwrap(), common::block(cpu.scores(l)).unwrap());
            assert_eq!(batched[i].len(), l.ids.len());
            for ((a, b), c) in batched[i].iter().zip(&one).zip(&c) {
                assert!((a - b).abs() <= 1e-5 && (a - c).abs() <= 1e-4, "{kind:?} list {i}: batched {a}, alone {b}, CPU {c}");
            }
        }
    }
}

/// `lorb train --tune-s1` re-weights first-pass terms with λ on dev; train_log.json keeps the
/// chosen expression and `lorb eval --adapter` uses it.
#[test]
fn train_cli_tunes_the_first_pass_and_eval_uses_it() {
    let sample = common::root().join("www/sample/librispeech-blstm-dev_clean-20.jsonl");
    // A second first-pass term: a word-count bonus, which the sample's lists do not carry.
    let dir = tmp("lorb-tune-s1");
    std::fs::create_dir_all(&dir).unwrap();
    let lists = dir.join("lists.jsonl");
    let mut out = String::new();
    for line in std::fs::read_to_string(&sample).unwrap().lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        for h in v["hyps"].as_array_mut().unwrap() {
            let words = h["text"].as_str().unwrap().split_whitespace().count();
            h["len"] = serde_json::json!(words as f64);
        }
        out += &format!("{v}\n");
    }
    std::fs::write(&lists, out).unwrap();
    let model = fixture_dir("bert");
    let adapter = dir.join("adapter");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lorb"))
        .args(["train", "--train"])
        .arg(&lists)
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(&adapter)
        .args(["--backend", "cpu", "--truncate", "--depth", "6", "--holdout", "8", "--epochs", "1", "--batch", "4", "--lr", "1e-2", "--kappa", "0.5"])
        .args(["--s1", "1*score+0*len", "--tune-s1", "len", "--json"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let log: Value = serde_json::from_slice(&std::fs::read(adapter.join("train_log.json")).unwrap()).unwrap();
    let t = &log["s1_tuning"];
    assert_eq!(t["given_s1"], "score+0*len");
    assert!(t["dev_wer"].as_f64().unwrap() <= t["given_s1_dev_wer"].as_f64().unwrap(), "{t}");
    let s1: lorb::nbest::FirstPass = log["s1"].as_str().unwrap().parse().unwrap();
    assert_eq!(s1.terms.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(), ["score", "len"]);
    assert_eq!(s1.terms[0].0, 1.0, "only the tuned term moves");
    let eval = std::process::Command::new(env!("CARGO_BIN_EXE_lorb"))
        .args(["eval", "--json", "--backend", "cpu", "--truncate", "--nbest"])
        .arg(&lists)
        .arg("--model")
        .arg(&model)
        .arg("--adapter")
        .arg(&adapter)
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let e: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!((&e["s1"], &e["weight"]), (&log["s1"], &log["weight"]), "eval takes --s1 and λ from train_log.json");
    // The log records what the training lists looked like (at the training depth, under the
    // chosen s1), as `lorb profile` reports it; eval on those lists sees no mismatch.
    let profile = std::process::Command::new(env!("CARGO_BIN_EXE_lorb")).arg("profile").arg(&lists).args(["--depth", "6", "--s1", log["s1"].as_str().unwrap()]).output().unwrap();
    assert!(profile.status.success(), "{}", String::from_utf8_lossy(&profile.stderr));
    let p: Value = serde_json::from_slice(&profile.stdout).unwrap();
    assert_eq!(log["list_profile"], p);
    assert_eq!(p["fields"], serde_json::json!(["len", "score"]));
    assert_eq!(p["hyps"], 6.0);
    assert!(!String::from_utf8_lossy(&eval.stderr).contains("warning"), "{}", String::from_utf8_lossy(&eval.stderr));
    // The curves beside the log: an SVG with both panels, their axis titles, and one point per
    // epoch of the dev WER.
    let svg = std::fs::read_to_string(adapter.join("train_curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "not an SVG");
    let texts: Vec<&str> = svg.split("<text").skip(1).filter_map(|t| Some(t.split_once('>')?.1.split("</text>").next()?.trim())).collect();
    for text in ["training loss", "dev WER (%)", "step", "loss", "epoch", "WER %", "first pass"] {
        assert!(texts.contains(&text), "train_curves.svg lacks {text:?}: {texts:?}");
    }
    let epochs = log["report"]["curve"].as_array().unwrap().len();
    assert!(epochs >= 1 && svg.matches("<circle").count() == epochs, "{} points for {epochs} epochs", svg.matches("<circle").count());
}

/// `lorb train` on a fixture model and the bundled sample, on the CPU and (when there is one) the
/// GPU: it writes a PEFT adapter and a log, and `lorb eval --adapter` uses the λ tuned on dev.
#[test]
fn train_cli_writes_an_adapter_that_eval_uses() {
    let sample = common::root().join("www/sample/librispeech-blstm-dev_clean-20.jsonl");
    let model = fixture_dir("bert");
    let backends: Vec<&str> = kinds(&Model::load_dir(&model).unwrap()).iter().map(|k| if *k == BackendKind::Gpu { "gpu" } else { "cpu" }).collect();
    for backend in backends {
        let out = tmp(&format!("lorb-train-cli-{backend}"));
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_lorb"))
            .args(["train", "--train"])
            .arg(&sample)
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .args(["--backend", backend, "--truncate", "--depth", "6", "--holdout", "5", "--epochs", "2", "--batch", "4", "--lr", "1e-2", "--kappa", "0.5", "--cor-weight", "0.1", "--json"])
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let log: Value = serde_json::from_slice(&std::fs::read(out.join("train_log.json")).unwrap()).unwrap();
        assert_eq!(log["report"]["curve"].as_array().unwrap().len(), 2);
        assert_eq!(log["trainer"].as_str().unwrap().starts_with("gpu"), backend == "gpu");
        let a = Adapter::load_dir(&out, &Model::load_dir(&model).unwrap().config).unwrap();
        assert_eq!((a.r, a.pairs.len()), (4, 4), "r=4 on query and value of 2 layers");
        assert!(a.cls_head.is_some());
        let eval = std::process::Command::new(env!("CARGO_BIN_EXE_lorb"))
            .args(["eval", "--json", "--backend", "cpu", "--truncate", "--nbest"])
            .arg(&sample)
            .arg("--model")
            .arg(&model)
            .arg("--adapter")
            .arg(&out)
            .output()
            .unwrap();
        assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
        let e: Value = serde_json::from_slice(&eval.stdout).unwrap();
        assert_eq!(e["weight"].as_f64(), log["weight"].as_f64(), "eval takes λ from train_log.json");

        // `--adapter` is where training starts: with a learning rate of 0 the start adapter's
        // pairs come back unchanged (a fresh LoRA would come back with B = 0).
        let start = fixture_dir("bert").join("train_adapter");
        let a = Adapter::load_dir(&start, &Model::load_dir(&model).unwrap().config).unwrap();
        let again = out.with_extension("again");
        let _ = std::fs::remove_dir_all(&again);
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_lorb"))
            .args(["train", "--train"])
            .arg(&sample)
            .arg("--model")
            .arg(&model)
            .arg("--adapter")
            .arg(&start)
            .arg("--out")
            .arg(&again)
            .args(["--backend", backend, "--truncate", "--depth", "6", "--holdout", "5", "--epochs", "1", "--batch", "4", "--lr", "0", "--kappa", "0.5", "--json"])
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let b = Adapter::load_dir(&again, &Model::load_dir(&model).unwrap().config).unwrap();
        assert!(a.pairs.iter().any(|p| p.b.data.iter().any(|x| *x != 0.0)), "the start adapter has B ≠ 0");
        assert_eq!(a.pairs.len(), b.pairs.len());
        for (p, q) in a.pairs.iter().zip(&b.pairs) {
            assert!(p.a.data == q.a.data && p.b.data == q.b.data, "layer {} {:?}: the start pair came back changed", p.layer, p.target);
        }
    }
}

/// MD on the command line: the teacher's PLL scores are computed once into `--teacher-cache`,
/// and a second run reads them back and trains the same way.
#[test]
fn md_teacher_scores_are_cached() {
    let sample = common::root().join("www/sample/librispeech-blstm-dev_clean-20.jsonl");
    let model = fixture_dir("bert");
    let dir = tmp("lorb-md-cache");
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("teacher.jsonl");
    let run = |out: &str| {
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_lorb"))
            .args(["train", "--objective", "md", "--backend", "cpu", "--truncate", "--depth", "3", "--holdout", "5", "--epochs", "1", "--batch", "4", "--json", "--train"])
            .arg(&sample)
            .arg("--model")
            .arg(&model)
            .arg("--teacher")
            .arg(&model)
            .arg("--teacher-cache")
            .arg(&cache)
            .arg("--out")
            .arg(dir.join(out))
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let log: Value = serde_json::from_slice(&std::fs::read(dir.join(out).join("train_log.json")).unwrap()).unwrap();
        (log["report"]["losses"].clone(), String::from_utf8_lossy(&r.stderr).to_string())
    };
    let (first, _) = run("a");
    let lines = std::fs::read_to_string(&cache).unwrap().lines().count();
    assert_eq!(lines, 20, "one cached line per list");
    let (second, err) = run("b");
    assert!(err.contains("teacher PLL of 20 lists from the cache"), "{err}");
    assert_eq!(first, second, "the cached teacher gives the same training");
    assert_eq!(std::fs::read_to_string(&cache).unwrap().lines().count(), 20, "nothing recomputed");
}

/// An output folder (adapter + train log) written with a fault before any one of its file
/// operations holds its old files or all of the new ones, never a mix; a replacement cut between
/// its two renames leaves the complete new output beside it, which `prepare_out_dir` names.
/// Either way, writing again gives the new folder.
#[test]
fn an_output_folder_cut_at_any_file_operation_holds_the_old_or_the_new_files() {
    use lorb::output::{fail_file_ops_after, prepare_out_dir, write_dir};
    let root = tmp("lorb-write-dir");
    let dir = root.join("adapter");
    let new_side = root.join(".adapter.new");
    let old: &[(&str, &[u8])] = &[("adapter_config.json", b"old config"), ("adapter_model.safetensors", b"old weights"), ("train_log.json", b"old log")];
    let new: &[(&str, &[u8])] = &[("adapter_config.json", b"new config"), ("adapter_model.safetensors", b"new weights"), ("train_log.json", b"new log")];
    let holds = |d: &std::path::Path, files: &[(&str, &[u8])]| {
        let mut names: Vec<String> = std::fs::read_dir(d).map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
        names.sort();
        let mut want: Vec<String> = files.iter().map(|f| f.0.to_string()).collect();
        want.sort();
        names == want && files.iter().all(|(n, b)| std::fs::read(d.join(n)).ok().as_deref() == Some(*b))
    };
    for start_empty in [false, true] {
        let (mut faults, mut done) = (0, false);
        for k in 0..40 {
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&dir).unwrap();
            if !start_empty {
                write_dir(&dir, old).unwrap();
            }
            fail_file_ops_after(Some(k));
            let r = write_dir(&dir, new);
            fail_file_ops_after(None);
            match r {
                Ok(()) => {
                    assert!(holds(&dir, new) && !new_side.exists() && !root.join(".adapter.old").exists(), "k = {k}");
                    done = true;
                    break;
                }
                Err(e) => {
                    assert!(e.to_string().contains("injected fault"), "{e}");
                    faults += 1;
                    let before: &[(&str, &[u8])] = if start_empty { &[] } else { old };
                    if dir.exists() {
                        assert!(holds(&dir, before) || holds(&dir, new), "fault at operation {k}: the folder holds a mix");
                    } else {
                        assert!(holds(&new_side, new), "fault at operation {k}: the folder is gone and the new output is incomplete");
                        let e = prepare_out_dir(&dir, true).unwrap_err();
                        assert!(e.to_string().contains(".adapter.new"), "{e}");
                        std::fs::rename(&new_side, &dir).unwrap();
                        assert!(holds(&dir, new));
                        continue;
                    }
                    prepare_out_dir(&dir, true).unwrap();
                    write_dir(&dir, new).unwrap();
                    assert!(holds(&dir, new), "rewrite after a fault at operation {k}");
                }
            }
        }
        assert!(done && faults >= 4, "start_empty {start_empty}: {faults} faults");
    }
    let _ = std::fs::remove_dir_all(&root);
}
