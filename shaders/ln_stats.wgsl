// Mean and 1/σ of row `base` of the module's `x` over `p.hidden` values (two f32 workgroup
// reductions, two-pass so that the variance does not suffer from cancellation). Shared by
// layernorm.wgsl and layernorm_backward.wgsl; needs reduce.wgsl.

fn row_stats(base: u32, lid: u32) -> vec2<f32> {
    let h = f32(p.hidden);
    var s = 0.0;
    for (var i = lid; i < p.hidden; i = i + WG) {
        s = s + x[base + i];
    }
    let mean = wg_sum(s, lid) / h;
    var v = 0.0;
    for (var i = lid; i < p.hidden; i = i + WG) {
        let d = x[base + i] - mean;
        v = v + d * d;
    }
    return vec2<f32>(mean, inverseSqrt(wg_sum(v, lid) / h + p.eps));
}
