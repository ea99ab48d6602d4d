//! The one description of trainable state (llm.c's parameter sizes, as a value): every tensor by
//! name, shape, group and offset in one flat vector of floats.
//!
//! - [`crate::Model::layout`]: the encoder and its MLM head, in the order of
//!   [`crate::Model::tensors`]. Its encoder part is full fine-tuning's layout: the GPU keeps
//!   gradients and AdamW moments at these offsets ([`crate::gpu::GpuBackend::enable_full_grads`]).
//! - [`crate::Adapter::layout`]: the LoRA pairs and trained heads; `adapter info` and
//!   the parameter count read it, and the PEFT file is written from the same walk.
//! - `Trainer::layout`: what one run trains; AdamW's moments and checkpoints are indexed by it.
//!
//! Names are lorb's stable ones (what gradient fixtures and checkpoints are keyed by):
//! `word_emb`, `layers.3.qkv.weight`, `layers.1.query.lora_A`, `cls.weight`, `mlm.dense.bias`.
//! [`Group::of`] is the one place a name is sorted.

use crate::adapter::Target;

/// What a named tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Embeddings and layers (trained only in full fine-tuning).
    Encoder,
    Lora,
    ClsHead,
    /// The MLM head's transform: dense and LayerNorm (an adapter may train it).
    MlmTransform,
    /// The MLM head's output bias and untied decoder (trained only in full fine-tuning).
    MlmOutput,
}

impl Group {
    pub fn of(name: &str) -> Group {
        if name.starts_with("cls.") {
            Group::ClsHead
        } else if name == "mlm.bias" || name == "mlm.decoder" {
            Group::MlmOutput
        } else if name.starts_with("mlm.") {
            Group::MlmTransform
        } else if name.ends_with(".lora_A") || name.ends_with(".lora_B") {
            Group::Lora
        } else {
            Group::Encoder
        }
    }

    /// A head's tensor (CLS or MLM), which may train at its own learning rate.
    pub fn is_head(self) -> bool {
        matches!(self, Group::ClsHead | Group::MlmTransform | Group::MlmOutput)
    }
}

/// The name of one half of a LoRA pair: `layers.L.TARGET.lora_A` (`b`: `lora_B`).
pub fn lora_name(layer: usize, target: Target, b: bool) -> String {
    format!("layers.{layer}.{}.lora_{}", target.name(), if b { 'B' } else { 'A' })
}

/// One tensor of a [`Layout`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub group: Group,
    /// Where its floats start in the layout's flat vector.
    pub offset: usize,
}

impl Param {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its floats in the layout's flat vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Tensors in a fixed order, packed one after another.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Layout {
    params: Vec<Param>,
    floats: usize,
}

impl Layout {
    /// Packs `(name, shape)` in the order given; each name's group is [`Group::of`] it.
    pub fn new(tensors: impl IntoIterator<Item = (String, Vec<usize>)>) -> Layout {
        let mut l = Layout::default();
        for (name, shape) in tensors {
            let p = Param { group: Group::of(&name), name, shape, offset: l.floats };
            l.floats += p.len();
            l.params.push(p);
        }
        l
    }

    /// The tensors of the groups `keep` accepts, packed anew in the same order.
    pub fn only(&self, keep: impl Fn(Group) -> bool) -> Layout {
        Layout::new(self.params.iter().filter(|p| keep(p.group)).map(|p| (p.name.clone(), p.shape.clone())))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.params.iter()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Number of floats: the parameter count.
    pub fn floats(&self) -> usize {
        self.floats
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Floats per group, in the order groups first appear.
    pub fn floats_by_group(&self) -> Vec<(Group, usize)> {
        let mut out: Vec<(Group, usize)> = Vec::new();
        for p in &self.params {
            match out.iter_mut().find(|(g, _)| *g == p.group) {
                Some((_, n)) => *n += p.len(),
                None => out.push((p.group, p.len())),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_sort_into_groups() {
        for (name, g) in [
            ("word_emb", Group::Encoder),
            ("layers.3.qkv.weight", Group::Encoder),
            ("layers.0.ffn_ln.gamma", Group::Encoder),
            ("layers.1.query.lora_A", Group::Lora),
            ("layers.1.ffn_out.lora_B", Group::Lora),
            ("cls.weight", Group::ClsHead),
            ("cls.bias", Group::ClsHead),
            ("mlm.dense.weight", Group::MlmTransform),
            ("mlm.ln.beta", Group::MlmTransform),
            ("mlm.bias", Group::MlmOutput),
            ("mlm.decoder", Group::MlmOutput),
        ] {
            assert_eq!(Group::of(name), g, "{name}");
        }
        assert_eq!(Group::of(&lora_name(2, Target::Value, true)), Group::Lora);
        assert_eq!(lora_name(2, Target::Value, false), "layers.2.value.lora_A");
    }

    #[test]
    fn tensors_pack_one_after_another_and_a_subset_packs_anew() {
        let l = Layout::new([("word_emb".to_string(), vec![5, 2]), ("cls.bias".into(), vec![1]), ("layers.0.qkv.bias".into(), vec![6])]);
        let offsets: Vec<usize> = l.iter().map(|p| p.offset).collect();
        assert_eq!((offsets, l.floats(), l.len()), (vec![0, 10, 11], 17, 3));
        assert_eq!(l.get("layers.0.qkv.bias").map(|p| p.range()), Some(11..17));
        let enc = l.only(|g| g == Group::Encoder);
        assert_eq!(enc.iter().map(|p| (p.name.as_str(), p.offset)).collect::<Vec<_>>(), vec![("word_emb", 0), ("layers.0.qkv.bias", 10)]);
        assert_eq!(l.floats_by_group(), vec![(Group::Encoder, 16), (Group::ClsHead, 1)]);
    }
}
