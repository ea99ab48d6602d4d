//! LoRA adapters in PEFT's format: outputs with a PEFT-saved adapter match PEFT (hidden states
//! and CLS scores ≤ 1e-4, PLL ≤ 1e-3) on every backend; merge → unmerge restores the weights
//! (≤ 1e-6); hot-swap equals a fresh merge; saving round-trips; malformed adapters are typed
//! errors. Fixtures: tests/fixtures/make_fixtures.py (peft 0.21).
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use lorb::adapter::Target;
use lorb::{Adapter, Backend, Batch, Error, ErrorKind, Method, Model, ModelConfig};
use std::sync::Arc;

fn config(arch: &str) -> ModelConfig {
    ModelConfig::from_json(&std::fs::read(fixture_dir(arch).join("config.json")).unwrap()).unwrap()
}

fn adapter(arch: &str) -> Adapter {
    Adapter::load_dir(fixture_dir(arch).join("adapter"), &config(arch)).unwrap()
}

fn check_peft(arch: &str) {
    let exp: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture_dir(arch).join("adapter_expected.json")).unwrap()).unwrap();
    let sents = exp["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sents.iter().map(|s| s["text"].as_str().unwrap()).collect();
    for (mut scorer, unmerged) in scorers(&fixture_dir(arch)).into_iter().flat_map(|s| [(s, false)]).chain(scorers(&fixture_dir(arch)).into_iter().map(|s| (s, true))) {
        let name = format!("{arch} + adapter ({}) on {}", if unmerged { "unmerged" } else { "merged" }, scorer.backend.describe());
        block(scorer.set_adapter(adapter(arch))).unwrap();
        if unmerged {
            block(scorer.backend.set_adapter_unmerged(Some(Arc::new(adapter(arch))))).unwrap();
        }
        let h = scorer.model().config.hidden;
        let toks: Vec<Vec<u32>> = texts.iter().enumerate().map(|(i, t)| scorer.encoder.encode(i, t).unwrap().ids).collect();
        let refs: Vec<&[u32]> = toks.iter().map(|t| t.as_slice()).collect();
        let batch = Batch::pad(&refs, scorer.encoder.pad_id()).unwrap();
        let hidden = block(scorer.backend.hidden_states(&batch)).unwrap();
        for (r, s) in sents.iter().enumerate() {
            let got = &hidden[r * batch.seq * h..][..toks[r].len() * h];
            let d = max_abs_diff(got, &floats(&s["hidden"]));
            assert!(d <= 1e-4, "{name}: hidden states of sentence {r} differ by {d}");
        }
        let cls = block(scorer.score_list(&texts, Method::Cls)).unwrap();
        let pll = block(scorer.score_list(&texts, Method::Pll)).unwrap();
        for (i, s) in sents.iter().enumerate() {
            let d = (cls[i] - s["cls_score"].as_f64().unwrap()).abs();
            assert!(d <= 1e-4, "{name}: CLS score {i} differs by {d}");
            let d = (pll[i] - s["pll"].as_f64().unwrap()).abs();
            assert!(d <= 1e-3, "{name}: PLL {i} differs by {d}");
        }
    }
}

#[test]
fn bert_adapter_matches_peft() {
    check_peft("bert");
}

#[test]
fn roberta_rslora_adapter_matches_peft() {
    check_peft("roberta");
}

#[test]
fn distilbert_adapter_matches_peft() {
    check_peft("distilbert");
}

#[test]
fn minilm_adapter_matches_peft() {
    let dir = root().join("models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").exists() {
        assert!(std::env::var("LORB_REQUIRE_MODEL").as_deref() != Ok("1"), "model missing");
        return;
    }
    let exp: serde_json::Value = serde_json::from_slice(&std::fs::read(root().join("tests/fixtures/minilm_adapter_expected.json")).unwrap()).unwrap();
    let model = Arc::new(Model::load_dir(&dir).unwrap());
    let a = Adapter::load_dir(root().join("tests/fixtures/minilm_adapter"), &model.config).unwrap();
    for b in backends(model.clone()) {
        let enc = lorb::TextEncoder::load(dir.join("tokenizer.json"), &model.config).unwrap();
        let mut s = lorb::Scorer::new(enc, b, None);
        block(s.set_adapter(a.clone())).unwrap();
        for e in exp["sentences"].as_array().unwrap() {
            let t = e["text"].as_str().unwrap();
            let v = block(s.cls_vectors(&[t])).unwrap();
            let d = max_abs_diff(&v[0], &floats(&e["cls"]));
            assert!(d <= 1e-4, "{}: CLS vector differs by {d}", s.backend.describe());
            let sc = block(s.score_texts(&[t], Method::Cls)).unwrap()[0];
            assert!((sc - e["cls_score"].as_f64().unwrap()).abs() <= 1e-4, "{}: CLS score", s.backend.describe());
        }
    }
}

/// The unmerged path (base products plus low-rank branches, as training runs it) gives the same
/// outputs as the merged weights, on every backend, for every target module.
#[test]
fn unmerged_forward_matches_merged() {
    for arch in ["bert", "distilbert"] {
        let model = Arc::new(Model::load_dir(fixture_dir(arch)).unwrap());
        let a = Arc::new(adapter(arch));
        let ids: Vec<u32> = vec![2, 40, 51, 60, 77, 90, 3];
        let batch = Batch::pad(&[&ids, &ids[..5], &ids[..3]], 0).unwrap();
        let slots = [lorb::Slot { row: 0, pos: 2, target: 51 }, lorb::Slot { row: 1, pos: 1, target: 9 }];
        for mut b in backends(model.clone()) {
            block(b.set_adapter(Some(a.clone()))).unwrap();
            let merged = (block(b.cls_vectors(&batch)).unwrap(), block(b.masked_logprobs(&batch, &slots)).unwrap());
            block(b.set_adapter_unmerged(Some(a.clone()))).unwrap();
            let unmerged = (block(b.cls_vectors(&batch)).unwrap(), block(b.masked_logprobs(&batch, &slots)).unwrap());
            let d = max_abs_diff(&merged.0, &unmerged.0);
            assert!(d <= 1e-4, "{arch} on {}: CLS vectors merged vs unmerged differ by {d}", b.describe());
            let d = max_abs_diff(&merged.1, &unmerged.1);
            assert!(d <= 1e-3, "{arch} on {}: log-probs merged vs unmerged differ by {d}", b.describe());
            block(b.set_adapter_unmerged(None)).unwrap();
            let mut base = block(Backend::new(model.clone(), lorb::BackendKind::Cpu)).unwrap();
            let d = max_abs_diff(&block(b.cls_vectors(&batch)).unwrap(), &block(base.cls_vectors(&batch)).unwrap());
            assert!(d <= 1e-4, "{arch} on {}: removing the unmerged adapter left {d}", b.describe());
            // The adapter's trained MLM head parameters are gone again too.
            let d = max_abs_diff(&block(b.masked_logprobs(&batch, &slots)).unwrap(), &block(base.masked_logprobs(&batch, &slots)).unwrap());
            assert!(d <= 1e-3, "{arch} on {}: MLM head not restored ({d})", b.describe());
        }
    }
}

#[test]
fn merge_then_unmerge_restores_the_weights() {
    let model = Arc::new(Model::load_dir(fixture_dir("bert")).unwrap());
    let a = Arc::new(adapter("bert"));
    for mut b in backends(model.clone()) {
        let name = b.describe();
        let read = |b: &mut Backend| -> Vec<Vec<f32>> {
            Target::ALL
                .iter()
                .map(|&t| match b {
                    Backend::Cpu(c) => c.model().lora_block(1, t).to_vec(),
                    Backend::Gpu(g) => block(g.read_weight(1, t)).unwrap(),
                })
                .collect()
        };
        let before = read(&mut b);
        block(b.set_adapter(Some(a.clone()))).unwrap();
        let merged = read(&mut b);
        assert!(max_abs_diff(&merged[0], &before[0]) > 1e-3, "{name}: merging changed nothing");
        block(b.set_adapter(None)).unwrap();
        let after = read(&mut b);
        for (x, y) in before.iter().zip(&after) {
            let d = max_abs_diff(x, y);
            assert!(d <= 1e-6, "{name}: unmerge left a difference of {d}");
        }
    }
}

#[test]
fn hot_swap_equals_a_fresh_merge() {
    let model = Arc::new(Model::load_dir(fixture_dir("bert")).unwrap());
    let first = Arc::new(adapter("bert"));
    let mut second = adapter("bert");
    for p in &mut second.pairs {
        p.b.data.iter_mut().for_each(|x| *x = -0.5 * *x);
    }
    let second = Arc::new(second);
    let ids: Vec<u32> = vec![2, 40, 51, 60, 77, 3];
    let batch = Batch::pad(&[&ids, &ids[..4]], 0).unwrap();
    for mut b in backends(model.clone()) {
        block(b.set_adapter(Some(first.clone()))).unwrap();
        let with_first = block(b.cls_vectors(&batch)).unwrap();
        block(b.set_adapter(Some(second.clone()))).unwrap();
        let swapped = block(b.cls_vectors(&batch)).unwrap();
        let mut fresh = block(Backend::new(model.clone(), lorb::BackendKind::Cpu)).unwrap();
        block(fresh.set_adapter(Some(second.clone()))).unwrap();
        let want = block(fresh.cls_vectors(&batch)).unwrap();
        let d = max_abs_diff(&swapped, &want);
        assert!(d <= 1e-4, "{}: hot-swapped outputs differ from a fresh merge by {d}", b.describe());
        assert!(max_abs_diff(&with_first, &want) > 1e-3, "the two adapters must differ");
    }
}

#[test]
fn save_round_trips() {
    let a = adapter("distilbert");
    let dir = std::env::temp_dir().join(format!("lorb-adapter-{}", std::process::id()));
    a.save_dir(&dir).unwrap();
    let b = Adapter::load_dir(&dir, &config("distilbert")).unwrap();
    assert_eq!(a, b);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    let mut t: Vec<&str> = cfg["target_modules"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    t.sort();
    assert_eq!(t, ["k_lin", "lin1", "lin2", "out_lin", "q_lin", "v_lin"]);
    let _ = std::fs::remove_dir_all(&dir);
    // Copies that tests/fixtures/make_fixtures.py --check-lorb-adapter ARCH DIR loads in PEFT.
    for arch in ["bert", "roberta", "distilbert"] {
        adapter(arch).save_dir(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lorb-saved").join(arch)).unwrap();
    }
}

fn with_config(edit: impl Fn(&mut serde_json::Value)) -> lorb::Result<Adapter> {
    let d = fixture_dir("bert").join("adapter");
    let mut cj: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("adapter_config.json")).unwrap()).unwrap();
    edit(&mut cj);
    Adapter::from_bytes(&serde_json::to_vec(&cj).unwrap(), &std::fs::read(d.join("adapter_model.safetensors")).unwrap(), &config("bert"))
}

fn with_tensors(edit: impl Fn(&str, &[usize], &[u8]) -> Option<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>) -> lorb::Result<Adapter> {
    let d = fixture_dir("bert").join("adapter");
    let bytes = std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter_map(|(n, t)| edit(&n, t.shape(), t.data())).collect();
    let views: Vec<_> = kept.iter().map(|(n, dt, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap())).collect();
    let out = safetensors::serialize(views, None).unwrap();
    Adapter::from_bytes(&std::fs::read(d.join("adapter_config.json")).unwrap(), &out, &config("bert"))
}

#[test]
fn malformed_adapters_are_typed_errors() {
    use safetensors::Dtype::*;
    let kind = |r: lorb::Result<Adapter>| r.unwrap_err();
    assert!(matches!(kind(with_config(|c| c["peft_type"] = "IA3".into())), Error::Adapter(_)));
    assert!(matches!(kind(with_config(|c| c["r"] = 0.into())), Error::Adapter(_)));
    assert!(matches!(kind(with_config(|c| c["lora_alpha"] = (-2.0).into())), Error::Adapter(_)));
    assert!(matches!(kind(with_config(|c| c["use_dora"] = true.into())), Error::Unsupported(_)));
    assert!(matches!(kind(with_config(|c| c["rank_pattern"] = serde_json::json!({"query": 8}))), Error::Unsupported(_)));
    assert!(matches!(kind(with_config(|c| c["r"] = 8.into())), Error::ShapeMismatch { .. }), "rank 8 against rank-4 tensors");
    let e = kind(with_tensors(|n, s, b| Some((n.replace("attention.self.query", "attention.self.quary"), F32, s.to_vec(), b.to_vec()))));
    assert!(matches!(&e, Error::Adapter(m) if m.contains("quary")), "{e}");
    let e = kind(with_tensors(|n, s, b| Some((n.replace("layer.1.", "layer.7."), F32, s.to_vec(), b.to_vec()))));
    assert!(matches!(&e, Error::Adapter(m) if m.contains("layer 7")), "{e}");
    let e = kind(with_tensors(|n, s, b| (!n.contains("layer.0.attention.self.key.lora_B")).then(|| (n.to_string(), F32, s.to_vec(), b.to_vec()))));
    assert!(matches!(&e, Error::Adapter(m) if m.contains("without lora_B")), "{e}");
    let e = kind(with_tensors(|n, s, b| Some((n.to_string(), if n.contains("score.bias") { I32 } else { F32 }, s.to_vec(), b.to_vec()))));
    assert!(matches!(e, Error::UnsupportedDtype { .. }), "{e}");
    let e = kind(with_tensors(|n, s, b| Some((n.to_string(), F32, s.to_vec(), b.to_vec()))).and_then(|_| {
        Adapter::from_bytes(b"{}", b"junk", &config("bert"))
    }));
    assert_eq!(e.kind(), ErrorKind::Adapter);
    let d = fixture_dir("bert").join("adapter");
    let st = std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    let e = Adapter::from_bytes(&std::fs::read(d.join("adapter_config.json")).unwrap(), &st[..st.len() / 2], &config("bert")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Adapter, "{e}");
    // An adapter for another architecture's names.
    let e = Adapter::load_dir(fixture_dir("distilbert").join("adapter"), &config("bert")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Adapter, "{e}");
}

#[test]
fn adapter_info_reports_the_parameter_fraction() {
    let dir = root().join("models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").exists() {
        assert!(std::env::var("LORB_REQUIRE_MODEL").as_deref() != Ok("1"), "model missing");
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lorb"))
        .args(["adapter", "info", "--json", "--model"])
        .arg(&dir)
        .arg(root().join("tests/fixtures/minilm_adapter"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["r"], 4);
    // 6 layers × (query, value) × (4×384 + 384×4)
    assert_eq!(v["lora_parameters"], 6 * 2 * (4 * 384 * 2));
    let pct = v["lora_percent"].as_f64().unwrap();
    assert!((pct - 100.0 * 36864.0 / v["base_parameters"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(v["targets"]["attention.self.query"], serde_json::json!([0, 1, 2, 3, 4, 5]));
}

/// An encoder-only model (all-MiniLM-L6-v2 ships no MLM head) gets the MLM head an adapter
/// brings: with each fixture's own head moved into an adapter and removed from the model, PLL
/// on every backend equals transformers' (≤ 1e-3), where the bare model refuses PLL.
#[test]
fn an_adapter_gives_an_encoder_only_model_its_mlm_head() {
    for arch in ["bert", "roberta", "distilbert"] {
        let dir = fixture_dir(arch);
        let exp = expected(arch);
        let full = Model::load_dir(&dir).unwrap();
        let h = full.mlm.clone().unwrap();
        let mut a = Adapter::heads_only(&full.config);
        a.mlm_head = lorb::adapter::MlmHeadUpdate {
            dense_weight: Some(h.dense.weight.clone()),
            dense_bias: Some(h.dense.bias.clone()),
            ln_gamma: Some(h.ln.gamma.clone()),
            ln_beta: Some(h.ln.beta.clone()),
            bias: Some(h.bias.clone()),
        };
        a.sync_modules_to_save();
        let mut bare = full.clone();
        bare.mlm = None;
        let texts: Vec<&str> = exp["sentences"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap()).collect();
        let enc = || lorb::TextEncoder::load(dir.join("tokenizer.json"), &full.config).unwrap();
        let mut s = lorb::Scorer::new(enc(), block(Backend::new(Arc::new(bare.clone()), lorb::BackendKind::Cpu)).unwrap(), None);
        let e = block(s.score_list(&texts, Method::Pll)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Weights, "{arch}: {e}");
        assert!(bare.add_mlm_head_from(&a), "{arch}: no head added");
        assert!(!bare.clone().add_mlm_head_from(&a), "{arch}: a head added twice");
        for b in backends(Arc::new(bare)) {
            let mut s = lorb::Scorer::new(enc(), b, None);
            block(s.set_adapter(a.clone())).unwrap();
            let pll = block(s.score_list(&texts, Method::Pll)).unwrap();
            for (i, sent) in exp["sentences"].as_array().unwrap().iter().enumerate() {
                let d = (pll[i] - sent["pll"].as_f64().unwrap()).abs();
                assert!(d <= 1e-3, "{arch} on {}: PLL of sentence {i} differs by {d}", s.backend.describe());
            }
        }
    }
}
