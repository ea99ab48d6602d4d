// Backward of the row LayerNorm (layernorm.wgsl): dx = (dy·γ − mean(dy·γ) − x̂·mean(dy·γ·x̂)) / σ,
// from the LayerNorm's input z (its statistics are recomputed, in f32 workgroup reductions, rather
// than stored). One workgroup per row.

const WG: u32 = 128u;
// #include "reduce.wgsl"

struct Params {
    rows: u32,
    hidden: u32,
    eps: f32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.hidden;
    let h = f32(p.hidden);
    var s = 0.0;
    for (var i = lid; i < p.hidden; i = i + WG) {
        s = s + z[base + i];
    }
    let mean = wg_sum(s, lid) / h;
    var v = 0.0;
    for (var i = lid; i < p.hidden; i = i + WG) {
        let d = z[base + i] - mean;
        v = v + d * d;
    }
    let inv = inverseSqrt(wg_sum(v, lid) / h + p.eps);
    var m1 = 0.0;
    var m2 = 0.0;
    for (var i = lid; i < p.hidden; i = i + WG) {
        let g = dy[base + i] * gamma[i];
        m1 = m1 + g;
        m2 = m2 + g * (z[base + i] - mean) * inv;
    }
    m1 = wg_sum(m1, lid) / h;
    m2 = wg_sum(m2, lid) / h;
    for (var i = lid; i < p.hidden; i = i + WG) {
        let xh = (z[base + i] - mean) * inv;
        dx[base + i] = inv * (dy[base + i] * gamma[i] - m1 - xh * m2);
    }
}
