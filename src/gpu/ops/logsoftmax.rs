//! Row log-softmax, picking the target's log-probability or writing whole rows, and the
//! cross-entropy's backward (shaders/logsoftmax.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/logsoftmax.wgsl");

super::uniform! {
    Params {
        rows: u32,
        vocab: u32,
        mode: u32,
        tgt_off: u32,
        out_off: u32,
        w: f32,
        _p: [u32; 2],
    }
}

#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, logits: &Buf, targets: &Buf, out: &Buf, rows: u32, vocab: u32, full: bool, tgt_off: u32, out_off: u32) {
    let p = Params { rows, vocab, mode: full as u32, tgt_off, out_off, w: 0.0, _p: [0; 2] };
    plan.dispatch(Kernel::LogSoftmax, &p, &[logits, targets, out], grid(rows));
}

/// Cross-entropy rows: `out[out_off + r] = −log P(target)`, and `logits` becomes its gradient
/// `w·(softmax − onehot)` in place.
#[allow(clippy::too_many_arguments)]
pub fn record_cross_entropy(plan: &mut Plan, logits: &Buf, targets: &Buf, out: &Buf, rows: u32, vocab: u32, w: f32, tgt_off: u32, out_off: u32) {
    let p = Params { rows, vocab, mode: 2, tgt_off, out_off, w, _p: [0; 2] };
    plan.dispatch(Kernel::LogSoftmax, &p, &[logits, targets, out], grid(rows));
}
