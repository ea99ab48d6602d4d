//! What the list commands (rescore, eval, tune, personalize) share: their input lists with the
//! adapter to use, and the first- and second-pass scores of those lists.

use crate::common::{adapter_log, progress, read_lists, ListArgs};
use lorb::{Error, FirstPass, Method, NBest, Result, Scorer};
use std::path::{Path, PathBuf};

/// s2 for every hypothesis of every list ([`Scorer::score_lists`]), with a progress bar.
pub fn second_pass(scorer: &mut Scorer, lists: &[NBest], method: Method) -> Result<Vec<Vec<f64>>> {
    let pb = progress(lists.len(), "scoring");
    let s = pollster::block_on(scorer.score_lists(lists, method, &mut |n| pb.inc(n as u64)))?;
    pb.finish_and_clear();
    Ok(s)
}

/// The LoRB adapters that ship with lorb for CLS rescoring, the default first. With no model,
/// head or adapter given (and the CLS method), list commands use the one whose training
/// lists are most like the input's ([`lorb::rescore::ListProfile`]).
const SHIPPED_ADAPTERS: [&str; 2] = ["adapters/minilm-blstm-lorb", "adapters/minilm-espnet30-lorb-cor"];

fn shipped(rel: &str) -> PathBuf {
    let local = PathBuf::from(rel);
    if local.exists() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }
}

/// The profile of `lists` next to the one an adapter's log recorded (under the adapter's s1,
/// or `--s1`): `None` when the log has none or the lists lack a field its s1 needs.
fn profiles(log: &lorb::adapter::TrainLog, lists: &[NBest], s1: Option<&FirstPass>) -> Option<(lorb::rescore::ListProfile, lorb::rescore::ListProfile)> {
    let trained = log.list_profile.clone()?;
    let fp = match s1 {
        Some(f) => f.clone(),
        None => trained.s1.parse().ok()?,
    };
    Some((trained, lorb::rescore::ListProfile::of(lists, &fp).ok()?))
}

/// The lists of a list command (first `--limit`), with the adapter to use: the shipped one
/// whose training lists are most like these when the user gave no model, head or adapter;
/// a warning when the given adapter was trained on unlike lists. The lists are then cut to
/// `--depth` or to the depth the adapter was trained at: train, tune and test at one depth.
pub fn list_inputs(mut a: ListArgs) -> Result<ListInputs> {
    if a.limit == Some(0) || a.depth == Some(0) {
        return Err(Error::Input("--limit and --depth must be at least 1".into()));
    }
    let mut lists = read_lists(&a.nbest, a.limit)?;
    if lists.is_empty() {
        return Err(Error::Input(format!("{}: no n-best lists", a.nbest.display())));
    }
    let file = a.nbest.display().to_string();
    // A shipped adapter is chosen (and says so) when the user gave none.
    let chose = a.m.adapter.is_none() && a.m.model.is_none() && a.m.head.is_none() && a.m.method == Method::Cls && !a.no_adapter && a.weight != Some(0.0);
    if chose {
        a.m.adapter = choose_shipped(&lists, a.s1.as_ref(), &file)?;
    }
    let log = adapter_log(&a.m)?;
    let given = if chose { None } else { a.m.adapter.as_ref().zip(log.as_ref().and_then(|l| profiles(l, &lists, a.s1.as_ref()))) };
    if let Some((dir, (trained, here))) = given {
        if let Some(why) = trained.unlike(&here) {
            eprintln!("lorb: warning: {} was trained on lists unlike {file}'s ({why}); its λ may raise the WER here: tune λ on your own dev lists (`lorb tune --adapter {} --nbest DEV`) and pass --weight, or pick an adapter trained on lists like these", dir.display(), dir.display());
        }
    }
    if let Some(k) = a.depth.or(log.as_ref().and_then(|l| l.depth)) {
        for nb in &mut lists {
            nb.hyps.truncate(k.max(1));
        }
    }
    Ok(ListInputs { a, lists, log })
}

/// What a list command works on: its arguments (with the adapter chosen), its lists, and the
/// adapter's train_log.json, read once.
pub struct ListInputs {
    pub a: ListArgs,
    pub lists: Vec<NBest>,
    pub log: Option<lorb::adapter::TrainLog>,
}

impl ListInputs {
    /// λ: given, else the adapter's, else the CLS head's sidecar, else 1 ([`crate::common::weight`]).
    pub fn weight(&self) -> Result<f64> {
        crate::common::weight(&self.a, self.log.as_ref())
    }

    /// β of the user's words' boost: given, else the adapter's, else the default.
    pub fn lexicon_weight(&self, given: Option<f64>) -> Result<f64> {
        crate::common::lexicon_weight(given, self.log.as_ref())
    }

    /// s1: given, else the adapter's, else `score`.
    pub fn first_pass(&self) -> Result<FirstPass> {
        crate::common::first_pass(&self.a, self.log.as_ref())
    }
}

/// The shipped adapter whose training lists are nearest `lists` (of `file`), saying which, with a
/// warning when even the nearest is unlike them; `None` when no shipped adapter has a profile.
fn choose_shipped(lists: &[NBest], s1: Option<&FirstPass>, file: &str) -> Result<Option<PathBuf>> {
    let mut best: Option<(f64, PathBuf, Option<String>)> = None;
    for rel in SHIPPED_ADAPTERS {
        let dir = shipped(rel);
        let Some(log) = lorb::adapter::TrainLog::read(&dir)? else { continue };
        let Some((trained, here)) = profiles(&log, lists, s1) else { continue };
        let d = trained.distance(&here);
        if best.as_ref().is_none_or(|b| d < b.0) {
            best = Some((d, dir, trained.unlike(&here)));
        }
    }
    match &best {
        Some((_, dir, None)) => eprintln!("lorb: using the shipped LoRB adapter {}: it was trained on lists like {file}'s (--adapter DIR for another, --no-adapter for the bare model)", dir.display()),
        Some((_, dir, Some(why))) => eprintln!("lorb: warning: no shipped adapter was trained on lists like {file}'s; the nearest, {}, differs ({why}), and its λ may raise the WER here: tune λ on your own dev lists (`lorb tune --adapter {} --nbest DEV`) and pass --weight, or --no-adapter", dir.display(), dir.display()),
        None => {}
    }
    Ok(best.map(|b| b.1))
}
