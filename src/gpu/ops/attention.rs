//! Masked multi-head self-attention from fused QKV (shaders/attention.wgsl; at chosen query rows
//! only, for the last layer, with its entry `rows`) and its backward
//! (attention_backward.wgsl: dQ with the softmax statistics, then dK and dV).
use super::Kernel;
use crate::gpu::context::{Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/attention.wgsl");
pub(super) const BACKWARD: &str = include_str!("../../../shaders/attention_backward.wgsl");

/// Largest head dimension the kernel's per-invocation arrays hold.
pub const MAX_HEAD_DIM: usize = 64;

super::uniform! {
    Params {
        seq: u32,
        hidden: u32,
        head_dim: u32,
        /// index of this chunk's first sequence in `lens`
        row_offset: u32,
        scale: f32,
        /// [`record_rows`]: the query rows, and where their indices start in `idx`
        n: u32,
        idx_off: u32,
        _p: u32,
    }
}

/// `rows` sequences of length `seq`; `lens[row_offset + b]` is sequence b's real length.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, qkv: &Buf, lens: &Buf, ctx: &Buf, rows: u32, seq: u32, hidden: u32, heads: u32, row_offset: u32) {
    let head_dim = hidden / heads;
    let p = Params { seq, hidden, head_dim, row_offset, scale: 1.0 / (head_dim as f32).sqrt(), n: 0, idx_off: 0, _p: 0 };
    plan.dispatch(kernel_for(head_dim), &p, &[qkv, lens, ctx], [seq.div_ceil(32), heads, rows]);
}

/// The attention kernel for a head dimension: fixed at 32 or 64 where it is one of those.
pub fn kernel_for(head_dim: u32) -> Kernel {
    match head_dim {
        32 => Kernel::Attention32,
        64 => Kernel::Attention64,
        _ => Kernel::Attention,
    }
}

/// Attention at `n` query rows only, `idx[idx_off + r]` = `b·seq + i` (query i of sequence b of
/// the chunk): `ctx [n, H]`, row r for query r, over all of its sequence's keys.
#[allow(clippy::too_many_arguments)]
pub fn record_rows(plan: &mut Plan, qkv: &Buf, lens: &Buf, ctx: &Buf, idx: &Buf, idx_off: u32, n: u32, seq: u32, hidden: u32, heads: u32, row_offset: u32) {
    let head_dim = hidden / heads;
    let p = Params { seq, hidden, head_dim, row_offset, scale: 1.0 / (head_dim as f32).sqrt(), n, idx_off, _p: 0 };
    plan.dispatch(Kernel::AttentionRows, &p, &[qkv, lens, ctx, idx], [n.div_ceil(64), heads, 1]);
}

super::uniform! {
    BackParams {
        seq: u32,
        hidden: u32,
        head_dim: u32,
        heads: u32,
        scale: f32,
        _p: [u32; 3],
    }
}

/// `dqkv` from `dctx` for `rows` sequences (all of a batch: `lens[b]`); `stats` holds
/// `2·rows·heads·seq` floats.
#[allow(clippy::too_many_arguments)]
pub fn record_backward(plan: &mut Plan, qkv: &Buf, lens: &Buf, dctx: &Buf, stats: &Buf, dqkv: &Buf, rows: u32, seq: u32, hidden: u32, heads: u32) {
    let head_dim = hidden / heads;
    let p = BackParams { seq, hidden, head_dim, heads, scale: 1.0 / (head_dim as f32).sqrt(), _p: [0; 3] };
    let groups = [seq.div_ceil(64), heads, rows];
    plan.dispatch(Kernel::AttentionBackward, &p, &[qkv, lens, dctx, stats, dqkv], groups);
    plan.dispatch(Kernel::AttentionBackwardKv, &p, &[qkv, lens, dctx, stats, dqkv], groups);
}
