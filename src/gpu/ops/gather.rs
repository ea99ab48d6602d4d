//! Row gather (shaders/gather.wgsl): [CLS] rows or masked slots out of the hidden states; and
//! its backward, a scatter-add.
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/gather.wgsl");

super::uniform! {
    Params {
        /// rows × hidden
        n: u32,
        hidden: u32,
        idx_off: u32,
        out_off: u32,
        mode: u32,
        _p: [u32; 3],
    }
}

/// `out[out_off + r·H ..] = x[idx[idx_off + r]·H ..]` for `rows` rows.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, x: &Buf, idx: &Buf, out: &Buf, rows: u32, hidden: u32, idx_off: u32, out_off: u32) {
    let n = rows * hidden;
    plan.dispatch(Kernel::Gather, &Params { n, hidden, idx_off, out_off, mode: 0, _p: [0; 3] }, &[x, idx, out], grid(n.div_ceil(256)));
}

/// The backward: `out[idx[r]·H ..] += x[r·H ..]` for `rows` distinct rows.
pub fn record_scatter_add(plan: &mut Plan, x: &Buf, idx: &Buf, out: &Buf, rows: u32, hidden: u32) {
    let n = rows * hidden;
    plan.dispatch(Kernel::Gather, &Params { n, hidden, idx_off: 0, out_off: 0, mode: 1, _p: [0; 3] }, &[x, idx, out], grid(n.div_ceil(256)));
}
