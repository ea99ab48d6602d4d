// Log-softmax over each row of logits [rows, vocab], one workgroup per row, max and sum of
// exponentials reduced in f32. mode 0 writes only log P(target) per row (PLL: out[out_off + r]);
// mode 1 writes the whole row (out[out_off + r * vocab + i]); mode 2 is the cross-entropy's
// backward (MLM training): out[out_off + r] = −log P(target), and the row of logits is replaced
// by w·(softmax − onehot(target)), its gradient.

const WG: u32 = 256u;
// #include "reduce.wgsl"

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/logsoftmax.rs).
// #include "grid.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.vocab;
    var mx = -3.0e38;
    for (var i = lid; i < p.vocab; i = i + WG) {
        mx = max(mx, logits[base + i]);
    }
    mx = wg_max(mx, lid);
    var s = 0.0;
    for (var i = lid; i < p.vocab; i = i + WG) {
        s = s + exp(logits[base + i] - mx);
    }
    let lse = mx + log(wg_sum(s, lid));
    if (p.mode == 0u) {
        if (lid == 0u) {
            out[p.out_off + r] = logits[base + targets[p.tgt_off + r]] - lse;
        }
    } else if (p.mode == 2u) {
        let t = targets[p.tgt_off + r];
        let zt = logits[base + t];
        workgroupBarrier();
        for (var i = lid; i < p.vocab; i = i + WG) {
            logits[base + i] = p.w * (exp(logits[base + i] - lse) - select(0.0, 1.0, i == t));
        }
        if (lid == 0u) {
            out[p.out_off + r] = lse - zt;
        }
    } else {
        for (var i = lid; i < p.vocab; i = i + WG) {
            out[p.out_off + base + i] = logits[base + i] - lse;
        }
    }
}
