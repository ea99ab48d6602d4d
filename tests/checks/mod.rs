//! The fixture checks shared by the native suites (tests/reference.rs) and the browser suite
//! (tests/web.rs): one scorer against HF transformers' expected.json.
//! Tolerances: hidden states and CLS scores ≤ 1e-4 max abs error; MLM log-prob rows ≤ 1e-3; PLL
//! per sentence ≤ 1e-3.

use lorb::{Batch, Method, Scorer, Slot};
use serde_json::Value;

pub const HIDDEN_TOL: f32 = 1e-4;
pub const PLL_TOL: f64 = 1e-3;

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub async fn check_scorer(arch: &str, scorer: &mut Scorer, exp: &Value) {
    let sentences = exp["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
    let name = format!("{arch} on {}", scorer.backend.describe());
    let h = scorer.model().config.hidden;
    // Tokenization matches the Python tokenizers library.
    let tokens: Vec<Vec<u32>> = texts.iter().enumerate().map(|(i, t)| scorer.encoder.encode(i, t).unwrap().ids).collect();
    for (s, ids) in sentences.iter().zip(&tokens) {
        let want: Vec<u32> = s["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(&want, ids, "{name}: token ids of {:?}", s["text"]);
    }
    // Hidden states of all sentences in one padded batch.
    let seqs: Vec<&[u32]> = tokens.iter().map(|t| t.as_slice()).collect();
    let batch = Batch::pad(&seqs, scorer.encoder.pad_id()).unwrap();
    let hidden = scorer.backend.hidden_states(&batch).await.unwrap();
    for (r, s) in sentences.iter().enumerate() {
        let want = floats(&s["hidden"]);
        let len = tokens[r].len();
        let got = &hidden[r * batch.seq * h..][..len * h];
        let d = max_abs_diff(got, &want);
        assert!(d <= HIDDEN_TOL, "{name}: hidden states of sentence {r} differ by {d}");
    }
    // One full log-softmax row of the MLM head on the unmasked input.
    let slots: Vec<Slot> = sentences
        .iter()
        .enumerate()
        .map(|(r, s)| Slot { row: r as u32, pos: s["logprob_row_pos"].as_u64().unwrap() as u32, target: 0 })
        .collect();
    let rows = scorer.backend.logprob_rows(&batch, &slots).await.unwrap();
    let v = scorer.model().config.vocab_size;
    for (r, s) in sentences.iter().enumerate() {
        let d = max_abs_diff(&rows[r * v..][..v], &floats(&s["logprob_row"]));
        assert!(d <= 1e-3, "{name}: MLM log-probs of sentence {r} differ by {d}");
    }
    // CLS scores, PLL and PLL-word-l2r, all sentences as one list and each alone.
    let cls = scorer.score_list(&texts, Method::Cls).await.unwrap();
    let pll = scorer.score_list(&texts, Method::Pll).await.unwrap();
    let pllw = scorer.score_list(&texts, Method::PllWord).await.unwrap();
    for (i, s) in sentences.iter().enumerate() {
        let d = (cls[i] - s["cls_score"].as_f64().unwrap()).abs();
        assert!(d <= HIDDEN_TOL as f64, "{name}: CLS score {i} differs by {d}");
        let d = (pll[i] - s["pll"].as_f64().unwrap()).abs();
        assert!(d <= PLL_TOL, "{name}: PLL of sentence {i} is {} (want {}), diff {d}", pll[i], s["pll"]);
        let d = (pllw[i] - s["pll_word_l2r"].as_f64().unwrap()).abs();
        assert!(d <= PLL_TOL, "{name}: PLL-word-l2r of sentence {i} differs by {d}");
        let alone = scorer.score_list(&[texts[i]], Method::Pll).await.unwrap()[0];
        assert!((alone - pll[i]).abs() <= PLL_TOL, "{name}: PLL alone vs batched differ for {i}");
    }
    assert!(
        sentences.iter().any(|s| (s["pll"].as_f64().unwrap() - s["pll_word_l2r"].as_f64().unwrap()).abs() > 0.1),
        "fixture must contain multi-piece words so word-l2r differs from token PLL"
    );
}
