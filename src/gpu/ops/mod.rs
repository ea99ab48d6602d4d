//! One file per GPU op: its WGSL (in `shaders/`), its uniform parameters, and the launcher that
//! records its dispatch. Each kernel is described once, by its [`Spec`]: name, source, entry
//! point, shader defines, and its uniform parameters. Their WGSL `struct Params` is generated from
//! the Rust struct (a shader says where with a `// #uniform` line), so it is never written twice;
//! a test reads every generated struct back with naga and checks its layout against Rust's.

/// A kernel's uniform parameters (`@group(0) @binding(0)`), a `#[repr(C)]` struct whose layout
/// ([`Uniform::LAYOUT`]) is derived from its declaration, not written out again.
pub trait Uniform: bytemuck::Pod {
    const LAYOUT: Layout;
}

/// A uniform struct as Rust lays it out: its type's path, size in bytes, and members (name, byte
/// offset, type). Members named `_…` are padding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    pub name: &'static str,
    pub size: usize,
    pub members: &'static [(&'static str, usize, &'static str)],
}

impl Layout {
    /// The WGSL twin, `struct Params { … }`: the same members in order, scalars as they are and
    /// a padding array `_p: [u32; N]` as `_p0` … `_p{N-1}`.
    pub fn wgsl(&self) -> String {
        let mut out = String::from("struct Params {\n");
        for (name, _, ty) in self.members {
            match ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')).and_then(|t| t.split_once(';')) {
                Some((elem, n)) => (0..n.trim().parse::<usize>().unwrap_or(0)).for_each(|i| out += &format!("    {name}{i}: {},\n", elem.trim())),
                None => out += &format!("    {name}: {ty},\n"),
            }
        }
        out + "}"
    }
}

/// Declares a kernel's uniform parameter struct (`#[repr(C)]`, `Pod`) and derives its [`Layout`].
macro_rules! uniform {
    ($name:ident { $($(#[$doc:meta])* $f:ident: $t:ty),* $(,)? }) => {
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        pub(super) struct $name {
            $($(#[$doc])* $f: $t),*
        }
        impl $crate::gpu::ops::Uniform for $name {
            const LAYOUT: $crate::gpu::ops::Layout = $crate::gpu::ops::Layout {
                name: concat!(module_path!(), "::", stringify!($name)),
                size: std::mem::size_of::<$name>(),
                members: &[$((stringify!($f), std::mem::offset_of!($name, $f), stringify!($t))),*],
            };
        }
    };
}
pub(crate) use uniform;

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

/// Shared WGSL, pasted where a shader says `// #include "NAME"`.
const INCLUDES: [(&str, &str); 5] = [
    ("reduce.wgsl", include_str!("../../../shaders/reduce.wgsl")),
    ("gelu_fn.wgsl", include_str!("../../../shaders/gelu_fn.wgsl")),
    ("ln_stats.wgsl", include_str!("../../../shaders/ln_stats.wgsl")),
    ("grid.wgsl", include_str!("../../../shaders/grid.wgsl")),
    ("matmul_store.wgsl", include_str!("../../../shaders/matmul_store.wgsl")),
];

/// Everything about one kernel: a pipeline is made from it, and launchers dispatch it with
/// parameters of its [`Spec::uniform`] type.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    source: &'static str,
    pub entry: &'static str,
    /// `const NAME: T = VALUE;` and `alias NAME = T;` declarations of the source given another
    /// value (a tile size, an element type).
    defines: &'static [(&'static str, &'static str)],
    /// Stores weights in f16 (`enable f16;`; made only on devices with SHADER_F16).
    pub half: bool,
    pub uniform: Layout,
}

/// The defines that make a weight-reading kernel its f16 twin: the shader reads its weights
/// through `alias WT = f32;`.
const F16_WEIGHTS: &[(&str, &str)] = &[("WT", "f16")];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Embed,
    LayerNorm,
    /// 64×64 output tiles (4×4 per invocation).
    Matmul,
    /// The same shader with 128×128 tiles (8×8 per invocation), for large products.
    MatmulWide,
    /// The forward's A·Wᵀ with 16-byte loads along k (64×64 tiles; k a multiple of 4).
    MatmulVec4,
    /// `Matmul` with W in f16 (f32 tiles and accumulators).
    MatmulF16,
    /// `MatmulVec4` with W in f16: A rounded to f16 in the tiles, 4-term f16 dot products
    /// accumulated in f32.
    MatmulVec4F16,
    /// `Embed` reading f16 word embeddings.
    EmbedF16,
    Attention,
    /// `Attention` with the head dimension fixed at 32 (all-MiniLM-L6-v2) or 64 (BERT-base).
    Attention32,
    Attention64,
    /// Attention at gathered query rows (entry `rows` of attention.wgsl).
    AttentionRows,
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
    pub const ALL: [Kernel; 25] = [
        Kernel::Embed,
        Kernel::LayerNorm,
        Kernel::Matmul,
        Kernel::MatmulWide,
        Kernel::MatmulVec4,
        Kernel::MatmulF16,
        Kernel::MatmulVec4F16,
        Kernel::EmbedF16,
        Kernel::Attention,
        Kernel::Attention32,
        Kernel::Attention64,
        Kernel::AttentionRows,
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

    /// The kernel's one description.
    pub fn spec(self) -> Spec {
        use Kernel::*;
        let main = |name, source, uniform| Spec { name, source, entry: "main", defines: &[], half: false, uniform };
        let half = |spec: Spec| Spec { defines: F16_WEIGHTS, half: true, ..spec };
        match self {
            Embed => main("embed", embed::SOURCE, embed::Params::LAYOUT),
            LayerNorm => main("layernorm", layernorm::SOURCE, layernorm::Params::LAYOUT),
            Matmul => main("matmul", matmul::SOURCE, matmul::Params::LAYOUT),
            MatmulWide => Spec { defines: &[("TM", "8u"), ("TN", "8u")], ..main("matmul_wide", matmul::SOURCE, matmul::Params::LAYOUT) },
            MatmulVec4 => main("matmul_vec4", matmul::VEC4, matmul::Params::LAYOUT),
            MatmulF16 => half(main("matmul_f16", matmul::SOURCE, matmul::Params::LAYOUT)),
            MatmulVec4F16 => half(main("matmul_vec4_f16", matmul::VEC4, matmul::Params::LAYOUT)),
            EmbedF16 => half(main("embed_f16", embed::SOURCE, embed::Params::LAYOUT)),
            Attention => main("attention", attention::SOURCE, attention::Params::LAYOUT),
            Attention32 => Spec { defines: &[("HD", "32u"), ("QD", "32u")], ..main("attention_32", attention::SOURCE, attention::Params::LAYOUT) },
            Attention64 => Spec { defines: &[("HD", "64u"), ("QD", "64u")], ..main("attention_64", attention::SOURCE, attention::Params::LAYOUT) },
            AttentionRows => Spec { entry: "rows", ..main("attention_rows", attention::SOURCE, attention::Params::LAYOUT) },
            Gather => main("gather", gather::SOURCE, gather::Params::LAYOUT),
            LogSoftmax => main("logsoftmax", logsoftmax::SOURCE, logsoftmax::Params::LAYOUT),
            LoraMerge => main("lora_merge", lora::SOURCE, lora::Params::LAYOUT),
            Gelu => main("gelu", gelu::SOURCE, gelu::Params::LAYOUT),
            LayerNormBackward => main("layernorm_backward", layernorm::BACKWARD, layernorm::BackParams::LAYOUT),
            GeluBackward => Spec { entry: "backward", ..main("gelu_backward", gelu::SOURCE, gelu::Params::LAYOUT) },
            AttentionBackward => main("attention_backward", attention::BACKWARD, attention::BackParams::LAYOUT),
            AttentionBackwardKv => Spec { entry: "main_kv", ..main("attention_backward_kv", attention::BACKWARD, attention::BackParams::LAYOUT) },
            ColSum => main("colsum", colsum::SOURCE, colsum::Params::LAYOUT),
            EmbedBackward => main("embed_backward", embed::BACKWARD, embed::BackParams::LAYOUT),
            AdamW => main("adamw", adamw::SOURCE, adamw::Params::LAYOUT),
            AdamWCheck => Spec { entry: "check", ..main("adamw_check", adamw::SOURCE, adamw::Params::LAYOUT) },
            SumSq => main("sumsq", adamw::SUMSQ, adamw::SumSqParams::LAYOUT),
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The shader entry point.
    pub fn entry(self) -> &'static str {
        self.spec().entry
    }

    /// Whether the kernel needs SHADER_F16 (it reads f16 weights).
    pub fn half(self) -> bool {
        self.spec().half
    }

    /// The WGSL: `// #include "…"` lines replaced by the shared files, the `// #uniform` line by
    /// the parameters' struct ([`Layout::wgsl`]), the spec's defines given their values, and
    /// `enable f16;` first for the f16 kernels.
    pub fn source(self) -> String {
        let spec = self.spec();
        let enable = if spec.half { "enable f16;\n" } else { "" };
        let body = spec.source
            .lines()
            .map(|l| {
                let t = l.trim();
                if let Some((_, inc)) = INCLUDES.iter().find(|(n, _)| t.strip_prefix("// #include \"").and_then(|r| r.strip_suffix('"')) == Some(n)) {
                    return inc.to_string();
                }
                if t.starts_with("// #uniform") {
                    return spec.uniform.wgsl();
                }
                if let Some((n, v)) = spec.defines.iter().find(|(n, _)| t.strip_prefix("alias ").and_then(|r| r.strip_prefix(n)).is_some_and(|r| r.trim_start().starts_with('='))) {
                    return format!("alias {n} = {v};");
                }
                match spec.defines.iter().find(|(n, _)| t.strip_prefix("const ").and_then(|r| r.strip_prefix(n)).is_some_and(|r| r.starts_with(':'))) {
                    Some((_, v)) => format!("{} = {v};", l.split('=').next().unwrap_or(l).trim_end()),
                    None => l.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        format!("{enable}{body}")
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// `(name, byte offset, scalar type)` of the non-padding members of the struct a shader binds
    /// as its uniform, and the struct's size, as naga reads the WGSL.
    fn wgsl_uniform(k: Kernel) -> (Vec<(String, usize, String)>, usize) {
        let src = k.source();
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", k.name(), e.emit_to_string(&src)));
        let var = module.global_variables.iter().map(|(_, v)| v).find(|v| v.space == naga::AddressSpace::Uniform).unwrap_or_else(|| panic!("{}: no uniform", k.name()));
        let b = var.binding.as_ref().expect("a bound uniform");
        assert_eq!((b.group, b.binding), (0, 0), "{}: the uniform is at group 0, binding 0", k.name());
        let naga::TypeInner::Struct { members, span } = &module.types[var.ty].inner else { panic!("{}: the uniform is not a struct", k.name()) };
        let scalar = |t: &naga::TypeInner| match t {
            naga::TypeInner::Scalar(s) => match (s.kind, s.width) {
                (naga::ScalarKind::Uint, 4) => "u32",
                (naga::ScalarKind::Sint, 4) => "i32",
                (naga::ScalarKind::Float, 4) => "f32",
                _ => "other",
            },
            _ => "other",
        };
        let named = members.iter().filter_map(|m| m.name.clone().filter(|n| !n.starts_with('_')).map(|n| (n, m.offset as usize, scalar(&module.types[m.ty].inner).to_string())));
        (named.collect(), *span as usize)
    }

    /// Every kernel's shader binds the struct generated from its Rust parameters, and WGSL lays it
    /// out as `#[repr(C)]` does: the same members by name, in order, at the same offsets with the
    /// same types, and the same size.
    #[test]
    fn uniform_parameters_match_their_wgsl_structs() {
        for k in Kernel::ALL {
            let u = k.spec().uniform;
            let rust: Vec<(String, usize, String)> = u.members.iter().filter(|(n, _, _)| !n.starts_with('_')).map(|(n, o, t)| (n.to_string(), *o, t.to_string())).collect();
            let (wgsl, size) = wgsl_uniform(k);
            assert_eq!(rust, wgsl, "{}: {} against the WGSL struct", k.name(), u.name);
            assert_eq!(u.size, size, "{}: {} is {} bytes, the WGSL struct {size}", k.name(), u.name, u.size);
        }
    }

    /// `Kernel::ALL` lists every kernel once, in discriminant order (it indexes the pipelines),
    /// and every define names a constant its source declares.
    #[test]
    fn kernels_are_listed_in_order_and_defines_apply() {
        for (i, k) in Kernel::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{}", k.name());
        }
        for k in Kernel::ALL {
            let spec = k.spec();
            for (n, v) in spec.defines {
                let applied = |l: &str| l.trim() == format!("const {n}: u32 = {v};") || l.trim() == format!("alias {n} = {v};");
                assert!(k.source().lines().any(applied), "{}: define {n} did not apply", spec.name);
            }
            assert_eq!(k.source().starts_with("enable f16;"), spec.half, "{}", spec.name);
        }
        assert!(Kernel::MatmulWide.source().contains("const TM: u32 = 8u;") && Kernel::Matmul.source().contains("const TM: u32 = 4u;"));
    }
}
