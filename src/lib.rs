//! lorb: second-pass rescoring of ASR n-best lists with BERT-family models, on the GPU through
//! WGSL compute shaders (wgpu) or on the CPU, natively and in WebAssembly.
//!
//! Follow one hypothesis: [`nbest`] reads it, [`tokenize`] turns it into ids, [`batch`] pads a
//! list into a batch, [`backend`] runs the encoder ([`gpu`] or [`cpu`]), [`score`] turns outputs
//! into s2, [`rescore`] combines s1 + λ·s2, re-ranks and measures WER ([`wer`]).

pub mod adapter;
pub mod backend;
pub mod batch;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod config;
pub mod cpu;
pub mod error;
pub mod gpu;
pub mod layout;
pub mod lexicon;
pub mod model;
pub mod nbest;
pub mod output;
pub mod personalize;
pub mod rescore;
pub mod score;
pub mod tokenize;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
pub mod wer;

pub use adapter::Adapter;
pub use backend::{Backend, BackendKind};
pub use batch::{Batch, Slot};
pub use config::{Arch, ModelConfig};
pub use error::{Error, ErrorKind, Result};
pub use model::{ClsHead, Model};
pub use nbest::{FirstPass, Hypothesis, NBest};
pub use score::{Method, Scorer};
pub use tokenize::{LongPolicy, TextEncoder};
