//! GPU backend placeholder (filled in next).
use crate::batch::{Batch, Slot};
use crate::error::{Error, Result};
use crate::model::{ClsHead, Model};
use std::sync::Arc;
pub struct GpuBackend { model: Arc<Model> }
impl GpuBackend {
    pub async fn new(_model: Arc<Model>) -> Result<Self> { Err(Error::Gpu("not yet".into())) }
    pub fn model(&self) -> &Model { &self.model }
    pub fn adapter_name(&self) -> String { String::new() }
    pub async fn hidden_states(&mut self, _b: &Batch) -> Result<Vec<f32>> { todo!() }
    pub async fn cls_vectors(&mut self, _b: &Batch) -> Result<Vec<f32>> { todo!() }
    pub async fn cls_scores(&mut self, _b: &Batch, _h: &ClsHead) -> Result<Vec<f32>> { todo!() }
    pub async fn masked_logprobs(&mut self, _b: &Batch, _s: &[Slot], _full: bool) -> Result<Vec<f32>> { todo!() }
}
