//! Elementwise maths in f32, written so that the compiler vectorises it: no branches (selects
//! instead), no calls into libm, and each slice kernel compiled for AVX-512, AVX2+FMA and the
//! baseline with run-time dispatch (`multiversion`). In wasm the baseline is built with simd128.
//!
//! Accuracy (checked against f64 references in the unit tests below): [`exp`] within 2 ulp over
//! its range; [`gelu`] and [`gelu_grad`] within 1e-6 of the exact `x·Φ(x)` (absolute, or
//! relative where the value exceeds 1; not the tanh approximation).

use multiversion::multiversion;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n·LN2_HI` is exact for |n| < 2^10 (Cody and Waite).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding 1.5·2^23 rounds an f32 of magnitude < 2^22 to an integer (in the low mantissa bits).
const ROUND: f32 = 12_582_912.0;

/// `e^x` for f32, within 2 ulp. Inputs below −100 give e^−100 (a subnormal, in effect 0);
/// above 88.7 they saturate at ≈ 3.4e38 (never Inf from a finite input).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-100.0, 88.7);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r on |r| ≤ ln2/2: Taylor to r^7 (truncation below 2^-26).
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let bits = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    // 2^n as two factors so that n down to −126 stays normal.
    let half = bits >> 1;
    let s1 = f32::from_bits(((half + 127) << 23) as u32);
    let s2 = f32::from_bits(((bits - half + 127) << 23) as u32);
    p * s1 * s2
}

/// `erfc(z)` for z ≥ 0 (Numerical Recipes' Chebyshev fit, fractional error < 1.2e-7).
#[inline(always)]
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_2
        + t * (1.000_023_7 + t * (0.374_091_96 + t * (0.096_784_18 + t * (-0.186_288_06 + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t * exp(-z * z + poly)
}

/// The standard normal CDF Φ(x) = erfc(−x/√2)/2.
#[inline(always)]
fn phi(x: f32) -> f32 {
    let z = x * -std::f32::consts::FRAC_1_SQRT_2;
    let e = erfc_pos(z.abs());
    0.5 * if z >= 0.0 { e } else { 2.0 - e }
}

/// Exact GELU, `x·Φ(x)`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * phi(x)
}

/// `d gelu(x)/dx = Φ(x) + x·φ(x)`.
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    phi(x) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

/// `x ← gelu(x)` over a slice.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn gelu_slice(x: &mut [f32]) {
    for v in x {
        *v = gelu(*v);
    }
}

/// `d ← d·gelu'(x)` over slices.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn gelu_backward_slice(d: &mut [f32], x: &[f32]) {
    for (g, &v) in d.iter_mut().zip(x) {
        *g *= gelu_grad(v);
    }
}

/// Sum of a slice in 16 independent lanes (vectorisable; pairwise-like error growth).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    let mut s = chunks.remainder().iter().sum::<f32>();
    for a in acc {
        s += a;
    }
    s
}

/// `Σ a_i·b_i` in 16 lanes.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for v in acc {
        s += v;
    }
    s
}

/// `max_i x_i` (−∞ for an empty slice).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    chunks.remainder().iter().chain(acc.iter()).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// `log Σ e^{x_i}` of a row (max-shifted).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn log_sum_exp(x: &[f32]) -> f32 {
    let m = max(x);
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            acc[i] += exp(c[i] - m);
        }
    }
    let mut s: f32 = chunks.remainder().iter().map(|&v| exp(v - m)).sum();
    for a in acc {
        s += a;
    }
    m + s.ln()
}

/// LayerNorm of one row in place (two-pass mean and variance in f32); writes `x̂` to `xhat` when
/// given and returns `1/σ`.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn layer_norm_row(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32, xhat: Option<&mut [f32]>) -> f32 {
    let h = x.len();
    let mean = sum(x) / h as f32;
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let var = (chunks.remainder().iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() + acc.iter().sum::<f32>()) / h as f32;
    let inv = 1.0 / (var + eps).sqrt();
    match xhat {
        Some(xh) => {
            for i in 0..h {
                let n = (x[i] - mean) * inv;
                xh[i] = n;
                x[i] = n * gamma[i] + beta[i];
            }
        }
        None => {
            for i in 0..h {
                x[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
            }
        }
    }
    inv
}

/// Backward of [`layer_norm_row`] for one row: `dx = (1/σ)·(g − mean(g) − x̂·mean(g·x̂))` with
/// `g = dy·γ`.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn layer_norm_backward_row(dy: &[f32], xhat: &[f32], inv: f32, gamma: &[f32], dx: &mut [f32]) {
    let h = dy.len();
    let (mut m1, mut m2) = ([0f32; 16], [0f32; 16]);
    let mut i = 0;
    while i + 16 <= h {
        for l in 0..16 {
            let g = dy[i + l] * gamma[i + l];
            m1[l] += g;
            m2[l] += g * xhat[i + l];
        }
        i += 16;
    }
    let (mut s1, mut s2) = (0f32, 0f32);
    while i < h {
        let g = dy[i] * gamma[i];
        s1 += g;
        s2 += g * xhat[i];
        i += 1;
    }
    let m1 = (s1 + m1.iter().sum::<f32>()) / h as f32;
    let m2 = (s2 + m2.iter().sum::<f32>()) / h as f32;
    for i in 0..h {
        dx[i] = inv * (dy[i] * gamma[i] - m1 - xhat[i] * m2);
    }
}

/// `y += a·x`.
#[inline(always)]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf64(x: f64) -> f64 {
        libm::erf(x)
    }

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert!(exp(-1000.0) < 1e-40);
        assert!(exp(1000.0).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_matches_the_exact_erf_form() {
        let mut worst = (0f64, 0f64);
        let mut x = -12.0f32;
        while x < 12.0 {
            let xf = x as f64;
            let want = 0.5 * xf * (1.0 + erf64(xf / std::f64::consts::SQRT_2));
            let cdf = 0.5 * (1.0 + erf64(xf / std::f64::consts::SQRT_2));
            let want_grad = cdf + xf * (-0.5 * xf * xf).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let e1 = (gelu(x) as f64 - want).abs() / want.abs().max(1.0);
            let e2 = (gelu_grad(x) as f64 - want_grad).abs() / want_grad.abs().max(1.0);
            worst = (worst.0.max(e1), worst.1.max(e2));
            x += 0.00731;
        }
        assert!(worst.0 < 1e-6 && worst.1 < 1e-6, "worst gelu, gelu' errors {worst:?}");
        assert!(gelu(-100.0).abs() < 1e-30);
        assert_eq!(gelu(100.0), 100.0);
    }

    #[test]
    fn reductions_match_f64() {
        let x: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.173).collect();
        let want: f64 = x.iter().map(|&v| v as f64).sum();
        assert!((sum(&x) as f64 - want).abs() < 1e-3);
        let lse: f64 = x.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&x) as f64 - lse).abs() < 1e-5 * lse.abs());
        assert_eq!(max(&x), x.iter().cloned().fold(f32::MIN, f32::max));
        let d: f64 = x.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((dot(&x, &x) as f64 - d).abs() < 1e-5 * d);
    }
}
