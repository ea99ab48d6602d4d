//! Token + position + token-type embeddings (shaders/embed.wgsl), and the gradients of the
//! tables (shaders/embed_backward.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan, Shard};

pub(super) const SOURCE: &str = include_str!("../../../shaders/embed.wgsl");
pub(super) const BACKWARD: &str = include_str!("../../../shaders/embed_backward.wgsl");

super::uniform! {
    Params {
        /// tokens × hidden in this chunk
        n: u32,
        hidden: u32,
        seq: u32,
        /// RoBERTa: pad_token_id + 1
        pos_offset: u32,
        /// index of this chunk's first token in `ids`
        tok_offset: u32,
        vocab_lo: u32,
        vocab_hi: u32,
        _p: u32,
    }
}

/// `out[t] = word[ids[tok_offset + t]] + pos[t % seq + pos_offset] + typ` for `tokens` tokens,
/// one dispatch per shard `(lo, hi, rows lo..hi of the table)` of the word embeddings.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, ids: &Buf, word: &[Shard], pos: &Buf, typ: &Buf, out: &Buf, tokens: u32, hidden: u32, seq: u32, pos_offset: u32, tok_offset: u32) {
    let n = tokens * hidden;
    for s in word {
        let p = Params { n, hidden, seq, pos_offset, tok_offset, vocab_lo: s.lo, vocab_hi: s.hi, _p: 0 };
        let kernel = if s.buf.half { Kernel::EmbedF16 } else { Kernel::Embed };
        plan.dispatch(kernel, &p, &[ids, &s.buf.buf, pos, typ, out], grid(n.div_ceil(256)));
    }
}

super::uniform! {
    BackParams {
        groups: u32,
        hidden: u32,
        out_off: u32,
        _p: u32,
    }
}

/// Tokens grouped by the table row they read: `rows[g]` is read by tokens
/// `toks[starts[g]..starts[g + 1]]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowGroups {
    pub starts: Vec<u32>,
    pub toks: Vec<u32>,
    pub rows: Vec<u32>,
}

impl RowGroups {
    /// Groups token `t` under `row_of(t)`, rows ascending, tokens in order within a row.
    pub fn new(tokens: u32, row_of: impl Fn(u32) -> u32) -> Self {
        let mut pairs: Vec<(u32, u32)> = (0..tokens).map(|t| (row_of(t), t)).collect();
        pairs.sort_unstable();
        let mut g = RowGroups::default();
        for (i, &(row, t)) in pairs.iter().enumerate() {
            if i == 0 || pairs[i - 1].0 != row {
                g.starts.push(i as u32);
                g.rows.push(row);
            }
            g.toks.push(t);
        }
        g.starts.push(pairs.len() as u32);
        g
    }
}

/// `out[out_off + rows[g]·hidden + d] += Σ dy[tok·hidden + d]` over each group's tokens; the
/// groups' buffers as uploaded from a [`RowGroups`] of `groups` groups.
#[allow(clippy::too_many_arguments)]
pub fn record_backward(plan: &mut Plan, dy: &Buf, starts: &Buf, toks: &Buf, rows: &Buf, out: &Buf, groups: u32, hidden: u32, out_off: u32) {
    let p = BackParams { groups, hidden, out_off, _p: 0 };
    plan.dispatch(Kernel::EmbedBackward, &p, &[dy, starts, toks, rows, out], grid((groups * hidden).div_ceil(256)));
}

#[cfg(test)]
mod tests {
    use super::RowGroups;

    #[test]
    fn row_groups_collect_the_tokens_of_each_row() {
        let ids = [5u32, 2, 5, 7, 2, 5];
        let g = RowGroups::new(6, |t| ids[t as usize]);
        assert_eq!(g.rows, vec![2, 5, 7]);
        assert_eq!(g.starts, vec![0, 2, 5, 6]);
        assert_eq!(g.toks, vec![1, 4, 0, 2, 5, 3]);
    }
}
