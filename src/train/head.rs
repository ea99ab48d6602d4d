//! RescoreBERT's CLS head fitted on a frozen encoder (LoRB's "CLS head only" baseline), on [CLS]
//! vectors computed once by either backend — far cheaper than running the encoder every step.
//!
//! Scores inside the loss are `s_j = κ·s1_j + w·h_j`: κ scales the first-pass log-scores, whose
//! gaps are often so large that the list posterior is one-hot and MWER has no gradient. At
//! inference the same ranking is `s1 + λ·s2` with `s2 = w·h + b` and `λ = 1/κ` (then tuned).

use super::loss::mwer;
use super::optim::{AdamW, AdamWConfig};
use super::Rng;
use crate::model::ClsHead;
use crate::rescore::{lambda_grid, tune_weight, wer_at};
use serde::Serialize;

/// One n-best list reduced to what head training needs.
#[derive(Debug, Clone)]
pub struct ListFeatures {
    pub s1: Vec<f64>,
    /// Word errors of each hypothesis against the reference.
    pub errors: Vec<f64>,
    /// Reference words (for WER).
    pub words: usize,
    /// `[hyps, H]` final [CLS] vectors.
    pub cls: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeadFitOptions {
    pub kappa: f64,
    pub lr: f64,
    pub epochs: usize,
    /// Lists per optimiser step.
    pub batch_lists: usize,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for HeadFitOptions {
    fn default() -> Self {
        HeadFitOptions { kappa: 1.0, lr: 0.01, epochs: 30, batch_lists: 16, weight_decay: 0.0, seed: 0 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub dev_wer: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeadFit {
    #[serde(skip)]
    pub head: ClsHead,
    /// λ for `s1 + λ·s2`, tuned on the dev lists.
    pub weight: f64,
    pub dev_first_pass_wer: f64,
    pub dev_wer: f64,
    pub best_epoch: usize,
    pub curve: Vec<EpochLog>,
    pub lambda_curve: Vec<(f64, f64)>,
}

crate::rescore::judged_by_fields!(ListFeatures);

fn dot(w: &[f32], h: &[f32]) -> f64 {
    w.iter().zip(h).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// `s2 = w·h` of every hypothesis of every list.
fn scores(lists: &[ListFeatures], w: &[f32]) -> Vec<Vec<f64>> {
    lists.iter().map(|l| l.cls.chunks_exact(w.len()).map(|h| dot(w, h)).collect()).collect()
}

/// Mean MWER loss and its gradient with respect to `w`, over `lists`.
pub fn head_loss_grad(lists: &[&ListFeatures], w: &[f32], kappa: f64) -> (f64, Vec<f64>) {
    let hd = w.len();
    let mut grad = vec![0.0; hd];
    let mut loss = 0.0;
    for l in lists {
        let s: Vec<f64> = l.s1.iter().enumerate().map(|(j, s1)| kappa * s1 + dot(w, &l.cls[j * hd..(j + 1) * hd])).collect();
        let (lv, gs) = mwer(&s, &l.errors);
        loss += lv;
        for (j, g) in gs.iter().enumerate() {
            for (gw, h) in grad.iter_mut().zip(&l.cls[j * hd..(j + 1) * hd]) {
                *gw += g * *h as f64;
            }
        }
    }
    let n = lists.len().max(1) as f64;
    grad.iter_mut().for_each(|g| *g /= n);
    (loss / n, grad)
}

/// Fits `w` (zero-initialised) with AdamW on MWER, keeps the epoch with the best dev WER, then
/// tunes λ on dev around `1/κ`.
pub fn fit_cls_head(train: &[ListFeatures], dev: &[ListFeatures], hidden: usize, o: &HeadFitOptions, mut progress: impl FnMut(&EpochLog)) -> HeadFit {
    let mut w = vec![0.0f32; hidden];
    let mut opt = AdamW::default();
    let c = AdamWConfig { lr: o.lr, weight_decay: o.weight_decay, ..Default::default() };
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = Rng::new(o.seed);
    let lambda0 = 1.0 / o.kappa;
    let first = wer_at(dev, &scores(dev, &w), 0.0);
    let mut best = (first, 0usize, w.clone());
    let mut curve = Vec::new();
    for epoch in 1..=o.epochs {
        rng.shuffle(&mut order);
        let mut total = 0.0;
        for chunk in order.chunks(o.batch_lists.max(1)) {
            let lists: Vec<&ListFeatures> = chunk.iter().map(|&i| &train[i]).collect();
            let (loss, g) = head_loss_grad(&lists, &w, o.kappa);
            total += loss * lists.len() as f64;
            let g: Vec<f32> = g.iter().map(|&x| x as f32).collect();
            opt.begin();
            opt.update(0, &mut w, &g, &c, o.lr);
        }
        let log = EpochLog { epoch, train_loss: total / train.len().max(1) as f64, dev_wer: wer_at(dev, &scores(dev, &w), lambda0) };
        progress(&log);
        if log.dev_wer < best.0 {
            best = (log.dev_wer, epoch, w.clone());
        }
        curve.push(log);
    }
    let w = best.2;
    let (lambda_curve, (weight, dev_wer)) = tune_weight(dev, &scores(dev, &w), &lambda_grid(lambda0));
    HeadFit { head: ClsHead { weight: w, bias: 0.0 }, weight, dev_first_pass_wer: first, dev_wer, best_epoch: best.1, curve, lambda_curve }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(n: usize, seed: u64) -> Vec<ListFeatures> {
        // Feature 0 carries minus the errors plus noise; first-pass scores are noise.
        let mut r = Rng::new(seed);
        let mut rnd = move || r.uniform() - 0.5;
        (0..n)
            .map(|_| {
                let errors: Vec<f64> = (0..8).map(|_| ((rnd() + 0.5) * 4.0).floor()).collect();
                let s1 = (0..8).map(|_| rnd()).collect();
                let cls = errors.iter().flat_map(|e| vec![(-e + rnd()) as f32, rnd() as f32, 1.0]).collect();
                ListFeatures { s1, errors, words: 10, cls }
            })
            .collect()
    }

    #[test]
    fn head_gradient_matches_finite_differences() {
        let lists = synthetic(4, 7);
        let refs: Vec<&ListFeatures> = lists.iter().collect();
        let w = [0.3f32, -0.2, 0.1];
        let (_, g) = head_loss_grad(&refs, &w, 0.5);
        for k in 0..3 {
            // The step as the f32 weights hold it (exact in f64); the central difference's error
            // is O(h²).
            let h = 2e-4;
            let mut a = w;
            a[k] += h;
            let mut b = w;
            b[k] -= h;
            let fd = (head_loss_grad(&refs, &a, 0.5).0 - head_loss_grad(&refs, &b, 0.5).0) / (a[k] as f64 - b[k] as f64);
            assert!((fd - g[k]).abs() < 1e-6, "dw_{k}: analytic {} vs numeric {fd}", g[k]);
        }
    }

    #[test]
    fn fitting_a_head_finds_the_informative_feature() {
        let train = synthetic(200, 1);
        let dev = synthetic(50, 2);
        let fit = fit_cls_head(&train, &dev, 3, &HeadFitOptions { epochs: 20, lr: 0.05, ..Default::default() }, |_| {});
        assert!(fit.head.weight[0] > 0.5, "weight on the informative feature: {:?}", fit.head.weight);
        assert!(fit.dev_wer < fit.dev_first_pass_wer * 0.5, "{} vs {}", fit.dev_wer, fit.dev_first_pass_wer);
        assert!(fit.curve.last().unwrap().train_loss < fit.curve[0].train_loss);
    }
}
