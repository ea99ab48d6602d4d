// In-place exact GELU over n elements: x = x·Φ(x). Used where a product must be completed
// (the unmerged LoRA branch added) before the activation. Entry `backward`: d = d·gelu'(x), in
// place on the incoming gradient d, x the kept pre-activation.

// #include "gelu_fn.wgsl"

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/gelu.rs).
// #include "grid.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> d: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let e = element_index(wid, nwg, lid, 256u);
    if (e < p.n) {
        x[e] = gelu(x[e]);
    }
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = element_index(wid, nwg, lid, 256u);
    if (e < p.n) {
        d[e] = d[e] * gelu_grad(x[e]);
    }
}
