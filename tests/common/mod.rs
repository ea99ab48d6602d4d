//! Shared test helpers: fixture loading and the list of backends every suite runs against.
#![allow(dead_code)]

use lorb::{Backend, BackendKind, ClsHead, Model, Scorer, TextEncoder};

/// The fixture checks, shared with the browser suite (tests/web.rs).
#[path = "../checks/mod.rs"]
pub mod checks;
#[allow(unused_imports)]
pub use checks::{floats, max_abs_diff};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_dir(arch: &str) -> PathBuf {
    root().join("tests/fixtures").join(arch)
}

pub fn expected(arch: &str) -> Value {
    let p = fixture_dir(arch).join("expected.json");
    serde_json::from_slice(&std::fs::read(&p).expect("fixture expected.json")).unwrap()
}

pub fn block<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// The backends to test: always the CPU; the GPU when an adapter exists. With
/// `LORB_REQUIRE_GPU=1` (set by CI, which installs lavapipe) a missing GPU fails the test
/// instead of being skipped.
pub fn backends(model: Arc<Model>) -> Vec<Backend> {
    let mut v = vec![block(Backend::new(model.clone(), BackendKind::Cpu)).unwrap()];
    match block(Backend::new(model, BackendKind::Gpu)) {
        Ok(g) => v.push(g),
        Err(e) => {
            if std::env::var("LORB_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("LORB_REQUIRE_GPU=1 but no GPU backend: {e}");
            }
            eprintln!("note: GPU backend unavailable ({e}); testing the CPU backend only");
        }
    }
    v
}

/// One scorer per backend for a fixture model folder.
pub fn scorers(dir: &std::path::Path) -> Vec<Scorer> {
    let model = Arc::new(Model::load_dir(dir).unwrap());
    let head_path = dir.join("cls_head.safetensors");
    let head = head_path.exists().then(|| ClsHead::load(&head_path, model.config.hidden).unwrap());
    backends(model.clone())
        .into_iter()
        .map(|b| {
            let enc = TextEncoder::load(dir.join("tokenizer.json"), &model.config).unwrap();
            Scorer::new(enc, b, head.clone())
        })
        .collect()
}


