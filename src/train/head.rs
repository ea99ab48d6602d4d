//! RescoreBERT's CLS head fitted on a frozen encoder (LoRB's "CLS head only" baseline), on [CLS]
//! vectors computed once by either backend — far cheaper than running the encoder every step.
//!
//! Scores inside the loss are `s_j = κ·s1_j + w·h_j`: κ scales the first-pass log-scores, whose
//! gaps are often so large that the list posterior is one-hot and MWER has no gradient. At
//! inference the same ranking is `s1 + λ·s2` with `s2 = w·h + b` and `λ = 1/κ` (then tuned).

use crate::model::ClsHead;
use super::loss::mwer;
use crate::rescore::argmax;
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

fn dot(w: &[f64], h: &[f32]) -> f64 {
    w.iter().zip(h).map(|(a, b)| a * *b as f64).sum()
}

/// WER (%) of lists re-ranked by `s1 + λ·(w·h)`.
pub fn wer_with(lists: &[ListFeatures], w: &[f64], lambda: f64) -> f64 {
    let hd = w.len();
    let (mut err, mut words) = (0.0, 0usize);
    for l in lists {
        let best = argmax(l.s1.iter().enumerate().map(|(j, s)| s + lambda * dot(w, &l.cls[j * hd..(j + 1) * hd])));
        err += l.errors[best];
        words += l.words;
    }
    100.0 * err / words.max(1) as f64
}

/// Mean MWER loss and its gradient with respect to `w`, over `lists`.
pub fn head_loss_grad(lists: &[&ListFeatures], w: &[f64], kappa: f64) -> (f64, Vec<f64>) {
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
    let mut w = vec![0.0f64; hidden];
    let (mut m, mut v) = (vec![0.0; hidden], vec![0.0; hidden]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = o.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let lambda0 = 1.0 / o.kappa;
    let first = wer_with(dev, &w, 0.0);
    let mut best = (first, 0usize, w.clone());
    let mut curve = Vec::new();
    let mut step = 0i32;
    for epoch in 1..=o.epochs {
        for i in (1..order.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let mut total = 0.0;
        for chunk in order.chunks(o.batch_lists.max(1)) {
            let lists: Vec<&ListFeatures> = chunk.iter().map(|&i| &train[i]).collect();
            let (loss, g) = head_loss_grad(&lists, &w, o.kappa);
            total += loss * lists.len() as f64;
            step += 1;
            for k in 0..hidden {
                m[k] = b1 * m[k] + (1.0 - b1) * g[k];
                v[k] = b2 * v[k] + (1.0 - b2) * g[k] * g[k];
                let mh = m[k] / (1.0 - b1.powi(step));
                let vh = v[k] / (1.0 - b2.powi(step));
                w[k] -= o.lr * (mh / (vh.sqrt() + eps) + o.weight_decay * w[k]);
            }
        }
        let log = EpochLog { epoch, train_loss: total / train.len().max(1) as f64, dev_wer: wer_with(dev, &w, lambda0) };
        progress(&log);
        if log.dev_wer < best.0 {
            best = (log.dev_wer, epoch, w.clone());
        }
        curve.push(log);
    }
    let w = best.2;
    let grid: Vec<f64> = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0].iter().map(|f| f * lambda0).collect();
    let lambda_curve: Vec<(f64, f64)> = grid.iter().map(|&l| (l, wer_with(dev, &w, l))).collect();
    let (weight, dev_wer) = lambda_curve.iter().fold((0.0, f64::INFINITY), |b, &(l, e)| if e < b.1 { (l, e) } else { b });
    HeadFit {
        head: ClsHead { weight: w.iter().map(|&x| x as f32).collect(), bias: 0.0 },
        weight,
        dev_first_pass_wer: first,
        dev_wer,
        best_epoch: best.1,
        curve,
        lambda_curve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(n: usize, seed: u64) -> Vec<ListFeatures> {
        // Feature 0 carries minus the errors plus noise; first-pass scores are noise.
        let mut r = seed;
        let mut rnd = move || {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((r >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
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
        let w = [0.3, -0.2, 0.1];
        let (_, g) = head_loss_grad(&refs, &w, 0.5);
        for k in 0..3 {
            let h = 1e-6;
            let mut a = w;
            a[k] += h;
            let mut b = w;
            b[k] -= h;
            let fd = (head_loss_grad(&refs, &a, 0.5).0 - head_loss_grad(&refs, &b, 0.5).0) / (2.0 * h);
            assert!((fd - g[k]).abs() < 1e-7, "dw_{k}: analytic {} vs numeric {fd}", g[k]);
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
