//! Row LayerNorm in place (shaders/layernorm.wgsl) and its backward (layernorm_backward.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/layernorm.wgsl");
pub(super) const BACKWARD: &str = include_str!("../../../shaders/layernorm_backward.wgsl");

super::uniform! {
    Params {
        rows: u32,
        hidden: u32,
        eps: f32,
        _p: u32,
    }
}

super::uniform! {
    BackParams {
        rows: u32,
        hidden: u32,
        eps: f32,
        /// 1: also write x̂ to `xhat` (for the γ, β gradients).
        keep_xhat: u32,
    }
}

pub fn record(plan: &mut Plan, x: &Buf, gamma: &Buf, beta: &Buf, rows: u32, hidden: u32, eps: f32) {
    plan.dispatch(Kernel::LayerNorm, &Params { rows, hidden, eps, _p: 0 }, &[x, gamma, beta], grid(rows));
}

/// `dx` from `dy` and the LayerNorm's input `z` (statistics recomputed); with `xhat`, also the
/// normalised input there (for the γ, β gradients). `dummy` stands in for a missing `xhat`.
#[allow(clippy::too_many_arguments)]
pub fn record_backward(plan: &mut Plan, z: &Buf, gamma: &Buf, dy: &Buf, dx: &Buf, xhat: Option<&Buf>, rows: u32, hidden: u32, eps: f32, dummy: &Buf) {
    let p = BackParams { rows, hidden, eps, keep_xhat: xhat.is_some() as u32 };
    plan.dispatch(Kernel::LayerNormBackward, &p, &[z, gamma, dy, dx, xhat.unwrap_or(dummy)], grid(rows));
}
