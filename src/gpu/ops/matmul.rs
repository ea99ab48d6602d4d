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

/// Which tile size to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tiles {
    /// The measured best: 64×64 everywhere. On an H200 (Vulkan) the 8×8-per-invocation variant
    /// ran PLL's large products 5.8× slower (358 vs 62 ms per 30-best list), so `Auto` never
    /// picks it; it stays selectable for other GPUs and is tested.
    #[default]
    Auto,
    Small,
    Wide,
}

impl std::str::FromStr for Tiles {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "auto" => Ok(Tiles::Auto),
            "small" => Ok(Tiles::Small),
            "wide" => Ok(Tiles::Wide),
            _ => Err(crate::Error::Input(format!("matmul tiles {s:?}: expected auto, small or wide"))),
        }
    }
}

/// What is added to the product after the activation.
pub enum Add<'a> {
    Nothing,
    /// A residual `R [m, n]`.
    Residual(&'a Buf),
    /// C's previous contents (accumulate).
    Previous,
}

/// `A [m, k]`, `W [n, k]`, `bias [n]`.
#[allow(clippy::too_many_arguments)]
pub fn record(plan: &mut Plan, a: In<'_>, w: &Buf, bias: &Buf, add: Add<'_>, out: Out<'_>, m: u32, n: u32, k: u32, act: Act, dummy: &Buf) {
    let (has_res, res) = match add {
        Add::Nothing => (0, None),
        Add::Residual(r) => (1, Some(r)),
        Add::Previous => (2, None),
    };
    let p = Params { m, n, k, act: act as u32, has_res, ldc: out.ldc, c_off: out.offset, a_off: a.offset };
    let wide = match plan.tiles {
        Tiles::Small => false,
        Tiles::Wide => true,
        Tiles::Auto => false,
    };
    let (kernel, t) = if wide { (Kernel::MatmulWide, 128) } else { (Kernel::Matmul, 64) };
    plan.dispatch(kernel, &p, &[a.buf, w, bias, res.unwrap_or(dummy), out.buf], [n.div_ceil(t), m.div_ceil(t), 1]);
}
