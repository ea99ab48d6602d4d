// In-place LayerNorm over rows: x = (x - mean) / sqrt(var + eps) * gamma + beta.
// One workgroup per row; the statistics come from ln_stats.wgsl (f32 workgroup reductions).

const WG: u32 = 128u;
// #include "reduce.wgsl"

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/layernorm.rs).
// #include "grid.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;

// #include "ln_stats.wgsl"

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.hidden;
    let st = row_stats(base, lid);
    let mean = st.x;
    let inv = st.y;
    for (var i = lid; i < p.hidden; i = i + WG) {
        x[base + i] = (x[base + i] - mean) * inv * gamma[i] + beta[i];
    }
}
