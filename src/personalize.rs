//! Personalisation, measured: does an adapter trained on a user's corrected transcripts help
//! their next utterances? The protocol groups utterances by speaker or chapter (LibriSpeech ids
//! are `SPEAKER-CHAPTER-NNNN`; any other format through a regular expression), and for every
//! group, in file order, treats the first part (`adapt_fraction`) as the transcripts the user
//! corrected — their references are training targets — and the rest as what comes next, scored
//! and never trained or tuned on. It reports the pooled WER of those second parts: first pass,
//! the global adapter (the one in use), and after personalising from the global adapter on each
//! group's first part by one of two methods ([`Adapt`]): LoRB MWER on the corrected lists, scored
//! by CLS, or MLM on the corrected transcripts (the objective sees the words themselves), scored
//! by PLL. Either way (or with no training, [`Adapt::None`]) the corrected transcripts' rare words
//! also boost the hypotheses that use them ([`crate::lexicon`], weight `Options::lexicon_weight`).

use crate::error::{Error, Result};
use crate::lexicon::Lexicon;
use crate::nbest::{FirstPass, NBest};
use crate::rescore::{picks, wer_at};
use crate::train::fit::seconds;
use crate::score::{Method, Scorer};
use crate::train::fit::FitOptions;
use crate::train::{ListExample, Start, TrainConfig};
use serde::Serialize;
use std::sync::atomic::AtomicBool;

/// How utterances form groups.
#[derive(Debug, Clone)]
pub enum Grouping {
    /// `SPEAKER-CHAPTER-NNNN` → `SPEAKER-CHAPTER` (one reader of one book chapter).
    Chapter,
    /// `SPEAKER-…` → `SPEAKER`.
    Speaker,
    /// The first capture group of a regular expression (the whole match without one); ids it
    /// does not match belong to no group.
    Pattern(regex::Regex),
}

impl std::str::FromStr for Grouping {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "chapter" => Ok(Grouping::Chapter),
            "speaker" => Ok(Grouping::Speaker),
            _ => regex::Regex::new(s).map(Grouping::Pattern).map_err(|e| Error::Input(format!("--group {s:?}: expected chapter, speaker or a regular expression ({e})"))),
        }
    }
}

impl Grouping {
    /// The group of utterance `utt`, if it has one.
    pub fn group_of(&self, utt: &str) -> Option<String> {
        let parts: Vec<&str> = utt.split('-').collect();
        match self {
            Grouping::Chapter => (parts.len() >= 3 && parts.iter().all(|p| !p.is_empty())).then(|| format!("{}-{}", parts[0], parts[1])),
            Grouping::Speaker => (parts.len() >= 2 && !parts[0].is_empty()).then(|| parts[0].to_string()),
            Grouping::Pattern(re) => re.captures(utt).and_then(|c| c.get(1).or_else(|| c.get(0))).map(|m| m.as_str().to_string()).filter(|g| !g.is_empty()),
        }
    }
}

/// One group's utterances, as indices into the lists, in file order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub group: String,
    /// The corrected transcripts: training targets.
    pub adapt: Vec<usize>,
    /// What comes next: scored, never trained or tuned on.
    pub eval: Vec<usize>,
}

/// The groups of a set of lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Splits {
    pub splits: Vec<Split>,
    /// Groups of a single utterance, which cannot be split (skipped).
    pub skipped_groups: usize,
    pub skipped_utterances: usize,
    /// Utterances whose id the grouping does not match.
    pub ungrouped: usize,
}

/// Splits `utts` into groups (in order of first appearance): the first `adapt_fraction` of each
/// group (rounded, at least one, at most all but one) adapts, the rest is evaluated.
pub fn split(utts: &[&str], grouping: &Grouping, adapt_fraction: f64) -> Result<Splits> {
    if !(adapt_fraction > 0.0 && adapt_fraction < 1.0) {
        return Err(Error::Input(format!("adapt fraction {adapt_fraction}: expected a number between 0 and 1")));
    }
    let mut order: Vec<String> = Vec::new();
    let mut members: std::collections::HashMap<String, Vec<usize>> = Default::default();
    let mut out = Splits::default();
    for (i, u) in utts.iter().enumerate() {
        match grouping.group_of(u) {
            Some(g) => {
                if !members.contains_key(&g) {
                    order.push(g.clone());
                }
                members.entry(g).or_default().push(i);
            }
            None => out.ungrouped += 1,
        }
    }
    for g in order {
        let m = &members[&g];
        if m.len() < 2 {
            out.skipped_groups += 1;
            out.skipped_utterances += m.len();
            continue;
        }
        let k = ((adapt_fraction * m.len() as f64).round() as usize).clamp(1, m.len() - 1);
        out.splits.push(Split { group: g, adapt: m[..k].to_vec(), eval: m[k..].to_vec() });
    }
    Ok(out)
}

/// How a group's first part personalises the adapter, and the s2 it is scored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Adapt {
    /// LoRB: MWER (with the options' κ and L_cor) on the corrected n-best lists; s2 = CLS.
    Mwer,
    /// MLM on the corrected transcripts (LoRA pairs and the MLM head transform); s2 = PLL.
    Mlm,
    /// No training: the global adapter's CLS score, with the user's words' boost alone.
    None,
}

impl std::str::FromStr for Adapt {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mwer" => Ok(Adapt::Mwer),
            "mlm" => Ok(Adapt::Mlm),
            "none" => Ok(Adapt::None),
            _ => Err(Error::Input(format!("{s:?}: expected mwer, mlm or none"))),
        }
    }
}

impl Adapt {
    /// The s2 the adapted model is scored with.
    pub fn method(self) -> Method {
        match self {
            Adapt::Mwer | Adapt::None => Method::Cls,
            Adapt::Mlm => Method::Pll,
        }
    }
}

/// How the protocol runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub grouping: Grouping,
    pub adapt_fraction: f64,
    pub adapt: Adapt,
    pub first_pass: FirstPass,
    /// Keep the top K hypotheses of each list.
    pub depth: Option<usize>,
    /// λ of `s1 + λ·s2`, for the global and the personal adapter alike.
    pub weight: f64,
    /// β of the user's words' boost, `s1 + β·boost + λ·s2` for the lists that come next (0: off;
    /// in s1's units, so chosen per n-best source on dev chapters, like λ).
    pub lexicon_weight: f64,
    /// Fresh LoRA pairs when there is no global adapter: rank, α, targets.
    pub r: usize,
    pub alpha: f64,
    pub targets: Vec<crate::adapter::Target>,
    /// Training on each group's first part (no dev lists: there are too few).
    pub train: TrainConfig,
    pub fit: FitOptions,
}

/// One group's figures.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub adapt_utterances: Vec<String>,
    pub eval_utterances: Vec<String>,
    pub words: usize,
    pub first_pass_wer: f64,
    /// The global adapter.
    pub base_wer: f64,
    /// The global adapter with the user's words' boost (no training).
    pub lexicon_wer: f64,
    /// The personal adapter without the boost.
    pub adapter_wer: f64,
    /// The personal adapter with the boost: what personalising gives.
    pub personalized_wer: f64,
    /// The hypothesis the global adapter and personalisation rank first in each evaluated list
    /// (its index).
    pub base_choices: Vec<usize>,
    pub personal_choices: Vec<usize>,
    /// How many of the corrected transcripts' words are rare enough to weigh.
    pub lexicon_words: usize,
    /// The personal adapter's s2 of each evaluated hypothesis (not in the JSON).
    #[serde(skip)]
    pub personal_scores: Vec<Vec<f64>>,
    /// The boost of each evaluated hypothesis, before β (not in the JSON).
    #[serde(skip)]
    pub boosts: Vec<Vec<f64>>,
    pub seconds: f64,
}

/// The protocol's figures, pooled over the groups' evaluated parts (WER in percent).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub chapters: usize,
    pub adapt_utterances: usize,
    pub eval_utterances: usize,
    pub words: usize,
    pub first_pass_wer: f64,
    pub base_wer: f64,
    pub lexicon_wer: f64,
    pub adapter_wer: f64,
    pub personalized_wer: f64,
    pub seconds_per_chapter: f64,
    pub skipped_groups: usize,
    pub ungrouped: usize,
    pub weight: f64,
    pub lexicon_weight: f64,
    pub adapt: Adapt,
    /// The pooled WERs at other λ (the λ grid around `weight`): for choosing λ on dev chapters,
    /// never on the chapters reported.
    pub weights: Vec<AtWeight>,
    /// The pooled WERs at other β (multiples of `lexicon_weight`), for choosing β the same way.
    pub lexicon_weights: Vec<AtLexiconWeight>,
    pub groups: Vec<GroupReport>,
}

/// The pooled WERs at one β.
#[derive(Debug, Clone, Serialize)]
pub struct AtLexiconWeight {
    pub lexicon_weight: f64,
    pub lexicon_wer: f64,
    pub personalized_wer: f64,
}

/// The β grid of a report: multiples of β0.
pub fn lexicon_grid(beta0: f64) -> Vec<f64> {
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0].iter().map(|f| f * beta0).collect()
}

/// `lists` with `β·boost` added to each hypothesis' first-pass score.
pub fn boosted(lists: &[ListExample], boosts: &[Vec<f64>], beta: f64) -> Vec<ListExample> {
    lists.iter().zip(boosts).map(|(l, b)| ListExample { s1: l.s1.iter().zip(b).map(|(s, x)| s + beta * x).collect(), ..l.clone() }).collect()
}

/// β when neither the caller nor the adapter's train_log.json gives one: BLSTM 100-best's dev
/// choice with its global adapter (ESPnet 30-best's is 1; the shipped adapters record theirs).
pub const DEFAULT_LEXICON_WEIGHT: f64 = 0.5;

/// β must be finite and not negative.
pub fn check_lexicon_weight(beta: f64) -> Result<()> {
    if beta.is_finite() && beta >= 0.0 {
        Ok(())
    } else {
        Err(Error::Input(format!("lexicon weight {beta}: expected a number ≥ 0 (0 turns the user's words' boost off)")))
    }
}

/// The pooled WERs at one λ.
#[derive(Debug, Clone, Serialize)]
pub struct AtWeight {
    pub weight: f64,
    /// The global adapter, without and with the user's words.
    pub base_wer: f64,
    pub lexicon_wer: f64,
    /// The personal adapter with the user's words.
    pub personalized_wer: f64,
}

/// Runs the protocol on `lists` (all with references) with `scorer`'s adapter as the global one
/// (none: the base model and its CLS head): [`personalize_group`] on every group, pooled.
pub async fn personalize(scorer: &mut Scorer, lists: &[NBest], o: &Options, mut done: impl FnMut(&GroupReport)) -> Result<Report> {
    if let Some(nb) = lists.iter().find(|nb| nb.reference.is_none()) {
        return Err(Error::Input(format!("utterance {:?} has no reference: personalising needs the transcripts", nb.utt)));
    }
    let utts: Vec<&str> = lists.iter().map(|nb| nb.utt.as_str()).collect();
    let splits = split(&utts, &o.grouping, o.adapt_fraction)?;
    if splits.splits.is_empty() {
        return Err(Error::Input(format!("no group of two or more utterances ({} ungrouped, {} groups of one)", splits.ungrouped, splits.skipped_groups)));
    }
    // Every group's evaluated lists with their boosts and their global and personal s2, for the
    // pooled WERs.
    let (mut groups, mut all_eval, mut all_boosts, mut all_base, mut all_personal) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in &splits.splits {
        let pick = |idx: &[usize]| idx.iter().map(|&i| lists[i].clone()).collect::<Vec<_>>();
        let run = personalize_group(scorer, o, &s.group, &pick(&s.adapt), &pick(&s.eval)).await?;
        done(&run.report);
        all_eval.extend(run.eval);
        all_boosts.extend(run.report.boosts.iter().cloned());
        all_base.extend(run.base);
        all_personal.extend(run.report.personal_scores.iter().cloned());
        groups.push(run.report);
    }
    let zero: Vec<Vec<f64>> = all_eval.iter().map(|l| vec![0.0; l.s1.len()]).collect();
    let (w, beta) = (o.weight, o.lexicon_weight);
    let with_words = boosted(&all_eval, &all_boosts, beta);
    let wers = |b: &[ListExample]| (wer_at(b, &all_base, w), wer_at(b, &all_personal, w));
    let (lexicon_wer, personalized_wer) = wers(&with_words);
    Ok(Report {
        chapters: groups.len(),
        adapt_utterances: splits.splits.iter().map(|s| s.adapt.len()).sum(),
        eval_utterances: splits.splits.iter().map(|s| s.eval.len()).sum(),
        words: groups.iter().map(|g| g.words).sum(),
        first_pass_wer: wer_at(&all_eval, &zero, 0.0),
        base_wer: wer_at(&all_eval, &all_base, w),
        lexicon_wer,
        adapter_wer: wer_at(&all_eval, &all_personal, w),
        personalized_wer,
        seconds_per_chapter: groups.iter().map(|g| g.seconds).sum::<f64>() / groups.len().max(1) as f64,
        skipped_groups: splits.skipped_groups,
        ungrouped: splits.ungrouped,
        weight: w,
        lexicon_weight: beta,
        adapt: o.adapt,
        weights: crate::rescore::lambda_grid(w)
            .into_iter()
            .map(|w| AtWeight { weight: w, base_wer: wer_at(&all_eval, &all_base, w), lexicon_wer: wer_at(&with_words, &all_base, w), personalized_wer: wer_at(&with_words, &all_personal, w) })
            .collect(),
        lexicon_weights: if beta > 0.0 {
            lexicon_grid(beta).into_iter().map(|b| {
                let (lexicon_wer, personalized_wer) = wers(&boosted(&all_eval, &all_boosts, b));
                AtLexiconWeight { lexicon_weight: b, lexicon_wer, personalized_wer }
            }).collect()
        } else {
            Vec::new()
        },
        groups,
    })
}

/// One group personalised ([`personalize_group`]).
pub struct GroupRun {
    pub report: GroupReport,
    /// The personal adapter (PEFT format; the global adapter's pairs trained on, or fresh ones);
    /// none with [`Adapt::None`].
    pub adapter: Option<crate::Adapter>,
    /// The user's words, from the corrected transcripts.
    pub lexicon: Lexicon,
    /// The evaluated lists as examples (at `Options::depth`), and the global adapter's s2 of them.
    pub eval: Vec<ListExample>,
    pub base: Vec<Vec<f64>>,
}

/// Personalises on one group: `adapt`'s references are the user's corrections. `eval` is scored
/// with the scorer's adapter (the global one; for CLS without a head, zeros: the base model alone
/// cannot rescore), then with the personal adapter trained from it on `adapt` alone by
/// `o.adapt`. The scorer's adapter is put back. What [`personalize`] runs for every group, and
/// the page (`Rescorer.personalize`) for the chapter a user corrected.
pub async fn personalize_group(scorer: &mut Scorer, o: &Options, group: &str, adapt: &[NBest], eval: &[NBest]) -> Result<GroupRun> {
    let t0 = seconds();
    if let Some(nb) = adapt.iter().chain(eval).find(|nb| nb.reference.is_none()) {
        return Err(Error::Input(format!("utterance {:?} has no reference: personalising needs the transcripts", nb.utt)));
    }
    if adapt.is_empty() || eval.is_empty() {
        return Err(Error::Input(format!("group {group:?}: personalising needs corrected utterances and utterances to evaluate")));
    }
    if o.train.mlm_bias && o.adapt != Adapt::Mlm {
        return Err(Error::Input("the MLM output bias trains only when personalising by MLM (adapt mlm)".into()));
    }
    check_lexicon_weight(o.lexicon_weight)?;
    let method = o.adapt.method();
    if method == Method::Pll && scorer.model().mlm.is_none() {
        return Err(Error::NoMlmHead);
    }
    let cut = |l: &[NBest]| -> Vec<NBest> { l.iter().map(|nb| NBest { hyps: nb.hyps[..o.depth.unwrap_or(usize::MAX).min(nb.hyps.len())].to_vec(), ..nb.clone() }).collect() };
    let (adapt, eval) = (cut(adapt), cut(eval));
    let examples = |l: &[NBest]| -> Result<Vec<ListExample>> { l.iter().map(|nb| ListExample::from_nbest(nb, &o.first_pass, &scorer.encoder, None)).collect() };
    let (adapt_ex, eval_ex) = (examples(&adapt)?, examples(&eval)?);
    let base: Vec<Vec<f64>> = if method == Method::Pll || scorer.cls_head.is_some() { scorer.score_lists(&eval, method, &mut |_| {}).await? } else { eval.iter().map(|nb| vec![0.0; nb.hyps.len()]).collect() };
    // The user's words: the corrected transcripts' alone.
    let lexicon = Lexicon::from_transcripts(adapt.iter().filter_map(|nb| nb.reference.as_deref()));
    let boosts: Vec<Vec<f64>> = eval.iter().map(|nb| lexicon.boosts(nb.hyps.iter().map(|h| h.text.as_str()), 1.0)).collect();
    let (adapter, personal) = if o.adapt == Adapt::None {
        (None, base.clone())
    } else {
        let global = scorer.adapter();
        let head = scorer.cls_head.clone();
        scorer.use_adapter(None).await?;
        let trained = async {
            let a = personal_adapter(scorer, o, global.as_deref(), head.clone(), &adapt, &adapt_ex).await?;
            scorer.use_adapter(Some(std::sync::Arc::new(a.clone()))).await?;
            let s = scorer.score_lists(&eval, method, &mut |_| {}).await?;
            Ok::<_, Error>((a, s))
        }
        .await;
        // The global adapter and head go back whatever happened; a training error comes first.
        let restored = scorer.use_adapter(global).await;
        scorer.cls_head = head;
        let (adapter, personal) = trained?;
        restored?;
        (Some(adapter), personal)
    };
    crate::score::ensure_finite(&personal.concat())?;
    let zero: Vec<Vec<f64>> = eval_ex.iter().map(|l| vec![0.0; l.s1.len()]).collect();
    let (w, boosted_ex) = (o.weight, boosted(&eval_ex, &boosts, o.lexicon_weight));
    let report = GroupReport {
        group: group.to_string(),
        adapt_utterances: adapt.iter().map(|nb| nb.utt.clone()).collect(),
        eval_utterances: eval.iter().map(|nb| nb.utt.clone()).collect(),
        words: eval_ex.iter().map(|l| l.words).sum(),
        first_pass_wer: wer_at(&eval_ex, &zero, 0.0),
        base_wer: wer_at(&eval_ex, &base, w),
        lexicon_wer: wer_at(&boosted_ex, &base, w),
        adapter_wer: wer_at(&eval_ex, &personal, w),
        personalized_wer: wer_at(&boosted_ex, &personal, w),
        base_choices: picks(&eval_ex, &base, w).collect(),
        personal_choices: picks(&boosted_ex, &personal, w).collect(),
        lexicon_words: lexicon.len(),
        personal_scores: personal,
        boosts,
        seconds: seconds() - t0,
    };
    Ok(GroupRun { report, adapter, lexicon, eval: eval_ex, base })
}

/// The personal adapter: trained from `global` (its LoRA pairs and heads; fresh pairs without
/// one) on the corrected lists `adapt` (`adapt_ex`: as examples) by `o.adapt`.
async fn personal_adapter(scorer: &Scorer, o: &Options, global: Option<&crate::Adapter>, head: Option<crate::ClsHead>, adapt: &[NBest], adapt_ex: &[ListExample]) -> Result<crate::Adapter> {
    let start = Start { r: o.r, alpha: o.alpha, rslora: false, targets: &o.targets, seed: o.train.seed, head_only: false, full: false, from: global };
    match o.adapt {
        Adapt::Mwer => {
            let steps = (adapt.len().div_ceil(o.fit.lists_per_step) * o.fit.epochs) as u64;
            // A 10% warm-up, then linear decay over this group's steps.
            let cfg = TrainConfig { total_steps: steps, warmup_steps: steps / 10, ..o.train.clone() };
            let (trainer, _) = crate::train::fit::run(scorer, &start, head, cfg, adapt_ex, &[], &o.fit, &AtomicBool::new(false), |_| {}).await?;
            trainer.adapter()
        }
        Adapt::Mlm => {
            let refs: Vec<&str> = adapt.iter().filter_map(|nb| nb.reference.as_deref()).collect();
            let mut a = mlm_adapter(scorer, &start, o.train.clone(), &refs, &o.fit).await?;
            // What MLM does not train stays the global adapter's: its CLS head and MLM output bias.
            a.cls_head = head;
            if a.mlm_head.bias.is_none() {
                a.mlm_head.bias = global.and_then(|g| g.mlm_head.bias.clone());
            }
            Ok(a)
        }
        Adapt::None => Err(Error::Input("adapt none trains no adapter".into())),
    }
}

/// The personal adapter of [`Adapt::Mlm`]: `start` (the global adapter's LoRA pairs and MLM
/// head, or fresh pairs) trained with the MLM objective (and `cfg`'s optimiser settings; its
/// schedule is fitted here) on the corrected transcripts `refs`, for
/// `fit.epochs` epochs of `fit.lists_per_step` transcripts per step (masked with the run's seed),
/// cut to the steps that fit `fit.time_limit` when one is set.
async fn mlm_adapter(scorer: &Scorer, start: &Start<'_>, cfg: TrainConfig, refs: &[&str], fit: &FitOptions) -> Result<crate::Adapter> {
    let ids: Vec<Vec<u32>> = refs.iter().enumerate().map(|(i, t)| scorer.encoder.encode(i, t).map(|t| t.ids)).collect::<Result<_>>()?;
    let ids: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).filter(|v| v.len() > 2).collect();
    if ids.is_empty() {
        return Err(Error::Input("no corrected transcript with a word to train on".into()));
    }
    let steps = (ids.len().div_ceil(fit.lists_per_step) * fit.epochs) as u64;
    let cfg = TrainConfig { objective: crate::train::Objective::Mlm, cls_head: false, mlm_head: true, full: false, total_steps: steps, warmup_steps: steps / 10, ..cfg };
    cfg.validate()?;
    let mut t = crate::train::fit::trainer(scorer, start, None, cfg).await?;
    let mut budget = fit.time_limit.map(|l| crate::train::fit::TimeBudget::new(l, t.step));
    crate::train::fit::mlm_epochs(&mut t, &ids, fit.lists_per_step, fit.epochs, budget.as_mut(), |_, _, _| {}, |_, _, _| Ok(())).await?;
    t.pull().await?;
    t.adapter()
}
