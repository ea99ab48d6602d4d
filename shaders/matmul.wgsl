// C = act(alpha · op(A) · op(B) + bias) (+ R), C [m, n] written at c[c_off + row * ldc + col].
// op(A) [m, k] is read from a[a_off + row * lda + kk], or, with bit 0 of `trans`, from
// a[a_off + kk * lda + row] (Aᵀ stored). op(B) [k, n] is read from w[col * ldb + kk] when bit 1 is
// set (B stored [n, k]: a PyTorch Linear weight, the forward's x·Wᵀ) or from w[kk * ldb + col]
// (the backward's dY·W). act: 0 none, 1 exact GELU (erf). has_res: 0 none; 1 adds R [m, n] after
// the activation; 2 adds C's previous value (accumulates: the unmerged LoRA branch adds
// s·(x·Aᵀ)·Bᵀ onto the base product this way, and gradients accumulate over lists).
//
// A workgroup of 16×16 invocations computes a (16·TM)×(16·TN) tile of C; each invocation holds a
// TM×TN block of f32 accumulators, at rows ty + 16·i and columns tx + 16·j (strided, so that
// workgroup-memory reads are conflict-free and stores coalesce). A and W tiles of depth BK are
// staged in workgroup memory. TM and TN are set per pipeline by the launcher (src/gpu/ops/
// matmul.rs): 4×4 (64×64 tiles) for small products, 8×8 (128×128 tiles) for large ones.
// matmul_vec4.wgsl is the forward's A·Wᵀ with 16-byte loads. W's element type WT is f16 in the
// f16 twin (matmul_f16), which converts W to f32 as it stages the tile.

const TM: u32 = 4u;
const TN: u32 = 4u;
const BK: u32 = 16u;
const BM: u32 = 16u * TM;
const BN: u32 = 16u * TN;
alias WT = f32;

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/matmul.rs).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<WT>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<f32, BK * BM>; // [BK][BM]
var<workgroup> w_tile: array<f32, BK * BN>; // [BK][BN]

// #include "gelu_fn.wgsl"
// #include "matmul_store.wgsl"

// op(A)[row, kk], zero outside [m, k].
fn a_at(row: u32, kk: u32) -> f32 {
    if (row >= p.m || kk >= p.k) {
        return 0.0;
    }
    if ((p.trans & 1u) != 0u) {
        return a[p.a_off + kk * p.lda + row];
    }
    return a[p.a_off + row * p.lda + kk];
}

// op(B)[kk, col], zero outside [k, n].
fn w_at(col: u32, kk: u32) -> f32 {
    if (col >= p.n || kk >= p.k) {
        return 0.0;
    }
    if ((p.trans & 2u) != 0u) {
        return f32(w[col * p.ldb + kk]);
    }
    return f32(w[kk * p.ldb + col]);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    var acc: array<array<f32, TN>, TM>;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + BK) {
        // Consecutive invocations read consecutive k of one row: coalesced along K.
        for (var e = li; e < BM * BK; e = e + 256u) {
            a_tile[(e % BK) * BM + e / BK] = a_at(row0 + e / BK, k0 + e % BK);
        }
        for (var e = li; e < BN * BK; e = e + 256u) {
            w_tile[(e % BK) * BN + e / BK] = w_at(col0 + e / BK, k0 + e % BK);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            var av: array<f32, TM>;
            var wv: array<f32, TN>;
            for (var i = 0u; i < TM; i = i + 1u) {
                av[i] = a_tile[kk * BM + lid.y + 16u * i];
            }
            for (var j = 0u; j < TN; j = j + 1u) {
                wv[j] = w_tile[kk * BN + lid.x + 16u * j];
            }
            for (var i = 0u; i < TM; i = i + 1u) {
                for (var j = 0u; j < TN; j = j + 1u) {
                    acc[i][j] = fma(av[i], wv[j], acc[i][j]);
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
