//! The CPU backend's inference shortcuts against its own plain forward: the last layer computed
//! only at the returned rows ([CLS], masked slots), and long batches cut into chunks that run in
//! parallel. Both must give what the full padded forward gives (tolerance 2e-5: the same maths,
//! with matrix products of other heights, so other summation blockings).
//! The plain forward itself is checked against transformers in tests/reference.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use lorb::cpu::encoder;
use lorb::{Backend, Batch, Slot};

const TOL: f32 = 2e-5;

/// Many sequences of varied lengths: more real tokens than one inference chunk holds.
fn long_batch(scorer: &lorb::Scorer) -> Batch {
    let words = ["the", "quick", "brown", "fox", "jumped", "over", "lazy", "dog", "mister", "quilter", "apostle", "middle", "classes"];
    let texts: Vec<String> = (0..160).map(|i| (0..1 + (i * 7) % 12).map(|j| words[(i + j * 5) % words.len()]).collect::<Vec<_>>().join(" ")).collect();
    let ids: Vec<Vec<u32>> = texts.iter().enumerate().map(|(i, t)| scorer.encoder.encode(i, t).unwrap().ids).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(|s| s.as_slice()).collect();
    Batch::pad(&seqs, scorer.encoder.pad_id()).unwrap()
}

#[test]
fn pruned_and_chunked_inference_equals_the_full_forward() {
    for arch in ["bert", "roberta", "distilbert"] {
        let mut scorer = block(lorb::Scorer::load_dir(fixture_dir(arch), lorb::BackendKind::Cpu)).unwrap();
        let batch = long_batch(&scorer);
        let tokens: u32 = batch.lens.iter().sum();
        assert!(tokens as usize > 2 * 512, "{arch}: the batch must span several chunks ({tokens} tokens)");
        let model = scorer.model().clone();
        let (h, v, seq) = (model.config.hidden, model.config.vocab_size, batch.seq);
        let full = encoder::forward(&model, None, &batch, None);

        // [CLS] rows.
        let cls = block(scorer.backend.cls_vectors(&batch)).unwrap();
        let want: Vec<f32> = (0..batch.rows()).flat_map(|r| full[r * seq * h..][..h].to_vec()).collect();
        let d = max_abs_diff(&cls, &want);
        assert!(d < TOL, "{arch}: [CLS] rows differ by {d}");

        // Masked slots in no particular order, one row twice, several per row.
        let mut slots = Vec::new();
        for r in (0..batch.rows()).rev() {
            let len = batch.lens[r];
            for pos in [len - 1, len / 2, 0] {
                slots.push(Slot { row: r as u32, pos, target: (r as u32 * 31 + pos * 7) % v as u32 });
            }
        }
        slots.push(slots[5]);
        let mut want_lp = Vec::new();
        encoder::mlm_rows(&model, &full, seq, &slots, |i, row| want_lp.push((i, row[slots[i].target as usize])));
        let lp = block(scorer.backend.masked_logprobs(&batch, &slots)).unwrap();
        for (i, w) in want_lp {
            assert!((lp[i] - w).abs() < 1e-4, "{arch}: slot {i} log-prob {} vs {w}", lp[i]);
        }
        let rows = block(scorer.backend.logprob_rows(&batch, &slots[..4])).unwrap();
        let mut want_rows = Vec::new();
        encoder::mlm_rows(&model, &full, seq, &slots[..4], |_, row| want_rows.extend_from_slice(row));
        let d = max_abs_diff(&rows, &want_rows);
        assert!(d < 1e-4, "{arch}: log-softmax rows differ by {d}");

        // Whole hidden states, chunk by chunk.
        let hidden = block(scorer.backend.hidden_states(&batch)).unwrap();
        let d = max_abs_diff(&hidden, &full);
        assert!(d < TOL, "{arch}: hidden states differ by {d}");
        assert!(matches!(scorer.backend, Backend::Cpu(_)));
    }
}
