//! The personalisation protocol (lorb personalize): how utterances are grouped and split, and
//! that the evaluated utterances never enter training.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use lorb::nbest::{FirstPass, Hypothesis, NBest};
use lorb::personalize::{personalize, split, Adapt, Grouping, Options};
use lorb::train::{FitOptions, TrainConfig};

fn groups(utts: &[&str], g: &str, fraction: f64) -> lorb::personalize::Splits {
    split(utts, &g.parse::<Grouping>().unwrap(), fraction).unwrap()
}

#[test]
fn utterances_are_grouped_by_chapter_speaker_or_pattern_and_split_in_order() {
    let utts = ["84-121123-0000", "84-121123-0001", "84-121550-0000", "84-121123-0002", "174-50561-0000", "174-50561-0001", "oddly-named", "x"];
    // Chapters: first appearance order; file order inside; "oddly-named" has two parts only.
    let s = groups(&utts, "chapter", 0.5);
    let got: Vec<(&str, &[usize], &[usize])> = s.splits.iter().map(|x| (x.group.as_str(), &x.adapt[..], &x.eval[..])).collect();
    assert_eq!(got, vec![("84-121123", &[0, 1][..], &[3][..]), ("174-50561", &[4][..], &[5][..])]);
    assert_eq!((s.skipped_groups, s.skipped_utterances, s.ungrouped), (1, 1, 2), "84-121550 has one utterance; two ids are not LibriSpeech's");
    // Speakers: "oddly-named" is speaker "oddly" (a group of one); "x" has no speaker.
    let s = groups(&utts, "speaker", 0.5);
    assert_eq!(s.splits.iter().map(|x| (x.group.clone(), x.adapt.len(), x.eval.len())).collect::<Vec<_>>(), vec![("84".into(), 2, 2), ("174".into(), 1, 1)]);
    assert_eq!((s.skipped_groups, s.ungrouped), (1, 1));
    // A pattern: its first capture group names the group; without one, the whole match.
    let ids = ["call_a_01", "call_b_01", "call_a_02", "call_a_03", "call_b_02", "nomatch"];
    let s = groups(&ids, r"^call_(\w)_", 0.34);
    assert_eq!(s.splits.iter().map(|x| (x.group.clone(), x.adapt.clone(), x.eval.clone())).collect::<Vec<_>>(), vec![("a".into(), vec![0], vec![2, 3]), ("b".into(), vec![1], vec![4])]);
    assert_eq!(s.ungrouped, 1);
    assert_eq!(groups(&ids, r"call_a", 0.5).splits[0].group, "call_a");
    // At least one utterance adapts and one is evaluated, whatever the fraction.
    let s = groups(&["1-2-1", "1-2-2", "1-2-3"], "chapter", 0.99);
    assert_eq!((s.splits[0].adapt.len(), s.splits[0].eval.len()), (2, 1));
    assert!(split(&utts, &Grouping::Chapter, 1.0).is_err() && split(&utts, &Grouping::Chapter, 0.0).is_err());
    assert!("([".parse::<Grouping>().is_err(), "a bad regular expression is an input error");
}

/// Lists of the BERT fixture's vocabulary in two chapters; the references of the evaluated
/// halves are `eval_ref`.
fn chapter_lists(eval_ref: &str) -> Vec<NBest> {
    // "zebra" is in a hypothesis and in one variant of the evaluated references, never in a
    // corrected one: it must not become one of the user's words.
    let texts = ["the quick brown fox", "the quick brown dog", "a quick brown fox", "the quick fox", "the quick brown zebra"];
    let mut out = Vec::new();
    for ch in ["10-20", "10-21"] {
        for k in 0..4 {
            let hyps = texts.iter().enumerate().map(|(j, t)| Hypothesis { text: t.to_string(), score: -(j as f64) * 0.1 - 0.01 * k as f64, fields: Default::default() }).collect();
            let reference = if k < 2 { texts[(k + 1) % 4].to_string() } else { eval_ref.to_string() };
            out.push(NBest { utt: format!("{ch}-{k:04}"), reference: Some(reference), hyps });
        }
    }
    out
}

/// The evaluated utterances never enter training: each group trains on its first half alone, so
/// changing the references of the second halves changes no score the personal adapters give
/// (only the WERs counted against them), while the first halves' references do steer them. Both
/// methods: MWER on the corrected lists (CLS), MLM on the corrected transcripts (PLL), and MLM
/// training the output bias too, which moves the personal scores further; that bias is refused
/// with MWER.
#[test]
fn evaluated_utterances_never_enter_training() {
    no_leakage(Adapt::Mwer, false);
    no_leakage(Adapt::None, false);
    let scores = |r: Option<lorb::personalize::Report>| r.expect("personalised").groups.into_iter().map(|g| g.personal_scores).collect::<Vec<_>>();
    let (plain, with_bias) = (scores(no_leakage(Adapt::Mlm, false)), scores(no_leakage(Adapt::Mlm, true)));
    assert_ne!(plain, with_bias, "training the MLM output bias changed no personal score");
    // The MLM output bias with MWER: refused (asserted inside).
    no_leakage(Adapt::Mwer, true);
}

/// The report on the lists with the first references, or None when personalising is refused.
fn no_leakage(adapt: Adapt, mlm_bias: bool) -> Option<lorb::personalize::Report> {
    let dir = fixture_dir("bert");
    let o = Options {
        grouping: Grouping::Chapter,
        adapt_fraction: 0.5,
        adapt,
        first_pass: FirstPass::default(),
        depth: None,
        weight: 1.0,
        lexicon_weight: 0.5,
        r: 4,
        alpha: 8.0,
        targets: vec![lorb::adapter::Target::Query, lorb::adapter::Target::Value],
        train: TrainConfig { kappa: 1.0, optim: lorb::train::AdamWConfig { lr: 0.05, ..Default::default() }, mlm_bias, ..Default::default() },
        fit: FitOptions { epochs: 3, lists_per_step: 1, patience: 0, checkpoint: None, time_limit: None },
    };
    let run = |lists: &[NBest]| {
        let mut s = scorers(&dir).remove(0);
        block(personalize(&mut s, lists, &o, |_| {})).unwrap()
    };
    if mlm_bias && adapt != Adapt::Mlm {
        let mut s = scorers(&dir).remove(0);
        let refused = block(personalize(&mut s, &chapter_lists("the quick brown fox"), &o, |_| {}));
        assert!(matches!(refused, Err(lorb::Error::Input(_))), "{adapt:?} with the MLM output bias: {:?}", refused.map(|_| ()));
        return None;
    }
    let a = run(&chapter_lists("the quick brown fox"));
    let b = run(&chapter_lists("the quick brown zebra"));
    assert_eq!((a.chapters, a.adapt), (2, adapt));
    for (ga, gb) in a.groups.iter().zip(&b.groups) {
        assert!(ga.adapt_utterances.iter().all(|u| !ga.eval_utterances.contains(u)), "{adapt:?} {}: an utterance both adapts and is evaluated", ga.group);
        assert_eq!(ga.personal_choices, gb.personal_choices, "{adapt:?} {}: the evaluated references changed what the personal adapter chose", ga.group);
        assert_eq!(ga.personal_scores, gb.personal_scores, "{adapt:?} {}: the evaluated references changed the personal scores", ga.group);
        assert_eq!(ga.boosts, gb.boosts, "{adapt:?} {}: the evaluated references changed the user's words", ga.group);
    }
    assert_ne!(a.groups[0].personalized_wer, b.groups[0].personalized_wer, "the WER is counted against the evaluated references");
    // The adapted halves' references do steer training: other targets, other choices somewhere.
    let mut steered = chapter_lists("the quick brown fox");
    for nb in steered.iter_mut().filter(|nb| nb.utt.ends_with("0000") || nb.utt.ends_with("0001")) {
        nb.reference = Some("the quick fox".into());
    }
    let c = run(&steered);
    if adapt != Adapt::None {
        assert!(a.groups.iter().zip(&c.groups).any(|(x, y)| x.personal_scores != y.personal_scores), "{adapt:?}: training ignored the adapted references");
    }
    assert!(a.groups.iter().zip(&c.groups).any(|(x, y)| x.boosts != y.boosts), "{adapt:?}: the user's words ignored the adapted references");
    Some(a)
}

/// The user's words: a rare word of the corrected transcripts lifts the hypothesis that uses it
/// by β times its rarity above the floor, a word they never wrote earns nothing, and with no
/// training (adapt none) the scores are the global adapter's.
#[test]
fn corrected_rare_words_lift_the_hypotheses_that_use_them() {
    let dir = fixture_dir("bert");
    let hyp = |t: &str, score: f64| Hypothesis { text: t.into(), score, fields: Default::default() };
    let lists = vec![
        NBest { utt: "7-8-0000".into(), reference: Some("mister quilter is the apostle".into()), hyps: vec![hyp("mister quilter is the apostle", -1.0)] },
        NBest { utt: "7-8-0001".into(), reference: Some("mister quilter spoke".into()), hyps: vec![hyp("mister quilder spoke", -1.0), hyp("mister quilter spoke", -1.5), hyp("mister quilter spoke the the", -1.6)] },
    ];
    let opts = |beta: f64| Options {
        grouping: Grouping::Chapter,
        adapt_fraction: 0.5,
        adapt: Adapt::None,
        first_pass: FirstPass::default(),
        depth: None,
        weight: 0.0,
        lexicon_weight: beta,
        r: 4,
        alpha: 8.0,
        targets: vec![lorb::adapter::Target::Query],
        train: TrainConfig::default(),
        fit: FitOptions { epochs: 1, lists_per_step: 1, patience: 0, checkpoint: None, time_limit: None },
    };
    let run = |beta: f64| block(personalize(&mut scorers(&dir).remove(0), &lists, &opts(beta), |_| {})).unwrap();
    let (off, on) = (run(0.0), run(0.5));
    let b = &on.groups[0].boosts[0];
    let quilter = lorb::lexicon::rarity("quilter") - lorb::lexicon::RARITY_FLOOR;
    assert!(quilter > 5.0, "quilter is rare: {quilter}");
    assert!((b[1] - b[0] - quilter).abs() < 1e-9, "boosts {b:?}: quilter {quilter}");
    // "the" is common: the two extra words earn nothing.
    assert_eq!(b[2], b[1]);
    assert_eq!((off.personalized_wer, off.groups[0].personal_choices[0]), (100.0 / 3.0, 0));
    assert_eq!((on.personalized_wer, on.lexicon_wer, on.groups[0].personal_choices[0]), (0.0, 0.0, 1));
    assert_eq!(on.base_wer, on.adapter_wer, "adapt none trains nothing");
    assert_eq!(on.lexicon_weights.iter().map(|x| x.lexicon_weight).collect::<Vec<_>>(), lorb::personalize::lexicon_grid(0.5));
    for bad in [-1.0, f64::NAN] {
        assert!(matches!(block(personalize(&mut scorers(&dir).remove(0), &lists, &opts(bad), |_| {})), Err(lorb::Error::Input(_))), "lexicon weight {bad}");
    }
}
