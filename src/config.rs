//! `config.json` of a Hugging Face BERT-family model, reduced to what the encoder needs.

use crate::error::{Error, Result};
use serde_json::Value;

/// The encoder families lorb reads. They share one computation and differ in tensor names,
/// position ids and token types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// BERT and everything saved as `model_type: "bert"` (MiniLM, many sentence encoders).
    Bert,
    /// RoBERTa: position ids start at `pad_token_id + 1`, one token type.
    Roberta,
    /// DistilBERT: its own tensor names, no token types, no pooler.
    DistilBert,
}

/// Upper bounds on a config's sizes (BERT-large has hidden 1024, 24 layers; XLM-R a vocabulary
/// of 250,002): anything larger is a broken file, refused before it sizes an allocation.
pub const MAX_HIDDEN: usize = 8192;
pub const MAX_LAYERS: usize = 256;
pub const MAX_VOCAB: usize = 1 << 22;
pub const MAX_POSITIONS: usize = 1 << 16;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// Rows of the position-embedding table.
    pub max_position_embeddings: usize,
    /// Position id of the first token (RoBERTa: `pad_token_id + 1`, others 0).
    pub position_offset: usize,
    /// Rows of the token-type table (0 when the model has none).
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub pad_token_id: u32,
}

impl ModelConfig {
    /// Reads and checks `config.json`. Long on purpose: one field after another, each checked
    /// with its own error, for every architecture's spelling.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::Config(e.to_string()))?;
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Config("no \"model_type\" field".into()))?;
        let arch = match model_type {
            "bert" => Arch::Bert,
            "roberta" | "xlm-roberta" | "camembert" => Arch::Roberta,
            "distilbert" => Arch::DistilBert,
            other => return Err(Error::UnknownArchitecture(other.to_string())),
        };
        let num = |keys: &[&str]| -> Result<usize> {
            for k in keys {
                if let Some(x) = v.get(*k) {
                    return x
                        .as_u64()
                        .filter(|&n| n > 0)
                        .map(|n| n as usize)
                        .ok_or_else(|| Error::Config(format!("\"{k}\" must be a positive integer")));
                }
            }
            Err(Error::Config(format!("missing \"{}\"", keys[0])))
        };
        let (hidden, layers, heads, intermediate, act_key) = match arch {
            Arch::DistilBert => (num(&["dim"])?, num(&["n_layers"])?, num(&["n_heads"])?, num(&["hidden_dim"])?, "activation"),
            _ => (
                num(&["hidden_size"])?,
                num(&["num_hidden_layers"])?,
                num(&["num_attention_heads"])?,
                num(&["intermediate_size"])?,
                "hidden_act",
            ),
        };
        let act = v.get(act_key).and_then(Value::as_str).unwrap_or("gelu");
        if act != "gelu" {
            return Err(Error::Unsupported(format!("activation {act:?} (lorb implements exact erf GELU, \"gelu\")")));
        }
        if arch == Arch::DistilBert && v.get("sinusoidal_pos_embds").and_then(Value::as_bool) == Some(true) {
            // The table is still stored in the checkpoint, so it loads like a learned one.
            log::info!("sinusoidal_pos_embds: using the stored position table");
        }
        if let Some(p) = v.get("position_embedding_type").and_then(Value::as_str) {
            if p != "absolute" {
                return Err(Error::Unsupported(format!("position_embedding_type {p:?}")));
            }
        }
        if hidden % heads != 0 {
            return Err(Error::Config(format!("hidden size {hidden} is not divisible by {heads} heads")));
        }
        let pad_token_id = v.get("pad_token_id").and_then(Value::as_u64).unwrap_or(match arch {
            Arch::Roberta => 1,
            _ => 0,
        }) as u32;
        if v.get("pad_token_id").and_then(Value::as_u64).is_some_and(|p| p > u32::MAX as u64) {
            return Err(Error::Config("\"pad_token_id\" is out of range".into()));
        }
        let max_position_embeddings = num(&["max_position_embeddings"])?;
        let position_offset = if arch == Arch::Roberta { pad_token_id as usize + 1 } else { 0 };
        if position_offset >= max_position_embeddings {
            return Err(Error::Config("pad_token_id leaves no positions".into()));
        }
        let type_vocab_size = match arch {
            Arch::DistilBert => 0,
            _ => match v.get("type_vocab_size") {
                None => 2,
                Some(x) => x.as_u64().ok_or_else(|| Error::Config("\"type_vocab_size\" must be a non-negative integer".into()))? as usize,
            },
        };
        let layer_norm_eps = match arch {
            Arch::DistilBert => 1e-12,
            _ => match v.get("layer_norm_eps") {
                None => 1e-12,
                Some(x) => x.as_f64().ok_or_else(|| Error::Config("\"layer_norm_eps\" must be a number".into()))? as f32,
            },
        };
        // A normalisation with eps ≤ 0 divides by zero on a constant row; ≥ 1 is no LayerNorm.
        if !(layer_norm_eps > 0.0 && layer_norm_eps < 1.0) {
            return Err(Error::Config(format!("layer_norm_eps {layer_norm_eps} is outside (0, 1)")));
        }
        let vocab_size = num(&["vocab_size"])?;
        // Sizes beyond any BERT-family model are refused before anything is allocated from them.
        for (what, n, max) in [
            ("hidden size", hidden, MAX_HIDDEN),
            ("layer count", layers, MAX_LAYERS),
            ("attention head count", heads, MAX_HIDDEN),
            ("intermediate size", intermediate, 8 * MAX_HIDDEN),
            ("vocabulary size", vocab_size, MAX_VOCAB),
            ("max_position_embeddings", max_position_embeddings, MAX_POSITIONS),
            ("type_vocab_size", type_vocab_size, MAX_POSITIONS),
        ] {
            if n > max {
                return Err(Error::Config(format!("{what} {n} is more than lorb supports ({max})")));
            }
        }
        Ok(ModelConfig {
            arch,
            vocab_size,
            hidden,
            layers,
            heads,
            intermediate,
            max_position_embeddings,
            position_offset,
            type_vocab_size,
            layer_norm_eps,
            pad_token_id,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Longest token sequence (special tokens included) the position table can address.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset
    }
}
