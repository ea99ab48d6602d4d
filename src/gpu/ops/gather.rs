//! Row gather (shaders/gather.wgsl): [CLS] rows or masked slots out of the hidden states.
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/gather.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    hidden: u32,
    idx_off: u32,
    out_off: u32,
}

/// `out[out_off + r·H ..] = x[idx[idx_off + r]·H ..]` for `rows` rows.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, x: &Buf, idx: &Buf, out: &Buf, rows: u32, hidden: u32, idx_off: u32, out_off: u32) {
    let n = rows * hidden;
    plan.dispatch(Kernel::Gather, &Params { n, hidden, idx_off, out_off }, &[x, idx, out], grid(n.div_ceil(256)));
}
