//! `C = act(α·op(A)·op(B) + b) (+ R)` (shaders/matmul.wgsl): every linear layer and both heads
//! (`A·Wᵀ`, [`record`]), and the backward's products (`dY·W`, `dYᵀ·X`, [`record_general`]).
use super::Kernel;
use crate::gpu::context::{Buf, Matrix, Plan};

pub(super) const SOURCE: &str = include_str!("../../../shaders/matmul.wgsl");
pub(super) const VEC4: &str = include_str!("../../../shaders/matmul_vec4.wgsl");

super::uniform! {
    Params {
        m: u32,
        n: u32,
        k: u32,
        act: u32,
        has_res: u32,
        ldc: u32,
        c_off: u32,
        /// element offset of A's first element
        a_off: u32,
        lda: u32,
        ldb: u32,
        /// bit 0: A stored transposed; bit 1: B stored [n, k]
        trans: u32,
        alpha: f32,
    }
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

/// The weight operand of [`record`], `W [n, k]`: its buffer and whether it holds f16.
#[derive(Clone, Copy)]
pub struct W<'a> {
    pub buf: &'a Buf,
    pub half: bool,
}

impl<'a> From<&'a Buf> for W<'a> {
    fn from(buf: &'a Buf) -> Self {
        W { buf, half: false }
    }
}

impl<'a> From<&'a Matrix> for W<'a> {
    fn from(m: &'a Matrix) -> Self {
        W { buf: &m.buf, half: m.half }
    }
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
    /// The forward's products (`A·Wᵀ`, k a multiple of 4) with 16-byte loads along k
    /// (matmul_vec4.wgsl, 64×64 tiles); the rest as `Small`. Not timed on a hardware GPU yet
    /// (issue 16), so `Auto` does not pick it.
    Vec4,
}

impl std::str::FromStr for Tiles {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "auto" => Ok(Tiles::Auto),
            "small" => Ok(Tiles::Small),
            "wide" => Ok(Tiles::Wide),
            "vec4" => Ok(Tiles::Vec4),
            _ => Err(crate::Error::Input(format!("matmul tiles {s:?}: expected auto, small, wide or vec4"))),
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

/// `A [m, k]`, `W [n, k]` (f32 or f16), `bias [n]`.
#[allow(clippy::too_many_arguments)]
pub fn record<'w>(plan: &mut Plan, a: In<'_>, w: impl Into<W<'w>>, bias: &Buf, add: Add<'_>, out: Out<'_>, m: u32, n: u32, k: u32, act: Act, dummy: &Buf) {
    let w = w.into();
    let (has_res, res) = match add {
        Add::Nothing => (0, None),
        Add::Residual(r) => (1, Some(r)),
        Add::Previous => (2, None),
    };
    let p = Params { m, n, k, act: act as u32, has_res, ldc: out.ldc, c_off: out.offset, a_off: a.offset, lda: k, ldb: k, trans: 2, alpha: 1.0 };
    dispatch(plan, &p, a.buf, w, bias, res, out.buf, dummy);
}

/// An operand of [`record_general`]: buffer, offset of its first element, leading dimension, and
/// whether it is stored transposed (A: `[k, m]`; B: `[n, k]`).
pub struct Operand<'a> {
    pub buf: &'a Buf,
    pub offset: u32,
    pub ld: u32,
    pub trans: bool,
}

/// `C = α·op(A)·op(B) (+ C or R)`, `op(A) [m, k]`, `op(B) [k, n]`, no bias (`zeros` must hold
/// at least `n` zeros).
#[allow(clippy::too_many_arguments)]
pub fn record_general(plan: &mut Plan, a: Operand<'_>, b: Operand<'_>, alpha: f32, add: Add<'_>, out: Out<'_>, m: u32, n: u32, k: u32, zeros: &Buf, dummy: &Buf) {
    assert!(b.offset == 0, "B operands start at their buffer's beginning");
    let (has_res, res) = match add {
        Add::Nothing => (0, None),
        Add::Residual(r) => (1, Some(r)),
        Add::Previous => (2, None),
    };
    let trans = a.trans as u32 | (b.trans as u32) << 1;
    let p = Params { m, n, k, act: 0, has_res, ldc: out.ldc, c_off: out.offset, a_off: a.offset, lda: a.ld, ldb: b.ld, trans, alpha };
    dispatch(plan, &p, a.buf, W::from(b.buf), zeros, res, out.buf, dummy);
}

#[allow(clippy::too_many_arguments)]
fn dispatch(plan: &mut Plan, p: &Params, a: &Buf, w: W<'_>, bias: &Buf, res: Option<&Buf>, out: &Buf, dummy: &Buf) {
    let (m, n) = (p.m, p.n);
    let (kernel, t) = kernel_for(plan.tiles, p, w.half);
    plan.dispatch(kernel, p, &[a, w.buf, bias, res.unwrap_or(dummy), out], [n.div_ceil(t), m.div_ceil(t), 1]);
}

/// The kernel a product runs with under `tiles` (W in f16 or not), and its square tile's side:
/// vec4 for the forward's `A·Wᵀ` (`trans` 2, α 1) when k and A's offset are multiples of 4. f16
/// weights always take it then, and the scalar 64×64 kernel otherwise.
fn kernel_for(tiles: Tiles, p: &Params, half: bool) -> (Kernel, u32) {
    let vec4 = p.trans == 2 && p.alpha == 1.0 && p.lda == p.k && p.ldb == p.k && p.k.is_multiple_of(4) && p.a_off.is_multiple_of(4);
    match tiles {
        _ if half && vec4 => (Kernel::MatmulVec4F16, 64),
        _ if half => (Kernel::MatmulF16, 64),
        Tiles::Vec4 if vec4 => (Kernel::MatmulVec4, 64),
        Tiles::Wide => (Kernel::MatmulWide, 128),
        Tiles::Small | Tiles::Vec4 | Tiles::Auto => (Kernel::Matmul, 64),
    }
}

/// The kernel `record` runs `A [m, k]` (A at element `a_offset`) with, under `tiles` and with W
/// in f16 or not.
pub fn kernel_of(tiles: Tiles, k: u32, a_offset: u32, half: bool) -> Kernel {
    let p = Params { m: 1, n: 1, k, act: 0, has_res: 0, ldc: 1, c_off: 0, a_off: a_offset, lda: k, ldb: k, trans: 2, alpha: 1.0 };
    kernel_for(tiles, &p, half).0
}
