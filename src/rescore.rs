//! Combine first- and second-pass scores, re-rank, and measure WER.

use crate::error::{Error, Result};
use crate::nbest::{FirstPass, NBest};
use crate::wer::word_errors;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct RescoredHyp {
    pub text: String,
    /// First-pass score s1.
    pub s1: f64,
    /// Second-pass score s2.
    pub s2: f64,
    /// The user's words' boost, β·Σ rarity ([`crate::lexicon`]); absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub boost: f64,
    /// `s1 + boost + λ·s2`
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

/// What a set of n-best lists looks like to a rescorer tuned on them. A LoRB adapter's λ and
/// κ fit the scale of the first pass it was trained with: rescoring lists whose s1 has another
/// scale (an acoustic-only score against one with an LM in it) can raise the WER. Each adapter's
/// train_log.json records the profile of its training lists ("list_profile"); the CLI compares it
/// with the input's ([`ListProfile::unlike`]).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ListProfile {
    /// The first-pass expression s1 was computed with.
    pub s1: String,
    /// The hypotheses' numeric fields (`score` and any components), sorted.
    pub fields: Vec<String>,
    /// Median over lists of the top hypothesis's s1 per word.
    pub s1_per_word: f64,
    /// Median over lists of the top two hypotheses' s1 difference.
    pub top2_gap: f64,
    /// Median hypotheses per list.
    pub hyps: f64,
    pub lists: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// Two profiles whose s1 scales differ by more than this factor are unlike.
const PROFILE_FACTOR: f64 = 3.0;

impl ListProfile {
    /// The profile of `lists` under the first pass `fp` (an error if a list lacks a field `fp` needs).
    pub fn of(lists: &[NBest], fp: &FirstPass) -> Result<Self> {
        let mut fields = std::collections::BTreeSet::new();
        let (mut per_word, mut gap, mut hyps) = (Vec::new(), Vec::new(), Vec::new());
        for nb in lists {
            for h in &nb.hyps {
                fields.insert("score".to_string());
                fields.extend(h.fields.iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k.clone()));
            }
            let s1 = first_pass_scores(nb, fp).map_err(|e| e.in_list(&nb.utt))?;
            let words = nb.hyps.first().map(|h| h.text.split_whitespace().count()).unwrap_or(0);
            if words > 0 {
                per_word.push(s1[0] / words as f64);
            }
            if s1.len() > 1 {
                gap.push(s1[0] - s1[1]);
            }
            hyps.push(nb.hyps.len() as f64);
        }
        Ok(ListProfile { s1: fp.to_string(), fields: fields.into_iter().collect(), s1_per_word: median(per_word), top2_gap: median(gap), hyps: median(hyps), lists: lists.len() })
    }

    /// How far apart two profiles are: the log-ratios of their s1 scales, plus 10 when their
    /// fields differ (∞ for opposite signs).
    pub fn distance(&self, other: &Self) -> f64 {
        let ratio = |a: f64, b: f64| if a == b { 0.0 } else if a * b > 0.0 { (a / b).ln().abs() } else { f64::INFINITY };
        ratio(self.s1_per_word, other.s1_per_word) + ratio(self.top2_gap, other.top2_gap) + if self.fields == other.fields { 0.0 } else { 10.0 }
    }

    /// `None` when lists like `other` suit what was tuned on `self`'s, else what differs.
    pub fn unlike(&self, other: &Self) -> Option<String> {
        let far = |a: f64, b: f64| !(a * b > 0.0 && (a / b).ln().abs() <= PROFILE_FACTOR.ln()) && a != b;
        let mut why = Vec::new();
        if self.fields != other.fields {
            why.push(format!("fields {} against {}", self.fields.join(","), other.fields.join(",")));
        }
        if far(self.s1_per_word, other.s1_per_word) {
            why.push(format!("s1 per word {:.3} against {:.3}", self.s1_per_word, other.s1_per_word));
        }
        if far(self.top2_gap, other.top2_gap) {
            why.push(format!("top-2 s1 gap {:.3} against {:.3}", self.top2_gap, other.top2_gap));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// A list as a WER at some λ needs it: its first-pass scores, the word errors of each
/// hypothesis against its reference, and the reference's word count. The evaluation set's lists
/// ([`JudgedList`]), training's lists and the head fit's lists are all judged by [`wer_at`].
pub trait Judged {
    fn s1(&self) -> &[f64];
    fn errors(&self, hyp: usize) -> f64;
    fn words(&self) -> usize;
}

/// The hypothesis each list ranks first by `s1 + λ·s2` (its index; ties keep first-pass order).
pub fn picks<'a, L: Judged>(lists: &'a [L], s2: &'a [Vec<f64>], weight: f64) -> impl Iterator<Item = usize> + 'a {
    lists.iter().zip(s2).map(move |(l, s)| argmax(l.s1().iter().zip(s).map(|(a, b)| a + weight * b)))
}

/// WER (%) of `lists` re-ranked by `s1 + λ·s2` ([`picks`]); 0 with no words.
pub fn wer_at<L: Judged>(lists: &[L], s2: &[Vec<f64>], weight: f64) -> f64 {
    let (mut errors, mut words) = (0.0, 0usize);
    for (l, i) in lists.iter().zip(picks(lists, s2, weight)) {
        errors += l.errors(i);
        words += l.words();
    }
    100.0 * errors / words.max(1) as f64
}

/// The λ grid a trained scorer is tuned on: multiples of λ0 = 1/κ, where κ scaled s1 in the
/// training loss (0 keeps the first pass).
pub fn lambda_grid(lambda0: f64) -> Vec<f64> {
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0].iter().map(|f| f * lambda0).collect()
}

/// The WER at each λ of `grid`, and the best `(λ, WER)`: the first of equal ones (the smaller λ
/// on an ascending grid); `(NaN, ∞)` for an empty grid.
pub fn tune_weight<L: Judged>(lists: &[L], s2: &[Vec<f64>], grid: &[f64]) -> (Vec<(f64, f64)>, (f64, f64)) {
    let curve: Vec<(f64, f64)> = grid.iter().map(|&w| (w, wer_at(lists, s2, w))).collect();
    let best = curve.iter().copied().fold((f64::NAN, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
    (curve, best)
}

/// λ must be a finite number (a NaN or infinite λ would make every total NaN or ±∞).
pub fn check_weight(weight: f64) -> Result<()> {
    if weight.is_finite() {
        Ok(())
    } else {
        Err(Error::Input(format!("the weight λ is {weight}; it must be a finite number")))
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Re-ranks one list by `s1 + boost + λ·s2` (stable: ties keep first-pass order). `boost`: the
/// user's words' boost of each hypothesis, β included (none: 0).
pub fn rescore_list(nb: &NBest, s1: &[f64], s2: &[f64], weight: f64, boost: Option<&[f64]>) -> Rescored {
    let mut hyps: Vec<RescoredHyp> = nb
        .hyps
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let b = boost.map_or(0.0, |b| b[i]);
            RescoredHyp { text: h.text.clone(), s1: s1[i], s2: s2[i], boost: b, score: s1[i] + b + weight * s2[i], first_rank: i }
        })
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
    /// Lists left out of the WER because they have no reference.
    pub unreferenced: usize,
}

/// A list with a reference, as [`wer_at`] judges it.
#[derive(Debug, Clone)]
pub struct JudgedList {
    pub s1: Vec<f64>,
    /// Word errors of each hypothesis against the reference.
    pub errors: Vec<f64>,
    /// Reference words.
    pub words: usize,
}

/// [`Judged`] for structs that hold `s1: Vec<f64>`, `errors: Vec<f64>` and `words: usize`.
macro_rules! judged_by_fields {
    ($($t:ty),*) => {$(
        impl $crate::rescore::Judged for $t {
            fn s1(&self) -> &[f64] {
                &self.s1
            }
            fn errors(&self, hyp: usize) -> f64 {
                self.errors[hyp]
            }
            fn words(&self) -> usize {
                self.words
            }
        }
    )*};
}
pub(crate) use judged_by_fields;

judged_by_fields!(JudgedList);

/// The first-pass scores of every list's hypotheses ([`first_pass_scores`]).
pub fn first_pass_all(lists: &[NBest], fp: &FirstPass) -> Result<Vec<Vec<f64>>> {
    lists.iter().map(|nb| first_pass_scores(nb, fp)).collect()
}

/// What evaluating any λ needs, computed once: each list's first-pass scores and word errors,
/// and the second-pass scores.
pub struct EvalSet {
    pub lists: Vec<JudgedList>,
    pub s2: Vec<Vec<f64>>,
    /// Lists skipped for want of a reference.
    pub unreferenced: usize,
}

impl EvalSet {
    /// Lists without a reference are skipped (they cannot be scored for WER) and counted.
    pub fn new(lists: &[NBest], s1: Vec<Vec<f64>>, s2: Vec<Vec<f64>>) -> Self {
        let mut set = EvalSet { lists: vec![], s2: vec![], unreferenced: 0 };
        for ((nb, a), b) in lists.iter().zip(s1).zip(s2) {
            set.unreferenced += nb.reference.is_none() as usize;
            if let Some(r) = &nb.reference {
                set.lists.push(JudgedList { s1: a, errors: nb.hyps.iter().map(|h| word_errors(r, &h.text) as f64).collect(), words: crate::wer::word_count(r) });
                set.s2.push(b);
            }
        }
        set
    }

    /// The lists judged: s1 from `fp`, s2 from `scorer` by its method ([`Scorer::score_lists`]),
    /// or without a scorer s2 = 0 (the first pass alone decides, and no model is needed).
    /// `done(k)`: `k` more lists scored. The path of `lorb eval` and `lorb tune`.
    pub async fn score(lists: &[NBest], fp: &FirstPass, scorer: Option<(&mut crate::Scorer, crate::Method)>, done: &mut dyn FnMut(usize)) -> Result<Self> {
        let s1 = first_pass_all(lists, fp)?;
        let s2 = match scorer {
            Some((s, method)) => s.score_lists(lists, method, done).await?,
            None => lists.iter().map(|nb| vec![0.0; nb.hyps.len()]).collect(),
        };
        Ok(Self::new(lists, s1, s2))
    }

    /// A WER needs words to count: `Err` when no list has a (non-empty) reference, rather than a
    /// WER of 0 computed from nothing.
    pub fn require_references(&self, what: &str) -> Result<()> {
        if self.lists.iter().map(|l| l.words).sum::<usize>() == 0 {
            return Err(Error::Input(format!("{what}: no n-best list has a reference with words; a WER needs references (\"ref\")")));
        }
        Ok(())
    }

    pub fn wer(&self, weight: f64) -> f64 {
        wer_at(&self.lists, &self.s2, weight)
    }

    pub fn report(&self, weight: f64) -> EvalReport {
        let zero: Vec<Vec<f64>> = self.lists.iter().map(|l| vec![0.0; l.s1.len()]).collect();
        let oracle = self.lists.iter().map(|l| l.errors.iter().copied().fold(f64::INFINITY, f64::min)).sum::<f64>();
        let words = self.lists.iter().map(|l| l.words).sum::<usize>();
        EvalReport {
            utterances: self.lists.len(),
            words,
            first_pass_wer: wer_at(&self.lists, &zero, 0.0),
            rescored_wer: self.wer(weight),
            oracle_wer: 100.0 * oracle / words.max(1) as f64,
            weight,
            unreferenced: self.unreferenced,
        }
    }

    /// WER at each λ of the grid; returns the curve and the best λ (the smallest on ties).
    pub fn tune(&self, grid: &[f64]) -> (Vec<(f64, f64)>, f64) {
        let (curve, best) = tune_weight(&self.lists, &self.s2, grid);
        (curve, best.0)
    }
}

/// The first pass re-weighted on dev ([`tune_first_pass`]).
#[derive(Debug, Clone)]
pub struct FirstPassTuning {
    pub first_pass: FirstPass,
    /// λ tuned with it.
    pub weight: f64,
    pub wer: f64,
    /// WER with the given first pass and its best λ.
    pub start_wer: f64,
}

/// Tunes the coefficients of the first-pass terms named in `free` (e.g. `lm` in
/// `0.6*decoder+0.4*ctc+0.6*lm`) jointly with λ on `grid`, on the lists' references: coordinate
/// descent, each round trying every free coefficient at `c + d·max(|c|, 0.1)` for d from −¾ to 2
/// with λ re-tuned each time, keeping a change only when it lowers the WER, until a round changes
/// nothing (at most 8 rounds); then the same with steps a quarter as large. `s2` holds the second-pass scores of each list (zeros to tune the
/// first pass alone). Lists without a reference are skipped.
pub fn tune_first_pass(lists: &[NBest], fp: &FirstPass, free: &[String], s2: Vec<Vec<f64>>, grid: &[f64]) -> Result<FirstPassTuning> {
    for name in free {
        if !fp.terms.iter().any(|(_, n)| n == name) {
            return Err(crate::Error::Input(format!("--tune-s1 {name:?}: not a term of the first pass {fp}")));
        }
    }
    let kept: Vec<(&NBest, Vec<f64>)> = lists.iter().zip(s2).filter(|(nb, _)| nb.reference.is_some()).collect();
    // Each hypothesis's term values, by list.
    let values: Vec<Vec<Vec<f64>>> = kept
        .iter()
        .map(|(nb, _)| nb.hyps.iter().map(|h| fp.values(h)).collect::<Result<_>>())
        .collect::<Result<_>>()?;
    let s1_of = |c: &[f64]| -> Vec<Vec<f64>> { values.iter().map(|l| l.iter().map(|v| v.iter().zip(c).map(|(x, k)| x * k).sum()).collect()).collect() };
    let mut coefs: Vec<f64> = fp.terms.iter().map(|(c, _)| *c).collect();
    let owned: Vec<NBest> = kept.iter().map(|(nb, _)| (*nb).clone()).collect();
    let mut set = EvalSet::new(&owned, s1_of(&coefs), kept.into_iter().map(|(_, s)| s).collect());
    let best_at = |set: &mut EvalSet, c: &[f64]| {
        for (l, s1) in set.lists.iter_mut().zip(s1_of(c)) {
            l.s1 = s1;
        }
        tune_weight(&set.lists, &set.s2, grid).1
    };
    let (mut weight, start_wer) = best_at(&mut set, &coefs);
    let mut wer = start_wer;
    let free_idx: Vec<usize> = fp.terms.iter().enumerate().filter(|(_, (_, n))| free.contains(n)).map(|(i, _)| i).collect();
    // Coarse steps first (WER is piecewise constant: small steps alone stall on plateaus), then
    // fine ones.
    for scale in [1.0, 0.25] {
        for _round in 0..8 {
            let mut changed = false;
            for &i in &free_idx {
                let step = scale * coefs[i].abs().max(0.1);
                for d in [-0.75, -0.5, -0.25, -0.1, 0.1, 0.25, 0.5, 1.0, 2.0] {
                    let mut c = coefs.clone();
                    c[i] += d * step;
                    let (w, e) = best_at(&mut set, &c);
                    if e < wer - 1e-12 {
                        (coefs, weight, wer, changed) = (c, w, e, true);
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }
    let terms = fp.terms.iter().zip(&coefs).map(|((_, n), &c)| ((c * 1e6).round() / 1e6, n.clone())).collect();
    Ok(FirstPassTuning { first_pass: FirstPass { terms }, weight, wer, start_wer })
}

/// Most λ values a grid may hold.
pub const MAX_GRID: usize = 100_000;

/// A λ grid from `LO:HI:STEP` (finite, STEP > 0, HI ≥ LO, at most [`MAX_GRID`] values).
pub fn parse_grid(s: &str) -> Result<Vec<f64>> {
    let p: Vec<f64> = s.split(':').map(|x| x.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(|_| Error::Input(format!("grid {s:?}: expected LO:HI:STEP")))?;
    match p.as_slice() {
        [lo, hi, step] if p.iter().all(|x| x.is_finite()) && *step > 0.0 && hi >= lo => {
            // The values `grid` makes: one more than the steps (rounded as there).
            let n = ((hi - lo) / step).round() + 1.0;
            if n > MAX_GRID as f64 {
                return Err(Error::Input(format!("grid {s:?} has {n:.0} values, more than {MAX_GRID}; use a larger STEP")));
            }
            Ok(grid(*lo, *hi, *step))
        }
        _ => Err(Error::Input(format!("grid {s:?}: expected finite LO:HI:STEP with STEP > 0 and HI ≥ LO"))),
    }
}

/// `lo, lo+step, …, hi`
pub fn grid(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let n = ((hi - lo) / step).round().max(0.0) as usize;
    (0..=n).map(|i| lo + step * i as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbest::Hypothesis;

    fn hyp(text: &str, am: f64, lm: f64) -> Hypothesis {
        let fields = [("am".to_string(), serde_json::json!(am)), ("lm".to_string(), serde_json::json!(lm))].into_iter().collect();
        Hypothesis { text: text.into(), score: am + lm, fields }
    }

    /// Lists where the acoustic score prefers a wrong hypothesis by 1 and the LM prefers the
    /// right one by 0.4: the LM weight must exceed 2.5 for the right ones to win.
    #[test]
    fn first_pass_weights_are_tuned_with_lambda() {
        let lists: Vec<NBest> = (0..4)
            .map(|i| NBest { utt: format!("u{i}"), reference: Some("a b c".into()), hyps: vec![hyp("a b x", -1.0, -2.4), hyp("a b c", -2.0, -2.0)] })
            .collect();
        let fp: FirstPass = "1*am+1*lm".parse().unwrap();
        let zeros: Vec<Vec<f64>> = lists.iter().map(|l| vec![0.0; l.hyps.len()]).collect();
        let t = tune_first_pass(&lists, &fp, &["lm".into()], zeros, &[0.0]).unwrap();
        assert!((t.start_wer - 100.0 / 3.0).abs() < 1e-9 && t.wer == 0.0, "{t:?}");
        let lm = t.first_pass.terms[1].0;
        assert!(lm > 2.5 && t.first_pass.terms[0].0 == 1.0, "{t:?}");
        let back: FirstPass = t.first_pass.to_string().parse().unwrap();
        assert_eq!(back, t.first_pass);
        let neg: FirstPass = "score-0.5*lm".parse().unwrap();
        assert_eq!((neg.to_string().parse::<FirstPass>().unwrap(), neg.to_string()), (neg.clone(), "score+-0.5*lm".to_string()));
        // An s2 that already fixes the ranking leaves the first pass as it is.
        let s2: Vec<Vec<f64>> = lists.iter().map(|_| vec![0.0, 2.0]).collect();
        let t = tune_first_pass(&lists, &fp, &["lm".into()], s2, &[0.0, 1.0]).unwrap();
        assert_eq!((t.start_wer, t.wer, t.weight, t.first_pass.clone()), (0.0, 0.0, 1.0, fp.clone()));
        assert!(tune_first_pass(&lists, &fp, &["ctc".into()], vec![], &[0.0]).is_err());
    }
}
