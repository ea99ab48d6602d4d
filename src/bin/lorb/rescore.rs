//! `lorb rescore`: n-best lists re-ranked by s1 + λ·s2, as JSON Lines.

use crate::common::{load, ListArgs};
use crate::lists::{list_inputs, second_pass};
use clap::Args;
use lorb::rescore::rescore_list;
use lorb::{Error, Result};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct RescoreArgs {
    #[command(flatten)]
    list: ListArgs,
    /// The user's corrected transcripts (one per line): their rare words boost the hypotheses
    /// that use them (s1 + β·boost + λ·s2; `lorb personalize` measures it)
    #[arg(long)]
    user_words: Option<PathBuf>,
    /// β of that boost, in s1's units (choose it on dev chapters with `lorb personalize`).
    /// Default: the adapter's (its train_log.json "lexicon_weight"), else 0.5
    #[arg(long, requires = "user_words")]
    lexicon_weight: Option<f64>,
}

pub fn rescore(r: RescoreArgs) -> Result<()> {
    if let Some(b) = r.lexicon_weight {
        lorb::personalize::check_lexicon_weight(b)?;
    }
    let lexicon = match &r.user_words {
        Some(p) => Some(lorb::lexicon::Lexicon::from_transcripts(std::fs::read_to_string(p).map_err(|e| Error::Io { path: p.display().to_string(), source: e })?.lines())),
        None => None,
    };
    let inputs = list_inputs(r.list)?;
    let (a, lists) = (&inputs.a, &inputs.lists);
    let (lambda, beta) = (inputs.weight()?, inputs.lexicon_weight(r.lexicon_weight)?);
    let mut scorer = load(&a.m)?;
    let s2 = second_pass(&mut scorer, lists, a.m.method)?;
    let s1 = lorb::rescore::first_pass_all(lists, &inputs.first_pass()?)?;
    let mut w: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| Error::Io { path: p.display().to_string(), source: e })?),
        None => Box::new(std::io::stdout().lock()),
    };
    for ((nb, a1), b2) in lists.iter().zip(&s1).zip(&s2) {
        let boost = lexicon.as_ref().map(|l| l.boosts(nb.hyps.iter().map(|h| h.text.as_str()), beta));
        let out = rescore_list(nb, a1, b2, lambda, boost.as_deref());
        writeln!(w, "{}", serde_json::to_string(&out).map_err(|e| Error::Input(e.to_string()))?)
            .map_err(|e| Error::Io { path: "output".into(), source: e })?;
    }
    Ok(())
}
