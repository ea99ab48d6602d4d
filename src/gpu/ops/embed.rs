//! Token + position + token-type embeddings (shaders/embed.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan, Shard};

pub(super) const SOURCE: &str = include_str!("../../../shaders/embed.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    hidden: u32,
    seq: u32,
    pos_offset: u32,
    tok_offset: u32,
    vocab_lo: u32,
    vocab_hi: u32,
    _p: u32,
}

/// `out[t] = word[ids[tok_offset + t]] + pos[t % seq + pos_offset] + typ` for `tokens` tokens,
/// one dispatch per shard `(lo, hi, rows lo..hi of the table)` of the word embeddings.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, ids: &Buf, word: &[Shard], pos: &Buf, typ: &Buf, out: &Buf, tokens: u32, hidden: u32, seq: u32, pos_offset: u32, tok_offset: u32) {
    let n = tokens * hidden;
    for s in word {
        let p = Params { n, hidden, seq, pos_offset, tok_offset, vocab_lo: s.lo, vocab_hi: s.hi, _p: 0 };
        plan.dispatch(Kernel::Embed, &p, &[ids, &s.buf, pos, typ, out], grid(n.div_ceil(256)));
    }
}
