//! `lorb tune`: λ (and with --tune-s1 the first pass's coefficients) by grid search on a dev set.

use crate::common::{load, ListArgs};
use crate::lists::{list_inputs, second_pass};
use clap::Args;
use lorb::rescore::EvalSet;
use lorb::Result;
use serde_json::json;

#[derive(Args)]
pub struct TuneArgs {
    #[command(flatten)]
    list: ListArgs,
    /// λ grid as LO:HI:STEP (0:0:1 tunes the first pass alone, with no model loaded)
    #[arg(long, default_value = "0:1:0.05")]
    grid: String,
    /// Also tune these terms' coefficients of the --s1 expression (comma-separated, e.g.
    /// "lm" or "lm,ctc") jointly with λ, by coordinate descent on the dev WER
    #[arg(long, value_delimiter = ',')]
    tune_s1: Vec<String>,
}

pub fn tune(a: TuneArgs) -> Result<()> {
    let g = lorb::rescore::parse_grid(&a.grid)?;
    let first_pass_only = g.iter().all(|&w| w == 0.0);
    let inputs = list_inputs(ListArgs { weight: if first_pass_only { Some(0.0) } else { a.list.weight }, ..a.list })?;
    let (l, lists) = (&inputs.a, &inputs.lists);
    let s2 = if first_pass_only {
        lists.iter().map(|nb| vec![0.0; nb.hyps.len()]).collect()
    } else {
        let mut scorer = load(&l.m)?;
        second_pass(&mut scorer, lists, l.m.method)?
    };
    let fp = inputs.first_pass()?;
    if !a.tune_s1.is_empty() {
        let t = lorb::rescore::tune_first_pass(lists, &fp, &a.tune_s1, s2, &g)?;
        if l.json {
            println!("{}", json!({"s1": t.first_pass.to_string(), "weight": t.weight, "dev_wer": t.wer, "given_s1": fp.to_string(), "given_s1_dev_wer": t.start_wer}));
        } else {
            println!("given  --s1 {:?}: dev WER {:.3}% at its best λ", fp.to_string(), t.start_wer);
            println!("chosen --s1 {:?} --weight {}: dev WER {:.3}%", t.first_pass.to_string(), t.weight, t.wer);
        }
        return Ok(());
    }
    let set = EvalSet::new(lists, lorb::rescore::first_pass_all(lists, &fp)?, s2);
    set.require_references(&l.nbest.display().to_string())?;
    let (curve, best) = set.tune(&g);
    let r = set.report(best);
    if l.json {
        let c: Vec<_> = curve.iter().map(|(w, e)| json!({"weight": w, "wer": e})).collect();
        println!("{}", json!({"weight": best, "dev_wer": r.rescored_wer, "first_pass_wer": r.first_pass_wer, "oracle_wer": r.oracle_wer, "curve": c}));
    } else {
        for (w, e) in &curve {
            println!("λ = {w:<8.4} WER {e:.3}%");
        }
        println!("chosen λ = {best} (dev WER {:.3}%, first pass {:.3}%)", r.rescored_wer, r.first_pass_wer);
    }
    Ok(())
}
