//! Row LayerNorm in place (shaders/layernorm.wgsl) and its backward (layernorm_backward.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/layernorm.wgsl");
pub(super) const BACKWARD: &str = include_str!("../../../shaders/layernorm_backward.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    hidden: u32,
    eps: f32,
    _p: u32,
}

pub fn record(plan: &mut Plan, x: &Buf, gamma: &Buf, beta: &Buf, rows: u32, hidden: u32, eps: f32) {
    plan.dispatch(Kernel::LayerNorm, &Params { rows, hidden, eps, _p: 0 }, &[x, gamma, beta], grid(rows));
}

/// `dx` from `dy` and the LayerNorm's input `z` (statistics recomputed).
#[allow(clippy::too_many_arguments)]
pub fn record_backward(plan: &mut Plan, z: &Buf, gamma: &Buf, dy: &Buf, dx: &Buf, rows: u32, hidden: u32, eps: f32) {
    plan.dispatch(Kernel::LayerNormBackward, &Params { rows, hidden, eps, _p: 0 }, &[z, gamma, dy, dx], grid(rows));
}
