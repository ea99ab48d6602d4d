//! `C = act(A·Wᵀ + b) (+ R)` (shaders/matmul.wgsl): every linear layer and both heads.
use super::Kernel;
use crate::gpu::context::{Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/matmul.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    act: u32,
    has_res: u32,
    ldc: u32,
    c_off: u32,
    a_off: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None = 0,
    Gelu = 1,
}

/// A matrix operand: buffer and element offset of its first row.
pub struct In<'a> {
    pub buf: &'a Buf,
    pub offset: u32,
}

/// Where C goes: buffer, row stride and element offset.
pub struct Out<'a> {
    pub buf: &'a Buf,
    pub ldc: u32,
    pub offset: u32,
}

/// `A [m, k]`, `W [n, k]`, `bias [n]`, optional residual `R [m, n]`.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, a: In<'_>, w: &Buf, bias: &Buf, res: Option<&Buf>, out: Out<'_>, m: u32, n: u32, k: u32, act: Act, dummy: &Buf) {
    let p = Params { m, n, k, act: act as u32, has_res: res.is_some() as u32, ldc: out.ldc, c_off: out.offset, a_off: a.offset };
    plan.dispatch(Kernel::Matmul, &p, &[a.buf, w, bias, res.unwrap_or(dummy), out.buf], [n.div_ceil(64), m.div_ceil(64), 1]);
}
