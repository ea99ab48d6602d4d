//! LoRA merge/unmerge in place on the GPU (shaders/lora_merge.wgsl).
use super::Kernel;
use crate::gpu::context::{grid, Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/lora_merge.wgsl");

super::uniform! {
    Params {
        /// out × cols
        n: u32,
        cols: u32,
        r: u32,
        row_off: u32,
        scale: f32,
        _p: [u32; 3],
    }
}

/// `w[row_off + i, :] += scale · (B·A)[i, :]` for the `out` rows of B.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, w: &Buf, a: &Buf, b: &Buf, out: u32, cols: u32, r: u32, row_off: u32, scale: f32) {
    let n = out * cols;
    plan.dispatch(Kernel::LoraMerge, &Params { n, cols, r, row_off, scale, _p: [0; 3] }, &[w, a, b], grid(n.div_ceil(256)));
}
