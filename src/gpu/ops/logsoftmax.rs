//! Row log-softmax, picking the target's log-probability or writing whole rows
//! (shaders/logsoftmax.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/logsoftmax.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    mode: u32,
    tgt_off: u32,
    out_off: u32,
    _p: [u32; 3],
}

#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, logits: &Buf, targets: &Buf, out: &Buf, rows: u32, vocab: u32, full: bool, tgt_off: u32, out_off: u32) {
    let p = Params { rows, vocab, mode: full as u32, tgt_off, out_off, _p: [0; 3] };
    plan.dispatch(Kernel::LogSoftmax, &p, &[logits, targets, out], grid(rows));
}
