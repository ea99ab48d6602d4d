//! Helpers for `lorb bench`: speed does not depend on head values, so a model without a CLS or
//! MLM head is benchmarked with random ones of the right shape (reported as such).

use crate::model::{ClsHead, Layer, LayerNorm, Linear, MlmHead, Model, Tensor};
use crate::Scorer;

fn pseudo_random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

/// Adds random heads where the model has none; returns which ones were made up.
pub fn ensure_heads(scorer: &mut Scorer) -> Vec<&'static str> {
    let mut made = Vec::new();
    let h = scorer.model().config.hidden;
    let v = scorer.model().config.vocab_size;
    if scorer.cls_head.is_none() {
        scorer.cls_head = Some(ClsHead { weight: pseudo_random(h, 1, 0.05), bias: 0.0 });
        made.push("cls");
    }
    if scorer.model().mlm.is_none() {
        let mut m: Model = scorer.model().clone();
        m.mlm = Some(MlmHead {
            dense: Linear { weight: Tensor::new(vec![h, h], pseudo_random(h * h, 2, 0.05)), bias: Tensor::zeros(vec![h]) },
            ln: LayerNorm { gamma: Tensor::new(vec![h], vec![1.0; h]), beta: Tensor::zeros(vec![h]) },
            decoder: None,
            bias: Tensor::zeros(vec![v]),
        });
        let kind = if scorer.backend.is_gpu() { crate::BackendKind::Gpu } else { crate::BackendKind::Cpu };
        if let Ok(b) = pollster_block(crate::Backend::new(std::sync::Arc::new(m), kind)) {
            scorer.backend = b;
            made.push("mlm");
        }
    }
    made
}

fn pollster_block<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// A BERT-base-shaped model (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30522, 512
/// positions) with random weights, for `lorb bench --shape bert-base`: speed against PyTorch's
/// `BertModel(BertConfig())` does not depend on the values.
pub fn bert_base() -> Model {
    let config = crate::ModelConfig::from_json(
        br#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0, "hidden_act": "gelu"}"#,
    )
    .expect("BERT-base's config is valid");
    let (h, im) = (config.hidden, config.intermediate);
    let mut seed = 10;
    let mut rand = |shape: Vec<usize>| {
        seed += 1;
        let n = shape.iter().product();
        Tensor::new(shape, pseudo_random(n, seed, 0.04))
    };
    let mut linear = |o: usize, i: usize| Linear { weight: rand(vec![o, i]), bias: Tensor::zeros(vec![o]) };
    let ln = || LayerNorm { gamma: Tensor::new(vec![h], vec![1.0; h]), beta: Tensor::zeros(vec![h]) };
    let layers = (0..config.layers).map(|_| Layer { qkv: linear(3 * h, h), attn_out: linear(h, h), attn_ln: ln(), ffn_in: linear(im, h), ffn_out: linear(h, im), ffn_ln: ln() }).collect();
    Model { word_emb: rand(vec![config.vocab_size, h]), pos_emb: rand(vec![config.max_position_embeddings, h]), type_emb: rand(vec![h]), emb_ln: ln(), layers, mlm: None, config }
}
