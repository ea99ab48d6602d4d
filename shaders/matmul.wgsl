// C = act(A · Wᵀ + bias) (+ R): A [m, k] row-major from a[a_off], W [n, k] (PyTorch Linear layout), C written
// at c[c_off + row * ldc + col]. act: 0 none, 1 exact GELU (erf). R is added when has_res = 1.
// 64×64 output tile per workgroup of 16×16 invocations, each accumulating a 4×4 block in f32;
// A and W tiles of depth 16 are staged in workgroup memory (8 KiB).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    act: u32,
    has_res: u32,
    ldc: u32,
    c_off: u32,
    a_off: u32,  // element offset of A's first row
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [BK][BM]
var<workgroup> w_tile: array<f32, 1024>; // [BK][BN]

// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), so GELU is exact in f32.
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
}

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    var acc: array<array<f32, 4>, 4>;
    let lr = li / 4u;          // tile row this invocation loads (0..63)
    let lk = (li % 4u) * 4u;   // first of the 4 depths it loads
    for (var k0 = 0u; k0 < p.k; k0 = k0 + BK) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            let kk = k0 + lk + j;
            let ar = row0 + lr;
            var av = 0.0;
            if (ar < p.m && kk < p.k) {
                av = a[p.a_off + ar * p.k + kk];
            }
            a_tile[(lk + j) * BM + lr] = av;
            let wr = col0 + lr;
            var wv = 0.0;
            if (wr < p.n && kk < p.k) {
                wv = w[wr * p.k + kk];
            }
            w_tile[(lk + j) * BN + lr] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            var av: array<f32, 4>;
            var wv: array<f32, 4>;
            for (var i = 0u; i < 4u; i = i + 1u) {
                av[i] = a_tile[kk * BM + lid.y * 4u + i];
                wv[i] = w_tile[kk * BN + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    acc[i][j] = fma(av[i], wv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let col = col0 + lid.x * 4u + j;
            if (r < p.m && col < p.n) {
                var v = acc[i][j] + bias[col];
                if (p.act == 1u) {
                    v = gelu(v);
                }
                if (p.has_res == 1u) {
                    v = v + res[r * p.n + col];
                }
                c[p.c_off + r * p.ldc + col] = v;
            }
        }
    }
}
