//! The real default model, all-MiniLM-L6-v2, against HF transformers (tests/fixtures/
//! minilm_expected.json): the [CLS] vector through `lorb score --vectors` and the last row and
//! sums of all hidden states through the library, on every backend; ≤ 1e-4 max abs error.
//! Needs `scripts/fetch_model.sh` (CI runs it and sets LORB_REQUIRE_MODEL=1).
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use lorb::{Batch, Model, TextEncoder};
use std::process::Command;
use std::sync::Arc;

fn model_dir() -> Option<std::path::PathBuf> {
    let d = root().join("models/all-MiniLM-L6-v2");
    if d.join("model.safetensors").exists() {
        return Some(d);
    }
    assert!(std::env::var("LORB_REQUIRE_MODEL").as_deref() != Ok("1"), "model missing: run scripts/fetch_model.sh");
    eprintln!("note: all-MiniLM-L6-v2 not fetched; skipping");
    None
}

fn expected_sentences() -> Vec<serde_json::Value> {
    let p = root().join("tests/fixtures/minilm_expected.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v["sentences"].as_array().unwrap().clone()
}

#[test]
fn minilm_hidden_states_match_transformers() {
    let Some(dir) = model_dir() else { return };
    let model = Arc::new(Model::load_dir(&dir).unwrap());
    let enc = TextEncoder::load(dir.join("tokenizer.json"), &model.config).unwrap();
    let sents = expected_sentences();
    let toks: Vec<Vec<u32>> = sents.iter().enumerate().map(|(i, s)| enc.encode(i, s["text"].as_str().unwrap()).unwrap().ids).collect();
    for (s, t) in sents.iter().zip(&toks) {
        let want: Vec<u32> = s["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(&want, t);
    }
    let refs: Vec<&[u32]> = toks.iter().map(|t| t.as_slice()).collect();
    let batch = Batch::pad(&refs, 0).unwrap();
    let h = model.config.hidden;
    for mut b in backends(model.clone()) {
        let x = block(b.hidden_states(&batch)).unwrap();
        for (r, s) in sents.iter().enumerate() {
            let len = toks[r].len();
            let rows = &x[r * batch.seq * h..][..len * h];
            let d = max_abs_diff(&rows[..h], &floats(&s["cls"]));
            assert!(d <= 1e-4, "{}: CLS row of sentence {r} differs by {d}", b.describe());
            let d = max_abs_diff(&rows[(len - 1) * h..], &floats(&s["last"]));
            assert!(d <= 1e-4, "{}: last row of sentence {r} differs by {d}", b.describe());
            let sum: f64 = rows.iter().map(|&v| v as f64).sum();
            let abs: f64 = rows.iter().map(|&v| v.abs() as f64).sum();
            let n = rows.len() as f64;
            assert!((sum - s["sum"].as_f64().unwrap()).abs() <= 1e-4 * n, "{}: sum differs", b.describe());
            assert!((abs - s["abs_sum"].as_f64().unwrap()).abs() <= 1e-4 * n, "{}: abs sum differs", b.describe());
        }
    }
}

#[test]
fn lorb_score_prints_transformers_cls_vectors() {
    let Some(dir) = model_dir() else { return };
    let sents = expected_sentences();
    let mut kinds = vec!["cpu"];
    if block(lorb::gpu::GpuBackend::new(Arc::new(Model::load_dir(&dir).unwrap()))).is_ok() {
        kinds.push("gpu");
    } else {
        assert!(std::env::var("LORB_REQUIRE_GPU").as_deref() != Ok("1"), "GPU required");
    }
    for backend in kinds {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lorb"));
        cmd.args(["score", "--vectors", "--json", "--backend", backend, "--model"]).arg(&dir);
        for s in &sents {
            cmd.arg(s["text"].as_str().unwrap());
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), sents.len());
        for (l, s) in lines.iter().zip(&sents) {
            let d = max_abs_diff(&floats(&l["cls"]), &floats(&s["cls"]));
            assert!(d <= 1e-4, "lorb score --backend {backend}: CLS vector of {:?} differs by {d}", s["text"]);
        }
    }
}

/// `lorb eval` with no model, head or adapter uses the shipped LoRB adapter, its tuned λ and the
/// n-best depth it was trained at; `--no-adapter` gives the bare first pass.
#[test]
fn eval_defaults_to_the_shipped_lorb_adapter() {
    let Some(_) = model_dir() else { return };
    let sample = root().join("www/sample/librispeech-blstm-dev_clean-20.jsonl");
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(root().join("adapters/minilm-blstm-lorb/train_log.json")).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lorb")).current_dir(root()).args(["eval", "--json", "--backend", "cpu", "--nbest"]).arg(&sample).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["adapter"].as_str().unwrap().ends_with("adapters/minilm-blstm-lorb"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trained on lists like"));
    assert_eq!(v["weight"], log["weight"]);
    assert_eq!(v["depth"], log["depth"]);
    assert!(v["rescored_wer"].as_f64().unwrap() < 20.0);
    let bare = Command::new(env!("CARGO_BIN_EXE_lorb")).current_dir(root()).args(["eval", "--json", "--backend", "cpu", "--no-adapter", "--weight", "0", "--nbest"]).arg(&sample).output().unwrap();
    let b: serde_json::Value = serde_json::from_slice(&bare.stdout).unwrap();
    assert!(b["adapter"].is_null());
    assert_eq!(b["first_pass_wer"], v["first_pass_wer"]);
}

/// With no adapter given, `lorb eval` uses the shipped adapter whose training lists are like the
/// input's (train_log.json's list_profile: fields, s1 per word, top-2 gap): the ESPnet one for
/// ESPnet Conformer lists (score = decoder + CTC + LM), whose λ fits that s1 scale. An adapter
/// given for lists unlike its training lists gets a warning that says what differs.
#[test]
fn eval_uses_the_shipped_adapter_trained_on_lists_like_the_input() {
    let Some(_) = model_dir() else { return };
    let src = root().join("../shared/data/librispeech-espnet-30best/dev_clean.jsonl.gz");
    let lists = lorb::nbest::read_file(&src).unwrap();
    let dir = root().join("target/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("espnet-dev-clean-8.jsonl");
    std::fs::write(&file, lists[..8].iter().map(|nb| serde_json::to_string(nb).unwrap() + "\n").collect::<String>()).unwrap();
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(root().join("adapters/minilm-espnet30-lorb-cor/train_log.json")).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lorb")).current_dir(root()).args(["eval", "--json", "--backend", "cpu", "--nbest"]).arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["adapter"].as_str().unwrap().ends_with("adapters/minilm-espnet30-lorb-cor"), "{v}");
    assert_eq!(v["weight"], log["weight"]);
    assert!(err.contains("trained on lists like") && !err.contains("warning"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_lorb")).current_dir(root()).args(["eval", "--json", "--backend", "cpu", "--adapter", "adapters/minilm-blstm-lorb", "--nbest"]).arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: adapters/minilm-blstm-lorb was trained on lists unlike") && err.contains("fields score against ctc,decoder,lm,score") && err.contains("lorb tune"), "{err}");
}

/// `--dtype f16` (weights in f16, where the GPU has shader-f16) rescoring the sample with the
/// shipped adapter: the same order in every list, so the same WER, and every hypothesis's s2
/// within 5e-2 of f32's (CLS scores of about ±6; the whole sample, 20 lists, 2.4e-2 at worst on
/// lavapipe: activations are rounded to f16 in the products, as PyTorch's fp16 does).
#[test]
fn f16_rescoring_matches_f32_on_the_sample() {
    let Some(_) = model_dir() else { return };
    if !block(lorb::gpu::context::GpuContext::probe()).map(|r| r.f16).unwrap_or(false) {
        eprintln!("note: no GPU with shader-f16; skipping");
        return;
    }
    let run = |dtype: &str| -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_lorb"))
            .current_dir(root())
            .args(["rescore", "--backend", "gpu", "--dtype", dtype, "--limit", "3", "--nbest", "www/sample/librispeech-blstm-dev_clean-20.jsonl"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.contains(&format!(", {dtype}")), "{err}");
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (f32s, f16s) = (run("f32"), run("f16"));
    assert_eq!(f32s.len(), 3);
    let mut worst = 0f64;
    for (a, b) in f32s.iter().zip(&f16s) {
        let (ha, hb) = (a["hyps"].as_array().unwrap(), b["hyps"].as_array().unwrap());
        assert_eq!(ha.iter().map(|h| &h["text"]).collect::<Vec<_>>(), hb.iter().map(|h| &h["text"]).collect::<Vec<_>>(), "{}: the order changed", a["utt"]);
        for (x, y) in ha.iter().zip(hb) {
            worst = worst.max((x["s2"].as_f64().unwrap() - y["s2"].as_f64().unwrap()).abs());
        }
    }
    eprintln!("f16 against f32: s2 within {worst:.1e}");
    assert!(worst <= 5e-2 && worst > 0.0, "s2 differs by {worst}");
}
