// Exact GELU, x·Φ(x), shared by matmul.wgsl (epilogue) and gelu.wgsl (in place).

// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), so GELU is exact in f32.
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
}

// d gelu(x) / dx = Φ(x) + x·φ(x) (the backward of both users above).
fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_approx(x * 0.70710678118654752));
    return cdf + x * 0.39894228040143268 * exp(-0.5 * x * x);
}
