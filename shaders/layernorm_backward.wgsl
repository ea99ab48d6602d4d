// Backward of the row LayerNorm (layernorm.wgsl): dx = (dy·γ − mean(dy·γ) − x̂·mean(dy·γ·x̂)) / σ,
// from the LayerNorm's input x (its statistics are recomputed by ln_stats.wgsl rather than
// stored). One workgroup per row.

const WG: u32 = 128u;
// #include "reduce.wgsl"

// #uniform: `struct Params`, generated from the launcher's `BackParams` (src/gpu/ops/layernorm.rs).
// #include "grid.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> xhat: array<f32>;

// #include "ln_stats.wgsl"

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.hidden;
    let h = f32(p.hidden);
    let st = row_stats(base, lid);
    let mean = st.x;
    let inv = st.y;
    var m1 = 0.0;
    var m2 = 0.0;
    for (var i = lid; i < p.hidden; i = i + WG) {
        let g = dy[base + i] * gamma[i];
        m1 = m1 + g;
        m2 = m2 + g * (x[base + i] - mean) * inv;
    }
    m1 = wg_sum(m1, lid) / h;
    m2 = wg_sum(m2, lid) / h;
    for (var i = lid; i < p.hidden; i = i + WG) {
        let xh = (x[base + i] - mean) * inv;
        dx[base + i] = inv * (dy[base + i] * gamma[i] - m1 - xh * m2);
        if (p.keep_xhat == 1u) {
            xhat[base + i] = xh;
        }
    }
}
