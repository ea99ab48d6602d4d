//! Bad input gives a typed error with a clear message, never a panic.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use lorb::{nbest, BackendKind, Error, ErrorKind, Method, Model, ModelConfig, Scorer, TextEncoder};
use std::sync::Arc;

fn read(arch: &str, name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir(arch).join(name)).unwrap()
}

fn cpu_scorer(arch: &str) -> Scorer {
    block(Scorer::load_dir(fixture_dir(arch), BackendKind::Cpu)).unwrap()
}

#[test]
fn truncated_safetensors() {
    let w = read("bert", "model.safetensors");
    for cut in [0, 7, 100, w.len() / 2, w.len() - 1] {
        let e = Model::from_bytes(&read("bert", "config.json"), &w[..cut]).unwrap_err();
        assert!(matches!(e, Error::MalformedWeights(_)), "cut at {cut}: {e}");
        assert_eq!(e.kind(), ErrorKind::Weights);
    }
}

#[test]
fn corrupt_safetensors_header() {
    let mut w = read("bert", "model.safetensors");
    w[10] = b'}';
    w[11] = b'{';
    assert!(matches!(Model::from_bytes(&read("bert", "config.json"), &w).unwrap_err(), Error::MalformedWeights(_)));
    let junk = vec![0xffu8; 64];
    assert!(matches!(Model::from_bytes(&read("bert", "config.json"), &junk).unwrap_err(), Error::MalformedWeights(_)));
}

/// Rewrites the fixture's safetensors with one tensor dropped or reshaped.
fn edit_tensors(arch: &str, f: impl Fn(&str, Vec<usize>, Vec<u8>) -> Option<(Vec<usize>, Vec<u8>)>) -> Vec<u8> {
    let bytes = read(arch, "model.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in st.tensors() {
        if let Some((shape, data)) = f(&name, t.shape().to_vec(), t.data().to_vec()) {
            kept.push((name, shape, data));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = kept
        .iter()
        .map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn missing_tensor() {
    let w = edit_tensors("bert", |n, s, d| (!n.contains("layer.1.attention.self.key.weight")).then_some((s, d)));
    let e = Model::from_bytes(&read("bert", "config.json"), &w).unwrap_err();
    assert!(matches!(&e, Error::MissingTensor { name, .. } if name.contains("layer.1.attention.self.key")), "{e}");
}

#[test]
fn wrong_shape() {
    let w = edit_tensors("bert", |n, s, d| {
        if n.ends_with("layer.0.intermediate.dense.weight") {
            let half = d.len() / 2;
            Some((vec![s[0] / 2, s[1]], d[..half].to_vec()))
        } else {
            Some((s, d))
        }
    });
    let e = Model::from_bytes(&read("bert", "config.json"), &w).unwrap_err();
    assert!(matches!(&e, Error::ShapeMismatch { name, .. } if name.contains("intermediate")), "{e}");
}

#[test]
fn unknown_model_type_and_bad_config() {
    let e = ModelConfig::from_json(br#"{"model_type": "gpt2", "hidden_size": 8}"#).unwrap_err();
    assert!(matches!(&e, Error::UnknownArchitecture(t) if t == "gpt2"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(matches!(ModelConfig::from_json(b"not json").unwrap_err(), Error::Config(_)));
    let e = ModelConfig::from_json(br#"{"model_type": "bert", "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 5, "intermediate_size": 8, "vocab_size": 10, "max_position_embeddings": 8}"#).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    let e = ModelConfig::from_json(br#"{"model_type": "bert", "hidden_act": "relu", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "vocab_size": 10, "max_position_embeddings": 8}"#).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}

#[test]
fn tokenizer_vocab_larger_than_embeddings() {
    // The RoBERTa fixture's tokenizer (400 tokens) against a config claiming 100 rows.
    let mut cfg = ModelConfig::from_json(&read("bert", "config.json")).unwrap();
    cfg.vocab_size = 100;
    let e = TextEncoder::from_bytes(&read("bert", "tokenizer.json"), &cfg).err().unwrap();
    assert!(matches!(e, Error::VocabMismatch { tokenizer: 400, model: 100 }), "{e}");
    let e = TextEncoder::from_bytes(b"{\"not\": \"a tokenizer\"}", &cfg).err().unwrap();
    assert!(matches!(e, Error::Tokenizer(_)), "{e}");
}

#[test]
fn empty_inputs() {
    let mut s = cpu_scorer("bert");
    let e = block(s.score_texts(&["fine", ""], Method::Cls)).unwrap_err();
    assert!(matches!(e, Error::EmptyHypothesis(1)), "{e}");
    let e = block(s.score_list(&[], Method::Cls)).unwrap_err();
    assert!(matches!(e, Error::EmptyNBest(_)), "{e}");
    let e = nbest::parse_bytes(br#"{"utt": "u1", "ref": "a", "hyps": []}"#, "t").unwrap_err();
    assert!(matches!(&e, Error::EmptyNBest(u) if u == "u1"), "{e}");
    // An empty hypothesis inside a real n-best list is an ASR output: scored, PLL 0.
    let v = block(s.score_list(&["the dog", ""], Method::Pll)).unwrap();
    assert_eq!(v[1], 0.0);
    assert!(v[0] < 0.0);
}

#[test]
fn oversized_nbest_and_long_hypotheses() {
    let mut s = cpu_scorer("bert");
    s.max_hyps = 3;
    let e = block(s.score_list(&["a", "b", "c", "d"], Method::Cls)).unwrap_err();
    assert!(matches!(e, Error::NBestTooLarge { n: 4, max: 3, .. }), "{e}");
    let long = vec!["the"; 100].join(" "); // 102 tokens, the fixture has 64 positions
    let e = block(s.score_texts(&[&long], Method::Cls)).unwrap_err();
    assert!(matches!(e, Error::TooLong { tokens: 102, max: 64, .. }), "{e}");
    s.encoder.policy = lorb::LongPolicy::Truncate;
    let t = s.encoder.encode(0, &long).unwrap();
    assert_eq!(t.len(), 64);
    assert!(t.truncated && t.special[63], "keeps the closing special token");
    assert!(block(s.score_texts(&[&long], Method::Pll)).unwrap()[0].is_finite());
}

#[test]
fn non_utf8_and_malformed_nbest() {
    let e = nbest::parse_bytes(b"-1.0\tgood\n-2.0\tbad \xff\xfe\n", "x.txt").unwrap_err();
    assert!(matches!(e, Error::Parse { line: 2, .. }), "{e}");
    let e = nbest::parse_bytes(b"{\"utt\": \"a\", \"hyps\": [{\"text\": \"x\"}]}\n", "x.jsonl").unwrap_err();
    assert!(matches!(e, Error::Parse { line: 1, .. }), "{e}");
    let e = nbest::parse_bytes(b"no tab here\n", "x.txt").unwrap_err();
    assert!(matches!(e, Error::Parse { line: 1, .. }), "{e}");
    let e = nbest::parse_bytes(b"abc\tword\n", "x.txt").unwrap_err();
    assert!(matches!(e, Error::Parse { .. }), "{e}");
    let e = nbest::parse_bytes(&[0x1f, 0x8b, 1, 2, 3], "x.gz").unwrap_err();
    assert!(matches!(e, Error::Parse { .. }), "{e}");
}

#[test]
fn pll_without_mlm_head_and_cls_without_head() {
    // Strip the MLM head from the fixture: PLL must refuse, CLS without a head too.
    let w = edit_tensors("bert", |n, s, d| (!n.starts_with("cls.")).then_some((s, d)));
    let model = Model::from_bytes(&read("bert", "config.json"), &w).unwrap();
    assert!(model.mlm.is_none());
    let enc = TextEncoder::from_bytes(&read("bert", "tokenizer.json"), &model.config).unwrap();
    let backend = block(lorb::Backend::new(Arc::new(model), BackendKind::Cpu)).unwrap();
    let mut s = Scorer::new(enc, backend, None);
    assert!(matches!(block(s.score_list(&["a dog"], Method::Pll)).unwrap_err(), Error::NoMlmHead));
    assert!(matches!(block(s.score_list(&["a dog"], Method::Cls)).unwrap_err(), Error::NoClsHead(_)));
}

#[test]
fn out_of_vocabulary_ids_in_a_batch() {
    let mut s = cpu_scorer("bert");
    let b = lorb::Batch::pad(&[&[2, 9999, 3]], 0).unwrap();
    assert_eq!(block(s.backend.cls_vectors(&b)).unwrap_err().kind(), ErrorKind::Input);
    let slots = [lorb::Slot { row: 0, pos: 5, target: 1 }];
    let b = lorb::Batch::pad(&[&[2, 9, 3]], 0).unwrap();
    assert_eq!(block(s.backend.masked_logprobs(&b, &slots)).unwrap_err().kind(), ErrorKind::Input);
}
