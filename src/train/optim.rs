//! AdamW (decoupled weight decay, as `torch.optim.AdamW`), a linear warm-up then linear decay
//! schedule (as `transformers.get_linear_schedule_with_warmup`), and global-norm clipping.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// Moments of each trainable tensor, by the tensor's place in the trainer's fixed order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdamW {
    pub step: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    /// Starts a step (`lr` is this step's learning rate); then [`AdamW::update`] each tensor.
    pub fn begin(&mut self) {
        self.step += 1;
    }

    /// Updates tensor number `i` in place from its gradient.
    pub fn update(&mut self, i: usize, p: &mut [f32], g: &[f32], c: &AdamWConfig, lr: f64) {
        while self.m.len() <= i {
            self.m.push(Vec::new());
            self.v.push(Vec::new());
        }
        if self.m[i].len() != p.len() {
            self.m[i] = vec![0.0; p.len()];
            self.v[i] = vec![0.0; p.len()];
        }
        let (m, v) = (&mut self.m[i], &mut self.v[i]);
        for k in 0..p.len() {
            (p[k], m[k], v[k]) = element(p[k], m[k], v[k], g[k], c, lr, self.step);
        }
    }

    /// Whether [`AdamW::update`] of tensor `i` at the next step would leave its values and its
    /// moments finite (finite gradients can still carry them to ±∞: a huge learning rate, weight
    /// decay above 1/lr, a gradient whose square overflows f32). Reads only.
    pub fn update_stays_finite(&self, i: usize, p: &[f32], g: &[f32], c: &AdamWConfig, lr: f64) -> bool {
        let moments = match (self.m.get(i), self.v.get(i)) {
            (Some(m), Some(v)) if m.len() == p.len() => Some((m, v)),
            _ => None,
        };
        (0..p.len()).all(|k| {
            let (m, v) = moments.map_or((0.0, 0.0), |(m, v)| (m[k], v[k]));
            let (x, m, v) = element(p[k], m, v, g[k], c, lr, self.step + 1);
            x.is_finite() && m.is_finite() && v.is_finite()
        })
    }
}

/// One element of AdamW's step number `t` (1-based): the new parameter and moments, as stored.
#[inline]
#[allow(clippy::too_many_arguments)]
fn element(x: f32, m: f32, v: f32, g: f32, c: &AdamWConfig, lr: f64, t: u64) -> (f32, f32, f32) {
    let bc1 = 1.0 - c.beta1.powi(t as i32);
    let bc2 = 1.0 - c.beta2.powi(t as i32);
    let gk = g as f64;
    let mk = c.beta1 * m as f64 + (1.0 - c.beta1) * gk;
    let vk = c.beta2 * v as f64 + (1.0 - c.beta2) * gk * gk;
    let mut x = x as f64 * (1.0 - lr * c.weight_decay);
    x -= lr * (mk / bc1) / ((vk / bc2).sqrt() + c.eps);
    (x as f32, mk as f32, vk as f32)
}

/// The learning-rate factor before optimiser step `step` (0-based) of `total`: `step/warmup`
/// during warm-up, then a linear decay to 0 at `total`.
pub fn schedule(step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        step as f64 / warmup.max(1) as f64
    } else {
        ((total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
    }
}

/// Scales `grads` so that their global L2 norm — together with `extra_sumsq`, the sum of squares
/// of gradients held elsewhere (on the GPU) — is at most `max_norm` (no clipping when `max_norm`
/// is not positive). Returns the norm before clipping and the factor applied.
pub fn clip(grads: &mut [&mut [f32]], max_norm: f64, extra_sumsq: f64) -> (f64, f64) {
    let sumsq = grads.iter().flat_map(|g| g.iter()).map(|&x| x as f64 * x as f64).sum::<f64>() + extra_sumsq;
    let norm = sumsq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        grads.iter_mut().for_each(|g| g.iter_mut().for_each(|x| *x *= s as f32));
        return (norm, s);
    }
    (norm, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert_eq!(schedule(0, 2, 10), 0.0);
        assert_eq!(schedule(1, 2, 10), 0.5);
        assert_eq!(schedule(2, 2, 10), 1.0);
        assert_eq!(schedule(6, 2, 10), 0.5);
        assert_eq!(schedule(10, 2, 10), 0.0);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // With bias correction, the first step is lr·sign(g) (plus decay).
        let mut o = AdamW::default();
        let c = AdamWConfig { lr: 0.1, weight_decay: 0.0, ..Default::default() };
        let mut p = [1.0f32, -2.0];
        o.begin();
        o.update(0, &mut p, &[0.5, -3.0], &c, c.lr);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let (mut a, mut b) = (vec![3.0f32], vec![4.0f32]);
        let (n, s) = clip(&mut [&mut a, &mut b], 1.0, 0.0);
        assert!((n - 5.0).abs() < 1e-9 && (s - 0.2).abs() < 1e-6);
        assert!(((a[0] * a[0] + b[0] * b[0]).sqrt() - 1.0).abs() < 1e-5);
        // Gradients held elsewhere count towards the norm: 3² + 4² + 12² = 13².
        let (mut a, mut b) = (vec![3.0f32], vec![4.0f32]);
        let (n, s) = clip(&mut [&mut a, &mut b], 1.0, 144.0);
        assert!((n - 13.0).abs() < 1e-9 && (s - 1.0 / 13.0).abs() < 1e-6 && (a[0] - 3.0 / 13.0).abs() < 1e-6);
    }
}
