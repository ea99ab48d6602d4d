//! Column sums into parameter gradients (shaders/colsum.wgsl): biases, LayerNorm γ and β.
use super::Kernel;
use crate::gpu::context::{Buf, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/colsum.wgsl");

super::uniform! {
    Params {
        rows: u32,
        cols: u32,
        with_b: u32,
        out_off: u32,
    }
}

/// `out[out_off + j] += Σ_r a[r, j]·b[r, j]` (or `Σ_r a[r, j]` without `b`; `dummy` stands in).
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, a: &Buf, b: Option<&Buf>, out: &Buf, rows: u32, cols: u32, out_off: u32, dummy: &Buf) {
    let p = Params { rows, cols, with_b: b.is_some() as u32, out_off };
    plan.dispatch(Kernel::ColSum, &p, &[a, b.unwrap_or(dummy), out], [cols.div_ceil(64), 1, 1]);
}
