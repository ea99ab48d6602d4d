//! `lorb profile`: what n-best files look like to an adapter tuned on them.

use crate::common::read_lists;
use clap::Args;
use lorb::{Error, FirstPass, Result};
use std::path::PathBuf;

#[derive(Args)]
pub struct ProfileArgs {
    /// N-best files (their lists are pooled)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// First-pass score expression
    #[arg(long, default_value = "score")]
    pub s1: FirstPass,
    /// Keep the top K hypotheses of each list
    #[arg(long)]
    pub depth: Option<usize>,
}

pub fn profile(files: &[PathBuf], s1: &FirstPass, depth: Option<usize>) -> Result<()> {
    if depth == Some(0) {
        return Err(Error::Input("--depth must be at least 1".into()));
    }
    let mut lists = Vec::new();
    for f in files {
        lists.extend(read_lists(f, None)?);
    }
    if lists.is_empty() {
        return Err(Error::Input("no n-best lists".into()));
    }
    for nb in &mut lists {
        nb.hyps.truncate(depth.unwrap_or(usize::MAX));
    }
    println!("{}", serde_json::to_string(&lorb::rescore::ListProfile::of(&lists, s1)?).map_err(|e| Error::Input(e.to_string()))?);
    Ok(())
}
