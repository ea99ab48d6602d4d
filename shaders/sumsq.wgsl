// Partial sums of squares of x[0..n) (a gradient's global norm): workgroup g of WG writes
// Σ x[i]² over i ≡ g·WG + lid (mod NWG·WG) to out[g]; the host adds the NWG partials in f64.
// A NaN or Inf anywhere reaches its partial. In f32.

const WG: u32 = 256u;

// #uniform: `struct Params`, generated from the launcher's `SumSqParams` (src/gpu/ops/adamw.rs).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// #include "reduce.wgsl"

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = wid.x * WG + lid; i < p.n; i = i + p.stride) {
        let a = x[i];
        s = fma(a, a, s);
    }
    let t = wg_sum(s, lid);
    if (lid == 0u) {
        out[wid.x] = t;
    }
}
