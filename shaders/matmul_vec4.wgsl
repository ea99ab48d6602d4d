// The forward's C = act(A·Wᵀ + bias) (+ R) of matmul.wgsl (same parameters, trans = 2), for k a
// multiple of 4 and A starting at a multiple of 4 (the launcher, src/gpu/ops/matmul.rs, checks):
// rows of A [m, k] and of W [n, k] are read as vec4 along k, one 16-byte load of each per
// invocation per tile; the tiles are staged vec4-of-k-major in workgroup memory and accumulated
// with vec4 dot products (8 workgroup loads per 64 multiply-adds). A workgroup of 16×16
// invocations computes a 64×64 tile of C, each invocation a 4×4 block at rows ty + 16·i and
// columns tx + 16·j, as matmul.wgsl.
// WT, the tiles' and W's element type, is f16 in the f16 twin (matmul_vec4_f16): W is read as
// stored, A rounded to f16 as it is staged, and each 4-term dot product (in f16) is added to an f32
// accumulator. With WT = f32 the conversions are identities.

const TM: u32 = 4u;
const TN: u32 = 4u;
const BM: u32 = 16u * TM;
const BN: u32 = 16u * TN;
// vec4s of k per tile (16 values of k): BM · KQ = 256, one vec4 of A and one of W per invocation.
const KQ: u32 = 4u;
alias WT = f32;

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/matmul.rs).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<WT>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<vec4<WT>, KQ * BM>; // [KQ][BM]
var<workgroup> w_tile: array<vec4<WT>, KQ * BN>; // [KQ][BN]

// #include "gelu_fn.wgsl"
// #include "matmul_store.wgsl"

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let k4 = p.k / 4u;
    let lda4 = p.lda / 4u;
    let ldb4 = p.ldb / 4u;
    let a_off4 = p.a_off / 4u;
    // What this invocation loads: row (of A) and column (of C: a row of W) li / KQ of the
    // tile, its vec4 li % KQ. Four neighbours read 64 contiguous bytes of one row.
    let lr = li / KQ;
    let lq = li % KQ;
    var acc: array<array<f32, TN>, TM>;
    for (var k0 = 0u; k0 < k4; k0 = k0 + KQ) {
        let kq = k0 + lq;
        var av = vec4<WT>(0.0);
        if (row0 + lr < p.m && kq < k4) {
            av = vec4<WT>(a[a_off4 + (row0 + lr) * lda4 + kq]);
        }
        a_tile[lq * BM + lr] = av;
        var wv = vec4<WT>(0.0);
        if (col0 + lr < p.n && kq < k4) {
            wv = w[(col0 + lr) * ldb4 + kq];
        }
        w_tile[lq * BN + lr] = wv;
        workgroupBarrier();
        for (var q = 0u; q < KQ; q = q + 1u) {
            var ai: array<vec4<WT>, TM>;
            var wj: array<vec4<WT>, TN>;
            for (var i = 0u; i < TM; i = i + 1u) {
                ai[i] = a_tile[q * BM + lid.y + 16u * i];
            }
            for (var j = 0u; j < TN; j = j + 1u) {
                wj[j] = w_tile[q * BN + lid.x + 16u * j];
            }
            for (var i = 0u; i < TM; i = i + 1u) {
                for (var j = 0u; j < TN; j = j + 1u) {
                    acc[i][j] = acc[i][j] + f32(dot(ai[i], wj[j]));
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i = i + 1u) {
        for (var j = 0u; j < TN; j = j + 1u) {
            store(row0 + lid.y + 16u * i, col0 + lid.x + 16u * j, acc[i][j]);
        }
    }
}
