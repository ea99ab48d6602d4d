//! In-place exact GELU (shaders/gelu.wgsl) and its backward (entry `backward` there).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/gelu.wgsl");

super::uniform! {
    Params {
        n: u32,
        _p: [u32; 3],
    }
}

pub fn record(plan: &mut Plan, x: &Buf, n: u32) {
    plan.dispatch(Kernel::Gelu, &Params { n, _p: [0; 3] }, &[x], grid(n.div_ceil(256)));
}

/// `d ← d · gelu'(x)` over `n` elements.
pub fn record_backward(plan: &mut Plan, x: &Buf, d: &Buf, n: u32) {
    plan.dispatch(Kernel::GeluBackward, &Params { n, _p: [0; 3] }, &[x, d], grid(n.div_ceil(256)));
}
