//! Masked multi-head self-attention from fused QKV (shaders/attention.wgsl).
use super::Kernel;
use crate::gpu::context::{Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/attention.wgsl");

/// Largest head dimension the kernel's per-invocation arrays hold.
pub const MAX_HEAD_DIM: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    seq: u32,
    hidden: u32,
    head_dim: u32,
    row_offset: u32,
    scale: f32,
    _p: [u32; 3],
}

/// `rows` sequences of length `seq`; `lens[row_offset + b]` is sequence b's real length.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, qkv: &Buf, lens: &Buf, ctx: &Buf, rows: u32, seq: u32, hidden: u32, heads: u32, row_offset: u32) {
    let head_dim = hidden / heads;
    let p = Params { seq, hidden, head_dim, row_offset, scale: 1.0 / (head_dim as f32).sqrt(), _p: [0; 3] };
    plan.dispatch(Kernel::Attention, &p, &[qkv, lens, ctx], [seq.div_ceil(32), heads, rows]);
}
