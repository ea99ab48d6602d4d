//! One file per GPU op: its WGSL (in `shaders/`) and the launcher that records its dispatch.

pub mod attention;
pub mod embed;
pub mod gather;
pub mod layernorm;
pub mod logsoftmax;
pub mod lora;
pub mod matmul;

const REDUCE: &str = include_str!("../../../shaders/reduce.wgsl");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Embed,
    LayerNorm,
    /// 64×64 output tiles (4×4 per invocation).
    Matmul,
    /// The same shader with 128×128 tiles (8×8 per invocation), for large products.
    MatmulWide,
    Attention,
    Gather,
    LogSoftmax,
    LoraMerge,
}

impl Kernel {
    /// In pipeline order (`Kernel as usize` indexes the context's pipelines).
    pub const ALL: [Kernel; 8] = [
        Kernel::Embed,
        Kernel::LayerNorm,
        Kernel::Matmul,
        Kernel::MatmulWide,
        Kernel::Attention,
        Kernel::Gather,
        Kernel::LogSoftmax,
        Kernel::LoraMerge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Embed => "embed",
            Kernel::LayerNorm => "layernorm",
            Kernel::Matmul => "matmul",
            Kernel::MatmulWide => "matmul_wide",
            Kernel::Attention => "attention",
            Kernel::Gather => "gather",
            Kernel::LogSoftmax => "logsoftmax",
            Kernel::LoraMerge => "lora_merge",
        }
    }

    fn raw(self) -> &'static str {
        match self {
            Kernel::Embed => embed::SOURCE,
            Kernel::LayerNorm => layernorm::SOURCE,
            Kernel::Matmul | Kernel::MatmulWide => matmul::SOURCE,
            Kernel::Attention => attention::SOURCE,
            Kernel::Gather => gather::SOURCE,
            Kernel::LogSoftmax => logsoftmax::SOURCE,
            Kernel::LoraMerge => lora::SOURCE,
        }
    }

    /// WGSL with `// #include "reduce.wgsl"` lines replaced by the shared file, and the
    /// matmul tile constants set for the wide variant.
    pub fn source(self) -> String {
        self.raw()
            .lines()
            .map(|l| match l.trim() {
                "// #include \"reduce.wgsl\"" => REDUCE,
                "const TM: u32 = 4u;" if self == Kernel::MatmulWide => "const TM: u32 = 8u;",
                "const TN: u32 = 4u;" if self == Kernel::MatmulWide => "const TN: u32 = 8u;",
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
