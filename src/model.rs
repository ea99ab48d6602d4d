//! Model weights read from an unmodified Hugging Face `model.safetensors`, mapped from each
//! architecture's tensor names onto one layout that both backends share.
//!
//! Linear weights keep PyTorch's `[out, in]` layout. Q, K and V are fused into one `[3H, H]`
//! projection at load time so that the backends run one matrix product for all three.

use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor { shape, data: vec![0.0; n] }
    }
    /// Rows of a 2-D tensor.
    pub fn rows(&self) -> usize {
        self.shape[0]
    }
}

/// A linear map `y = x·Wᵀ + b`, W stored `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }
    pub fn in_features(&self) -> usize {
        self.weight.shape[1]
    }
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
}

#[derive(Debug, Clone)]
pub struct Layer {
    /// Fused query, key and value projections: `[3H, H]`.
    pub qkv: Linear,
    pub attn_out: Linear,
    pub attn_ln: LayerNorm,
    pub ffn_in: Linear,
    pub ffn_out: Linear,
    pub ffn_ln: LayerNorm,
}

/// A layer's linear weights, by role: where LoRA targets live ([`crate::adapter::Target::weight`])
/// and how both backends name and find them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Qkv,
    AttnOut,
    FfnIn,
    FfnOut,
}

impl Weight {
    /// The name inside `layers.N.`, as the model lists its tensors ([`Model::tensors_mut`]).
    pub fn name(self) -> &'static str {
        match self {
            Weight::Qkv => "qkv",
            Weight::AttnOut => "attn_out",
            Weight::FfnIn => "ffn_in",
            Weight::FfnOut => "ffn_out",
        }
    }
}

impl Layer {
    pub fn linear(&self, w: Weight) -> &Linear {
        match w {
            Weight::Qkv => &self.qkv,
            Weight::AttnOut => &self.attn_out,
            Weight::FfnIn => &self.ffn_in,
            Weight::FfnOut => &self.ffn_out,
        }
    }

    pub fn linear_mut(&mut self, w: Weight) -> &mut Linear {
        match w {
            Weight::Qkv => &mut self.qkv,
            Weight::AttnOut => &mut self.attn_out,
            Weight::FfnIn => &mut self.ffn_in,
            Weight::FfnOut => &mut self.ffn_out,
        }
    }
}

pub use crate::layout::Group;

/// The masked-LM head: dense + GELU + LayerNorm, then the decoder to the vocabulary.
#[derive(Debug, Clone)]
pub struct MlmHead {
    pub dense: Linear,
    pub ln: LayerNorm,
    /// `[V, H]`; `None` when tied to the word embeddings (as the originals do).
    pub decoder: Option<Tensor>,
    pub bias: Tensor,
}

/// RescoreBERT's CLS head: `s2 = w·h_CLS + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClsHead {
    pub weight: Vec<f32>,
    pub bias: f32,
}

impl ClsHead {
    /// `w·h + b` for one final [CLS] vector, summed in f64.
    pub fn score(&self, cls: &[f32]) -> f64 {
        cls.iter().zip(&self.weight).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() + self.bias as f64
    }

    /// Reads `weight` `[1, H]` (or `[H]`) and `bias` `[1]` from a safetensors file's bytes.
    pub fn from_safetensors(bytes: &[u8], hidden: usize) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::MalformedWeights(e.to_string()))?;
        let find = |names: &[&str]| -> Result<Tensor> {
            for n in names {
                if let Ok(t) = st.tensor(n) {
                    return tensor_to_f32(n, &t);
                }
            }
            Err(Error::MissingTensor { name: names[0].into(), tried: names.join(", ") })
        };
        let w = find(&["weight", "score.weight", "classifier.weight"])?;
        let b = find(&["bias", "score.bias", "classifier.bias"])?;
        if w.data.len() != hidden || b.data.len() != 1 {
            return Err(Error::ShapeMismatch { name: "cls head".into(), expected: vec![1, hidden], got: w.shape });
        }
        Ok(ClsHead { weight: w.data, bias: b.data[0] })
    }

    pub fn load(path: impl AsRef<Path>, hidden: usize) -> Result<Self> {
        let bytes = std::fs::read(path.as_ref()).map_err(|e| Error::io(path.as_ref(), e))?;
        Self::from_safetensors(&bytes, hidden)
    }

    /// `weight` `[1, H]` and `bias` `[1]`, F32, as safetensors bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let w: Vec<u8> = self.weight.iter().flat_map(|x| x.to_le_bytes()).collect();
        let b: Vec<u8> = self.bias.to_le_bytes().to_vec();
        let bad = |e: safetensors::SafeTensorError| Error::MalformedWeights(e.to_string());
        let views = vec![
            ("weight".to_string(), safetensors::tensor::TensorView::new(Dtype::F32, vec![1, self.weight.len()], &w).map_err(bad)?),
            ("bias".to_string(), safetensors::tensor::TensorView::new(Dtype::F32, vec![1], &b).map_err(bad)?),
        ];
        safetensors::serialize(views, None).map_err(bad)
    }

    /// Writes the head atomically (a temporary file, then a rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let p = path.as_ref();
        let tmp = p.with_extension("safetensors.part");
        std::fs::write(&tmp, self.to_safetensors()?).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, p).map_err(|e| Error::io(p, e))
    }
}

/// The one walk over a model's tensors, for [`Model::tensors`] (`model_tensors!(m)`) and
/// [`Model::tensors_mut`] (`model_tensors!(m, mut)`).
macro_rules! model_tensors {
    ($m:expr $(, $mu:ident)?) => {{
        let m = $m;
        let mut v: Vec<(String, & $($mu)? Tensor)> = vec![("word_emb".into(), & $($mu)? m.word_emb), ("pos_emb".into(), & $($mu)? m.pos_emb)];
        if m.config.type_vocab_size > 0 {
            v.push(("type_emb".into(), & $($mu)? m.type_emb));
        }
        v.push(("emb_ln.gamma".into(), & $($mu)? m.emb_ln.gamma));
        v.push(("emb_ln.beta".into(), & $($mu)? m.emb_ln.beta));
        for (i, l) in (& $($mu)? m.layers).into_iter().enumerate() {
            let pair = |w: Weight, what: &str| format!("layers.{i}.{}.{what}", w.name());
            for (w, x) in [(Weight::Qkv, & $($mu)? l.qkv), (Weight::AttnOut, & $($mu)? l.attn_out)] {
                v.push((pair(w, "weight"), & $($mu)? x.weight));
                v.push((pair(w, "bias"), & $($mu)? x.bias));
            }
            v.push((format!("layers.{i}.attn_ln.gamma"), & $($mu)? l.attn_ln.gamma));
            v.push((format!("layers.{i}.attn_ln.beta"), & $($mu)? l.attn_ln.beta));
            for (w, x) in [(Weight::FfnIn, & $($mu)? l.ffn_in), (Weight::FfnOut, & $($mu)? l.ffn_out)] {
                v.push((pair(w, "weight"), & $($mu)? x.weight));
                v.push((pair(w, "bias"), & $($mu)? x.bias));
            }
            v.push((format!("layers.{i}.ffn_ln.gamma"), & $($mu)? l.ffn_ln.gamma));
            v.push((format!("layers.{i}.ffn_ln.beta"), & $($mu)? l.ffn_ln.beta));
        }
        if let Some(h) = & $($mu)? m.mlm {
            v.push(("mlm.dense.weight".into(), & $($mu)? h.dense.weight));
            v.push(("mlm.dense.bias".into(), & $($mu)? h.dense.bias));
            v.push(("mlm.ln.gamma".into(), & $($mu)? h.ln.gamma));
            v.push(("mlm.ln.beta".into(), & $($mu)? h.ln.beta));
            v.push(("mlm.bias".into(), & $($mu)? h.bias));
            if let Some(d) = & $($mu)? h.decoder {
                v.push(("mlm.decoder".into(), d));
            }
        }
        v
    }};
}

#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    /// `[V, H]`
    pub word_emb: Tensor,
    /// `[P, H]`
    pub pos_emb: Tensor,
    /// Row 0 of the token-type table (all hypotheses are single segments), or zeros.
    pub type_emb: Tensor,
    pub emb_ln: LayerNorm,
    pub layers: Vec<Layer>,
    pub mlm: Option<MlmHead>,
}

pub(crate) fn tensor_to_f32(name: &str, t: &safetensors::tensor::TensorView<'_>) -> Result<Tensor> {
    let b = t.data();
    let data: Vec<f32> = match t.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
        other => return Err(Error::UnsupportedDtype { name: name.into(), dtype: format!("{other:?}") }),
    };
    // Every tensor lorb reads holds finite numbers: a NaN or ∞ weight would only surface later,
    // as non-finite scores.
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(Error::MalformedWeights(format!("{name}: value {i} is {} (weights must be finite numbers)", data[i])));
    }
    Ok(Tensor::new(t.shape().to_vec(), data))
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal: value = m * 2^-24
            let v = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Tensor lookup with the name conventions of the three families.
struct Names<'a> {
    st: SafeTensors<'a>,
    base: String,
}

impl<'a> Names<'a> {
    fn candidates(&self, name: &str) -> Vec<String> {
        let mut v = vec![format!("{}{}", self.base, name), name.to_string()];
        // Old checkpoints call LayerNorm parameters gamma/beta.
        if name.contains("LayerNorm") || name.contains("layer_norm") {
            for (a, b) in [(".weight", ".gamma"), (".bias", ".beta")] {
                if let Some(stem) = name.strip_suffix(a) {
                    v.push(format!("{}{}{}", self.base, stem, b));
                    v.push(format!("{stem}{b}"));
                }
            }
        }
        v.dedup();
        v
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let cands = self.candidates(name);
        for n in &cands {
            if let Ok(t) = self.st.tensor(n) {
                let t = tensor_to_f32(n, &t)?;
                if t.shape != shape {
                    return Err(Error::ShapeMismatch { name: n.clone(), expected: shape.to_vec(), got: t.shape });
                }
                return Ok(t);
            }
        }
        Err(Error::MissingTensor { name: name.into(), tried: cands.join(", ") })
    }

    fn has(&self, name: &str) -> bool {
        self.candidates(name).iter().any(|n| self.st.tensor(n).is_ok())
    }

    fn linear(&self, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.get(&format!("{prefix}.weight"), &[out, inp])?,
            bias: self.get(&format!("{prefix}.bias"), &[out])?,
        })
    }

    fn ln(&self, prefix: &str, h: usize) -> Result<LayerNorm> {
        Ok(LayerNorm { gamma: self.get(&format!("{prefix}.weight"), &[h])?, beta: self.get(&format!("{prefix}.bias"), &[h])? })
    }
}

fn fuse_qkv(q: Linear, k: Linear, v: Linear) -> Linear {
    let (o, i) = (q.out_features(), q.in_features());
    let mut w = Vec::with_capacity(3 * o * i);
    let mut b = Vec::with_capacity(3 * o);
    for l in [&q, &k, &v] {
        w.extend_from_slice(&l.weight.data);
        b.extend_from_slice(&l.bias.data);
    }
    Linear { weight: Tensor::new(vec![3 * o, i], w), bias: Tensor::new(vec![3 * o], b) }
}

impl Model {
    /// Loads `config.json` and `model.safetensors` from a model folder.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| Error::io(dir.join(name), e));
        Self::from_bytes(&read("config.json")?, &read("model.safetensors")?)
    }

    ///
    /// Long on purpose: each tensor is found under its architecture's name and checked for its
    /// shape, one after another, each with its own error.
    pub fn from_bytes(config_json: &[u8], safetensors: &[u8]) -> Result<Self> {
        let config = ModelConfig::from_json(config_json)?;
        let st = SafeTensors::deserialize(safetensors).map_err(|e| Error::MalformedWeights(e.to_string()))?;
        let (h, v, p, im) = (config.hidden, config.vocab_size, config.max_position_embeddings, config.intermediate);
        let family = match config.arch {
            Arch::Bert => "bert.",
            Arch::Roberta => "roberta.",
            Arch::DistilBert => "distilbert.",
        };
        let base = if st.tensor(&format!("{family}embeddings.word_embeddings.weight")).is_ok() { family } else { "" };
        let n = Names { st, base: base.to_string() };

        let word_emb = n.get("embeddings.word_embeddings.weight", &[v, h])?;
        let pos_emb = n.get("embeddings.position_embeddings.weight", &[p, h])?;
        let type_emb = if config.type_vocab_size > 0 {
            let t = n.get("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?;
            Tensor::new(vec![h], t.data[..h].to_vec())
        } else {
            Tensor::zeros(vec![h])
        };
        if config.type_vocab_size == 0 && n.has("embeddings.token_type_embeddings.weight") {
            return Err(Error::Config("type_vocab_size is 0 but the weights have a token-type table".into()));
        }
        let emb_ln = n.ln("embeddings.LayerNorm", h)?;
        // A layer past the config's count in the weights: the config would silently drop it.
        let query_of_layer = |i: usize| match config.arch {
            Arch::DistilBert => format!("transformer.layer.{i}.attention.q_lin.weight"),
            _ => format!("encoder.layer.{i}.attention.self.query.weight"),
        };
        if n.has(&query_of_layer(config.layers)) {
            return Err(Error::Config(format!("num_hidden_layers is {} but the weights have more layers", config.layers)));
        }
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let layer = match config.arch {
                Arch::DistilBert => {
                    let pre = format!("transformer.layer.{i}");
                    Layer {
                        qkv: fuse_qkv(
                            n.linear(&format!("{pre}.attention.q_lin"), h, h)?,
                            n.linear(&format!("{pre}.attention.k_lin"), h, h)?,
                            n.linear(&format!("{pre}.attention.v_lin"), h, h)?,
                        ),
                        attn_out: n.linear(&format!("{pre}.attention.out_lin"), h, h)?,
                        attn_ln: n.ln(&format!("{pre}.sa_layer_norm"), h)?,
                        ffn_in: n.linear(&format!("{pre}.ffn.lin1"), im, h)?,
                        ffn_out: n.linear(&format!("{pre}.ffn.lin2"), h, im)?,
                        ffn_ln: n.ln(&format!("{pre}.output_layer_norm"), h)?,
                    }
                }
                _ => {
                    let pre = format!("encoder.layer.{i}");
                    Layer {
                        qkv: fuse_qkv(
                            n.linear(&format!("{pre}.attention.self.query"), h, h)?,
                            n.linear(&format!("{pre}.attention.self.key"), h, h)?,
                            n.linear(&format!("{pre}.attention.self.value"), h, h)?,
                        ),
                        attn_out: n.linear(&format!("{pre}.attention.output.dense"), h, h)?,
                        attn_ln: n.ln(&format!("{pre}.attention.output.LayerNorm"), h)?,
                        ffn_in: n.linear(&format!("{pre}.intermediate.dense"), im, h)?,
                        ffn_out: n.linear(&format!("{pre}.output.dense"), h, im)?,
                        ffn_ln: n.ln(&format!("{pre}.output.LayerNorm"), h)?,
                    }
                }
            };
            layers.push(layer);
        }

        // Masked-LM heads, absent in encoder-only checkpoints.
        let (dense, ln, dec, bias) = match config.arch {
            Arch::Bert => (
                "cls.predictions.transform.dense",
                "cls.predictions.transform.LayerNorm",
                "cls.predictions.decoder.weight",
                "cls.predictions.bias",
            ),
            Arch::Roberta => ("lm_head.dense", "lm_head.layer_norm", "lm_head.decoder.weight", "lm_head.bias"),
            Arch::DistilBert => ("vocab_transform", "vocab_layer_norm", "vocab_projector.weight", "vocab_projector.bias"),
        };
        let mlm = if n.st.tensor(&format!("{dense}.weight")).is_ok() {
            let decoder = if n.st.tensor(dec).is_ok() {
                let d = n.get(dec, &[v, h])?;
                // A stored copy equal to the embeddings is the tied weight: keep one.
                if d.data == word_emb.data { None } else { Some(d) }
            } else {
                None
            };
            let bias_name = if n.st.tensor(bias).is_ok() { bias.to_string() } else { dec.replace(".weight", ".bias") };
            Some(MlmHead {
                dense: n.linear(dense, h, h)?,
                ln: n.ln(ln, h)?,
                decoder,
                bias: n.get(&bias_name, &[v])?,
            })
        } else {
            None
        };
        Ok(Model { config, word_emb, pos_emb, type_emb, emb_ln, layers, mlm })
    }

    /// Where a LoRA target's rows lie in its weight's data.
    fn lora_range(&self, target: crate::adapter::Target) -> std::ops::Range<usize> {
        let (out, inp) = target.shape(&self.config);
        let off = target.row_offset(&self.config);
        off * inp..(off + out) * inp
    }

    /// The rows of the weight that a LoRA target addresses.
    pub fn lora_block(&self, layer: usize, target: crate::adapter::Target) -> &[f32] {
        &self.layers[layer].linear(target.weight()).weight.data[self.lora_range(target)]
    }

    /// The same rows, writable.
    pub fn lora_block_mut(&mut self, layer: usize, target: crate::adapter::Target) -> &mut [f32] {
        let range = self.lora_range(target);
        &mut self.layers[layer].linear_mut(target.weight()).weight.data[range]
    }

    /// Adds `sign · s·B·A` of every pair into the weights (sign −1 removes a merged adapter).
    pub fn merge_lora(&mut self, adapter: &crate::adapter::Adapter, sign: f64) {
        let scale = sign * adapter.scale();
        for p in &adapter.pairs {
            let d = p.delta(scale);
            for (x, dx) in self.lora_block_mut(p.layer, p.target).iter_mut().zip(&d) {
                *x += dx;
            }
        }
    }

    /// Gives an encoder-only model (all-MiniLM-L6-v2 ships none) the MLM head an adapter trained
    /// for it: the adapter's transform and LayerNorm, the decoder tied to the word embeddings and
    /// its output bias (zero when it has none), as `lorb train --objective mlm` built it. Returns
    /// whether a head was added: not when the model has one or the adapter lacks a full transform.
    pub fn add_mlm_head_from(&mut self, a: &crate::adapter::Adapter) -> bool {
        let u = &a.mlm_head;
        let (Some(w), Some(b), Some(g), Some(beta)) = (&u.dense_weight, &u.dense_bias, &u.ln_gamma, &u.ln_beta) else {
            return false;
        };
        if self.mlm.is_some() {
            return false;
        }
        self.mlm = Some(MlmHead {
            dense: Linear { weight: w.clone(), bias: b.clone() },
            ln: LayerNorm { gamma: g.clone(), beta: beta.clone() },
            decoder: None,
            bias: u.bias.clone().unwrap_or_else(|| Tensor::zeros(vec![self.config.vocab_size])),
        });
        true
    }

    /// The decoder weight of the MLM head, `[V, H]` (the word embeddings when tied).
    pub fn decoder_weight(&self) -> Option<&Tensor> {
        self.mlm.as_ref().map(|m| m.decoder.as_ref().unwrap_or(&self.word_emb))
    }

    /// Every tensor by a stable name (`word_emb`, `layers.3.qkv.weight`, `mlm.dense.bias`, …), in
    /// a fixed order: what full fine-tuning trains and what gradient fixtures are keyed by.
    /// DistilBERT's absent token-type row is left out.
    pub fn tensors(&self) -> Vec<(String, &Tensor)> {
        model_tensors!(self)
    }

    /// [`Model::tensors`], to write.
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        model_tensors!(self, mut)
    }

    /// Names, shapes, groups and offsets of [`Model::tensors`].
    pub fn layout(&self) -> crate::layout::Layout {
        crate::layout::Layout::new(self.tensors().into_iter().map(|(n, t)| (n, t.shape.clone())))
    }

    /// The encoder's parameters (embeddings and layers; no MLM head).
    pub fn parameter_count(&self) -> usize {
        self.layout().only(|g| g == Group::Encoder).floats()
    }
}
