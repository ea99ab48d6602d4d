//! Real n-best data from ../shared/data: `lorb eval` at λ = 0 reproduces the first-pass and
//! oracle WERs that ../shared/data/README.md lists, for all six sets; n-best formats parse.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use lorb::nbest::{self, FirstPass};
use lorb::rescore::{first_pass_scores, EvalSet};
use std::process::Command;

fn shared() -> std::path::PathBuf {
    root().join("../shared/data")
}

#[test]
fn first_pass_and_oracle_wers_match_the_data_readme() {
    let table = [
        ("librispeech-espnet-30best/dev_clean", 2703, 54402, "1.70", "0.59"),
        ("librispeech-espnet-30best/dev_other", 2864, 50948, "3.61", "1.76"),
        ("librispeech-espnet-30best/test_clean", 2620, 52576, "1.81", "0.67"),
        ("librispeech-blstm-100best/dev_clean", 2703, 54402, "7.17", "2.81"),
        ("librispeech-blstm-100best/dev_other", 2864, 50948, "19.79", "12.17"),
        ("librispeech-blstm-100best/test_clean", 2620, 52576, "7.26", "2.81"),
    ];
    for (set, utts, words, first, oracle) in table {
        let path = shared().join(format!("{set}.jsonl.gz"));
        let out = Command::new(env!("CARGO_BIN_EXE_lorb")).args(["eval", "--weight", "0", "--json", "--nbest"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["utterances"], utts, "{set}");
        assert_eq!(v["words"], words, "{set}");
        assert_eq!(format!("{:.2}", v["first_pass_wer"].as_f64().unwrap()), first, "{set}");
        assert_eq!(format!("{:.2}", v["oracle_wer"].as_f64().unwrap()), oracle, "{set}");
        assert_eq!(v["rescored_wer"], v["first_pass_wer"], "{set}");
        assert!(v["seconds"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn acoustic_only_first_pass_of_the_espnet_lists() {
    // ../shared/data/README.md: dropping `lm` gives 1.88 / 4.04 / 1.92.
    let fp: FirstPass = "0.6*decoder+0.4*ctc".parse().unwrap();
    for (set, want) in [("dev_clean", "1.88"), ("dev_other", "4.04"), ("test_clean", "1.92")] {
        let lists = nbest::read_file(shared().join(format!("librispeech-espnet-30best/{set}.jsonl.gz"))).unwrap();
        let s1: Vec<Vec<f64>> = lists.iter().map(|nb| first_pass_scores(nb, &fp).unwrap()).collect();
        let s2 = s1.iter().map(|v| vec![0.0; v.len()]).collect();
        let r = EvalSet::new(&lists, s1, s2).report(0.0);
        assert_eq!(format!("{:.2}", r.first_pass_wer), want, "{set}");
    }
}

#[test]
fn plain_and_gzip_formats() {
    let plain = nbest::parse_bytes(b"# a comment\n-1.5\tthe cat\n-2\tthe hat\n\n-0.5\ta dog\n", "t").unwrap();
    assert_eq!(plain.len(), 2);
    assert_eq!(plain[0].hyps[1].text, "the hat");
    assert_eq!(plain[0].hyps[1].score, -2.0);
    assert_eq!(plain[1].hyps.len(), 1);
    let sample = std::fs::read(root().join("www/sample/librispeech-blstm-dev_clean-20.jsonl")).unwrap();
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        e.write_all(&sample).unwrap();
        e.finish().unwrap();
    }
    let a = nbest::parse_bytes(&sample, "s").unwrap();
    let b = nbest::parse_bytes(&gz, "s.gz").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 20);
    assert!(a.iter().all(|nb| nb.hyps.len() == 100 && nb.reference.is_some()));
}

#[test]
fn rescore_tune_and_eval_on_a_fixture_model() {
    // The tiny BERT fixture has a CLS head and an MLM head: the whole CLI pipeline runs on it.
    let sample = root().join("www/sample/librispeech-blstm-dev_clean-20.jsonl");
    let model = fixture_dir("bert");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lorb")).args(args).arg("--model").arg(&model).arg("--nbest").arg(&sample).args(["--backend", "cpu", "--truncate"]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let v: serde_json::Value = serde_json::from_str(&run(&["eval", "--json", "--method", "pll", "--weight", "0.5", "--limit", "1"])).unwrap();
    for k in ["utterances", "words", "first_pass_wer", "rescored_wer", "oracle_wer", "seconds"] {
        assert!(v.get(k).is_some(), "eval --json lacks {k}");
    }
    assert_eq!(v["utterances"], 1);
    let t: serde_json::Value = serde_json::from_str(&run(&["tune", "--json", "--grid", "0:0.2:0.1", "--limit", "3"])).unwrap();
    assert_eq!(t["curve"].as_array().unwrap().len(), 3);
    let lines = run(&["rescore", "--weight", "0.1", "--limit", "2"]);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let hyps = first["hyps"].as_array().unwrap();
    assert_eq!(hyps.len(), 100);
    assert!(hyps.windows(2).all(|w| w[0]["score"].as_f64() >= w[1]["score"].as_f64()), "sorted best first");
    assert!(hyps.iter().all(|h| h.get("boost").is_none()), "no user's words, no boost");
    // With the user's words (the first list's reference as their correction): each hypothesis'
    // boost is β times the lexicon's, and it is in the total.
    let reference = first["ref"].as_str().unwrap();
    let words = std::env::temp_dir().join(format!("lorb-user-words-{}.txt", std::process::id()));
    std::fs::write(&words, format!("{reference}\n")).unwrap();
    let lines = run(&["rescore", "--weight", "0.1", "--limit", "1", "--user-words", words.to_str().unwrap(), "--lexicon-weight", "0.25"]);
    std::fs::remove_file(&words).ok();
    let lex = lorb::lexicon::Lexicon::from_transcripts([reference]);
    let v: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let mut boosted = 0;
    for h in v["hyps"].as_array().unwrap() {
        let want = 0.25 * lex.boost(h["text"].as_str().unwrap());
        let got = h.get("boost").map_or(0.0, |b| b.as_f64().unwrap());
        assert!((got - want).abs() < 1e-9, "{h}: boost {got}, expected {want}");
        let (s1, s2, score) = (h["s1"].as_f64().unwrap(), h["s2"].as_f64().unwrap(), h["score"].as_f64().unwrap());
        assert!((score - (s1 + got + 0.1 * s2)).abs() < 1e-9, "{h}");
        boosted += (got > 0.0) as usize;
    }
    assert!(boosted > 0, "no hypothesis used a rare word of the reference");
    // Without --lexicon-weight, β is the adapter's (train_log.json "lexicon_weight"); a log whose
    // β is negative is refused before any scoring.
    let dir = std::env::temp_dir().join(format!("lorb-beta-adapter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture_dir("bert").join("adapter").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(&words, format!("{reference}\n")).unwrap();
    let with_log = |log: &str| {
        std::fs::write(dir.join("train_log.json"), log).unwrap();
        Command::new(env!("CARGO_BIN_EXE_lorb"))
            .args(["rescore", "--weight", "0.1", "--limit", "1", "--user-words", words.to_str().unwrap(), "--adapter", dir.to_str().unwrap()])
            .arg("--model").arg(&model).arg("--nbest").arg(&sample).args(["--backend", "cpu", "--truncate"])
            .output()
            .unwrap()
    };
    let out = with_log(r#"{"lexicon_weight": 0.3}"#);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    for h in v["hyps"].as_array().unwrap() {
        let want = 0.3 * lex.boost(h["text"].as_str().unwrap());
        assert!((h.get("boost").map_or(0.0, |b| b.as_f64().unwrap()) - want).abs() < 1e-9, "{h}: expected the adapter's β 0.3");
    }
    let out = with_log(r#"{"lexicon_weight": -1}"#);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty() && err.contains("lexicon_weight -1"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_file(&words).ok();
}
