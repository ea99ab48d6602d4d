// Merge a LoRA pair into a weight in place: W[row_off + i, j] += scale · Σ_k B[i, k] · A[k, j],
// W [*, cols] row-major, A [r, cols], B [out, r]. scale = ±α/r (negative to remove the pair
// again). One invocation per element of the out × cols block; the sum over r is in f32.

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/lora.rs).
// #include "grid.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let e = element_index(wid, nwg, lid, 256u);
    if (e >= p.n) {
        return;
    }
    let i = e / p.cols;
    let j = e % p.cols;
    var acc = 0.0;
    for (var k = 0u; k < p.r; k = k + 1u) {
        acc = fma(b[i * p.r + k], a[k * p.cols + j], acc);
    }
    let idx = (p.row_off + i) * p.cols + j;
    w[idx] = w[idx] + p.scale * acc;
}
