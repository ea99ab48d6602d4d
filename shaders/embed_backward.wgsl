// Embedding-table gradients: out[out_off + row_g·hidden + d] += Σ_{k ∈ group g} dy[tok_k·hidden + d].
// The tokens are grouped by the table row they read (word id, position, token type), the groups
// listed as CSR (starts, toks) with their rows: each row is written by one invocation, so
// repeated ids need no atomics. One invocation per (group, d); the group's tokens summed in order.

// #uniform: `struct Params`, generated from the launcher's `BackParams` (src/gpu/ops/embed.rs).
// #include "grid.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> starts: array<u32>; // groups + 1
@group(0) @binding(3) var<storage, read> toks: array<u32>;
@group(0) @binding(4) var<storage, read> rows: array<u32>;  // groups
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = element_index(wid, nwg, lid, 256u);
    if (idx >= p.groups * p.hidden) {
        return;
    }
    let g = idx / p.hidden;
    let d = idx % p.hidden;
    var s = 0.0;
    for (var k = starts[g]; k < starts[g + 1u]; k = k + 1u) {
        s = s + dy[toks[k] * p.hidden + d];
    }
    let o = p.out_off + rows[g] * p.hidden + d;
    out[o] = out[o] + s;
}
