//! The JavaScript API of the npm package (wasm-bindgen), in the style of transformers.js:
//!
//! ```js
//! import init, { Rescorer, webgpuInfo } from "lorb";
//! await init();
//! const r = await Rescorer.load({ config: url, weights: url, tokenizer: url,
//!                                 adapter: { config: url, weights: url }, onProgress });
//! const out = await r.rescore({ utt, ref, hyps: [{ text, score }] }, { weight: 1.5 });
//! ```
//!
//! Inputs are URLs (fetched with progress reports), ArrayBuffers or Uint8Arrays. Every failure
//! reaches JS as an `Error` with a machine-readable `kind` (`io`, `config`, `weights`, `tokenizer`,
//! `input`, `gpu`, `adapter`, `unsupported`, …); a panic is reported by console_error_panic_hook
//! and never aborts silently. WebGPU is used when `navigator.gpu` gives an adapter; otherwise, or
//! with `backend: "cpu"`, the CPU backend computes the same scores.

use crate::adapter::Adapter;
use crate::backend::{Backend, BackendKind};
use crate::error::Error;
use crate::model::{ClsHead, Model};
use crate::nbest::NBest;
use crate::rescore::rescore_list;
use crate::score::{Method, Scorer};
use crate::tokenize::TextEncoder;
use crate::wer::{word_count, word_errors};
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/src/js/web.js")]
extern "C" {
    #[wasm_bindgen(catch, js_name = fetchBytes)]
    async fn fetch_bytes(url: &str, label: &str, on_progress: &JsValue) -> Result<JsValue, JsValue>;
}

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** A file: a URL (fetched with progress reports), an ArrayBuffer or a Uint8Array. */
export type Source = string | ArrayBuffer | Uint8Array;
export interface AdapterSource {
  config: Source; weights: Source;
  /** λ tuned with the adapter (its train_log.json "weight"). */
  weight?: number;
  /** β of the user's words chosen with it (its train_log.json "lexicon_weight"): `personalize`'s
   * default. */
  lexiconWeight?: number;
}
export interface LoadOptions {
  config: Source; weights: Source; tokenizer: Source; head?: Source;
  adapter?: AdapterSource;
  /** "auto" (default): a hardware WebGPU adapter, else the CPU backend (faster than a software
   * adapter such as SwiftShader); "gpu": WebGPU, software adapters included; "cpu". */
  backend?: "auto" | "gpu" | "cpu";
  /** The GPU's weights: "f32" (default, exact), "f16" (half the memory and download; needs the
   * adapter's shader-f16, else an error) or "auto" (f16 where the adapter has it). "fp32" and
   * "fp16" are accepted too. The CPU backend computes in f32. */
  dtype?: "auto" | "f32" | "f16" | "fp32" | "fp16";
  /** Cut hypotheses longer than the model's positions instead of refusing them. */
  truncate?: boolean;
  /** Default λ for rescore(). */
  weight?: number;
  /** Most hypotheses per list for score() and rescore() (default 1000; training keeps 1000). */
  maxHyps?: number;
  onProgress?: (file: string, loaded: number, total: number) => void;
}
export interface NBestList { utt?: string; ref?: string; hyps: { text: string; score: number; [field: string]: string | number }[] }
export interface RescoreOptions {
  method?: "cls" | "pll" | "pll-word"; weight?: number;
  /** The first-pass score s1 as a weighted sum of hypothesis fields, e.g. "0.6*decoder+0.4*ctc"
   *  (default "score"), as the command line's --s1. */
  s1?: string;
  /** β of the user's words' boost from the last `personalize` (default: its β; 0: off). */
  lexiconWeight?: number;
}
/** `total` = s1 + boost + weight·s2; `boost`: the user's words' (0 without). */
export interface RescoredHypothesis { text: string; s1: number; s2: number; boost: number; total: number; firstRank: number; errors: number | null }
export interface Rescored {
  utt: string; ref: string | null; weight: number; method: string; hyps: RescoredHypothesis[];
  words: number | null; firstPassErrors: number | null; rescoredErrors: number | null;
}
export interface Capabilities {
  backend: string; gpu: boolean; dtype: "f32" | "f16"; arch: string; layers: number; hidden: number; vocab: number;
  maxTokens: number; maxHyps: number; mlmHead: boolean; clsHead: boolean; weight: number;
  /** β of the user's words that `personalize` uses when given none. */
  lexiconWeight: number;
  /** Threads the CPU backend computes on: 1, or the pool `lorb/worker` started (its `threads`). */
  threads: number;
  /** The wasm memory's size in bytes (it grows, never shrinks). */
  memoryBytes: number;
}
export interface WebGpuInfo {
  /** lorb can run on this browser's WebGPU adapter. */
  available: boolean;
  /** Why not (no navigator.gpu, no adapter, too small limits). */
  reason?: string | null;
  adapter?: {
    name: string; vendor: number; backend: string; deviceType: string; driver: string;
    /** A CPU implementation such as SwiftShader: correct, but slow. */
    software: boolean; f16: boolean; timestamps: boolean;
    maxBufferSize: number; maxStorageBufferBindingSize: number; maxStorageBuffersPerShaderStage: number;
    maxComputeWorkgroupStorageSize: number; maxComputeInvocationsPerWorkgroup: number;
    problem: string | null;
  };
}
export interface AdapterInfo { r: number; alpha: number; pairs: number; parameters: number; clsHead: boolean }
export interface TrainOptions {
  /** LoRA rank, α and targets (default 4, 8, ["query", "value"]). */
  r?: number; alpha?: number; targets?: string[];
  objective?: "mwer" | "mwed"; kappa?: number; corWeight?: number;
  lr?: number; headLr?: number; weightDecay?: number; epochs?: number; batch?: number; depth?: number;
  seed?: number; clip?: number;
  /** The first-pass score s1 of the lists, as in RescoreOptions (default "score"). */
  s1?: string;
  /** Start from the adapter in use (its LoRA pairs go on training, its CLS head is the
   *  starting head; r, alpha and targets are then unused) instead of fresh LoRA pairs: a
   *  personal adapter on top of the global one. */
  continueAdapter?: boolean;
  /** Dev lists for early stopping and λ, or the fraction of the lists held out for it
   *  (default 0.1; with fewer than 10 lists none is held out: then λ = 1/κ). */
  dev?: NBestList[]; devFraction?: number; patience?: number;
  /** Seconds for training: the run is cut to the steps that fit at the recent pace, with the
   *  learning-rate schedule fitted to them; the dev evaluation at the end is extra. */
  timeLimit?: number;
}
export type TrainProgress =
  | { type: "step"; step: number; total: number; epoch: number; loss: number; gradNorm: number }
  | { type: "epoch"; epoch: number; devWer: number | null; weight: number; trainLoss: number };
export interface TrainResult {
  steps: number; losses: number[]; weight: number; trainableParameters: number; cancelled: boolean;
  trainLists: number; devLists: number; devFirstPassWer: number | null; devWer: number | null; bestEpoch: number;
  curve: { epoch: number; devWer: number; weight: number; trainLoss: number }[]; lambdaCurve: [number, number][];
  /** The steps `timeLimit` allowed, when it cut the run short. */
  timeLimitedSteps: number | null;
}
/** `Rescorer.personalize`: how the corrected utterances train (default "mwer": LoRB on their
 *  lists, s2 = CLS; "mlm": MLM on their transcripts, s2 = PLL; "none": no training), λ (default:
 *  the current one), β of the user's words' boost (`lexiconWeight`, default 0.5, in s1's units;
 *  0: off), and training options as `train`'s (batch default 4; no dev lists). */
export interface PersonalizeOptions extends Omit<TrainOptions, "dev" | "devFraction" | "patience" | "continueAdapter"> {
  adapt?: "mwer" | "mlm" | "none"; weight?: number; lexiconWeight?: number;
  /** With adapt "mlm": also train the MLM output bias (a logit offset per token). */
  mlmBias?: boolean;
}
/** WERs (%) of the evaluated utterances: first pass, the adapter in use before (`baseWer`), it
 *  with the user's words' boost (`lexiconWer`), the personal adapter alone (`adapterWer`) and
 *  with the boost (`personalizedWer`); which hypothesis the adapter before and personalisation
 *  rank first (indices into each list's hypotheses); the user's words, heaviest first. */
export interface PersonalizeResult {
  adapt: "mwer" | "mlm" | "none"; weight: number; lexiconWeight: number; words: number; firstPassWer: number; baseWer: number;
  lexiconWer: number; adapterWer: number; personalizedWer: number; userWords: string[];
  adaptUtterances: string[]; evalUtterances: string[]; baseChoices: number[]; personalChoices: number[]; seconds: number;
}
/** Errors thrown by lorb: a message and a machine-readable kind. */
export interface LorbError extends Error {
  kind: "io" | "config" | "weights" | "tokenizer" | "input" | "gpu" | "adapter" | "training" | "cancelled" | "unsupported" | "numeric";
}
"#;

/// A JS `Error` carrying lorb's error kind.
fn js_error(e: Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = js_sys::Reflect::set(&err, &"kind".into(), &e.kind().to_string().into());
    err.into()
}

fn get(o: &JsValue, key: &str) -> Option<JsValue> {
    if !o.is_object() {
        return None;
    }
    js_sys::Reflect::get(o, &key.into()).ok().filter(|v| !v.is_undefined() && !v.is_null())
}

/// Bytes of a URL (fetched), an ArrayBuffer or a typed array.
async fn bytes_of(v: &JsValue, label: &str, progress: &JsValue) -> Result<Vec<u8>, JsValue> {
    if let Some(url) = v.as_string() {
        let b = fetch_bytes(&url, label, progress).await?;
        return Ok(js_sys::Uint8Array::new(&b).to_vec());
    }
    if v.is_instance_of::<js_sys::ArrayBuffer>() || v.is_instance_of::<js_sys::Uint8Array>() {
        return Ok(js_sys::Uint8Array::new(v).to_vec());
    }
    Err(js_error(Error::Input(format!("{label}: expected a URL, an ArrayBuffer or a Uint8Array"))))
}

async fn required(opts: &JsValue, key: &str, label: &str, progress: &JsValue) -> Result<Vec<u8>, JsValue> {
    let v = get(opts, key).ok_or_else(|| js_error(Error::Input(format!("Rescorer.load: `{key}` ({label}) is required"))))?;
    bytes_of(&v, label, progress).await
}

fn method_of(opts: &JsValue) -> Result<Method, JsValue> {
    match get(opts, "method").and_then(|v| v.as_string()) {
        None => Ok(Method::Cls),
        Some(s) => s.parse().map_err(js_error),
    }
}

/// What `Rescorer.train` (and `personalize`) trains and how, from its options, checked before any
/// work: LoRA rank, α and targets, the objective and hyperparameters, and the epochs over `lists`
/// training lists; `epochs` and `batch` (lists per step) unless the options say.
struct TrainPlan {
    r: usize,
    alpha: f64,
    targets: Vec<crate::adapter::Target>,
    cfg: crate::train::TrainConfig,
    fit: crate::train::FitOptions,
}

/// N-best lists from JS (`utt` defaults to "list I").
fn nbests(lists: JsValue, what: &str) -> Result<Vec<NBest>, JsValue> {
    let raw: Vec<Value> = serde_wasm_bindgen::from_value(lists).map_err(|e| js_error(Error::Input(format!("{what} lists: {e}"))))?;
    raw.into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            if v.get("utt").is_none() {
                v["utt"] = format!("list {i}").into();
            }
            serde_json::from_value(v).map_err(|e| js_error(Error::Input(format!("{what} list {i}: {e}"))))
        })
        .collect()
}

fn train_plan(opts: &JsValue, lists: usize, (epochs, batch): (usize, usize)) -> Result<TrainPlan, JsValue> {
    use crate::train::{Objective, TrainConfig};
    let num = |k: &str, d: f64| get(opts, k).and_then(|v| v.as_f64()).unwrap_or(d);
    let objective = match get(opts, "objective").and_then(|v| v.as_string()).as_deref() {
        None | Some("mwer") => Objective::Mwer,
        Some("mwed") => Objective::Mwed,
        Some(o) => return Err(js_error(Error::Unsupported(format!("objective {o:?} in the browser (mwer, mwed)")))),
    };
    let targets: Vec<crate::adapter::Target> = match get(opts, "targets") {
        Some(t) => {
            let names: Vec<String> = serde_wasm_bindgen::from_value(t).map_err(|e| js_error(Error::Input(format!("targets: {e}"))))?;
            names.iter().map(|n| crate::adapter::Target::parse(n)).collect::<crate::Result<_>>().map_err(js_error)?
        }
        None => vec![crate::adapter::Target::Query, crate::adapter::Target::Value],
    };
    let fit = crate::train::FitOptions { epochs: num("epochs", epochs as f64).max(0.0) as usize, lists_per_step: num("batch", batch as f64).max(0.0) as usize, patience: num("patience", 2.0).max(0.0) as usize, checkpoint: None, time_limit: Some(num("timeLimit", 0.0)).filter(|&x| x > 0.0) };
    fit.validate().map_err(js_error)?;
    let total = (lists.div_ceil(fit.lists_per_step) * fit.epochs) as u64;
    let cfg = TrainConfig {
        objective,
        kappa: num("kappa", 1.0),
        cor_weight: num("corWeight", 0.0),
        optim: crate::train::AdamWConfig { lr: num("lr", 1e-3), weight_decay: num("weightDecay", 0.01), ..Default::default() },
        head_lr: get(opts, "headLr").and_then(|v| v.as_f64()),
        mlm_bias: match get(opts, "mlmBias") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| js_error(Error::Input("mlmBias must be true or false".into())))?,
        },
        warmup_steps: total / 10,
        total_steps: total,
        clip: num("clip", 1.0),
        seed: num("seed", 0.0) as u64,
        ..Default::default()
    };
    cfg.validate().map_err(js_error)?;
    let (r, alpha) = (num("r", 4.0), num("alpha", 8.0));
    if r.fract() != 0.0 || r < 1.0 {
        return Err(js_error(Error::Input(format!("r = {r}: must be a positive integer"))));
    }
    crate::adapter::check_lora_shape(r as usize, alpha).map_err(js_error)?;
    Ok(TrainPlan { r: r as usize, alpha, targets, cfg, fit })
}

/// The first-pass score s1 of `opts.s1` (an expression over hypothesis fields, as `--s1`;
/// default `score`).
fn first_pass_of(opts: &JsValue) -> Result<crate::nbest::FirstPass, JsValue> {
    match get(opts, "s1").and_then(|v| v.as_string()) {
        None => Ok(Default::default()),
        Some(s) => s.parse().map_err(js_error),
    }
}

/// β of the user's words' boost in `opts.lexiconWeight` (a number ≥ 0), or `None` without one.
fn lexicon_weight_of(opts: &JsValue) -> Result<Option<f64>, JsValue> {
    let Some(v) = get(opts, "lexiconWeight") else { return Ok(None) };
    let beta = v.as_f64().ok_or_else(|| js_error(Error::Input("lexiconWeight must be a number".into())))?;
    crate::personalize::check_lexicon_weight(beta).map_err(js_error)?;
    Ok(Some(beta))
}

fn to_js(v: &Value) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| js_error(Error::Input(e.to_string())))
}

use serde::Serialize;

/// What this browser's WebGPU offers, before any model is loaded: `{ available, reason?, adapter? }`
/// with the adapter's name, backend, limits, f16 and timestamp support, and `problem` when lorb
/// cannot run on it. `available: false` (no `navigator.gpu`, no adapter, or one lorb cannot use)
/// or `adapter.software: true` means `Rescorer.load` with `backend: "auto"` will use the CPU.
/// Never throws.
#[wasm_bindgen(js_name = webgpuInfo, unchecked_return_type = "WebGpuInfo")]
pub async fn webgpu_info() -> Result<JsValue, JsValue> {
    let v = match crate::gpu::context::GpuContext::probe().await {
        Ok(a) => json!({"available": a.problem.is_none(), "reason": a.problem, "adapter": a}),
        Err(e) => json!({"available": false, "reason": e.to_string()}),
    };
    to_js(&v)
}

/// The multi-threaded build's thread pool (`lorb/worker` starts it when the page is cross-origin
/// isolated): `await initThreadPool(n)` once after `init()`, before any Rescorer computes; the CPU
/// backend then splits its work over n Web Workers sharing the wasm memory. Only in that build.
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// Word errors of `hypothesis` against `reference` (substitutions + deletions + insertions, with
/// the same normalisation as `lorb eval`) and the reference's word count: `{ errors, words }`.
#[wasm_bindgen(js_name = wordErrors, unchecked_return_type = "{ errors: number; words: number }")]
pub fn word_errors_js(reference: &str, hypothesis: &str) -> Result<JsValue, JsValue> {
    to_js(&json!({"errors": word_errors(reference, hypothesis), "words": word_count(reference)}))
}

/// A loaded model (and adapter) ready to score, rescore and train.
#[wasm_bindgen]
pub struct Rescorer {
    scorer: Scorer,
    /// λ used when `rescore` is given none.
    weight: f64,
    /// β used when `personalize` is given none: the adapter's `lexiconWeight`, else
    /// [`crate::personalize::DEFAULT_LEXICON_WEIGHT`].
    lexicon_weight: f64,
    /// The adapter trained last (kept after a cancelled run: the last completed step's).
    trained: Option<Adapter>,
    /// The user's words from the last `personalize`, and their β: `rescore` adds the boost (its
    /// `lexiconWeight` overrides β, also after a `personalize` with β 0).
    lexicon: Option<(crate::lexicon::Lexicon, f64)>,
}

/// What an adapter source says it was tuned with.
struct Tuned {
    weight: Option<f64>,
    lexicon_weight: Option<f64>,
}

/// Stops a running `Rescorer.train` after its current step: `const c = new CancelToken();
/// r.train(lists, opts, onProgress, c); … c.cancel();`
#[wasm_bindgen]
#[derive(Default, Clone)]
pub struct CancelToken {
    flag: std::rc::Rc<std::cell::Cell<bool>>,
}

#[wasm_bindgen]
impl CancelToken {
    #[wasm_bindgen(constructor)]
    pub fn new() -> CancelToken {
        CancelToken::default()
    }
    pub fn cancel(&self) {
        self.flag.set(true);
    }
    #[wasm_bindgen(getter)]
    pub fn cancelled(&self) -> bool {
        self.flag.get()
    }
}


#[wasm_bindgen]
impl Rescorer {
    /// `await Rescorer.load({ config, weights, tokenizer, head?, adapter?: { config, weights },
    /// backend?: "auto" | "gpu" | "cpu", weight?, onProgress?(file, loaded, total) })`.
    pub async fn load(#[wasm_bindgen(unchecked_param_type = "LoadOptions")] opts: JsValue) -> Result<Rescorer, JsValue> {
        console_error_panic_hook::set_once();
        let progress = get(&opts, "onProgress").unwrap_or(JsValue::UNDEFINED);
        let config = required(&opts, "config", "config.json", &progress).await?;
        let weights = required(&opts, "weights", "model.safetensors", &progress).await?;
        let tokenizer = required(&opts, "tokenizer", "tokenizer.json", &progress).await?;
        let mut model = Model::from_bytes(&config, &weights).map_err(js_error)?;
        // The adapter comes first: one with a trained MLM head gives an encoder-only model that
        // head before the backend uploads the weights.
        let adapter = match get(&opts, "adapter") {
            Some(a) => Some(Self::adapter_of(&a, &model.config, &progress).await?),
            None => None,
        };
        if let Some((a, _)) = &adapter {
            model.add_mlm_head_from(a);
        }
        let mut encoder = TextEncoder::from_bytes(&tokenizer, &model.config).map_err(js_error)?;
        if get(&opts, "truncate").and_then(|v| v.as_bool()) == Some(true) {
            encoder.policy = crate::tokenize::LongPolicy::Truncate;
        }
        let head = match get(&opts, "head") {
            Some(v) => Some(ClsHead::from_safetensors(&bytes_of(&v, "head", &progress).await?, model.config.hidden).map_err(js_error)?),
            None => None,
        };
        let model = std::sync::Arc::new(model);
        let dtype: crate::gpu::Dtype = match get(&opts, "dtype") {
            None => crate::gpu::Dtype::F32,
            Some(v) => v.as_string().ok_or_else(|| js_error(Error::Input("dtype must be a string: \"f32\", \"f16\" or \"auto\"".into())))?.parse().map_err(js_error)?,
        };
        let backend = match get(&opts, "backend").and_then(|v| v.as_string()).as_deref() {
            Some("cpu") => Backend::with_dtype(model, BackendKind::Cpu, dtype).await.map_err(js_error)?,
            Some("gpu") => Backend::with_dtype(model, BackendKind::Gpu, dtype).await.map_err(js_error)?,
            // A hardware GPU, else the CPU: a software WebGPU adapter (SwiftShader) took 195 s
            // per 30-best list where the CPU backend in wasm takes about a second.
            None | Some("auto") => match Backend::with_dtype(model.clone(), BackendKind::Auto, dtype).await.map_err(js_error)? {
                Backend::Cpu(c) => {
                    web_sys::console::info_1(&"lorb: no hardware WebGPU adapter; using the CPU backend".into());
                    Backend::Cpu(c)
                }
                gpu => gpu,
            },
            Some(other) => return Err(js_error(Error::Input(format!("backend {other:?}: expected auto, gpu or cpu")))),
        };
        let weight = get(&opts, "weight").and_then(|v| v.as_f64()).unwrap_or(1.0);
        crate::rescore::check_weight(weight).map_err(js_error)?;
        let mut scorer = Scorer::new(encoder, backend, head);
        if let Some(n) = get(&opts, "maxHyps").and_then(|v| v.as_f64()) {
            if !(n >= 1.0 && n.fract() == 0.0) {
                return Err(js_error(Error::Input(format!("maxHyps {n}: expected a whole number ≥ 1"))));
            }
            scorer.max_hyps = n as usize;
        }
        let mut r = Rescorer { scorer, weight, lexicon_weight: crate::personalize::DEFAULT_LEXICON_WEIGHT, trained: None, lexicon: None };
        if let Some((a, tuned)) = adapter {
            r.use_adapter(a, tuned).await?;
        }
        Ok(r)
    }

    /// An adapter from `{ config, weights, weight?, lexiconWeight? }`, and its λ and β if given.
    async fn adapter_of(a: &JsValue, config: &crate::ModelConfig, progress: &JsValue) -> Result<(Adapter, Tuned), JsValue> {
        let cfg = bytes_of(&get(a, "config").ok_or_else(|| js_error(Error::Adapter("adapter.config is required".into())))?, "adapter_config.json", progress).await?;
        let st = bytes_of(&get(a, "weights").ok_or_else(|| js_error(Error::Adapter("adapter.weights is required".into())))?, "adapter_model.safetensors", progress).await?;
        let adapter = Adapter::from_bytes(&cfg, &st, config).map_err(js_error)?;
        Ok((adapter, Tuned { weight: get(a, "weight").and_then(|v| v.as_f64()), lexicon_weight: lexicon_weight_of(a)? }))
    }

    async fn set_adapter_from(&mut self, a: &JsValue, progress: &JsValue) -> Result<JsValue, JsValue> {
        let (adapter, tuned) = Self::adapter_of(a, &self.scorer.model().config, progress).await?;
        self.use_adapter(adapter, tuned).await
    }

    async fn use_adapter(&mut self, adapter: Adapter, tuned: Tuned) -> Result<JsValue, JsValue> {
        if let Some(w) = tuned.weight {
            crate::rescore::check_weight(w).map_err(js_error)?;
            self.weight = w;
        }
        if let Some(b) = tuned.lexicon_weight {
            self.lexicon_weight = b;
        }
        let info = json!({"r": adapter.r, "alpha": adapter.alpha, "pairs": adapter.pairs.len(), "parameters": adapter.parameter_count(), "clsHead": adapter.cls_head.is_some()});
        self.scorer.set_adapter(adapter).await.map_err(js_error)?;
        to_js(&info)
    }

    /// Merges a LoRA adapter `{ config, weights, weight? }` (URLs or bytes) into the weights,
    /// replacing the one merged before (hot-swap). Returns its rank, pair and parameter counts.
    #[wasm_bindgen(js_name = setAdapter, unchecked_return_type = "AdapterInfo")]
    pub async fn set_adapter(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "AdapterSource")] adapter: JsValue,
        #[wasm_bindgen(unchecked_param_type = "((file: string, loaded: number, total: number) => void) | undefined")] on_progress: JsValue,
    ) -> Result<JsValue, JsValue> {
        self.set_adapter_from(&adapter, &on_progress).await
    }

    /// s2 of each text (`{ method: "cls" | "pll" | "pll-word" }`), as a Float64Array.
    pub async fn score(&mut self, texts: Vec<String>, #[wasm_bindgen(unchecked_param_type = "RescoreOptions | undefined")] opts: JsValue) -> Result<js_sys::Float64Array, JsValue> {
        let method = method_of(&opts)?;
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let s = self.scorer.score_texts(&refs, method).await.map_err(js_error)?;
        Ok(js_sys::Float64Array::from(&s[..]))
    }

    /// Rescores one n-best list `{ utt?, ref?, hyps: [{ text, score }] }` with
    /// `{ method?, weight? }`: the hypotheses best first with `s1`, `s2`, `total`, `firstRank`,
    /// and, when `ref` is given, each one's word errors and the list's first-pass and rescored
    /// errors.
    #[wasm_bindgen(unchecked_return_type = "Rescored")]
    pub async fn rescore(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "NBestList")] nbest: JsValue,
        #[wasm_bindgen(unchecked_param_type = "RescoreOptions | undefined")] opts: JsValue,
    ) -> Result<JsValue, JsValue> {
        let method = method_of(&opts)?;
        let weight = get(&opts, "weight").and_then(|v| v.as_f64()).unwrap_or(self.weight);
        crate::rescore::check_weight(weight).map_err(js_error)?;
        let beta = lexicon_weight_of(&opts)?.unwrap_or_else(|| self.lexicon.as_ref().map_or(0.0, |l| l.1));
        let mut v: Value = serde_wasm_bindgen::from_value(nbest).map_err(|e| js_error(Error::Input(format!("n-best list: {e}"))))?;
        if v.get("utt").is_none() {
            v["utt"] = "".into();
        }
        let nb: NBest = serde_json::from_value(v).map_err(|e| js_error(Error::Input(format!("n-best list: {e}"))))?;
        if nb.hyps.is_empty() {
            return Err(js_error(Error::EmptyNBest(nb.utt)));
        }
        let texts: Vec<&str> = nb.hyps.iter().map(|h| h.text.as_str()).collect();
        let s2 = self.scorer.score_list(&texts, method).await.map_err(|e| js_error(e.in_list(&nb.utt)))?;
        let s1 = crate::rescore::first_pass_scores(&nb, &first_pass_of(&opts)?).map_err(|e| js_error(e.in_list(&nb.utt)))?;
        let boost = self.lexicon.as_ref().filter(|_| beta > 0.0).map(|(l, _)| l.boosts(nb.hyps.iter().map(|h| h.text.as_str()), beta));
        let r = rescore_list(&nb, &s1, &s2, weight, boost.as_deref());
        let errs = |t: &str| nb.reference.as_deref().map(|rf| word_errors(rf, t));
        let hyps: Vec<Value> = r
            .hyps
            .iter()
            .map(|h| json!({"text": h.text, "s1": h.s1, "s2": h.s2, "boost": h.boost, "total": h.score, "firstRank": h.first_rank, "errors": errs(&h.text)}))
            .collect();
        let out = json!({
            "utt": nb.utt,
            "ref": nb.reference,
            "weight": weight,
            "method": format!("{method:?}").to_lowercase(),
            "hyps": hyps,
            "words": nb.reference.as_deref().map(word_count),
            "firstPassErrors": errs(&nb.hyps[0].text),
            "rescoredErrors": errs(&r.hyps[0].text),
        });
        to_js(&out)
    }

    /// Trains a LoRB adapter (LoRA pairs + CLS head, MWER or MWED) on n-best lists with
    /// references, on WebGPU when this rescorer uses it, one optimiser step at a time, through the
    /// same epoch loop as `lorb train`: lists held out for dev (`dev`, or a `devFraction` of the
    /// lists, default 10%, none below 10 lists) give the dev WER after each epoch, early
    /// stopping (`patience`) and λ tuned on a grid around 1/κ; without dev lists λ = 1/κ. The
    /// trained adapter is then merged for rescoring with that λ.
    /// `onProgress` gets `{type: "step", step, total, epoch, loss, gradNorm}` after each step and
    /// `{type: "epoch", epoch, devWer, weight, trainLoss}` after each epoch (devWer null without
    /// dev lists); `cancel` (a CancelToken) stops it after the current step — the best epoch's
    /// adapter is kept (the last completed step's when no epoch has ended or beaten the first
    /// pass; `exportAdapter`) and the promise rejects with kind `cancelled`. NaN/Inf stops with
    /// kind `training`, keeping the last good parameters.
    #[wasm_bindgen(unchecked_return_type = "TrainResult")]
    pub async fn train(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "NBestList[]")] lists: JsValue,
        #[wasm_bindgen(unchecked_param_type = "TrainOptions | undefined")] opts: JsValue,
        #[wasm_bindgen(unchecked_param_type = "((p: TrainProgress) => void) | undefined")] on_progress: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CancelToken | undefined")] cancel: JsValue,
    ) -> Result<JsValue, JsValue> {
        use crate::train::fit::Progress;
        use crate::train::Trainer;
        let num = |k: &str, d: f64| get(&opts, k).and_then(|v| v.as_f64()).unwrap_or(d);
        let depth = num("depth", f64::INFINITY);
        let depth = depth.is_finite().then_some(depth.max(1.0) as usize);
        let fp = first_pass_of(&opts)?;
        let (examples, dev) = self.train_and_dev(lists, &opts, depth, &fp)?;
        let plan = train_plan(&opts, examples.len(), (1, 8))?;
        let total = plan.cfg.total_steps;
        // Train on the base weights: remove the adapter merged for scoring first, and put it
        // back (with its head and λ) unless training ends with a trained adapter to use.
        let previous = (self.scorer.adapter(), self.scorer.cls_head.clone(), self.weight);
        self.scorer.use_adapter(None).await.map_err(js_error)?;
        let is_cancelled = || get(&cancel, "cancelled").and_then(|v| v.as_bool()) == Some(true);
        // `continueAdapter`: the adapter in use is where training starts (its LoRA pairs go on
        // training, its CLS head is the starting head), as `lorb train --adapter`.
        let from = if get(&opts, "continueAdapter").and_then(|v| v.as_bool()) == Some(true) {
            Some(previous.0.clone().ok_or_else(|| js_error(Error::Input("continueAdapter: no adapter is in use".into())))?)
        } else {
            None
        };
        let trained: crate::Result<(Trainer, crate::train::fit::FitReport)> = async {
            let start = crate::train::Start { r: plan.r, alpha: plan.alpha, rslora: false, targets: &plan.targets, seed: plan.cfg.seed, head_only: false, full: false, from: from.as_deref() };
            // Read through the token's JS getter: the token stays the caller's.
            crate::train::fit::run(&self.scorer, &start, None, plan.cfg, &examples, &dev, &plan.fit, &is_cancelled, |p| {
                if !on_progress.is_function() {
                    return;
                }
                let v = match p {
                    Progress::Step { epoch, log, .. } => json!({"type": "step", "step": log.step, "total": total, "epoch": epoch, "loss": log.loss, "gradNorm": log.grad_norm}),
                    Progress::Epoch(r) => json!({"type": "epoch", "epoch": r.epoch, "devWer": (!dev.is_empty()).then_some(r.dev_wer), "weight": r.weight, "trainLoss": r.train_loss}),
                };
                if let Ok(v) = to_js(&v) {
                    let _ = js_sys::Function::from(on_progress.clone()).call1(&JsValue::NULL, &v);
                }
            })
            .await
        }
        .await;
        let (trainer, report, trainable) = self.keep_or_restore(trained, previous, is_cancelled()).await?;
        let curve: Vec<Value> = report.curve.iter().map(|r| json!({"epoch": r.epoch, "devWer": r.dev_wer, "weight": r.weight, "trainLoss": r.train_loss})).collect();
        to_js(&json!({
            "steps": trainer.step, "losses": report.losses, "weight": report.weight, "trainableParameters": trainable, "cancelled": false,
            "trainLists": examples.len(), "devLists": dev.len(), "devFirstPassWer": (!dev.is_empty()).then_some(report.dev_first_pass_wer),
            "devWer": (!dev.is_empty()).then_some(report.best_dev_wer), "bestEpoch": report.best_epoch, "curve": curve,
            "lambdaCurve": report.lambda_curve, "timeLimitedSteps": report.time_limited_steps,
        }))
    }

    /// The training lists and the dev lists: `opts.dev`, else a seeded `devFraction` (0.1) held
    /// out of the training lists.
    fn train_and_dev(&self, lists: JsValue, opts: &JsValue, depth: Option<usize>, fp: &crate::nbest::FirstPass) -> Result<(Vec<crate::train::ListExample>, Vec<crate::train::ListExample>), JsValue> {
        let mut examples = self.examples(lists, "training", depth, fp)?;
        if examples.is_empty() {
            return Err(js_error(Error::Input("no training lists".into())));
        }
        let dev = match get(opts, "dev") {
            Some(d) => self.examples(d, "dev", depth, fp)?,
            None => {
                let fraction = get(opts, "devFraction").and_then(|v| v.as_f64()).unwrap_or(0.1);
                if !(0.0..=0.5).contains(&fraction) {
                    return Err(js_error(Error::Input(format!("devFraction {fraction}: expected 0 to 0.5"))));
                }
                let n = crate::train::holdout_count(examples.len(), fraction);
                let seed = get(opts, "seed").and_then(|v| v.as_f64()).unwrap_or(0.0) as u64;
                crate::train::hold_out(&mut examples, n, seed)
            }
        };
        Ok((examples, dev))
    }

    /// After a run: one that failed (an error, or NaN/Inf) puts the previous adapter, head and λ
    /// back and rejects; a finished or cancelled one leaves its best (or last good) adapter
    /// merged (returned with its parameter count), and a cancelled one then rejects with
    /// `cancelled`.
    async fn keep_or_restore(&mut self, trained: crate::Result<(crate::train::Trainer, crate::train::fit::FitReport)>, previous: (Option<std::sync::Arc<crate::adapter::Adapter>>, Option<crate::model::ClsHead>, f64), cancelled: bool) -> Result<(crate::train::Trainer, crate::train::fit::FitReport, usize), JsValue> {
        let failed = match &trained {
            Err(_) => true,
            Ok((_, rep)) => rep.stopped.is_some() && !cancelled,
        };
        if failed {
            let (adapter, head, weight) = previous;
            self.scorer.use_adapter(adapter).await.map_err(js_error)?;
            self.scorer.cls_head = head;
            self.weight = weight;
            return Err(js_error(match trained {
                Err(e) => e,
                Ok((_, rep)) => Error::Training(format!("{}; the previous adapter is still in use", rep.stopped.unwrap_or_default())),
            }));
        }
        let (trainer, report) = trained.map_err(js_error)?;
        let adapter = trainer.adapter().map_err(js_error)?;
        let trainable = adapter.parameter_count();
        self.trained = Some(adapter.clone());
        self.scorer.set_adapter(adapter).await.map_err(js_error)?;
        self.weight = report.weight;
        if report.stopped.is_some() {
            return Err(js_error(Error::Cancelled(trainer.step)));
        }
        Ok((trainer, report, trainable))
    }

    /// N-best lists from JS as training examples (each needs a reference).
    fn examples(&self, lists: JsValue, what: &str, depth: Option<usize>, fp: &crate::nbest::FirstPass) -> Result<Vec<crate::train::ListExample>, JsValue> {
        nbests(lists, what)?.iter().map(|nb| crate::train::ListExample::from_nbest(nb, fp, &self.scorer.encoder, depth).map_err(js_error)).collect()
    }

    /// Personalises on one group of utterances, a chapter the user corrected, with the function
    /// `lorb personalize` runs for each chapter: `adapt`'s references are the corrections (the
    /// training targets); `eval`, what comes next, is scored with the adapter in use and with a
    /// personal adapter trained from it on `adapt` alone — `opts.adapt` "mwer" (default: LoRB on
    /// the corrected lists, s2 = CLS), "mlm" (MLM on their transcripts, s2 = PLL) or "none" (no
    /// training) — at λ = `opts.weight` (default: the current λ), with the corrected transcripts'
    /// rare words boosting the hypotheses that use them (`opts.lexiconWeight`, default 0.5; 0:
    /// off). Training options as `train` (epochs default 2 and batch 4, as the command; no dev
    /// lists, no cancelling; `timeLimit` applies). The personal adapter is then in use at that λ
    /// (`exportAdapter` gives it); after "mlm" it keeps the CLS head of the adapter it started
    /// from, and PLL is its s2. `rescore` then adds the boost of these words (its option
    /// `lexiconWeight` overrides β; 0 turns it off).
    #[wasm_bindgen(unchecked_return_type = "PersonalizeResult")]
    pub async fn personalize(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "NBestList[]")] adapt: JsValue,
        #[wasm_bindgen(unchecked_param_type = "NBestList[]")] eval: JsValue,
        #[wasm_bindgen(unchecked_param_type = "PersonalizeOptions | undefined")] opts: JsValue,
    ) -> Result<JsValue, JsValue> {
        use crate::personalize::{personalize_group, Adapt, Grouping, Options};
        let (adapt, eval) = (nbests(adapt, "adapt")?, nbests(eval, "eval")?);
        let how: Adapt = get(&opts, "adapt").and_then(|v| v.as_string()).as_deref().unwrap_or("mwer").parse().map_err(js_error)?;
        if get(&opts, "objective").is_some() {
            return Err(js_error(Error::Input("personalize takes `adapt` (\"mwer\", \"mlm\" or \"none\"), not `objective`".into())));
        }
        let plan = train_plan(&opts, adapt.len(), (2, 4))?;
        let weight = get(&opts, "weight").and_then(|v| v.as_f64()).unwrap_or(self.weight);
        crate::rescore::check_weight(weight).map_err(js_error)?;
        let lexicon_weight = lexicon_weight_of(&opts)?.unwrap_or(self.lexicon_weight);
        let depth = get(&opts, "depth").and_then(|v| v.as_f64()).filter(|d| d.is_finite()).map(|d| d.max(1.0) as usize);
        // One group: its grouping and split are the caller's.
        let o = Options { grouping: Grouping::Chapter, adapt_fraction: 0.5, adapt: how, first_pass: first_pass_of(&opts)?, depth, weight, lexicon_weight, r: plan.r, alpha: plan.alpha, targets: plan.targets, train: plan.cfg, fit: plan.fit };
        let run = personalize_group(&mut self.scorer, &o, "page", &adapt, &eval).await.map_err(js_error)?;
        if let Some(a) = run.adapter {
            self.scorer.set_adapter(a.clone()).await.map_err(js_error)?;
            self.trained = Some(a);
        }
        self.weight = weight;
        let user_words: Vec<String> = run.lexicon.entries().iter().map(|(w, _)| w.to_string()).collect();
        self.lexicon = Some((run.lexicon, lexicon_weight));
        let g = &run.report;
        to_js(&json!({
            "adapt": how, "weight": weight, "lexiconWeight": lexicon_weight, "words": g.words, "firstPassWer": g.first_pass_wer, "baseWer": g.base_wer,
            "lexiconWer": g.lexicon_wer, "adapterWer": g.adapter_wer, "personalizedWer": g.personalized_wer, "userWords": user_words,
            "adaptUtterances": g.adapt_utterances, "evalUtterances": g.eval_utterances, "baseChoices": g.base_choices, "personalChoices": g.personal_choices, "seconds": g.seconds,
        }))
    }

    /// The adapter trained last, in PEFT's format: `{ config: Uint8Array, weights: Uint8Array }`
    /// (adapter_config.json and adapter_model.safetensors).
    #[wasm_bindgen(js_name = exportAdapter, unchecked_return_type = "{ config: Uint8Array; weights: Uint8Array }")]
    pub fn export_adapter(&self) -> Result<JsValue, JsValue> {
        let a = self.trained.as_ref().ok_or_else(|| js_error(Error::Adapter("no adapter has been trained yet".into())))?;
        let (cfg, st) = a.to_bytes().map_err(js_error)?;
        let o = js_sys::Object::new();
        js_sys::Reflect::set(&o, &"config".into(), &js_sys::Uint8Array::from(&cfg[..]).into())?;
        js_sys::Reflect::set(&o, &"weights".into(), &js_sys::Uint8Array::from(&st[..]).into())?;
        Ok(o.into())
    }

    /// What this rescorer runs on and with: backend, model shape, heads.
    #[wasm_bindgen(unchecked_return_type = "Capabilities")]
    pub fn capabilities(&self) -> Result<JsValue, JsValue> {
        let c = &self.scorer.model().config;
        to_js(&json!({
            "backend": self.scorer.backend.describe(),
            "gpu": self.scorer.backend.is_gpu(),
            "dtype": self.scorer.backend.dtype().as_str(),
            "arch": format!("{:?}", c.arch).to_lowercase(),
            "layers": c.layers,
            "hidden": c.hidden,
            "vocab": c.vocab_size,
            "maxTokens": self.scorer.encoder.max_tokens(),
            "maxHyps": self.scorer.max_hyps,
            "mlmHead": self.scorer.model().mlm.is_some(),
            "clsHead": self.scorer.cls_head.is_some(),
            "weight": self.weight,
            "lexiconWeight": self.lexicon_weight,
            "threads": rayon::current_num_threads(),
            "memoryBytes": core::arch::wasm32::memory_size(0) as f64 * 65536.0,
        }))
    }
}
