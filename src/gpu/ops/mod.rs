//! One file per GPU op: its WGSL (in `shaders/`) and the launcher that records its dispatch.

pub mod adamw;
pub mod attention;
pub mod colsum;
pub mod embed;
pub mod gather;
pub mod gelu;
pub mod layernorm;
pub mod logsoftmax;
pub mod lora;
pub mod matmul;

const REDUCE: &str = include_str!("../../../shaders/reduce.wgsl");
const GELU_FN: &str = include_str!("../../../shaders/gelu_fn.wgsl");
const LN_STATS: &str = include_str!("../../../shaders/ln_stats.wgsl");

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
    Gelu,
    LayerNormBackward,
    GeluBackward,
    /// dQ and the softmax statistics (entry `main` of attention_backward.wgsl).
    AttentionBackward,
    /// dK and dV (entry `main_kv`).
    AttentionBackwardKv,
    ColSum,
    EmbedBackward,
    AdamW,
    /// The AdamW step read-only, flagging non-finite results (entry `check` of adamw.wgsl).
    AdamWCheck,
    SumSq,
}

impl Kernel {
    /// In pipeline order (`Kernel as usize` indexes the context's pipelines).
    pub const ALL: [Kernel; 18] = [
        Kernel::Embed,
        Kernel::LayerNorm,
        Kernel::Matmul,
        Kernel::MatmulWide,
        Kernel::Attention,
        Kernel::Gather,
        Kernel::LogSoftmax,
        Kernel::LoraMerge,
        Kernel::Gelu,
        Kernel::LayerNormBackward,
        Kernel::GeluBackward,
        Kernel::AttentionBackward,
        Kernel::AttentionBackwardKv,
        Kernel::ColSum,
        Kernel::EmbedBackward,
        Kernel::AdamW,
        Kernel::AdamWCheck,
        Kernel::SumSq,
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
            Kernel::Gelu => "gelu",
            Kernel::LayerNormBackward => "layernorm_backward",
            Kernel::GeluBackward => "gelu_backward",
            Kernel::AttentionBackward => "attention_backward",
            Kernel::AttentionBackwardKv => "attention_backward_kv",
            Kernel::ColSum => "colsum",
            Kernel::EmbedBackward => "embed_backward",
            Kernel::AdamW => "adamw",
            Kernel::AdamWCheck => "adamw_check",
            Kernel::SumSq => "sumsq",
        }
    }

    /// The shader entry point.
    pub fn entry(self) -> &'static str {
        match self {
            Kernel::AttentionBackwardKv => "main_kv",
            Kernel::GeluBackward => "backward",
            Kernel::AdamWCheck => "check",
            _ => "main",
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
            Kernel::Gelu | Kernel::GeluBackward => gelu::SOURCE,
            Kernel::LayerNormBackward => layernorm::BACKWARD,
            Kernel::AttentionBackward | Kernel::AttentionBackwardKv => attention::BACKWARD,
            Kernel::ColSum => colsum::SOURCE,
            Kernel::EmbedBackward => embed::BACKWARD,
            Kernel::AdamW | Kernel::AdamWCheck => adamw::SOURCE,
            Kernel::SumSq => adamw::SUMSQ,
        }
    }

    /// WGSL with `// #include "…"` lines replaced by the shared files, and the
    /// matmul tile constants set for the wide variant.
    pub fn source(self) -> String {
        self.raw()
            .lines()
            .map(|l| match l.trim() {
                "// #include \"reduce.wgsl\"" => REDUCE,
                "// #include \"gelu_fn.wgsl\"" => GELU_FN,
                "// #include \"ln_stats.wgsl\"" => LN_STATS,
                "const TM: u32 = 4u;" if self == Kernel::MatmulWide => "const TM: u32 = 8u;",
                "const TN: u32 = 4u;" if self == Kernel::MatmulWide => "const TN: u32 = 8u;",
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
