//! `lorb score`: s2 (or the final [CLS] vectors) of single texts.

use crate::common::{load, ModelArgs};
use clap::Args;
use lorb::{Error, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Texts to score
    texts: Vec<String>,
    /// Read texts from a file, one per line
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print the final [CLS] vectors instead of scores
    #[arg(long)]
    vectors: bool,
    #[arg(long)]
    json: bool,
}

pub fn score(a: ScoreArgs) -> Result<()> {
    let mut texts = a.texts.clone();
    if let Some(f) = &a.file {
        let s = std::fs::read(f).map_err(|e| Error::Io { path: f.display().to_string(), source: e })?;
        let s = String::from_utf8(s).map_err(|_| Error::Input(format!("{} is not valid UTF-8", f.display())))?;
        texts.extend(s.lines().map(str::to_string));
    }
    if texts.is_empty() {
        return Err(Error::Input("no texts to score".into()));
    }
    let mut scorer = load(&a.m)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    if a.vectors {
        let v = pollster::block_on(scorer.cls_vectors(&refs))?;
        for (t, v) in texts.iter().zip(v) {
            if a.json {
                println!("{}", json!({"text": t, "cls": v}));
            } else {
                println!("{t}\t{}", v.iter().map(|x| format!("{x:.6}")).collect::<Vec<_>>().join(" "));
            }
        }
    } else {
        let s = pollster::block_on(scorer.score_texts(&refs, a.m.method))?;
        for (t, s) in texts.iter().zip(s) {
            if a.json {
                println!("{}", json!({"text": t, "score": s}));
            } else {
                println!("{s:.6}\t{t}");
            }
        }
    }
    Ok(())
}
