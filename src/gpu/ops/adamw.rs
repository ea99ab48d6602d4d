//! The optimiser on the GPU (full fine-tuning): the AdamW step (shaders/adamw.wgsl) and the
//! partial sums of squares behind the global gradient norm (shaders/sumsq.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};
use crate::train::AdamWConfig;

pub(super) const SOURCE: &str = include_str!("../../../shaders/adamw.wgsl");
pub(super) const SUMSQ: &str = include_str!("../../../shaders/sumsq.wgsl");

/// Workgroups of the sum of squares: its partials are read back and added on the host.
pub const SUMSQ_GROUPS: u32 = 256;

super::uniform! {
    Params {
        n: u32,
        g_off: u32,
        _p: [u32; 2],
        lr: f32,
        /// 1 − lr·wd
        decay: f32,
        beta1: f32,
        beta2: f32,
        /// 1 − β1^t
        bc1: f32,
        /// 1 − β2^t
        bc2: f32,
        eps: f32,
        scale: f32,
    }
}

/// One AdamW step's settings: `t` is the 1-based step (bias correction), `scale` multiplies the
/// gradients (the clip factor).
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub t: u64,
    pub lr: f64,
    pub scale: f64,
}

/// One tensor's part of an AdamW step: the `n` floats of `w`, whose gradients and moments are
/// at `g_off` of `grads`, `m` and `v`.
pub struct Piece<'a> {
    pub w: &'a Buf,
    pub n: u32,
    pub g_off: u32,
}

/// An AdamW step over `pieces` that is made whole or not at all: every piece's update is first
/// computed read-only, setting `flag` (one u32, zero before the submission) when any value would
/// not be finite; the updates then run only if it stayed zero.
pub fn record(plan: &mut Plan, pieces: &[Piece], grads: &Buf, m: &Buf, v: &Buf, flag: &Buf, c: &AdamWConfig, s: Step) {
    for kernel in [Kernel::AdamWCheck, Kernel::AdamW] {
        for piece in pieces {
            record_one(plan, kernel, piece, grads, m, v, flag, c, s);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn record_one(plan: &mut Plan, kernel: Kernel, piece: &Piece, grads: &Buf, m: &Buf, v: &Buf, flag: &Buf, c: &AdamWConfig, s: Step) {
    let Piece { w, n, g_off } = *piece;
    let t = s.t.min(i32::MAX as u64) as i32;
    let p = Params {
        n,
        g_off,
        _p: [0; 2],
        lr: s.lr as f32,
        decay: (1.0 - s.lr * c.weight_decay) as f32,
        beta1: c.beta1 as f32,
        beta2: c.beta2 as f32,
        bc1: (1.0 - c.beta1.powi(t)) as f32,
        bc2: (1.0 - c.beta2.powi(t)) as f32,
        eps: c.eps as f32,
        scale: s.scale as f32,
    };
    plan.dispatch(kernel, &p, &[w, grads, m, v, flag], grid(n.div_ceil(256)));
}

super::uniform! {
    SumSqParams {
        n: u32,
        /// NWG · WG
        stride: u32,
        _p: [u32; 2],
    }
}

/// `out[0..SUMSQ_GROUPS)` = partial sums of `x[i]²` over `x[0..n)`.
pub fn record_sumsq(plan: &mut Plan, x: &Buf, out: &Buf, n: u32) {
    let p = SumSqParams { n, stride: SUMSQ_GROUPS * 256, _p: [0; 2] };
    plan.dispatch(Kernel::SumSq, &p, &[x, out], [SUMSQ_GROUPS, 1, 1]);
}
