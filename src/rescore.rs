//! Combine first- and second-pass scores, re-rank, and measure WER.

use crate::error::Result;
use crate::nbest::{FirstPass, NBest};
use crate::wer::{word_errors, WerCount};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct RescoredHyp {
    pub text: String,
    /// First-pass score s1.
    pub s1: f64,
    /// Second-pass score s2.
    pub s2: f64,
    /// `s1 + λ·s2`
    pub score: f64,
    /// Rank in the first pass (0-based, the input order).
    pub first_rank: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rescored {
    pub utt: String,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Hypotheses best first.
    pub hyps: Vec<RescoredHyp>,
}

/// Index of the best value; the earliest wins ties (first-pass order breaks ties).
pub fn argmax(v: impl IntoIterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in v.into_iter().enumerate() {
        if x > best.1 || i == 0 {
            best = (i, x);
        }
    }
    best.0
}

pub fn first_pass_scores(nb: &NBest, fp: &FirstPass) -> Result<Vec<f64>> {
    nb.hyps.iter().map(|h| fp.eval(h)).collect()
}

/// Re-ranks one list by `s1 + λ·s2` (stable: ties keep first-pass order).
pub fn rescore_list(nb: &NBest, s1: &[f64], s2: &[f64], weight: f64) -> Rescored {
    let mut hyps: Vec<RescoredHyp> = nb
        .hyps
        .iter()
        .enumerate()
        .map(|(i, h)| RescoredHyp { text: h.text.clone(), s1: s1[i], s2: s2[i], score: s1[i] + weight * s2[i], first_rank: i })
        .collect();
    hyps.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal));
    Rescored { utt: nb.utt.clone(), reference: nb.reference.clone(), hyps }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalReport {
    pub utterances: usize,
    pub words: usize,
    pub first_pass_wer: f64,
    pub rescored_wer: f64,
    pub oracle_wer: f64,
    pub weight: f64,
}

/// Per-utterance data needed to evaluate any λ quickly: errors of each hypothesis and scores.
pub struct EvalSet {
    pub errors: Vec<Vec<usize>>,
    pub words: Vec<usize>,
    pub s1: Vec<Vec<f64>>,
    pub s2: Vec<Vec<f64>>,
}

impl EvalSet {
    /// Lists without a reference are skipped (they cannot be scored for WER).
    pub fn new(lists: &[NBest], s1: Vec<Vec<f64>>, s2: Vec<Vec<f64>>) -> Self {
        let mut set = EvalSet { errors: vec![], words: vec![], s1: vec![], s2: vec![] };
        for ((nb, a), b) in lists.iter().zip(s1).zip(s2) {
            if let Some(r) = &nb.reference {
                set.errors.push(nb.hyps.iter().map(|h| word_errors(r, &h.text)).collect());
                set.words.push(crate::wer::word_count(r));
                set.s1.push(a);
                set.s2.push(b);
            }
        }
        set
    }

    fn count(&self, pick: impl Fn(usize) -> usize) -> WerCount {
        let mut c = WerCount::default();
        for u in 0..self.errors.len() {
            c.errors += self.errors[u][pick(u)];
            c.words += self.words[u];
        }
        c
    }

    pub fn wer(&self, weight: f64) -> f64 {
        self.count(|u| argmax(self.s1[u].iter().zip(&self.s2[u]).map(|(a, b)| a + weight * b))).percent()
    }

    pub fn report(&self, weight: f64) -> EvalReport {
        let first = self.count(|u| argmax(self.s1[u].iter().copied()));
        let oracle = self.count(|u| {
            let e = &self.errors[u];
            (0..e.len()).min_by_key(|&i| e[i]).unwrap_or(0)
        });
        EvalReport {
            utterances: self.errors.len(),
            words: first.words,
            first_pass_wer: first.percent(),
            rescored_wer: self.wer(weight),
            oracle_wer: oracle.percent(),
            weight,
        }
    }

    /// WER at each λ of the grid; returns the curve and the best λ (the smallest on ties).
    pub fn tune(&self, grid: &[f64]) -> (Vec<(f64, f64)>, f64) {
        let curve: Vec<(f64, f64)> = grid.iter().map(|&w| (w, self.wer(w))).collect();
        let best = curve.iter().fold((f64::NAN, f64::INFINITY), |b, &(w, e)| if e < b.1 { (w, e) } else { b });
        (curve, best.0)
    }
}

/// `lo, lo+step, …, hi`
pub fn grid(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let n = ((hi - lo) / step).round().max(0.0) as usize;
    (0..=n).map(|i| lo + step * i as f64).collect()
}
