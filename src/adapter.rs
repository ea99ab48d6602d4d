//! LoRA adapters in Hugging Face PEFT's format: a folder (or two byte buffers) with
//! `adapter_config.json` and `adapter_model.safetensors` holding
//! `base_model.model.<module path>.lora_A.weight` `[r, in]` and `.lora_B.weight` `[out, r]`, and
//! `modules_to_save` tensors (RescoreBERT's CLS head is the module `score`).
//!
//! A pair adds `ΔW = s·B·A` to its linear layer, `s = α/r` (`α/√r` with rsLoRA). For inference
//! the pairs are merged into the weights ([`crate::Backend::set_adapter`]), so scoring costs
//! nothing extra; removing them restores the base weights.

use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use crate::model::{tensor_to_f32, ClsHead, Tensor};
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::Path;

/// The linear layers of an encoder layer that can carry a LoRA pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Query,
    Key,
    Value,
    AttnOut,
    FfnIn,
    FfnOut,
}

impl Target {
    /// Short names, as the CLI takes them and gradient fixtures are keyed.
    pub fn name(self) -> &'static str {
        match self {
            Target::Query => "query",
            Target::Key => "key",
            Target::Value => "value",
            Target::AttnOut => "attn_out",
            Target::FfnIn => "ffn_in",
            Target::FfnOut => "ffn_out",
        }
    }

    /// Parses a short name (or any architecture's module name, e.g. `q_lin`, `intermediate.dense`).
    pub fn parse(s: &str) -> Result<Self> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s || [Arch::Bert, Arch::DistilBert].iter().any(|&a| t.module(a) == s || t.module(a).rsplit('.').next() == Some(s) && s != "dense"))
            .ok_or_else(|| Error::Input(format!("unknown LoRA target {s:?} (query, key, value, attn_out, ffn_in, ffn_out)")))
    }

    pub const ALL: [Target; 6] = [Target::Query, Target::Key, Target::Value, Target::AttnOut, Target::FfnIn, Target::FfnOut];

    /// The module path inside `encoder.layer.N.` (BERT, RoBERTa) or `transformer.layer.N.`
    /// (DistilBERT).
    pub fn module(self, arch: Arch) -> &'static str {
        match (arch, self) {
            (Arch::DistilBert, Target::Query) => "attention.q_lin",
            (Arch::DistilBert, Target::Key) => "attention.k_lin",
            (Arch::DistilBert, Target::Value) => "attention.v_lin",
            (Arch::DistilBert, Target::AttnOut) => "attention.out_lin",
            (Arch::DistilBert, Target::FfnIn) => "ffn.lin1",
            (Arch::DistilBert, Target::FfnOut) => "ffn.lin2",
            (_, Target::Query) => "attention.self.query",
            (_, Target::Key) => "attention.self.key",
            (_, Target::Value) => "attention.self.value",
            (_, Target::AttnOut) => "attention.output.dense",
            (_, Target::FfnIn) => "intermediate.dense",
            (_, Target::FfnOut) => "output.dense",
        }
    }

    fn layers_prefix(arch: Arch) -> &'static str {
        if arch == Arch::DistilBert {
            "transformer.layer."
        } else {
            "encoder.layer."
        }
    }

    /// `(out, in)` of the linear layer.
    pub fn shape(self, c: &ModelConfig) -> (usize, usize) {
        match self {
            Target::FfnIn => (c.intermediate, c.hidden),
            Target::FfnOut => (c.hidden, c.intermediate),
            _ => (c.hidden, c.hidden),
        }
    }

    /// The weight this target lives in (Q, K and V share the fused `qkv`): the one place that
    /// says so.
    pub fn weight(self) -> crate::model::Weight {
        use crate::model::Weight;
        match self {
            Target::Query | Target::Key | Target::Value => Weight::Qkv,
            Target::AttnOut => Weight::AttnOut,
            Target::FfnIn => Weight::FfnIn,
            Target::FfnOut => Weight::FfnOut,
        }
    }

    /// Rows of this target inside lorb's weight (Q, K, V share the fused `[3H, H]` projection).
    pub fn row_offset(self, c: &ModelConfig) -> usize {
        match self {
            Target::Key => c.hidden,
            Target::Value => 2 * c.hidden,
            _ => 0,
        }
    }
}

/// Trained masked-LM head parameters stored as PEFT `modules_to_save` (the transform dense and
/// LayerNorm, and the output bias; the decoder stays tied to the word embeddings). They replace
/// the model's own values while the adapter is set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MlmHeadUpdate {
    pub dense_weight: Option<Tensor>,
    pub dense_bias: Option<Tensor>,
    pub ln_gamma: Option<Tensor>,
    pub ln_beta: Option<Tensor>,
    pub bias: Option<Tensor>,
}

impl MlmHeadUpdate {
    pub fn is_empty(&self) -> bool {
        *self == MlmHeadUpdate::default()
    }

    /// Tensor-name suffixes of each part, per architecture (PEFT keeps the module path).
    fn names(arch: Arch) -> [(&'static str, usize); 5] {
        match arch {
            Arch::Bert => [
                ("cls.predictions.transform.dense.weight", 0),
                ("cls.predictions.transform.dense.bias", 1),
                ("cls.predictions.transform.LayerNorm.weight", 2),
                ("cls.predictions.transform.LayerNorm.bias", 3),
                ("cls.predictions.bias", 4),
            ],
            Arch::Roberta => [
                ("lm_head.dense.weight", 0),
                ("lm_head.dense.bias", 1),
                ("lm_head.layer_norm.weight", 2),
                ("lm_head.layer_norm.bias", 3),
                ("lm_head.bias", 4),
            ],
            Arch::DistilBert => [
                ("vocab_transform.weight", 0),
                ("vocab_transform.bias", 1),
                ("vocab_layer_norm.weight", 2),
                ("vocab_layer_norm.bias", 3),
                ("vocab_projector.bias", 4),
            ],
        }
    }

    fn slot(&mut self, i: usize) -> &mut Option<Tensor> {
        match i {
            0 => &mut self.dense_weight,
            1 => &mut self.dense_bias,
            2 => &mut self.ln_gamma,
            3 => &mut self.ln_beta,
            _ => &mut self.bias,
        }
    }

    /// Writes the parts present over `head`.
    pub fn apply(&self, head: &mut crate::model::MlmHead) {
        let put = |dst: &mut Tensor, src: &Option<Tensor>| {
            if let Some(s) = src {
                dst.data.copy_from_slice(&s.data);
            }
        };
        put(&mut head.dense.weight, &self.dense_weight);
        put(&mut head.dense.bias, &self.dense_bias);
        put(&mut head.ln.gamma, &self.ln_gamma);
        put(&mut head.ln.beta, &self.ln_beta);
        put(&mut head.bias, &self.bias);
    }
}

/// One low-rank pair on one layer's linear map.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    pub layer: usize,
    pub target: Target,
    /// `[r, in]`
    pub a: Tensor,
    /// `[out, r]`
    pub b: Tensor,
}

impl LoraPair {
    /// `ΔW = scale · B·A`, `[out, in]`, accumulated in f64.
    pub fn delta(&self, scale: f64) -> Vec<f32> {
        let (out, r, inp) = (self.b.shape[0], self.a.shape[0], self.a.shape[1]);
        let mut d = vec![0f32; out * inp];
        for i in 0..out {
            for j in 0..inp {
                let mut acc = 0f64;
                for k in 0..r {
                    acc += self.b.data[i * r + k] as f64 * self.a.data[k * inp + j] as f64;
                }
                d[i * inp + j] = (scale * acc) as f32;
            }
        }
        d
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub r: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    pub pairs: Vec<LoraPair>,
    /// RescoreBERT's CLS head, stored as PEFT `modules_to_save` module `score`.
    pub cls_head: Option<ClsHead>,
    /// Trained MLM head parameters (`modules_to_save`), if any.
    pub mlm_head: MlmHeadUpdate,
    /// `adapter_config.json` as read (kept so that saving round-trips every field).
    pub config_json: Value,
    /// What precedes the encoder's module paths in tensor names, e.g. `base_model.model.bert.`.
    pub key_prefix: String,
    arch: Arch,
}

/// One tensor of an adapter ([`Adapter::tensors`]).
pub struct AdapterTensor<'a> {
    /// lorb's name ([`crate::layout`]).
    pub name: String,
    /// The name in PEFT's `adapter_model.safetensors`.
    pub peft: String,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Adapter(msg.into())
}

/// Bounds on `r` and `lora_alpha` beyond any real adapter (PEFT's defaults are 8 and 8); larger
/// values are broken files, and an α of 1e308 would overflow the merged weights.
pub const MAX_RANK: usize = 4096;
pub const MAX_ALPHA: f64 = 1e6;

/// `r` in 1..=[`MAX_RANK`] and `lora_alpha` in (0, [`MAX_ALPHA`]] (NaN is neither).
pub fn check_lora_shape(r: usize, alpha: f64) -> Result<()> {
    if r == 0 || r > MAX_RANK {
        return Err(Error::Input(format!("r = {r}: must be from 1 to {MAX_RANK}")));
    }
    if !(alpha > 0.0 && alpha <= MAX_ALPHA) {
        return Err(Error::Input(format!("lora_alpha = {alpha}: must be a number in (0, {MAX_ALPHA}]")));
    }
    Ok(())
}

/// Every `target_modules` entry must name a module lorb adapts (PEFT matches entries as suffixes
/// of module paths): an unknown one would otherwise be ignored silently. A string is a regular
/// expression in PEFT; lorb then relies on the tensors themselves.
fn check_target_modules(cj: &Value, arch: Arch) -> Result<()> {
    let Some(list) = cj.get("target_modules").and_then(Value::as_array) else { return Ok(()) };
    for m in list {
        let name = m.as_str().ok_or_else(|| bad(format!("target_modules entry {m} is not a string")))?;
        let known = Target::ALL.iter().any(|t| {
            let path = t.module(arch);
            path == name || path.ends_with(&format!(".{name}"))
        });
        if !known {
            let all: Vec<&str> = Target::ALL.iter().map(|t| t.module(arch)).collect();
            return Err(bad(format!("target_modules names {name:?}, not a module lorb adapts ({})", all.join(", "))));
        }
    }
    Ok(())
}

/// A tensor of an adapter file as f32 (finite values only; a bad one is an adapter error).
fn adapter_tensor(name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Tensor> {
    tensor_to_f32(name, view).map_err(|e| match e {
        Error::MalformedWeights(m) => bad(m),
        e => e,
    })
}

impl Adapter {
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// A fresh adapter initialised as PEFT does: `A ~ U(−1/√in, 1/√in)` (Kaiming-uniform with
    /// a = √5), `B = 0`, on `targets` of every layer. Its config is what PEFT writes for it.
    pub fn new_lora(config: &ModelConfig, r: usize, alpha: f64, use_rslora: bool, targets: &[Target], seed: u64) -> Result<Self> {
        check_lora_shape(r, alpha)?;
        if targets.is_empty() {
            return Err(bad("a new adapter needs at least one target"));
        }
        let mut rng = crate::train::Rng::new(seed);
        let mut pairs = Vec::new();
        for layer in 0..config.layers {
            for &target in targets {
                let (out, inp) = target.shape(config);
                let bound = 1.0 / (inp as f64).sqrt();
                let a = (0..r * inp).map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32).collect();
                pairs.push(LoraPair { layer, target, a: Tensor::new(vec![r, inp], a), b: Tensor::zeros(vec![out, r]) });
            }
        }
        let modules: Vec<&str> = targets.iter().map(|t| t.module(config.arch).rsplit('.').next().unwrap_or("")).collect();
        // BERT's `output.dense` and `attention.output.dense` share the last name: give full paths.
        let modules: Vec<String> = targets.iter().zip(&modules).map(|(t, m)| if *m == "dense" { t.module(config.arch).to_string() } else { m.to_string() }).collect();
        let family = match config.arch {
            Arch::Bert => "bert.",
            Arch::Roberta => "roberta.",
            Arch::DistilBert => "distilbert.",
        };
        let cj = serde_json::json!({
            "peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": use_rslora,
            "target_modules": modules, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false,
            "init_lora_weights": true, "inference_mode": true, "modules_to_save": null,
            "task_type": null, "base_model_name_or_path": null, "use_dora": false,
            "rank_pattern": {}, "alpha_pattern": {},
        });
        Ok(Adapter { r, alpha, use_rslora, pairs, cls_head: None, mlm_head: MlmHeadUpdate::default(), config_json: cj, key_prefix: format!("base_model.model.{family}"), arch: config.arch })
    }

    /// An adapter with no LoRA pairs, for heads alone (`modules_to_save`). PEFT wants a target
    /// module in a LoRA config, so `query` is named with r = 1; PEFT initialises that absent
    /// pair with B = 0, which changes nothing.
    pub fn heads_only(config: &ModelConfig) -> Self {
        let mut a = Self::new_lora(config, 1, 1.0, false, &[Target::Query], 0).expect("r = 1, α = 1 and one target are valid");
        a.pairs.clear();
        a
    }

    /// Sets `modules_to_save` in the config from the heads present (`score`, MLM head modules).
    pub fn sync_modules_to_save(&mut self) {
        let mut m: Vec<String> = Vec::new();
        if self.cls_head.is_some() {
            m.push("score".into());
        }
        if !self.mlm_head.is_empty() {
            let mods: &[&str] = match self.arch {
                Arch::Bert => &["transform"],
                Arch::Roberta => &["lm_head.dense", "lm_head.layer_norm"],
                Arch::DistilBert => &["vocab_transform", "vocab_layer_norm"],
            };
            m.extend(mods.iter().map(|s| s.to_string()));
        }
        if !self.config_json.is_object() {
            self.config_json = Value::Object(Default::default());
        }
        self.config_json["modules_to_save"] = if m.is_empty() { Value::Null } else { m.into() };
    }

    pub fn load_dir(dir: impl AsRef<Path>, config: &ModelConfig) -> Result<Self> {
        let d = dir.as_ref();
        let read = |n: &str| std::fs::read(d.join(n)).map_err(|e| Error::io(d.join(n), e));
        Self::from_bytes(&read("adapter_config.json")?, &read("adapter_model.safetensors")?, config)
    }

    /// Parses and validates an adapter against the model it is meant for.
    ///
    /// Long on purpose: one check after another, each with its own error, in the order the files
    /// are read.
    pub fn from_bytes(config_json: &[u8], tensors: &[u8], config: &ModelConfig) -> Result<Self> {
        let cj: Value = serde_json::from_slice(config_json).map_err(|e| bad(format!("adapter_config.json: {e}")))?;
        let peft_type = cj.get("peft_type").and_then(Value::as_str).unwrap_or("");
        if peft_type != "LORA" {
            return Err(bad(format!("peft_type {peft_type:?}: lorb reads LORA adapters")));
        }
        let field = |key: &str| cj.get(key).ok_or_else(|| bad(format!("adapter_config.json has no \"{key}\"")));
        let r = field("r")?;
        let r = r.as_u64().ok_or_else(|| bad(format!("r = {r}: must be a positive integer")))?;
        let alpha = field("lora_alpha")?;
        let alpha = alpha.as_f64().ok_or_else(|| bad(format!("lora_alpha = {alpha}: must be a number")))?;
        check_lora_shape(r.min(usize::MAX as u64) as usize, alpha).map_err(|e| bad(e.to_string()))?;
        check_target_modules(&cj, config.arch)?;
        for (key, what) in [("use_dora", "DoRA"), ("fan_in_fan_out", "fan_in_fan_out")] {
            if cj.get(key).and_then(Value::as_bool) == Some(true) {
                return Err(Error::Unsupported(format!("adapter uses {what}")));
            }
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if cj.get(key).and_then(Value::as_object).map(|o| !o.is_empty()).unwrap_or(false) {
                return Err(Error::Unsupported(format!("adapter has a non-empty {key}")));
            }
        }
        if let Some(b) = cj.get("bias").and_then(Value::as_str) {
            if b != "none" {
                return Err(Error::Unsupported(format!("adapter trains biases (bias = {b:?})")));
            }
        }
        let r = r as usize;
        let st = SafeTensors::deserialize(tensors).map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
        let layers = Target::layers_prefix(config.arch);
        let mut a_parts: std::collections::BTreeMap<(usize, Target), Tensor> = Default::default();
        let mut b_parts: std::collections::BTreeMap<(usize, Target), Tensor> = Default::default();
        let mut head_w = None;
        let mut head_b = None;
        let mut mlm_head = MlmHeadUpdate::default();
        let mlm_names = MlmHeadUpdate::names(config.arch);
        let mut key_prefix = None;
        // Visit the tensors in name order (the file's index is a hash map): the same file gives
        // the same error every time.
        let mut tensors = st.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, view) in tensors {
            if let Some(module) = name.strip_suffix(".lora_A.weight").or_else(|| name.strip_suffix(".lora_B.weight")) {
                let is_a = name.ends_with(".lora_A.weight");
                let pos = module.find(layers).ok_or_else(|| bad(format!("{name}: not a module of a {:?} encoder layer", config.arch)))?;
                let rest = &module[pos + layers.len()..];
                let (idx, path) = rest.split_once('.').ok_or_else(|| bad(format!("{name}: no layer index")))?;
                let layer: usize = idx.parse().map_err(|_| bad(format!("{name}: bad layer index {idx:?}")))?;
                if layer >= config.layers {
                    return Err(bad(format!("{name}: layer {layer} but the model has {}", config.layers)));
                }
                let target = Target::ALL
                    .into_iter()
                    .find(|t| t.module(config.arch) == path)
                    .ok_or_else(|| bad(format!("{name}: unknown target module {path:?}")))?;
                key_prefix.get_or_insert_with(|| module[..pos].to_string());
                let t = adapter_tensor(&name, &view)?;
                let (out, inp) = target.shape(config);
                let want = if is_a { vec![r, inp] } else { vec![out, r] };
                if t.shape != want {
                    return Err(Error::ShapeMismatch { name, expected: want, got: t.shape });
                }
                if is_a { &mut a_parts } else { &mut b_parts }.insert((layer, target), t);
            } else if let Some(&(_, i)) = mlm_names.iter().find(|(n, _)| name == *n || name.ends_with(&format!(".{n}"))) {
                let t = adapter_tensor(&name, &view)?;
                let (h, v) = (config.hidden, config.vocab_size);
                let want = match i {
                    0 => vec![h, h],
                    4 => vec![v],
                    _ => vec![h],
                };
                if t.shape != want {
                    return Err(Error::ShapeMismatch { name, expected: want, got: t.shape });
                }
                *mlm_head.slot(i) = Some(t);
            } else if name.ends_with("score.weight") {
                head_w = Some(adapter_tensor(&name, &view)?);
            } else if name.ends_with("score.bias") {
                head_b = Some(adapter_tensor(&name, &view)?);
            } else {
                return Err(Error::Unsupported(format!("adapter tensor {name:?} (lorb reads LoRA pairs and the `score` CLS head)")));
            }
        }
        let mut pairs = Vec::new();
        for ((layer, target), a) in a_parts {
            let b = b_parts.remove(&(layer, target)).ok_or_else(|| bad(format!("layer {layer} {target:?}: lora_A without lora_B")))?;
            pairs.push(LoraPair { layer, target, a, b });
        }
        if let Some(((layer, target), _)) = b_parts.into_iter().next() {
            return Err(bad(format!("layer {layer} {target:?}: lora_B without lora_A")));
        }
        let cls_head = match (head_w, head_b) {
            (Some(w), Some(b)) => {
                if w.data.len() != config.hidden || b.data.len() != 1 {
                    return Err(Error::ShapeMismatch { name: "score.weight".into(), expected: vec![1, config.hidden], got: w.shape });
                }
                Some(ClsHead { weight: w.data, bias: b.data[0] })
            }
            (None, None) => None,
            _ => return Err(bad("the score head needs both weight and bias")),
        };
        if pairs.is_empty() && cls_head.is_none() && mlm_head.is_empty() {
            return Err(bad("adapter has no LoRA pairs and no trained head"));
        }
        let use_rslora = cj.get("use_rslora").and_then(Value::as_bool).unwrap_or(false);
        Ok(Adapter {
            r,
            alpha,
            use_rslora,
            pairs,
            cls_head,
            mlm_head,
            config_json: cj,
            key_prefix: key_prefix.unwrap_or_else(|| "base_model.model.".into()),
            arch: config.arch,
        })
    }

    /// Every tensor the adapter holds, in a fixed order: the LoRA pairs, the MLM head's trained
    /// parts, the CLS head. Each with lorb's name ([`crate::layout`]), PEFT's name, its shape
    /// and its floats: what the PEFT file, [`Adapter::layout`] and the parameter count read.
    pub fn tensors(&self) -> Vec<AdapterTensor<'_>> {
        let layers = Target::layers_prefix(self.arch);
        let mut v = Vec::new();
        for p in &self.pairs {
            let stem = format!("{}{layers}{}.{}", self.key_prefix, p.layer, p.target.module(self.arch));
            for (b, t) in [(false, &p.a), (true, &p.b)] {
                let peft = format!("{stem}.lora_{}.weight", if b { 'B' } else { 'A' });
                v.push(AdapterTensor { name: crate::layout::lora_name(p.layer, p.target, b), peft, shape: t.shape.clone(), data: &t.data });
            }
        }
        let m = &self.mlm_head;
        let lorb_names = ["mlm.dense.weight", "mlm.dense.bias", "mlm.ln.gamma", "mlm.ln.beta", "mlm.bias"];
        for (((peft, _), name), t) in MlmHeadUpdate::names(self.arch).into_iter().zip(lorb_names).zip([&m.dense_weight, &m.dense_bias, &m.ln_gamma, &m.ln_beta, &m.bias]) {
            if let Some(t) = t {
                v.push(AdapterTensor { name: name.into(), peft: format!("{}{peft}", self.mlm_prefix()), shape: t.shape.clone(), data: &t.data });
            }
        }
        if let Some(h) = &self.cls_head {
            v.push(AdapterTensor { name: "cls.weight".into(), peft: "base_model.model.score.weight".into(), shape: vec![1, h.weight.len()], data: &h.weight });
            v.push(AdapterTensor { name: "cls.bias".into(), peft: "base_model.model.score.bias".into(), shape: vec![1], data: std::slice::from_ref(&h.bias) });
        }
        v
    }

    /// Names, shapes, groups and offsets of [`Adapter::tensors`].
    pub fn layout(&self) -> crate::layout::Layout {
        crate::layout::Layout::new(self.tensors().into_iter().map(|t| (t.name, t.shape)))
    }

    /// `adapter_config.json` and `adapter_model.safetensors` bytes, PEFT's names.
    pub fn to_bytes(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let bytes = |t: &[f32]| t.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> = self.tensors().into_iter().map(|t| (t.peft, t.shape, bytes(t.data))).collect();
        let e = |e: safetensors::SafeTensorError| bad(e.to_string());
        let views = owned
            .iter()
            .map(|(n, s, d)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).map_err(e)?)))
            .collect::<Result<Vec<_>>>()?;
        let st = safetensors::serialize(views, None).map_err(e)?;
        // The config as read, with the fields lorb owns brought up to date where they differ.
        let mut cj = self.config_json.clone();
        if !cj.is_object() {
            cj = Value::Object(Default::default());
        }
        cj["peft_type"] = "LORA".into();
        if cj["r"].as_u64() != Some(self.r as u64) {
            cj["r"] = self.r.into();
        }
        if cj["lora_alpha"].as_f64() != Some(self.alpha) {
            cj["lora_alpha"] = self.alpha.into();
        }
        if cj["use_rslora"].as_bool().unwrap_or(false) != self.use_rslora {
            cj["use_rslora"] = self.use_rslora.into();
        }
        let cfg = serde_json::to_vec_pretty(&cj).map_err(|e| bad(e.to_string()))?;
        Ok((cfg, st))
    }

    /// Writes the adapter folder as one unit ([`crate::output::write_dir`]).
    pub fn save_dir(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.save_dir_with(dir, &[])
    }

    /// Writes the adapter folder with other files (its `train_log.json`) as one unit
    /// ([`crate::output::write_dir`]): the folder never holds a new adapter with an old log.
    pub fn save_dir_with(&self, dir: impl AsRef<Path>, others: &[(&str, &[u8])]) -> Result<()> {
        let (cfg, st) = self.to_bytes()?;
        let mut files: Vec<(&str, &[u8])> = vec![("adapter_model.safetensors", &st), ("adapter_config.json", &cfg)];
        files.extend_from_slice(others);
        crate::output::write_dir(dir.as_ref(), &files)
    }

    /// The path in front of the MLM head's module names: the encoder prefix without its
    /// family part (`base_model.model.mlm.bert.` → `base_model.model.mlm.`).
    fn mlm_prefix(&self) -> String {
        let family = match self.arch {
            Arch::Bert => "bert.",
            Arch::Roberta => "roberta.",
            Arch::DistilBert => "distilbert.",
        };
        self.key_prefix.strip_suffix(family).unwrap_or(&self.key_prefix).to_string()
    }

    /// Trainable parameters: the LoRA pairs and the trained heads.
    pub fn parameter_count(&self) -> usize {
        self.layout().floats()
    }

    /// Targets present, as `(module name, layers)`.
    pub fn targets(&self) -> Vec<(&'static str, Vec<usize>)> {
        let mut out: Vec<(&'static str, Vec<usize>)> = Vec::new();
        for t in Target::ALL {
            let layers: Vec<usize> = self.pairs.iter().filter(|p| p.target == t).map(|p| p.layer).collect();
            if !layers.is_empty() {
                out.push((t.module(self.arch), layers));
            }
        }
        out
    }
}

/// What an adapter folder's `train_log.json` records for using the adapter: the λ, first pass
/// and depth it was tuned with, and β of the user's words' boost chosen with it on dev chapters.
/// The file's other fields are the training report.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct TrainLog {
    pub weight: Option<f64>,
    pub s1: Option<String>,
    pub depth: Option<usize>,
    /// β of the user's words' boost (`lorb personalize` on dev chapters; see
    /// [`crate::personalize::Options::lexicon_weight`]).
    #[serde(default)]
    pub lexicon_weight: Option<f64>,
    /// What the training lists looked like (older logs lack it).
    #[serde(default)]
    pub list_profile: Option<crate::rescore::ListProfile>,
}

impl TrainLog {
    /// `Ok(None)` when the folder has no train_log.json; a file that cannot be read, or whose λ
    /// is not a finite number, is an error (never a silent fallback to λ = 1).
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("train_log.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Self::from_bytes(&bytes, &path.display().to_string()).map(Some)
    }

    /// Parses a train_log.json's bytes (`what` names the file in errors).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        let log: TrainLog = serde_json::from_slice(bytes).map_err(|e| bad(format!("{what}: {e}")))?;
        if let Some(w) = log.weight.filter(|w| !w.is_finite()) {
            return Err(bad(format!("{what}: weight {w} is not a finite number")));
        }
        if let Some(b) = log.lexicon_weight.filter(|b| !(b.is_finite() && *b >= 0.0)) {
            return Err(bad(format!("{what}: lexicon_weight {b} is not a number ≥ 0")));
        }
        Ok(log)
    }
}
