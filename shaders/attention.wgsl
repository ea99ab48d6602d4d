// Multi-head self-attention with a padding mask, from the fused QKV projection
// qkv [rows × seq, 3H] (Q | K | V) to the context ctx [rows × seq, H].
// Workgroup = (32 queries, one head, one sequence). Keys/values stream through workgroup memory
// in tiles of 16; each invocation keeps its query and an online-softmax accumulator (running
// max and sum in f32). Keys at or beyond the sequence's length are masked out; padding query rows
// are written as zeros. Entry `rows`: the same attention at n chosen query rows only (the last
// layer, where only the [CLS] rows or the masked slots are read), one invocation per (row,
// head), keys and values read straight from qkv.

const QT: u32 = 32u;    // queries per workgroup
const KT: u32 = 16u;    // keys per tile
const MAXD: u32 = 64u;  // largest supported head dimension
// The head dimension when a pipeline fixes it (attention_32, attention_64: loops of constant
// length over per-invocation arrays of that length, which the compiler can keep in registers);
// 0 reads it from the parameters, with arrays of MAXD.
const HD: u32 = 0u;
const QD: u32 = 64u;

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/attention.rs).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> lens: array<u32>;
@group(0) @binding(3) var<storage, read_write> ctx: array<f32>;
@group(0) @binding(4) var<storage, read> idx: array<u32>;

var<workgroup> k_tile: array<f32, 1024>; // [KT][MAXD]
var<workgroup> v_tile: array<f32, 1024>;

@compute @workgroup_size(32)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.z;
    let head = wid.y;
    let i = wid.x * QT + lid;
    let len = lens[p.row_offset + b];
    let dh = select(p.head_dim, HD, HD != 0u);
    let h3 = 3u * p.hidden;
    let q_ok = i < len;
    var q: array<f32, QD>;
    var acc: array<f32, QD>;
    if (q_ok) {
        let qb = (b * p.seq + i) * h3 + head * dh;
        for (var d = 0u; d < dh; d = d + 1u) {
            q[d] = qkv[qb + d] * p.scale;
        }
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var j0 = 0u; j0 < p.seq; j0 = j0 + KT) {
        for (var e = lid; e < KT * dh; e = e + QT) {
            let jj = e / dh;
            let d = e % dh;
            let j = j0 + jj;
            if (j < len) {
                let kb = (b * p.seq + j) * h3 + head * dh + d;
                k_tile[jj * MAXD + d] = qkv[kb + p.hidden];
                v_tile[jj * MAXD + d] = qkv[kb + 2u * p.hidden];
            }
        }
        workgroupBarrier();
        if (q_ok && j0 < len) {
            let nk = min(KT, len - j0);
            for (var jj = 0u; jj < nk; jj = jj + 1u) {
                var s = 0.0;
                for (var d = 0u; d < dh; d = d + 1u) {
                    s = fma(q[d], k_tile[jj * MAXD + d], s);
                }
                let m_new = max(m, s);
                let corr = exp(m - m_new);
                let e = exp(s - m_new);
                l = l * corr + e;
                for (var d = 0u; d < dh; d = d + 1u) {
                    acc[d] = acc[d] * corr + e * v_tile[jj * MAXD + d];
                }
                m = m_new;
            }
        }
        workgroupBarrier();
    }
    if (i < p.seq) {
        let ob = (b * p.seq + i) * p.hidden + head * dh;
        for (var d = 0u; d < dh; d = d + 1u) {
            ctx[ob + d] = select(0.0, acc[d] / l, q_ok);
        }
    }
}

@compute @workgroup_size(64)
fn rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let head = gid.y;
    if (r >= p.n) {
        return;
    }
    let t = idx[p.idx_off + r];
    let b = t / p.seq;
    let i = t % p.seq;
    let len = lens[p.row_offset + b];
    let dh = p.head_dim;
    let h3 = 3u * p.hidden;
    let ob = r * p.hidden + head * dh;
    if (i >= len) {
        for (var d = 0u; d < dh; d = d + 1u) {
            ctx[ob + d] = 0.0;
        }
        return;
    }
    var q: array<f32, QD>;
    var acc: array<f32, QD>;
    let qb = t * h3 + head * dh;
    for (var d = 0u; d < dh; d = d + 1u) {
        q[d] = qkv[qb + d] * p.scale;
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var j = 0u; j < len; j = j + 1u) {
        let kb = (b * p.seq + j) * h3 + head * dh + p.hidden;
        var s = 0.0;
        for (var d = 0u; d < dh; d = d + 1u) {
            s = fma(q[d], qkv[kb + d], s);
        }
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * corr + e;
        for (var d = 0u; d < dh; d = d + 1u) {
            acc[d] = acc[d] * corr + e * qkv[kb + p.hidden + d];
        }
        m = m_new;
    }
    for (var d = 0u; d < dh; d = d + 1u) {
        ctx[ob + d] = acc[d] / l;
    }
}
