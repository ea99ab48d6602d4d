// One AdamW step (decoupled weight decay, as torch.optim.AdamW) on a weight tensor whose
// gradient and moments sit at float offset g_off of the full-gradient layout:
//   g = scale·grad (scale: the global-norm clip factor), m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g²,
//   w = w·(1 − lr·wd) − lr·(m/bc1) / (√(v/bc2) + ε).
// One invocation per element, in f32. `check` runs over every tensor first; `main` then makes
// the whole step or, if any value would not be finite, none of it.

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/adamw.rs).
// #include "grid.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
// Set (to 1) by `check` when any updated value would not be finite; `main` then changes nothing.
@group(0) @binding(5) var<storage, read_write> flag: array<atomic<u32>>;

struct Updated {
    m: f32,
    v: f32,
    w: f32,
}

fn updated(i: u32) -> Updated {
    let k = p.g_off + i;
    let g = p.scale * grad[k];
    let mk = p.beta1 * m[k] + (1.0 - p.beta1) * g;
    let vk = p.beta2 * v[k] + (1.0 - p.beta2) * g * g;
    return Updated(mk, vk, w[i] * p.decay - p.lr * (mk / p.bc1) / (sqrt(vk / p.bc2) + p.eps));
}

// WGSL has no isinf/isnan: a finite x is one whose exponent bits are not all ones.
fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// The step, read-only: flags a value that would leave it non-finite.
@compute @workgroup_size(256)
fn check(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = element_index(wid, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    let u = updated(i);
    if (!(finite(u.m) && finite(u.v) && finite(u.w))) {
        atomicStore(&flag[0], 1u);
    }
}

// The step, unless `check` flagged any element of any tensor in this submission.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element_index(wid, nwg, lid, 256u);
    if (i >= p.n || atomicLoad(&flag[0]) != 0u) {
        return;
    }
    let u = updated(i);
    m[p.g_off + i] = u.m;
    v[p.g_off + i] = u.v;
    w[i] = u.w;
}
