//! Helpers for `lorb bench`: speed does not depend on head values, so a model without a CLS or
//! MLM head is benchmarked with random ones of the right shape (reported as such).

use crate::model::{ClsHead, LayerNorm, Linear, MlmHead, Model, Tensor};
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
