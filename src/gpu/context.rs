//! The GPU context: device and queue, compute pipelines (created once), a pool of reusable work
//! buffers, and [`Plan`]: dispatches recorded for one command-buffer submission, with their
//! uniform parameters packed into one arena buffer and a single readback at the end.

use super::ops::Kernel;
use crate::error::{Error, Result};
use std::collections::HashMap;
use wgpu::util::DeviceExt;

/// Per-binding budget: the device's limit, but never above what browsers guarantee to allow
/// (128 MiB), so that chunking behaves the same natively and in WebGPU.
const PORTABLE_BINDING: u64 = 128 << 20;

/// How to set the GPU up.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Accept a CPU-emulated adapter (lavapipe, SwiftShader). Tests want it; automatic backend
    /// choice does not, since the CPU backend is faster there.
    pub allow_software: bool,
    /// A per-binding budget below the device's (tests use a tiny one to exercise chunking).
    pub binding_budget: Option<u64>,
    /// Compile kernels without wgpu's injected bounds checks (native only: browsers always
    /// check). Every kernel guards its own indices against its parameters and the backend
    /// validates ids, lengths and slots before any dispatch; the test suite runs the kernels
    /// both ways. On an H200 the checks cost 14× on a CLS forward (98 → 6.9 ms per list).
    pub trusted_shaders: bool,
    /// Time every dispatch with timestamp queries (one compute pass each), for `lorb bench`.
    pub profile: bool,
    /// The weights' storage type ([`Dtype`]; f32 unless asked).
    pub dtype: Dtype,
}

/// How the GPU stores the encoder's large weights (the layers' linear weights and the word
/// embeddings, which the tied MLM decoder reads too), as transformers.js's `dtype` names it.
/// Activations between kernels, biases, LayerNorm and softmax statistics stay f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dtype {
    /// Exact: the reference the tests hold the GPU to.
    #[default]
    F32,
    /// Half the weight memory and bandwidth: products multiply in f16 and accumulate in f32.
    /// Needs the adapter's `shader-f16` feature.
    F16,
    /// f16 where the adapter offers `shader-f16`, else f32.
    Auto,
}

impl Dtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "fp32" => Ok(Dtype::F32),
            "f16" | "fp16" => Ok(Dtype::F16),
            "auto" => Ok(Dtype::Auto),
            _ => Err(Error::Input(format!("dtype {s:?}: expected f32, f16 or auto"))),
        }
    }
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter_name: String,
    pub limits: wgpu::Limits,
    /// Weights are stored in f16 ([`Dtype`] resolved against the adapter).
    pub half: bool,
    /// By `Kernel as usize`; the f16 kernels exist only with `half`.
    pipelines: Vec<Option<wgpu::ComputePipeline>>,
    pool: HashMap<Work, wgpu::Buffer>,
    params: Option<wgpu::Buffer>,
    staging: Option<wgpu::Buffer>,
    pub dummy: wgpu::Buffer,
    budget: u64,
    profiler: Option<Profiler>,
    /// Per kernel: dispatches and total GPU nanoseconds (when profiling).
    pub profile: std::collections::BTreeMap<&'static str, (u64, f64)>,
}

struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    period_ns: f64,
}

const MAX_TIMED: u32 = 2048;

/// A whole buffer bound to one binding slot.
pub type Buf = wgpu::Buffer;

/// A weight matrix on the GPU: its buffer, and whether it holds f16 (`Dtype::F16`) or f32.
/// Kernels that read weights pick their f16 twin from `half`.
#[derive(Clone)]
pub struct Matrix {
    pub buf: Buf,
    pub half: bool,
}

impl std::ops::Deref for Matrix {
    type Target = Buf;
    fn deref(&self) -> &Buf {
        &self.buf
    }
}

/// Rows `lo..hi` of a matrix too large for one binding, in a buffer of their own.
#[derive(Clone)]
pub struct Shard {
    pub lo: u32,
    pub hi: u32,
    pub buf: Matrix,
    /// The matching slice of a bias vector, when the matrix has one.
    pub bias: Option<Buf>,
}

enum Step {
    Dispatch { kernel: Kernel, params: Vec<u8>, bufs: Vec<Buf>, groups: [u32; 3] },
    Copy { src: Buf, src_off: u64, dst: Buf, dst_off: u64, size: u64 },
}

/// Work for one submission.
#[derive(Default)]
pub struct Plan {
    steps: Vec<Step>,
    /// Matmul tile choice for this plan's products.
    pub tiles: super::ops::matmul::Tiles,
}

impl Plan {
    /// Records one dispatch; `bufs` bind to slots 1.. in order (slot 0 holds `params`).
    pub fn dispatch<P: super::ops::Uniform>(&mut self, kernel: Kernel, params: &P, bufs: &[&Buf], groups: [u32; 3]) {
        debug_assert_eq!(P::LAYOUT.name, kernel.spec().uniform.name, "{} dispatched with another kernel's parameters", kernel.name());
        self.steps.push(Step::Dispatch {
            kernel,
            params: bytemuck::bytes_of(params).to_vec(),
            bufs: bufs.iter().map(|b| (*b).clone()).collect(),
            groups,
        });
    }

    pub fn copy(&mut self, src: &Buf, src_off: u64, dst: &Buf, dst_off: u64, size: u64) {
        self.steps.push(Step::Copy { src: src.clone(), src_off, dst: dst.clone(), dst_off, size });
    }
}

/// Workgroup counts for `n` one-row-or-element groups, folded into 2-D when `n` exceeds the
/// 65535 per-dimension limit; shaders recover the index with shaders/grid.wgsl.
pub fn grid(n: u32) -> [u32; 3] {
    let x = n.clamp(1, 65535);
    [x, n.div_ceil(x).max(1), 1]
}

/// `data` as f16 bytes (rounded to nearest), padded to a multiple of 4 bytes.
pub fn f16_bytes(data: &[f32]) -> Vec<u8> {
    let mut h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
    if h.len() % 2 == 1 || h.is_empty() {
        h.push(half::f16::ZERO);
    }
    bytemuck::cast_slice(&h).to_vec()
}

fn align(n: u64, a: u64) -> u64 {
    n.div_ceil(a) * a
}

/// The pooled work buffers, by role: each is one buffer, reused across calls and grown when a
/// call needs more ([`GpuContext::work`]). Sizes are in the launchers; shapes are per token of the
/// batch (`tokens = rows × seq`) unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    // Per-call inputs.
    /// Token ids `[tokens]`.
    Ids,
    /// Real tokens per row `[rows]`.
    Lens,
    /// Rows to gather (the [CLS] rows, the masked slots).
    GatherIdx,
    /// Target token ids of the masked slots.
    Targets,
    // The inference forward.
    /// Hidden states `[tokens, H]`.
    X,
    /// The attention block's output with its residual, then LayerNorm'd in place: the FFN's
    /// input `[tokens, H]`.
    Y,
    /// Attention context `[tokens, H]`.
    AttnCtx,
    /// Queries, keys and values `[tokens, 3H]`.
    Qkv,
    /// FFN activations `[tokens, I]`.
    Ffn,
    /// `x·Aᵀ` of an unmerged LoRA branch `[tokens, r]`.
    LoraT,
    /// The MLM head's input and transform at the slots `[slots, H]`.
    HeadIn,
    HeadMid,
    /// MLM logits of a chunk of slots `[slots, V]`.
    Logits,
    /// What a call reads back (scores, vectors, log-probabilities).
    Out,
    /// A weight copied while an adapter is merged or removed.
    WeightCopy,
    // Training: gradients kept across the lists of a step.
    /// `(dA, dB)` of every LoRA pair, one after another.
    LoraGrads,
    /// The MLM head transform's gradients: dense weight and bias, LayerNorm γ and β.
    MlmGrads,
    // Training: the MLM head's forward and backward at the slots `[slots, H]` (logits and loss
    // `[slots, V]` and `[slots]`).
    MlmG,
    MlmT0,
    MlmT1,
    MlmT2,
    MlmDt2,
    MlmDt1,
    MlmXhat,
    MlmDg,
    MlmLogits,
    MlmLoss,
    // Training: the encoder's backward, per token.
    /// Gradient at a layer's output, and its double buffer `[tokens, H]`.
    BwDx,
    BwDx2,
    /// Gradients at the FFN LayerNorm's input, the FFN's inner activations, the attention
    /// block's output and its pre-LayerNorm sum, the context, and Q, K, V.
    BwDz,
    BwDf,
    BwDy,
    BwDy0,
    BwDctx,
    BwDqkv,
    /// `dy·B` of a LoRA branch `[tokens, r]`.
    BwDu,
    /// Normalised LayerNorm inputs, for the γ and β gradients (full fine-tuning) `[tokens, H]`.
    BwXhat,
    /// Softmax statistics of the attention backward `[2, rows, heads, seq]`.
    BwStats,
    /// The rows of embedding table `k` (word, position, token type) grouped by token: group starts,
    /// the tokens of each group, and each group's table row (full fine-tuning).
    EmbStarts(u8),
    EmbToks(u8),
    EmbRows(u8),
    // Training: full fine-tuning's optimiser.
    /// Partial sums of squares of the gradients `[SUMSQ_GROUPS]`.
    SumSqPartials,
    /// Set when an AdamW step would make a weight or moment non-finite.
    AdamWFlag,
    /// Every encoder weight, gathered for reading back.
    FullWeights,
}

/// A GPU adapter as [`GpuContext::probe`] sees it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterReport {
    pub name: String,
    pub vendor: u32,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// A CPU implementation (SwiftShader, lavapipe, WARP).
    pub software: bool,
    pub f16: bool,
    pub timestamps: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    /// Why lorb cannot run on this adapter (`None`: it can).
    pub problem: Option<String>,
}

impl GpuContext {
    /// The weights' storage type: f16 or f32 (`Dtype::Auto` resolved).
    pub fn dtype(&self) -> Dtype {
        if self.half {
            Dtype::F16
        } else {
            Dtype::F32
        }
    }

    /// The adapter lorb would use: WebGPU's in the browser (after checking `navigator.gpu` by
    /// value: wgpu must not be asked where WebGPU is missing), else the primary native backends.
    async fn request_adapter() -> Result<wgpu::Adapter> {
        #[cfg(target_arch = "wasm32")]
        {
            let gpu = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
                .ok()
                .filter(|n| n.is_object())
                .and_then(|n| js_sys::Reflect::get(&n, &"gpu".into()).ok())
                .map(|g| !g.is_undefined() && !g.is_null())
                .unwrap_or(false);
            if !gpu {
                return Err(Error::Gpu("WebGPU is not available here (navigator.gpu is missing)".into()));
            }
        }
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if std::env::var_os("WGPU_BACKEND").is_none() {
            // Compute needs no GL probe (which only adds noise on headless machines).
            desc.backends = if cfg!(target_arch = "wasm32") { wgpu::Backends::BROWSER_WEBGPU } else { wgpu::Backends::PRIMARY };
        }
        let instance = wgpu::Instance::new(desc);
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| Error::Gpu(format!("no GPU adapter: {e}")))
    }

    /// The limits lorb asks for on an adapter that offers `a`, or why it cannot run there.
    fn required_limits(info: &wgpu::AdapterInfo, a: &wgpu::Limits) -> Result<wgpu::Limits> {
        let mut limits = wgpu::Limits::downlevel_defaults();
        limits.max_storage_buffer_binding_size = a.max_storage_buffer_binding_size;
        limits.max_buffer_size = a.max_buffer_size;
        limits.max_storage_buffers_per_shader_stage = a.max_storage_buffers_per_shader_stage.min(10);
        limits.max_compute_workgroup_storage_size = a.max_compute_workgroup_storage_size.min(16384);
        limits.max_compute_invocations_per_workgroup = a.max_compute_invocations_per_workgroup.min(256);
        limits.max_compute_workgroup_size_x = a.max_compute_workgroup_size_x.min(256);
        limits.max_compute_workgroup_size_y = a.max_compute_workgroup_size_y.min(256);
        if limits.max_compute_invocations_per_workgroup < 256 || limits.max_storage_buffers_per_shader_stage < 6 {
            return Err(Error::GpuLimit(format!(
                "adapter {} allows {} invocations per workgroup and {} storage buffers per stage; lorb needs 256 and 6",
                info.name, a.max_compute_invocations_per_workgroup, a.max_storage_buffers_per_shader_stage
            )));
        }
        Ok(limits)
    }

    /// Describes the GPU adapter without creating a device: what it is, its limits, whether it
    /// has f16 and timestamp queries, and whether lorb can run on it (`problem` says why not).
    /// An error means there is no adapter at all (no WebGPU, no driver).
    pub async fn probe() -> Result<AdapterReport> {
        let adapter = Self::request_adapter().await?;
        let info = adapter.get_info();
        let l = adapter.limits();
        let f = adapter.features();
        Ok(AdapterReport {
            name: info.name.clone(),
            vendor: info.vendor,
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type).to_lowercase(),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            software: info.device_type == wgpu::DeviceType::Cpu,
            f16: f.contains(wgpu::Features::SHADER_F16),
            timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_buffer_size: l.max_buffer_size,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size as u64,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            problem: Self::required_limits(&info, &l).err().map(|e| e.to_string()),
        })
    }

    ///
    /// Long on purpose: the device, its limits and every pipeline, made inside one error scope.
    pub async fn new(opts: &GpuOptions) -> Result<Self> {
        let adapter = Self::request_adapter().await?;
        let info = adapter.get_info();
        if !opts.allow_software && info.device_type == wgpu::DeviceType::Cpu {
            return Err(Error::Gpu(format!("only a software adapter is available ({})", info.name)));
        }
        let limits = Self::required_limits(&info, &adapter.limits())?;
        let profile = opts.profile && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let has_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let half = match opts.dtype {
            Dtype::F32 => false,
            Dtype::Auto => has_f16,
            Dtype::F16 if has_f16 => true,
            Dtype::F16 => return Err(Error::Gpu(format!("dtype f16: the adapter {} has no shader-f16 feature; use dtype f32 or auto", info.name))),
        };
        let mut features = wgpu::Features::empty();
        if profile {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        if half {
            features |= wgpu::Features::SHADER_F16;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("lorb"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("device request failed: {e}")))?;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipelines = Kernel::ALL
            .iter()
            .map(|k| {
                if k.half() && !half {
                    return None;
                }
                let desc = wgpu::ShaderModuleDescriptor { label: Some(k.name()), source: wgpu::ShaderSource::Wgsl(k.source().into()) };
                let module = if opts.trusted_shaders && !cfg!(target_arch = "wasm32") {
                    // SAFETY: every kernel bounds-checks its own indices against its parameters,
                    // and the launchers size every binding for the indices they pass.
                    unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
                } else {
                    device.create_shader_module(desc)
                };
                Some(device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(k.name()),
                    layout: None,
                    module: &module,
                    entry_point: Some(k.entry()),
                    compilation_options: Default::default(),
                    cache: None,
                }))
            })
            .collect();
        if let Some(e) = scope.pop().await {
            return Err(Error::Gpu(format!("shader compilation failed: {e}")));
        }
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let profiler = profile.then(|| Profiler {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("timestamps"), ty: wgpu::QueryType::Timestamp, count: 2 * MAX_TIMED }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 16 * MAX_TIMED as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            read: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps-read"),
                size: 16 * MAX_TIMED as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            period_ns: queue.get_timestamp_period() as f64,
        });
        Ok(GpuContext {
            profiler,
            profile: Default::default(),
            device,
            queue,
            adapter_name: format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type),
            limits: limits.clone(),
            half,
            pipelines,
            pool: HashMap::new(),
            params: None,
            staging: None,
            dummy,
            budget: PORTABLE_BINDING.min(limits.max_storage_buffer_binding_size as u64).min(limits.max_buffer_size),
        })
    }

    /// Largest size one storage binding may have here.
    pub fn binding_budget(&self) -> u64 {
        self.budget
    }

    /// Lowers the per-binding budget (tests use this to exercise chunking and sharding on tiny
    /// models); it never rises above the device's limit.
    pub fn set_binding_budget(&mut self, bytes: u64) {
        self.budget = bytes.clamp(1024, self.budget);
    }

    /// An immutable storage buffer holding `data` (weights).
    pub fn upload(&self, label: &str, data: &[f32]) -> Result<Buf> {
        let bytes = data.len() as u64 * 4;
        if bytes > self.binding_budget() {
            return Err(Error::GpuLimit(format!(
                "tensor {label} needs {bytes} bytes, more than one storage binding allows here ({})",
                self.binding_budget()
            )));
        }
        let contents: &[u8] = if data.is_empty() { &[0u8; 16] } else { bytemuck::cast_slice(data) };
        Ok(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        }))
    }

    /// A weight matrix, stored in f16 when the context's dtype is (then rounded to nearest).
    pub fn upload_matrix(&self, label: &str, data: &[f32]) -> Result<Matrix> {
        if !self.half {
            return Ok(Matrix { buf: self.upload(label, data)?, half: false });
        }
        let bytes = data.len() as u64 * 2;
        if bytes > self.binding_budget() {
            return Err(Error::GpuLimit(format!("tensor {label} needs {bytes} bytes, more than one storage binding allows here ({})", self.binding_budget())));
        }
        Ok(Matrix { buf: self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: &f16_bytes(data), usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST }), half: true })
    }

    /// Overwrites a weight matrix with `data`, converted to its storage type.
    pub fn write_matrix(&self, m: &Matrix, data: &[f32]) {
        if m.half {
            self.queue.write_buffer(m, 0, &f16_bytes(data));
        } else {
            self.queue.write_buffer(m, 0, bytemuck::cast_slice(data));
        }
    }

    /// Uploads a `[rows, cols]` weight matrix ([`GpuContext::upload_matrix`]; its optional `[rows]`
    /// bias in f32) as row shards that each fit one binding.
    pub fn upload_sharded(&self, label: &str, data: &[f32], cols: usize, bias: Option<&[f32]>) -> Result<Vec<Shard>> {
        let rows = data.len() / cols;
        let elem = if self.half { 2 } else { 4 };
        let per = ((self.budget / (cols as u64 * elem)) as usize).min(rows).max(1);
        (0..rows)
            .step_by(per)
            .map(|lo| {
                let hi = (lo + per).min(rows);
                Ok(Shard {
                    lo: lo as u32,
                    hi: hi as u32,
                    buf: self.upload_matrix(&format!("{label}[{lo}..{hi}]"), &data[lo * cols..hi * cols])?,
                    bias: match bias {
                        Some(b) => Some(self.upload(&format!("{label}.bias[{lo}..{hi}]"), &b[lo..hi])?),
                        None => None,
                    },
                })
            })
            .collect()
    }

    /// A pooled work buffer of at least `bytes`, reused across calls and grown when too small.
    pub fn work(&mut self, name: Work, bytes: u64) -> Result<Buf> {
        let bytes = align(bytes.max(16), 256);
        if bytes > self.binding_budget() {
            return Err(Error::GpuLimit(format!("work buffer {name:?} needs {bytes} bytes; the binding limit is {}", self.binding_budget())));
        }
        if let Some(b) = self.pool.get(&name) {
            if b.size() >= bytes {
                return Ok(b.clone());
            }
        }
        let size = align((bytes as f64 * 1.25) as u64, 256).min(self.binding_budget()).max(bytes);
        let label = format!("{name:?}");
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.pool.insert(name, b.clone());
        Ok(b)
    }

    /// A pooled buffer filled with `data` (per-call inputs such as token ids).
    pub fn work_with(&mut self, name: Work, data: &[u32]) -> Result<Buf> {
        let b = self.work(name, data.len() as u64 * 4)?;
        if !data.is_empty() {
            self.queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
        }
        Ok(b)
    }

    fn sized(slot: &mut Option<Buf>, device: &wgpu::Device, label: &str, bytes: u64, usage: wgpu::BufferUsages) -> Buf {
        if let Some(b) = slot {
            if b.size() >= bytes {
                return b.clone();
            }
        }
        let b = device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: align(bytes, 256), usage, mapped_at_creation: false });
        *slot = Some(b.clone());
        b
    }

    /// Submits a plan that writes no output to read (merging weights, a training backward)
    /// without waiting for the GPU: what follows on the queue sees its results.
    pub async fn submit(&mut self, plan: Plan) -> Result<()> {
        self.encode(plan, None).await.map(|_| ())
    }

    /// Encodes the plan into one command buffer, submits it, and reads back `read_bytes` from
    /// the start of `out`.
    pub async fn run(&mut self, plan: Plan, out: &Buf, read_bytes: u64) -> Result<Vec<f32>> {
        Ok(self.encode(plan, Some((out, read_bytes))).await?.unwrap_or_default())
    }

    /// [`GpuContext::run`], or without `read` a submission that does not wait for the GPU
    /// (later submissions, reads and `write_buffer`s are ordered after it on the queue).
    ///
    /// Long on purpose: one command encoder from the first dispatch to the mapped readback.
    async fn encode(&mut self, plan: Plan, read: Option<(&Buf, u64)>) -> Result<Option<Vec<f32>>> {
        let stride = (self.limits.min_uniform_buffer_offset_alignment as u64).max(256);
        let n_dispatch = plan.steps.iter().filter(|s| matches!(s, Step::Dispatch { .. })).count() as u64;
        let params = Self::sized(
            &mut self.params,
            &self.device,
            "params",
            (n_dispatch * stride).max(stride),
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        let read_bytes = align(read.map_or(4, |r| r.1).max(4), 4);
        let staging = Self::sized(
            &mut self.staging,
            &self.device,
            "staging",
            read_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let mut arena = vec![0u8; (n_dispatch * stride) as usize];
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lorb") });
        let mut slot = 0u64;
        let mut i = 0;
        let mut timed: Vec<&'static str> = Vec::new();
        while i < plan.steps.len() {
            match &plan.steps[i] {
                Step::Copy { src, src_off, dst, dst_off, size } => {
                    encoder.copy_buffer_to_buffer(src, *src_off, dst, *dst_off, *size);
                    i += 1;
                }
                Step::Dispatch { kernel: first, .. } => {
                    // Profiling: one pass per dispatch, timed at its start and end.
                    let time = self.profiler.as_ref().filter(|_| (timed.len() as u32) < MAX_TIMED);
                    let tw = time.map(|p| wgpu::ComputePassTimestampWrites {
                        query_set: &p.queries,
                        beginning_of_pass_write_index: Some(2 * timed.len() as u32),
                        end_of_pass_write_index: Some(2 * timed.len() as u32 + 1),
                    });
                    if time.is_some() {
                        timed.push(first.name());
                    }
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: tw });
                    while let Some(Step::Dispatch { kernel, params: p, bufs, groups }) = plan.steps.get(i) {
                        let off = slot * stride;
                        arena[off as usize..off as usize + p.len()].copy_from_slice(p);
                        let pipeline = self.pipelines[*kernel as usize].as_ref().ok_or_else(|| Error::Gpu(format!("kernel {} needs dtype f16", kernel.name())))?;
                        let mut entries = vec![wgpu::BindGroupEntry {
                            binding: 0,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &params,
                                offset: off,
                                size: wgpu::BufferSize::new(p.len() as u64),
                            }),
                        }];
                        for (j, b) in bufs.iter().enumerate() {
                            entries.push(wgpu::BindGroupEntry { binding: j as u32 + 1, resource: b.as_entire_binding() });
                        }
                        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: None,
                            layout: &pipeline.get_bind_group_layout(0),
                            entries: &entries,
                        });
                        pass.set_pipeline(pipeline);
                        pass.set_bind_group(0, &bg, &[]);
                        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        slot += 1;
                        i += 1;
                        if time.is_some() {
                            break;
                        }
                    }
                }
            }
        }
        if let Some((out, _)) = read {
            encoder.copy_buffer_to_buffer(out, 0, &staging, 0, read_bytes);
        }
        if let Some(p) = self.profiler.as_ref().filter(|_| !timed.is_empty()) {
            let n = 2 * timed.len() as u32;
            encoder.resolve_query_set(&p.queries, 0..n, &p.resolve, 0);
            encoder.copy_buffer_to_buffer(&p.resolve, 0, &p.read, 0, n as u64 * 8);
        }
        self.queue.write_buffer(&params, 0, &arena);
        self.queue.submit([encoder.finish()]);
        if let Some(e) = scope.pop().await {
            return Err(Error::Gpu(e.to_string()));
        }
        let out = match read {
            Some(_) => Some(read_back(&self.device, &staging, read_bytes).await?),
            None => None,
        };
        if let Some(p) = self.profiler.as_ref().filter(|_| !timed.is_empty()) {
            let words = read_back(&self.device, &p.read, timed.len() as u64 * 16).await?;
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&words);
            for (k, name) in timed.iter().enumerate() {
                let ns = ticks[2 * k + 1].saturating_sub(ticks[2 * k]) as f64 * p.period_ns;
                let e = self.profile.entry(name).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += ns;
            }
        }
        Ok(out)
    }
}

async fn read_back(device: &wgpu::Device, staging: &Buf, bytes: u64) -> Result<Vec<f32>> {
    let slice = staging.slice(0..bytes);
    let (tx, rx) = futures_channel::oneshot::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    #[cfg(not(target_arch = "wasm32"))]
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("poll: {e}")))?;
    #[cfg(target_arch = "wasm32")]
    let _ = device;
    rx.await
        .map_err(|_| Error::Gpu("readback was cancelled".into()))?
        .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
    let out = {
        let view = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("readback: {e}")))?;
        bytemuck::cast_slice::<u8, f32>(&view).to_vec()
    };
    staging.unmap();
    Ok(out)
}
