//! One file per GPU op: its WGSL (in `shaders/`) and the launcher that records its dispatch.

pub mod attention;
pub mod embed;
pub mod gather;
pub mod layernorm;
pub mod logsoftmax;
pub mod matmul;

const REDUCE: &str = include_str!("../../../shaders/reduce.wgsl");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Embed,
    LayerNorm,
    Matmul,
    Attention,
    Gather,
    LogSoftmax,
}

impl Kernel {
    pub const ALL: [Kernel; 6] = [Kernel::Embed, Kernel::LayerNorm, Kernel::Matmul, Kernel::Attention, Kernel::Gather, Kernel::LogSoftmax];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Embed => "embed",
            Kernel::LayerNorm => "layernorm",
            Kernel::Matmul => "matmul",
            Kernel::Attention => "attention",
            Kernel::Gather => "gather",
            Kernel::LogSoftmax => "logsoftmax",
        }
    }

    fn raw(self) -> &'static str {
        match self {
            Kernel::Embed => embed::SOURCE,
            Kernel::LayerNorm => layernorm::SOURCE,
            Kernel::Matmul => matmul::SOURCE,
            Kernel::Attention => attention::SOURCE,
            Kernel::Gather => gather::SOURCE,
            Kernel::LogSoftmax => logsoftmax::SOURCE,
        }
    }

    /// WGSL with `// #include "reduce.wgsl"` lines replaced by the shared file.
    pub fn source(self) -> String {
        self.raw()
            .lines()
            .map(|l| if l.trim() == "// #include \"reduce.wgsl\"" { REDUCE } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
