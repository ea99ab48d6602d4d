// Backward of attention.wgsl: dqkv [rows × seq, 3H] (dQ | dK | dV) from dctx [rows × seq, H] and
// the forward's qkv. Nothing but qkv is kept from the forward: each entry point recomputes the
// scores it needs. With P_ij = softmax_j(s_ij), s_ij = scale·Q_i·K_j over keys j < len:
//   main     (one invocation per query i): lse_i, D_i = Σ_j P_ij·dP_ij with dP_ij = dctx_i·V_j,
//            and dQ_i = scale·Σ_j P_ij (dP_ij − D_i) K_j; (lse_i, D_i) go to `stats`.
//   main_kv  (one invocation per key j, after main): dV_j = Σ_i P_ij·dctx_i and
//            dK_j = scale·Σ_i P_ij (dP_ij − D_i) Q_i.
// Padding rows (at or beyond the length) get zero gradients. All sums are f32.

const MAXD: u32 = 64u;

// #uniform: `struct Params`, generated from the launcher's `BackParams` (src/gpu/ops/attention.rs).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> lens: array<u32>;
@group(0) @binding(3) var<storage, read> dctx: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<f32>;

fn dot_rows(a: u32, b: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < p.head_dim; d = d + 1u) {
        s = s + qkv[a + d] * qkv[b + d];
    }
    return s;
}

fn dot_ctx_v(c: u32, v: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < p.head_dim; d = d + 1u) {
        s = s + dctx[c + d] * qkv[v + d];
    }
    return s;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let head = gid.y;
    let b = gid.z;
    if (i >= p.seq) {
        return;
    }
    let len = lens[b];
    let h3 = 3u * p.hidden;
    let hoff = head * p.head_dim;
    let qrow = (b * p.seq + i) * h3 + hoff;
    let crow = (b * p.seq + i) * p.hidden + hoff;
    let st = ((b * p.heads + head) * p.seq + i) * 2u;
    if (i >= len) {
        for (var d = 0u; d < p.head_dim; d = d + 1u) {
            dqkv[qrow + d] = 0.0;
        }
        stats[st] = 0.0;
        stats[st + 1u] = 0.0;
        return;
    }
    var m = -3.4e38;
    for (var j = 0u; j < len; j = j + 1u) {
        m = max(m, p.scale * dot_rows(qrow, (b * p.seq + j) * h3 + p.hidden + hoff));
    }
    var z = 0.0;
    for (var j = 0u; j < len; j = j + 1u) {
        z = z + exp(p.scale * dot_rows(qrow, (b * p.seq + j) * h3 + p.hidden + hoff) - m);
    }
    let lse = m + log(z);
    var dd = 0.0;
    for (var j = 0u; j < len; j = j + 1u) {
        let r = (b * p.seq + j) * h3 + hoff;
        let pij = exp(p.scale * dot_rows(qrow, r + p.hidden) - lse);
        dd = dd + pij * dot_ctx_v(crow, r + 2u * p.hidden);
    }
    var dq: array<f32, MAXD>;
    for (var j = 0u; j < len; j = j + 1u) {
        let r = (b * p.seq + j) * h3 + hoff;
        let pij = exp(p.scale * dot_rows(qrow, r + p.hidden) - lse);
        let ds = pij * (dot_ctx_v(crow, r + 2u * p.hidden) - dd) * p.scale;
        for (var d = 0u; d < p.head_dim; d = d + 1u) {
            dq[d] = dq[d] + ds * qkv[r + p.hidden + d];
        }
    }
    for (var d = 0u; d < p.head_dim; d = d + 1u) {
        dqkv[qrow + d] = dq[d];
    }
    stats[st] = lse;
    stats[st + 1u] = dd;
}

@compute @workgroup_size(64)
fn main_kv(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let head = gid.y;
    let b = gid.z;
    if (j >= p.seq) {
        return;
    }
    let len = lens[b];
    let h3 = 3u * p.hidden;
    let hoff = head * p.head_dim;
    let krow = (b * p.seq + j) * h3 + p.hidden + hoff;
    let vrow = krow + p.hidden;
    var dk: array<f32, MAXD>;
    var dv: array<f32, MAXD>;
    if (j < len) {
        for (var i = 0u; i < len; i = i + 1u) {
            let qrow = (b * p.seq + i) * h3 + hoff;
            let crow = (b * p.seq + i) * p.hidden + hoff;
            let st = ((b * p.heads + head) * p.seq + i) * 2u;
            let pij = exp(p.scale * dot_rows(qrow, krow) - stats[st]);
            let ds = pij * (dot_ctx_v(crow, vrow) - stats[st + 1u]) * p.scale;
            for (var d = 0u; d < p.head_dim; d = d + 1u) {
                dv[d] = dv[d] + pij * dctx[crow + d];
                dk[d] = dk[d] + ds * qkv[qrow + d];
            }
        }
    }
    for (var d = 0u; d < p.head_dim; d = d + 1u) {
        dqkv[krow + d] = dk[d];
        dqkv[vrow + d] = dv[d];
    }
}
