// Column sums for parameter gradients over rows: out[out_off + j] += Σ_r a[r·cols + j]·b[r·cols + j]
// (with_b = 1: LayerNorm's γ from dy and x̂) or Σ_r a[r·cols + j] (with_b = 0: biases, β).
// One invocation per column, the rows summed in order in f32.

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/colsum.rs).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.cols) {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < p.rows; r = r + 1u) {
        var v = a[r * p.cols + j];
        if (p.with_b == 1u) {
            v = v * b[r * p.cols + j];
        }
        s = s + v;
    }
    out[p.out_off + j] = out[p.out_off + j] + s;
}
