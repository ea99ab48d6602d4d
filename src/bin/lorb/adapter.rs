//! `lorb adapter info`: an adapter's shape and trainable parameters.

use crate::common::{model_dir, print_json, ModelArgs};
use clap::Subcommand;
use lorb::{BackendKind, Error, Method, Result};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum AdapterCmd {
    /// Rank, α, targets and trainable parameters (count and fraction of the base model)
    Info {
        /// Adapter folder (adapter_config.json, adapter_model.safetensors)
        dir: PathBuf,
        /// The base model (default: the default model)
        #[arg(long, env = "LORB_MODEL")]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn adapter_info(dir: &Path, model: Option<PathBuf>, as_json: bool) -> Result<()> {
    let m = ModelArgs { model, head: None, adapter: None, backend: BackendKind::Cpu, dtype: lorb::gpu::Dtype::F32, method: Method::Cls, truncate: false, max_hyps: lorb::score::DEFAULT_MAX_HYPS };
    let mdir = model_dir(&m);
    let bytes = std::fs::read(mdir.join("config.json")).map_err(|e| Error::Io { path: mdir.join("config.json").display().to_string(), source: e })?;
    let config = lorb::ModelConfig::from_json(&bytes)?;
    let adapter = lorb::Adapter::load_dir(dir, &config)?;
    let base = lorb::Model::load_dir(&mdir)?.parameter_count();
    let layout = adapter.layout();
    let n = layout.floats();
    let by_group = layout.floats_by_group();
    let lora: usize = by_group.iter().filter(|(g, _)| *g == lorb::layout::Group::Lora).map(|(_, n)| n).sum();
    let targets: serde_json::Map<String, serde_json::Value> = adapter.targets().into_iter().map(|(t, l)| (t.to_string(), json!(l))).collect();
    let v = json!({
        "adapter": dir.display().to_string(),
        "base_model": mdir.display().to_string(),
        "r": adapter.r,
        "lora_alpha": adapter.alpha,
        "use_rslora": adapter.use_rslora,
        "scale": adapter.scale(),
        "targets": targets,
        "pairs": adapter.pairs.len(),
        "cls_head": adapter.cls_head.is_some(),
        "lora_parameters": lora,
        "trainable_parameters": n,
        "parameters_by_group": by_group.iter().map(|(g, n)| (serde_json::to_value(g).unwrap_or_default().as_str().unwrap_or_default().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "base_parameters": base,
        "trainable_percent": 100.0 * n as f64 / base as f64,
        "lora_percent": 100.0 * lora as f64 / base as f64,
    });
    print_json(&v, as_json);
    Ok(())
}
