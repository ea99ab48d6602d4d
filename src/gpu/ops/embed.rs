//! Token + position + token-type embeddings (shaders/embed.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/embed.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    hidden: u32,
    seq: u32,
    pos_offset: u32,
    tok_offset: u32,
    _p: [u32; 3],
}

/// `out[t] = word[ids[tok_offset + t]] + pos[t % seq + pos_offset] + typ` for `tokens` tokens.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, ids: &Buf, word: &Buf, pos: &Buf, typ: &Buf, out: &Buf, tokens: u32, hidden: u32, seq: u32, pos_offset: u32, tok_offset: u32) {
    let n = tokens * hidden;
    let p = Params { n, hidden, seq, pos_offset, tok_offset, _p: [0; 3] };
    plan.dispatch(Kernel::Embed, &p, &[ids, word, pos, typ, out], grid(n.div_ceil(256)));
}
