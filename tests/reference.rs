//! The encoder, MLM head, CLS head and PLL scoring checked against HF transformers fixtures
//! (tests/fixtures/make_fixtures.py), on every backend.
//! Tolerances: hidden states and CLS scores ≤ 1e-4 max abs error; PLL per sentence ≤ 1e-3.
//! The checks themselves (tests/checks) also run in Chromium's WebGPU (tests/web.rs).
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;

fn check_arch(arch: &str) {
    let exp = expected(arch);
    for mut scorer in scorers(&fixture_dir(arch)) {
        block(common::checks::check_scorer(arch, &mut scorer, &exp));
    }
}

#[test]
fn bert_matches_transformers() {
    check_arch("bert");
}

#[test]
fn roberta_matches_transformers() {
    check_arch("roberta");
}

#[test]
fn distilbert_matches_transformers() {
    check_arch("distilbert");
}
