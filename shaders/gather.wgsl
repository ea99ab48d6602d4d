// Row gather: out[out_off + r * hidden + d] = x[idx[idx_off + r] * hidden + d].
// Picks the [CLS] rows or the masked slots out of the final hidden states, so that the heads run
// on those rows only. mode 1 is its backward, a scatter-add into distinct rows:
// out[idx[idx_off + r] * hidden + d] += x[r * hidden + d].

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/gather.rs).
// #include "grid.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let e = element_index(wid, nwg, lid, 256u);
    if (e >= p.n) {
        return;
    }
    let r = e / p.hidden;
    let d = e % p.hidden;
    if (p.mode == 1u) {
        let o = idx[p.idx_off + r] * p.hidden + d;
        out[o] = out[o] + x[e];
    } else {
        out[p.out_off + e] = x[idx[p.idx_off + r] * p.hidden + d];
    }
}
