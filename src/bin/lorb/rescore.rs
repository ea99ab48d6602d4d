//! `lorb rescore`: n-best lists re-ranked by s1 + λ·s2, as JSON Lines.

use crate::common::{load, ListArgs};
use crate::lists::{list_inputs, second_pass};
use lorb::rescore::rescore_list;
use lorb::{Error, Result};
use std::io::Write;

pub fn rescore(a: ListArgs) -> Result<()> {
    let inputs = list_inputs(a)?;
    let (a, lists) = (&inputs.a, &inputs.lists);
    let lambda = inputs.weight()?;
    let mut scorer = load(&a.m)?;
    let s2 = second_pass(&mut scorer, lists, a.m.method)?;
    let s1 = lorb::rescore::first_pass_all(lists, &inputs.first_pass()?)?;
    let mut w: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| Error::Io { path: p.display().to_string(), source: e })?),
        None => Box::new(std::io::stdout().lock()),
    };
    for ((nb, a1), b2) in lists.iter().zip(&s1).zip(&s2) {
        let r = rescore_list(nb, a1, b2, lambda);
        writeln!(w, "{}", serde_json::to_string(&r).map_err(|e| Error::Input(e.to_string()))?)
            .map_err(|e| Error::Io { path: "output".into(), source: e })?;
    }
    Ok(())
}
