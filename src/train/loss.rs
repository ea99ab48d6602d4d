//! Training losses of one n-best list and their gradients with respect to the scores (or the
//! [CLS] vectors). Scores are log-scores, higher is better; `errors[j]` is ε_j, the word errors of
//! hypothesis j against the reference. Everything here is f64.

/// `softmax(x)`.
fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// MWER: `P = softmax(s)`, `L = Σ_j P_j (ε_j − mean_k ε_k)`. Returns `L` and `∂L/∂s`.
pub fn mwer(s: &[f64], errors: &[f64]) -> (f64, Vec<f64>) {
    let p = softmax(s);
    let mean = errors.iter().sum::<f64>() / errors.len() as f64;
    let expected: f64 = p.iter().zip(errors).map(|(p, e)| p * e).sum();
    let grad = p.iter().zip(errors).map(|(p, e)| p * (e - expected)).collect();
    (expected - mean, grad)
}

/// MWED (RescoreBERT): `d^ε = softmax(ε)`, `d^s = softmax(c/T)` with `c_j = −s_j` and
/// `T = Σ c_j / Σ ε_j`, `L = −Σ_j d^ε_j log d^s_j`. The gradient includes T's dependence on s.
/// A list without errors (`Σ ε = 0`) or with `Σ s = 0` has no defined T: loss and gradient 0.
pub fn mwed(s: &[f64], errors: &[f64]) -> (f64, Vec<f64>) {
    let (se, ss): (f64, f64) = (errors.iter().sum(), s.iter().sum());
    if se == 0.0 || ss == 0.0 {
        return (0.0, vec![0.0; s.len()]);
    }
    // u_j = c_j / T = s_j · Σε / Σs
    let k = se / ss;
    let u: Vec<f64> = s.iter().map(|v| v * k).collect();
    let de = softmax(errors);
    let ds = softmax(&u);
    let loss = -de.iter().zip(&ds).map(|(a, b)| a * b.ln()).sum::<f64>();
    // ∂L/∂u_j = d^s_j − d^ε_j ;  ∂u_j/∂s_i = k·δ_ij − s_j·k/Σs
    let g: Vec<f64> = ds.iter().zip(&de).map(|(a, b)| a - b).collect();
    let gs: f64 = g.iter().zip(s).map(|(g, s)| g * s).sum();
    let grad = g.iter().map(|gi| k * gi - k / ss * gs).collect();
    (loss, grad)
}

/// MD (distillation onto the teacher's PLL): `L = Σ_j (s2_j − PLL_j)²`.
pub fn md(s2: &[f64], teacher: &[f64]) -> (f64, Vec<f64>) {
    let d: Vec<f64> = s2.iter().zip(teacher).map(|(a, b)| a - b).collect();
    (d.iter().map(|x| x * x).sum(), d.iter().map(|x| 2.0 * x).collect())
}

/// ε added to the variance when each dimension is standardised in [`correlation`].
pub const COR_EPS: f64 = 1e-6;

/// LoRB's correlation regulariser on `h` `[n, d]` (one list's [CLS] vectors): standardise each
/// dimension over the n rows, `C = ZᵀZ/n`, `L = ‖C − I‖²_F / d²`. Returns `L` and `∂L/∂h`.
pub fn correlation(h: &[f32], n: usize, d: usize) -> (f64, Vec<f32>) {
    let mut z = vec![0f64; n * d];
    let mut inv = vec![0f64; d];
    for k in 0..d {
        let mean = (0..n).map(|i| h[i * d + k] as f64).sum::<f64>() / n as f64;
        let var = (0..n).map(|i| (h[i * d + k] as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        inv[k] = 1.0 / (var + COR_EPS).sqrt();
        for i in 0..n {
            z[i * d + k] = (h[i * d + k] as f64 - mean) * inv[k];
        }
    }
    // C = ZᵀZ/n, G = ∂L/∂C = 2(C − I)/d²
    let mut c = vec![0f64; d * d];
    for i in 0..n {
        let zi = &z[i * d..(i + 1) * d];
        for a in 0..d {
            let za = zi[a];
            if za == 0.0 {
                continue;
            }
            for (cb, zb) in c[a * d..(a + 1) * d].iter_mut().zip(zi) {
                *cb += za * zb;
            }
        }
    }
    let dd = (d * d) as f64;
    let mut loss = 0.0;
    for a in 0..d {
        for b in 0..d {
            c[a * d + b] /= n as f64;
            let e = c[a * d + b] - if a == b { 1.0 } else { 0.0 };
            loss += e * e;
            c[a * d + b] = 2.0 * e / dd;
        }
    }
    // ∂L/∂Z = Z·(G + Gᵀ)/n = 2·Z·G/n (G symmetric)
    let mut dz = vec![0f64; n * d];
    for i in 0..n {
        for a in 0..d {
            let za = z[i * d + a];
            if za == 0.0 {
                continue;
            }
            for (o, g) in dz[i * d..(i + 1) * d].iter_mut().zip(&c[a * d..(a + 1) * d]) {
                *o += 2.0 * za * g / n as f64;
            }
        }
    }
    // Back through the standardisation, per dimension.
    let mut dh = vec![0f32; n * d];
    for k in 0..d {
        let m1 = (0..n).map(|i| dz[i * d + k]).sum::<f64>() / n as f64;
        let m2 = (0..n).map(|i| dz[i * d + k] * z[i * d + k]).sum::<f64>() / n as f64;
        for i in 0..n {
            dh[i * d + k] = (inv[k] * (dz[i * d + k] - m1 - z[i * d + k] * m2)) as f32;
        }
    }
    (loss / dd, dh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl Fn(&[f64]) -> (f64, Vec<f64>), x: &[f64], tol: f64) {
        let (_, g) = f(x);
        for j in 0..x.len() {
            let h = 1e-6;
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            a[j] += h;
            b[j] -= h;
            let fd = (f(&a).0 - f(&b).0) / (2.0 * h);
            assert!((fd - g[j]).abs() < tol * (1.0 + fd.abs()), "d/dx_{j}: analytic {} vs numeric {fd}", g[j]);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let s = [-13.0, -10.4, -12.0, -10.2, -9.9];
        let e = [3.0, 1.0, 0.0, 2.0, 5.0];
        check(|x| mwer(x, &e), &s, 1e-7);
        check(|x| mwed(x, &e), &s, 1e-7);
        check(|x| md(x, &e), &s, 1e-7);
        // One-hot on the best hypothesis gives 0 − mean.
        assert!((mwer(&[100.0, 0.0, 0.0], &[0.0, 3.0, 3.0]).0 + 2.0).abs() < 1e-9);
    }

    #[test]
    fn correlation_gradient_matches_finite_differences() {
        let (n, d) = (5, 4);
        let h: Vec<f32> = (0..n * d).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3 + (i as f32 * 0.7).sin()).collect();
        let (_, g) = correlation(&h, n, d);
        for i in 0..n * d {
            let eps = 1e-2f32;
            let (mut a, mut b) = (h.clone(), h.clone());
            a[i] += eps;
            b[i] -= eps;
            let fd = (correlation(&a, n, d).0 - correlation(&b, n, d).0) / (2.0 * eps as f64);
            assert!((fd - g[i] as f64).abs() < 2e-3 * (1.0 + fd.abs()), "dh_{i}: analytic {} vs numeric {fd}", g[i]);
        }
        // Perfectly decorrelated unit-variance columns give C = I: zero loss.
        let h = [1.0f32, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0];
        assert!(correlation(&h, 4, 2).0 < 1e-9);
    }
}
