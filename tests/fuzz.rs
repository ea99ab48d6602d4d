//! Mutation fuzzing of every loader that reads what a user gives lorb: model folders (config +
//! safetensors), adapters (PEFT config + safetensors), CLS heads, n-best files (JSON Lines, text,
//! gzip), tokenizer.json and the text the tokenizer is given, and the small option parsers
//! (first-pass expressions, λ grids, train_log.json).
//!
//! Each input is a valid seed file with one to four mutations stacked: bit flips, interesting
//! bytes and integers (the safetensors header length, offsets), truncation, deleted, repeated or
//! inserted ranges, splices with another seed, and numbers in JSON rewritten to huge, negative,
//! fractional or non-finite ones. Most mutations land in the part that is parsed (a safetensors
//! header, not its tensor data). Input `i` of a loader is generated from `(loader, i)` alone, so
//! any failure is reproduced by its index: `LORB_FUZZ_ONLY=model:12345`.
//!
//! What counts as a failure: a panic, an abort (the run dies), one allocation above
//! [`ALLOC_CAP`] (the seeds are all under 1 MB; an absurd count in a header must be refused before
//! anything is allocated for it), or a loader that accepts an input and returns a non-finite value.
//!
//! The suite runs a short pass (`LORB_FUZZ_INPUTS`, default 20,000 per loader). The long run, whose
//! figures the README reports:
//! `LORB_FUZZ_INPUTS=1000000 cargo test --release --test fuzz -- --nocapture --test-threads 2`
#![cfg(not(target_arch = "wasm32"))]

use lorb::adapter::{Adapter, TrainLog};
use lorb::{ClsHead, FirstPass, Model, ModelConfig, TextEncoder};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

mod common;

/// Largest single allocation a loader may make for inputs under 1 MB.
const ALLOC_CAP: usize = 64 << 20;

/// The system allocator, counting (per thread) the allocations above [`ALLOC_CAP`].
struct Capped;

thread_local! {
    static OVER_CAP: Cell<usize> = const { Cell::new(0) };
    /// Set while this thread runs fuzz inputs: their panics are counted, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

fn note(size: usize) {
    if size > ALLOC_CAP {
        let _ = OVER_CAP.try_with(|c| c.set(c.get() + 1));
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

/// SplitMix64: the generator of one input.
struct Rng(u64);

impl Rng {
    fn new(loader: &str, i: u64) -> Self {
        let h = loader.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        Rng(h ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

const INTERESTING_U64: &[u64] = &[0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 32, 1 << 40, i64::MAX as u64, u64::MAX, u64::MAX - 7];
const INTERESTING_NUMBERS: &[&str] = &["0", "-1", "1", "-0", "3.5", "1e308", "-1e308", "1e999", "1e-320", "4294967296", "18446744073709551616", "9223372036854775807", "1000000000", "100000000000000000", "NaN", "Infinity", "null", "\"x\"", "[]", "{}", "65537", "8193", "257"];
const INTERESTING_BYTES: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', b'\n', b'\t', b'-', b'.', b'e'];

/// One mutation of `d`; most land in `focus` (the parsed part of the file).
fn mutate(d: &mut Vec<u8>, focus: std::ops::Range<usize>, rng: &mut Rng, other: &[u8]) {
    let focus = if focus.end > d.len() || focus.is_empty() { 0..d.len() } else { focus };
    let pos = |rng: &mut Rng, len: usize| if rng.chance(0.85) && !focus.is_empty() { focus.start + rng.below(focus.len()) } else { rng.below(len + 1) };
    match rng.below(10) {
        0 => {
            if !d.is_empty() {
                let p = pos(rng, d.len() - 1).min(d.len() - 1);
                d[p] ^= 1 << rng.below(8);
            }
        }
        1 => {
            if !d.is_empty() {
                let p = pos(rng, d.len() - 1).min(d.len() - 1);
                d[p] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
        }
        2 => {
            // A little-endian integer: the safetensors header length is the first 8 bytes.
            let w = [1, 2, 4, 8][rng.below(4)];
            let p = if rng.chance(0.3) { 0 } else { pos(rng, d.len()) };
            let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())].to_le_bytes();
            for k in 0..w {
                if p + k < d.len() {
                    d[p + k] = v[k];
                }
            }
        }
        3 => {
            let p = pos(rng, d.len()).min(d.len());
            d.truncate(p);
        }
        4 => {
            let p = pos(rng, d.len()).min(d.len());
            let n = (1 + rng.below(64)).min(d.len() - p);
            d.drain(p..p + n);
        }
        5 => {
            // Repeat a range (a duplicated key, tensor or line).
            let p = pos(rng, d.len()).min(d.len());
            let n = (1 + rng.below(256)).min(d.len() - p);
            let r: Vec<u8> = d[p..p + n].to_vec();
            d.splice(p..p, r);
        }
        6 => {
            let p = pos(rng, d.len()).min(d.len());
            let r: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            d.splice(p..p, r);
        }
        7 => {
            // Splice: this input's head, another seed's tail.
            if !other.is_empty() {
                let p = pos(rng, d.len()).min(d.len());
                let q = rng.below(other.len());
                d.truncate(p);
                d.extend_from_slice(&other[q..]);
            }
        }
        _ => {
            // A number in the text rewritten (JSON fields, safetensors offsets and shapes).
            let starts: Vec<usize> = (0..d.len()).filter(|&i| d[i].is_ascii_digit() && (i == 0 || !d[i - 1].is_ascii_digit()) && focus.contains(&i)).collect();
            if !starts.is_empty() {
                let s = starts[rng.below(starts.len())];
                let mut e = s;
                while e < d.len() && (d[e].is_ascii_digit() || d[e] == b'.' || d[e] == b'e' || d[e] == b'-') {
                    e += 1;
                }
                let n = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
                d.splice(s..e, n.bytes());
            }
        }
    }
}

/// A mutated copy of `seed`: one to four mutations.
fn mutated(seed: &[u8], focus: std::ops::Range<usize>, rng: &mut Rng, other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate(&mut d, focus.clone(), rng, other);
    }
    d
}

/// The bytes a safetensors parser reads: the length prefix and the JSON header.
fn header_of(st: &[u8]) -> std::ops::Range<usize> {
    let n = st.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize).unwrap_or(0);
    0..(8 + n).min(st.len())
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(common::root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Inputs per loader.
fn inputs() -> u64 {
    std::env::var("LORB_FUZZ_INPUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000)
}

/// What a run of one loader found.
#[derive(Default)]
struct Report {
    inputs: u64,
    accepted: u64,
    panics: Vec<u64>,
    over_cap: Vec<u64>,
    wrong: Vec<(u64, String)>,
}

/// Runs `case` on inputs `range` of `loader`, each under `catch_unwind` (its panic message is not
/// printed when `quiet`), noting panics, allocations over the cap and wrong answers (`case`
/// returns `Err` for an accepted input with a non-finite value, else whether the loader accepted
/// the input).
fn run(loader: &str, range: std::ops::Range<u64>, quiet: bool, case: impl Fn(&mut Rng) -> Result<bool, String> + std::panic::RefUnwindSafe) -> Report {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                default(info)
            }
        }));
    });
    QUIET.with(|q| q.set(quiet));
    let mut r = Report { inputs: range.end - range.start, ..Default::default() };
    let t = std::time::Instant::now();
    for i in range {
        let before = OVER_CAP.with(|c| c.get());
        match std::panic::catch_unwind(|| case(&mut Rng::new(loader, i))) {
            Err(_) => r.panics.push(i),
            Ok(Err(m)) => r.wrong.push((i, m)),
            Ok(Ok(a)) => r.accepted += a as u64,
        }
        if OVER_CAP.with(|c| c.get()) > before {
            r.over_cap.push(i);
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!("fuzz {loader}: {} inputs, {:.0} s", i + 1, t.elapsed().as_secs_f64());
        }
    }
    QUIET.with(|q| q.set(false));
    println!("fuzz {loader}: {} inputs ({} accepted) in {:.1} s, {} panics, {} allocations over {} MiB, {} wrong answers", r.inputs, r.accepted, t.elapsed().as_secs_f64(), r.panics.len(), r.over_cap.len(), ALLOC_CAP >> 20, r.wrong.len());
    r
}

/// Fuzzes one loader for `LORB_FUZZ_INPUTS` inputs (or the one `LORB_FUZZ_ONLY=loader:i` names)
/// and fails on anything found. (An abort ends the whole run, which fails too.)
fn fuzz(loader: &str, case: impl Fn(&mut Rng) -> Result<bool, String> + std::panic::RefUnwindSafe) {
    let only = std::env::var("LORB_FUZZ_ONLY").ok();
    let range = match only.as_deref().and_then(|s| s.split_once(':')) {
        Some((l, i)) if l == loader => {
            let i: u64 = i.parse().unwrap();
            i..i + 1
        }
        Some(_) => return,
        None => 0..inputs(),
    };
    let r = run(loader, range, only.is_none(), case);
    let show = |v: &[u64]| v.iter().take(5).map(|i| format!("LORB_FUZZ_ONLY={loader}:{i}")).collect::<Vec<_>>().join(", ");
    assert!(r.panics.is_empty(), "{loader}: {} inputs panicked, e.g. {}", r.panics.len(), show(&r.panics));
    assert!(r.over_cap.is_empty(), "{loader}: {} inputs allocated over the cap, e.g. {}", r.over_cap.len(), show(&r.over_cap));
    assert!(r.wrong.is_empty(), "{loader}: {} inputs accepted with a non-finite value, e.g. {:?}", r.wrong.len(), &r.wrong[..r.wrong.len().min(5)]);
}

/// The harness itself catches what it looks for: a panic, an allocation over the cap and a wrong
/// answer, each at the input that made it, and counts the rest as accepted or refused.
#[test]
fn the_harness_finds_panics_large_allocations_and_wrong_answers() {
    let r = run("self-test", 0..8, true, |rng| {
        let _ = rng.next();
        Ok(true)
    });
    assert_eq!((r.inputs, r.accepted, r.panics.len(), r.over_cap.len(), r.wrong.len()), (8, 8, 0, 0, 0));
    let calls = std::sync::atomic::AtomicU64::new(0);
    let r = run("self-test", 0..6, true, |_| {
        match calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
            1 => panic!("a panic"),
            2 => Ok(std::hint::black_box(vec![1u8; ALLOC_CAP + 1]).len() > 0),
            3 => Err("NaN".into()),
            4 => Ok(false),
            _ => Ok(true),
        }
    });
    assert_eq!((r.panics, r.over_cap, r.wrong.len(), r.accepted), (vec![1], vec![2], 1, 3));
}

fn finite(what: &str, v: &[f32]) -> Result<(), String> {
    finite64(what, &v.iter().map(|&x| x as f64).collect::<Vec<_>>())
}

fn finite64(what: &str, v: &[f64]) -> Result<(), String> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(format!("{what}[{i}] = {}", v[i])),
    }
}

/// A (JSON config, safetensors) pair from `seeds` with its config mutated, its safetensors
/// header mutated, or both anywhere (4 : 5 : 1), splicing with another seed pair.
fn mutated_pair(seeds: &[(Vec<u8>, Vec<u8>)], rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let (c, s) = &seeds[rng.below(seeds.len())];
    let (oc, os) = &seeds[rng.below(seeds.len())];
    match rng.below(10) {
        0..=3 => (mutated(c, 0..c.len(), rng, oc), s.clone()),
        4..=8 => (c.clone(), mutated(s, header_of(s), rng, os)),
        _ => (mutated(c, 0..c.len(), rng, oc), mutated(s, 0..s.len(), rng, os)),
    }
}

/// Model folders: config.json and model.safetensors of the three fixture architectures.
#[test]
fn model_loader() {
    let seeds: Vec<(Vec<u8>, Vec<u8>)> = ["bert", "distilbert", "roberta"].iter().map(|a| (read(&format!("tests/fixtures/{a}/config.json")), read(&format!("tests/fixtures/{a}/model.safetensors")))).collect();
    fuzz("model", |rng| {
        let (c, s) = mutated_pair(&seeds, rng);
        let Ok(mut m) = Model::from_bytes(&c, &s) else { return Ok(false) };
        finite("layer_norm_eps", &[m.config.layer_norm_eps])?;
        for (name, t) in m.tensors_mut() {
            finite(&name, &t.data)?;
        }
        Ok(true)
    });
}

/// PEFT adapters (config + safetensors) against the BERT fixture's config.
#[test]
fn adapter_loader() {
    let config = ModelConfig::from_json(&read("tests/fixtures/bert/config.json")).unwrap();
    let seeds: Vec<(Vec<u8>, Vec<u8>)> = ["adapter", "train_adapter", "traj_adapter"].iter().map(|a| (read(&format!("tests/fixtures/bert/{a}/adapter_config.json")), read(&format!("tests/fixtures/bert/{a}/adapter_model.safetensors")))).collect();
    fuzz("adapter", |rng| {
        let (c, s) = mutated_pair(&seeds, rng);
        let Ok(a) = Adapter::from_bytes(&c, &s, &config) else { return Ok(false) };
        finite64("scale", &[a.scale()])?;
        for p in &a.pairs {
            finite("lora_A", &p.a.data)?;
            finite("lora_B", &p.b.data)?;
        }
        Ok(true)
    });
}

/// CLS heads (safetensors with `weight` and `bias`).
#[test]
fn head_loader() {
    let seed = read("tests/fixtures/bert/cls_head.safetensors");
    fuzz("head", |rng| {
        let d = mutated(&seed, if rng.chance(0.8) { header_of(&seed) } else { 0..seed.len() }, rng, &seed);
        let Ok(h) = ClsHead::from_safetensors(&d, 48) else { return Ok(false) };
        finite("head weight", &h.weight)?;
        finite("head bias", &[h.bias])?;
        Ok(true)
    });
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// N-best files: JSON Lines (plain and gzip) and SCORE<TAB>TEXT lines.
#[test]
fn nbest_loader() {
    let sample = read("www/sample/librispeech-blstm-dev_clean-20.jsonl");
    let jsonl: Vec<u8> = sample.split(|&b| b == b'\n').take(2).flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    let espnet = b"{\"utt\": \"1-2-3\", \"ref\": \"a b c\", \"hyps\": [{\"text\": \"a b c\", \"score\": -1.5, \"decoder\": -2.0, \"ctc\": -3.25, \"lm\": -10.0}, {\"text\": \"a b\", \"score\": -2.5, \"decoder\": -2.5, \"ctc\": -4.0, \"lm\": -9.0}]}\n".to_vec();
    let text = b"# a comment\n-1.5\thello world\n-2.25\thello word\n\n-0.5\tsecond list\n-3e1\tsecond lisp\n".to_vec();
    let seeds = vec![jsonl.clone(), espnet, text, gzip(&jsonl)];
    fuzz("nbest", |rng| {
        let s = &seeds[rng.below(seeds.len())];
        let o = &seeds[rng.below(seeds.len())];
        let d = mutated(s, 0..s.len(), rng, o);
        // Sometimes the mutation happens before compression, so the parser sees a valid gzip.
        let d = if rng.chance(0.1) { gzip(&d) } else { d };
        let Ok(lists) = lorb::nbest::parse_bytes(&d, "fuzz") else { return Ok(false) };
        let fp = FirstPass::default();
        for nb in &lists {
            for h in &nb.hyps {
                if !h.score.is_finite() || h.fields.keys().any(|k| h.field(k).is_some_and(|v| !v.is_finite())) {
                    return Err(format!("{}: a non-finite score was accepted", nb.utt));
                }
            }
            if let Ok(s) = lorb::rescore::first_pass_scores(nb, &fp) {
                finite64("s1", &s)?;
            }
        }
        Ok(true)
    });
}

/// tokenizer.json files.
#[test]
fn tokenizer_loader() {
    let config = ModelConfig::from_json(&read("tests/fixtures/bert/config.json")).unwrap();
    let seeds: Vec<Vec<u8>> = ["bert", "roberta"].iter().map(|a| read(&format!("tests/fixtures/{a}/tokenizer.json"))).collect();
    fuzz("tokenizer", |rng| {
        let s = &seeds[rng.below(seeds.len())];
        let o = &seeds[rng.below(seeds.len())];
        let d = mutated(s, 0..s.len(), rng, o);
        let Ok(enc) = TextEncoder::from_bytes(&d, &config) else { return Ok(false) };
        let _ = enc.encode(0, "hello world, this is a test");
        Ok(true)
    });
}

/// Text given to the tokenizer: arbitrary Unicode, control characters, very long words and
/// texts, with the truncating and the refusing policy. Accepted ids must fit the vocabulary.
#[test]
fn tokenizer_input() {
    let dir = common::fixture_dir("bert");
    let config = ModelConfig::from_json(&read("tests/fixtures/bert/config.json")).unwrap();
    let mut enc = TextEncoder::load(dir.join("tokenizer.json"), &config).unwrap();
    let cut = {
        let mut e = TextEncoder::load(dir.join("tokenizer.json"), &config).unwrap();
        e.policy = lorb::LongPolicy::Truncate;
        e
    };
    enc.policy = lorb::LongPolicy::Refuse;
    let seed = "mister quilter is the apostle of the middle classes and we are glad to welcome his gospel".as_bytes().to_vec();
    let pieces = ["\u{0}", "\u{feff}", "\u{200b}", "é", "e\u{301}", "中文", "🙂", "\r\n", "\t", "[MASK]", "[CLS]", "<mask>", "##", " ", "'", "ǅ", "\u{10ffff}", "ﬁ"];
    fuzz("text", |rng| {
        let mut d = mutated(&seed, 0..seed.len(), rng, &seed);
        for _ in 0..rng.below(4) {
            let p = pieces[rng.below(pieces.len())].repeat(1 + if rng.chance(0.1) { rng.below(2000) } else { rng.below(3) });
            let at = rng.below(d.len() + 1);
            d.splice(at..at, p.bytes());
        }
        let text = String::from_utf8_lossy(&d);
        let mut accepted = false;
        for e in [&enc, &cut] {
            if let Ok(t) = e.encode(rng.below(3), &text) {
                if t.ids.iter().any(|&i| i as usize >= config.vocab_size) || t.len() > config.max_tokens() {
                    return Err(format!("{} ids, some beyond the vocabulary or positions", t.len()));
                }
                accepted = true;
            }
        }
        Ok(accepted)
    });
}

/// The small parsers: first-pass expressions, λ grids, model configs alone and train_log.json.
#[test]
fn option_parsers() {
    let config = read("tests/fixtures/bert/config.json");
    let log = br#"{"weight": 1.5, "s1": "0.6*decoder+0.4*ctc", "depth": 30, "lexicon_weight": 0.5, "steps": 12, "dev_wer": [6.1, 5.9]}"#.to_vec();
    let s1 = b"0.6*decoder+0.4*ctc-1e-3*lm+score".to_vec();
    let grid = b"0:1.5:0.05".to_vec();
    fuzz("options", |rng| {
        match rng.below(4) {
            0 => {
                let d = mutated(&s1, 0..s1.len(), rng, &grid);
                let Ok(fp) = String::from_utf8_lossy(&d).parse::<FirstPass>() else { return Ok(false) };
                finite64("s1 coefficients", &fp.terms.iter().map(|t| t.0).collect::<Vec<_>>())?;
            }
            1 => {
                let d = mutated(&grid, 0..grid.len(), rng, &s1);
                let Ok(g) = lorb::rescore::parse_grid(&String::from_utf8_lossy(&d)) else { return Ok(false) };
                if g.len() > lorb::rescore::MAX_GRID || g.iter().any(|x| !x.is_finite()) {
                    return Err(format!("grid of {} points accepted", g.len()));
                }
            }
            2 => {
                let d = mutated(&config, 0..config.len(), rng, &log);
                let Ok(c) = ModelConfig::from_json(&d) else { return Ok(false) };
                if !(c.layer_norm_eps > 0.0 && c.layer_norm_eps < 1.0) || c.hidden == 0 || c.hidden % c.heads != 0 {
                    return Err(format!("config accepted with eps {} hidden {} heads {}", c.layer_norm_eps, c.hidden, c.heads));
                }
            }
            _ => {
                let d = mutated(&log, 0..log.len(), rng, &config);
                let Ok(l) = TrainLog::from_bytes(&d, "fuzz") else { return Ok(false) };
                finite64("λ", &[l.weight.unwrap_or(0.0)])?;
                if l.lexicon_weight.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
                    return Err(format!("train_log with lexicon_weight {:?} accepted", l.lexicon_weight));
                }
            }
        }
        Ok(true)
    });
}
