//! Row LayerNorm in place (shaders/layernorm.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/layernorm.wgsl");

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
