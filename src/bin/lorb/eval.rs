//! `lorb eval`: the WER of the first pass, the rescored lists and the oracle.

use crate::common::{load, progress, ListArgs};
use crate::lists::list_inputs;
use lorb::rescore::EvalSet;
use lorb::{Error, Result};
use serde_json::json;
use std::time::Instant;

pub fn eval(a: ListArgs) -> Result<()> {
    let t0 = Instant::now();
    let inputs = list_inputs(a)?;
    let (a, lists) = (&inputs.a, &inputs.lists);
    let fp = inputs.first_pass()?;
    let w = inputs.weight()?;
    // λ = 0 needs no model: the first pass alone decides.
    let mut scorer = if w == 0.0 { None } else { Some(load(&a.m)?) };
    let backend = scorer.as_ref().map_or_else(|| "none".to_string(), |s| s.backend.describe());
    let pb = progress(lists.len(), "scoring");
    let set = pollster::block_on(EvalSet::score(lists, &fp, scorer.as_mut().map(|s| (s, a.m.method)), &mut |n| pb.inc(n as u64)))?;
    pb.finish_and_clear();
    set.require_references(&a.nbest.display().to_string())?;
    if set.unreferenced > 0 {
        eprintln!("lorb: {} of {} lists have no reference and are not counted", set.unreferenced, lists.len());
    }
    let r = set.report(w);
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let mut v = serde_json::to_value(&r).map_err(|e| Error::Input(e.to_string()))?;
        v["seconds"] = json!(secs);
        v["method"] = json!(format!("{:?}", a.m.method).to_lowercase());
        v["backend"] = json!(backend);
        v["nbest"] = json!(a.nbest.display().to_string());
        v["adapter"] = json!(a.m.adapter.as_ref().map(|p| p.display().to_string()));
        v["depth"] = json!(lists.iter().map(|nb| nb.hyps.len()).max());
        v["s1"] = json!(fp.to_string());
        println!("{v}");
    } else {
        println!("{} utterances, {} words ({})", r.utterances, r.words, a.nbest.display());
        println!("first-pass WER  {:.2}%  (s1 = {fp})", r.first_pass_wer);
        println!("rescored WER    {:.2}%  (λ = {}, {:?}, {backend})", r.rescored_wer, r.weight, a.m.method);
        println!("oracle WER      {:.2}%", r.oracle_wer);
        println!("{secs:.1} s");
    }
    Ok(())
}
