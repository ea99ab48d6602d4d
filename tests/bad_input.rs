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

/// A NaN or ∞ anywhere in the weights (model or CLS head) is refused when they are read, naming
/// the tensor, instead of surfacing later as non-finite scores.
#[test]
fn non_finite_weights_are_refused_at_load() {
    for bad in [f32::NAN, f32::INFINITY] {
        let w = edit_tensors("bert", |n, s, mut d| {
            if n.ends_with("layer.1.output.dense.weight") {
                d[40..44].copy_from_slice(&bad.to_le_bytes());
            }
            Some((s, d))
        });
        let e = Model::from_bytes(&read("bert", "config.json"), &w).unwrap_err();
        assert!(matches!(&e, Error::MalformedWeights(m) if m.contains("layer.1.output.dense.weight") && m.contains("value 10")), "{e}");
        assert_eq!(e.kind(), lorb::ErrorKind::Weights);
    }
    let head = lorb::ClsHead { weight: vec![f32::NAN; 48], bias: 0.0 }.to_safetensors().unwrap();
    let e = lorb::ClsHead::from_safetensors(&head, 48).unwrap_err();
    assert!(matches!(&e, Error::MalformedWeights(m) if m.contains("must be finite")), "{e}");
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

/// Found by tests/fuzz.rs: a syntax error inside tokenizer.json's "decoder" made the tokenizers
/// crate panic (an abort in the browser); it is a tokenizer error. First-pass expressions whose
/// coefficient or sum is not finite are refused, and a λ grid holds at most MAX_GRID values.
#[test]
fn fuzz_findings_are_typed_errors() {
    let config = ModelConfig::from_json(&read("bert", "config.json")).unwrap();
    let tok = String::from_utf8(read("bert", "tokenizer.json")).unwrap().replacen("\"decoder\": {", "\"decoder\": {,,", 1);
    let e = TextEncoder::from_bytes(tok.as_bytes(), &config).err().expect("refused");
    assert_eq!(e.kind(), lorb::ErrorKind::Tokenizer, "{e}");
    // A grid of exactly MAX_GRID + 1 values (the bound counted steps, not values).
    assert_eq!(lorb::rescore::parse_grid("0:99999:1").unwrap().len(), lorb::rescore::MAX_GRID);
    assert!(lorb::rescore::parse_grid("0:100000:1").is_err());
    let e = "1e999*score".parse::<lorb::FirstPass>().unwrap_err();
    assert!(e.to_string().contains("finite"), "{e}");
    let fp: lorb::FirstPass = "1e308*score+1e308*lm".parse().unwrap();
    let h = lorb::Hypothesis { text: "a b".into(), score: 10.0, fields: [("lm".to_string(), serde_json::json!(10.0))].into_iter().collect() };
    let e = fp.eval(&h).unwrap_err();
    assert!(e.to_string().contains("not a finite number"), "{e}");
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

/// Training keeps the one limit on hypotheses per list: its lists are refused when read, naming
/// the utterance, before any step.
#[test]
fn training_lists_over_the_hypothesis_limit_are_refused() {
    let s = cpu_scorer("bert");
    let hyps = |n: usize| (0..n).map(|i| lorb::Hypothesis { text: format!("the dog {i}"), score: -(i as f64), fields: Default::default() }).collect();
    let nb = |n: usize| lorb::NBest { utt: "long-list".into(), reference: Some("the dog".into()), hyps: hyps(n) };
    let fp = lorb::FirstPass::default();
    let max = lorb::score::DEFAULT_MAX_HYPS;
    assert_eq!(lorb::train::ListExample::from_nbest(&nb(max), &fp, &s.encoder, None).unwrap().ids.len(), max);
    let e = lorb::train::ListExample::from_nbest(&nb(max + 1), &fp, &s.encoder, None).unwrap_err();
    assert!(matches!(&e, Error::NBestTooLarge { utt, n, .. } if utt == "long-list" && *n == max + 1), "{e}");
    // A depth within the limit trains on the top of a longer list.
    assert_eq!(lorb::train::ListExample::from_nbest(&nb(max + 1), &fp, &s.encoder, Some(30)).unwrap().ids.len(), 30);
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

/// The bert fixture's config.json with `edit` applied.
fn config_with(edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&read("bert", "config.json")).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// Sizes no BERT-family model has are refused by the config parser, before anything is sized
/// from them (10^18 layers used to panic with "capacity overflow", 10^9 to abort on a 576 GB
/// allocation), and so are a non-positive eps and counts that disagree with the weights.
#[test]
fn absurd_configs_are_refused_before_anything_is_allocated() {
    let w = read("bert", "model.safetensors");
    let huge = serde_json::json!(1_000_000_000_000_000_000u64);
    for (key, value) in [
        ("num_hidden_layers", huge.clone()),
        ("num_hidden_layers", serde_json::json!(1_000_000_000)),
        ("hidden_size", serde_json::json!(1u64 << 40)),
        ("intermediate_size", huge.clone()),
        ("vocab_size", huge.clone()),
        ("max_position_embeddings", huge.clone()),
        ("type_vocab_size", huge.clone()),
        ("num_attention_heads", serde_json::json!(1u64 << 40)),
        ("layer_norm_eps", serde_json::json!(0.0)),
        ("layer_norm_eps", serde_json::json!(-1e-12)),
        ("layer_norm_eps", serde_json::json!("small")),
        ("pad_token_id", huge.clone()),
    ] {
        let c = config_with(|v| v[key] = value.clone());
        let e = ModelConfig::from_json(&c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{key} = {value}: {e}");
        assert!(Model::from_bytes(&c, &w).is_err(), "{key} = {value}");
    }
    // Fewer layers than the weights hold, and no token types where the weights have a table.
    let e = Model::from_bytes(&config_with(|v| v["num_hidden_layers"] = 1.into()), &w).unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("more layers")),
        "{e}"
    );
    let e = Model::from_bytes(&config_with(|v| v["type_vocab_size"] = 0.into()), &w).unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("token-type")),
        "{e}"
    );
}

/// The bert fixture's adapter with its config or tensors edited.
fn adapter_with(
    edit_config: impl Fn(&mut serde_json::Value),
    edit_tensor: impl Fn(&str, &mut Vec<f32>),
) -> lorb::Result<lorb::Adapter> {
    let dir = fixture_dir("bert").join("adapter");
    let mut cj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
    edit_config(&mut cj);
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in st.tensors() {
        let mut x: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        edit_tensor(&name, &mut x);
        kept.push((
            name,
            t.shape().to_vec(),
            x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = kept
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let cfg = ModelConfig::from_json(&read("bert", "config.json")).unwrap();
    lorb::Adapter::from_bytes(
        &serde_json::to_vec(&cj).unwrap(),
        &safetensors::serialize(views, None).unwrap(),
        &cfg,
    )
}

/// An adapter's values are finite, r is a positive integer, α is bounded, and every named
/// target is a module lorb adapts: each is checked when the adapter is read.
#[test]
fn adapters_with_non_finite_values_or_bad_fields_are_refused() {
    assert!(adapter_with(|_| {}, |_, _| {}).is_ok());
    for (what, bad) in [
        ("lora_B", f32::NAN),
        ("lora_A", f32::INFINITY),
        ("score.weight", f32::NAN),
        ("score.bias", f32::NEG_INFINITY),
    ] {
        let e = adapter_with(
            |_| {},
            |n, x| {
                if n.contains(what) {
                    x[0] = bad
                }
            },
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Adapter, "{what}: {e}");
        assert!(e.to_string().contains("finite"), "{what}: {e}");
    }
    let e = adapter_with(|c| c["r"] = 4.5.into(), |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("r = 4.5"), "{e}");
    let e = adapter_with(|c| c["lora_alpha"] = 1e308.into(), |_, _| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Adapter, "{e}");
    let e = adapter_with(
        |c| c["target_modules"] = serde_json::json!(["query", "qurey"]),
        |_, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("qurey"), "{e}");
    assert!(adapter_with(
        |c| c["target_modules"] = serde_json::json!(["query", "value", "dense"]),
        |_, _| {}
    )
    .is_ok());
}

/// A score that is NaN or infinite never leaves the library: it is an error of kind `numeric`
/// naming the hypothesis (and the list, where one is known).
#[test]
fn non_finite_scores_are_numeric_errors() {
    let mut s = cpu_scorer("bert");
    let h = s.model().config.hidden;
    s.cls_head = Some(lorb::model::ClsHead {
        weight: vec![f32::MAX; h],
        bias: 0.0,
    });
    let e = block(s.score_list(&["a b c", "d e"], Method::Cls)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Numeric, "{e}");
    assert!(
        matches!(e.in_list("utt-7"), Error::NonFiniteScore { ref utt, index: 0, .. } if utt == "utt-7")
    );
    s.cls_head = Some(lorb::model::ClsHead {
        weight: vec![0.1; h],
        bias: f32::NAN,
    });
    assert_eq!(
        block(s.score_list(&["a b c"], Method::Cls))
            .unwrap_err()
            .kind(),
        ErrorKind::Numeric
    );
    assert!(
        lorb::rescore::check_weight(f64::NAN).is_err()
            && lorb::rescore::check_weight(f64::INFINITY).is_err()
            && lorb::rescore::check_weight(1.5).is_ok()
    );
}

/// A BOM is skipped, a JSON array is named as such, a truncated gzip names the line it broke
/// in, a non-finite first-pass score is refused, and a too-long hypothesis is quoted, not copied.
#[test]
fn nbest_files_with_a_bom_an_array_a_cut_gzip_or_nan_scores() {
    let lists = nbest::parse_bytes(
        "\u{feff}{\"utt\": \"a\", \"hyps\": [{\"text\": \"x\", \"score\": -1}]}\n".as_bytes(),
        "bom.jsonl",
    )
    .unwrap();
    assert_eq!(lists[0].utt, "a");
    let e = nbest::parse_bytes(b"[{\"utt\": \"a\", \"hyps\": []}]", "array.json").unwrap_err();
    assert!(e.to_string().contains("JSON array"), "{e}");
    // A gzip stream of 40 lines, cut in the middle: the error names a line past the first.
    let text: String = (0..40)
        .map(|i| format!("-{i}.5\thypothesis number {i} with some words\n"))
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    match nbest::parse_bytes(&gz[..gz.len() * 2 / 3], "cut.gz").unwrap_err() {
        Error::Parse { line, msg, .. } => {
            assert!(line > 1 && msg.contains("truncated"), "line {line}: {msg}")
        }
        e => panic!("{e}"),
    }
    for bad in ["nan", "inf", "-inf"] {
        let e = nbest::parse_bytes(format!("{bad}\tword\n").as_bytes(), "x.txt").unwrap_err();
        assert!(e.to_string().contains("finite"), "{bad}: {e}");
    }
    let mut s = cpu_scorer("bert");
    let long = "word ".repeat(5000);
    let e = block(s.score_list(&["short", &long], Method::Cls))
        .unwrap_err()
        .in_list("utt-3");
    let msg = e.to_string();
    assert!(
        msg.contains("\"utt-3\"") && msg.contains("hypothesis 1") && msg.len() < 400,
        "{msg}"
    );
}

fn lorb_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lorb"))
        .args(args)
        .output()
        .unwrap()
}

/// The command line refuses what it cannot answer, with a non-zero exit and no panic: a WER
/// from no references or no lists, λ NaN, a grid of 10^21 values, a bench with nothing to time.
#[test]
fn the_command_line_reports_nothing_computed_from_nothing() {
    let dir = common::root().join("target/tmp/lorb-cli-nothing");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = fixture_dir("bert");
    let m = model.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let noref = write("noref.jsonl", "{\"utt\": \"a\", \"hyps\": [{\"text\": \"a b\", \"score\": -1}, {\"text\": \"a c\", \"score\": -2}]}\n");
    let empty = write("empty.jsonl", "");
    let good = write("good.jsonl", "{\"utt\": \"a\", \"ref\": \"a b\", \"hyps\": [{\"text\": \"a b\", \"score\": -1}, {\"text\": \"a c\", \"score\": -2}]}\n");
    let four = write("four.jsonl", "{\"utt\": \"big\", \"ref\": \"a b\", \"hyps\": [{\"text\": \"a b\", \"score\": -1}, {\"text\": \"a c\", \"score\": -2}, {\"text\": \"a d\", \"score\": -3}, {\"text\": \"a e\", \"score\": -4}]}\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // One limit on hypotheses per list, whatever the method and path (the CLI's CLS path
        // batches several lists and checks each).
        (
            vec!["eval", "--method", "cls", "--max-hyps", "3", "--weight", "1", "--model", m, "--nbest", &four],
            "\"big\" has 4 hypotheses, more than the limit of 3",
        ),
        (
            vec!["eval", "--method", "pll", "--max-hyps", "3", "--weight", "1", "--model", m, "--nbest", &four],
            "\"big\" has 4 hypotheses, more than the limit of 3",
        ),
        (
            vec!["eval", "--weight", "0", "--nbest", &noref],
            "reference",
        ),
        (
            vec!["eval", "--weight", "0", "--nbest", &empty],
            "no n-best lists",
        ),
        (
            vec!["eval", "--weight", "0", "--limit", "0", "--nbest", &good],
            "at least 1",
        ),
        (
            vec!["eval", "--weight", "0", "--depth", "0", "--nbest", &good],
            "at least 1",
        ),
        (
            vec!["eval", "--weight", "NaN", "--model", m, "--nbest", &good],
            "finite",
        ),
        (
            vec!["tune", "--grid", "0:1e12:1e-9", "--nbest", &good],
            "more than",
        ),
        (
            vec!["tune", "--grid", "0:nan:0.1", "--nbest", &good],
            "grid",
        ),
        (
            vec!["bench", "--model", m, "--backend", "cpu", "--nbest", &empty],
            "at least 2",
        ),
        (
            vec![
                "bench",
                "--train",
                "--model",
                m,
                "--backend",
                "cpu",
                "--nbest",
                &empty,
            ],
            "at least 2",
        ),
        (vec!["bench", "--matmul", "64x0x8", "--backend", "gpu"], "expected N or MxNxK"),
        (vec!["bench", "--matmul", "64", "--backend", "cpu"], "GPU's kernel"),
        (vec!["bench", "--shape", "bert-base", "--rows", "30,0", "--backend", "cpu"], "at least one sequence"),
        (vec!["score", "--backend", "cpu", "--dtype", "f16", "--model", m, "hello"], "dtype f16 needs the GPU"),
        (vec!["score", "--dtype", "f8", "--model", m, "hello"], "expected f32, f16 or auto"),
    ];
    for (args, want) in cases {
        let out = lorb_cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// Training checks its arguments and --out before any work; a NaN/Inf stop writes the last
/// finite state and exits non-zero; an existing adapter folder needs --force.
#[test]
fn training_on_the_command_line_fails_early_and_loudly() {
    let dir = common::root().join("target/tmp/lorb-cli-train");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sample = common::root().join("www/sample/librispeech-blstm-dev_clean-20.jsonl");
    let model = fixture_dir("bert");
    let train = |out: &std::path::Path, extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lorb"));
        c.args([
            "train",
            "--backend",
            "cpu",
            "--truncate",
            "--depth",
            "4",
            "--holdout",
            "5",
            "--epochs",
            "1",
            "--batch",
            "4",
            "--model",
        ])
        .arg(&model)
        .arg("--train")
        .arg(&sample)
        .arg("--out")
        .arg(out)
        .args(extra);
        c.output().unwrap()
    };
    for (extra, want) in [
        (vec!["--lr", "nan"], "lr"),
        (vec!["--lr=-1"], "lr"),
        (vec!["--kappa", "0"], "kappa"),
        (vec!["--clip", "nan"], "clip"),
        (vec!["--warmup", "5"], "warmup"),
        (vec!["--epochs", "0"], "epochs"),
        (vec!["--batch", "0"], "batch"),
        (vec!["--alpha", "nan"], "lora_alpha"),
    ] {
        let out = dir.join("never");
        let r = train(&out, &extra);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains(want),
            "{extra:?}: {err}"
        );
        assert!(
            !out.join("adapter_config.json").exists(),
            "{extra:?} wrote an adapter"
        );
    }
    // A file where the folder should be: refused at once.
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let r = train(&file, &[]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("not a folder"));

    // A diverging run (weight decay 10^6 at lr 10^38): exit non-zero, the last finite state written.
    let out = dir.join("diverged");
    let r = train(
        &out,
        &["--lr", "1e38", "--weight-decay", "1e6", "--clip", "0"],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("non-finite"), "{err}");
    let cfg = lorb::ModelConfig::from_json(&read("bert", "config.json")).unwrap();
    let a = lorb::Adapter::load_dir(&out, &cfg).unwrap();
    assert!(a
        .pairs
        .iter()
        .all(|p| p.a.data.iter().chain(&p.b.data).all(|x| x.is_finite())));

    // An adapter already there is kept unless --force.
    let r = train(&out, &["--lr", "1e-3"]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("--force"));
    let r = train(&out, &["--lr", "1e-3", "--force"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}
