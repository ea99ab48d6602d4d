//! The user's words: a boost for hypotheses that use the rare words of transcripts the user has
//! corrected (a cache language model over their vocabulary, as contextual biasing in ASR does).
//!
//! A chapter's names and rare words recur: once a user has corrected "quilter", a later
//! hypothesis with "quilter" deserves more credit than one with "quilder". [`Lexicon`] holds each
//! word of the corrected transcripts with its rarity above [`RARITY_FLOOR`], and
//! [`Lexicon::boost`] sums them over a hypothesis' words. Personalisation adds `β · boost` to the
//! first-pass score of the lists that come next (`personalize::Options::lexicon_weight`); common
//! words ("the", "said") earn nothing, so the boost does not reward inserting them.
//!
//! Rarity is `ln(N / (c + 1))` with `c` a word's count in 0.94 M words of public-domain books
//! (assets/word-counts.txt.gz, written by scripts/data/word_counts.py; words seen once there
//! count as unseen).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Rarity at or below which a word earns no boost: `ln(N / (c + 1)) ≤ 6`, words at least as
/// common as one in 400 in the books (c ≥ 2,343 of 0.94 M: their 61 most frequent words).
/// Chosen on the dev sets (issue 14; README).
pub const RARITY_FLOOR: f64 = 6.0;

const COUNTS: &[u8] = include_bytes!("../assets/word-counts.txt.gz");

struct Counts {
    total: f64,
    of: HashMap<String, u32>,
}

fn counts() -> &'static Counts {
    static C: OnceLock<Counts> = OnceLock::new();
    C.get_or_init(|| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(COUNTS), &mut text).expect("the built-in word counts are a valid gzip file");
        let mut lines = text.lines();
        let total = lines.next().and_then(|l| l.strip_prefix("# total ")).and_then(|n| n.parse::<f64>().ok()).expect("the built-in word counts start with their total");
        let of = lines
            .filter_map(|l| {
                let (w, c) = l.rsplit_once(' ')?;
                Some((w.to_string(), c.parse().ok()?))
            })
            .collect();
        Counts { total, of }
    })
}

/// The words of `text` as the counts were made: the text lower-cased, ’ read as ', then runs of
/// letters and digits with inner apostrophes kept ("don't"); everything else separates. (The
/// same as the counting script's pattern on ASCII text, which is all the counts hold; beyond
/// ASCII, Rust's and Python's letter classes differ slightly, and such words are unseen either
/// way.)
pub fn words(text: &str) -> impl Iterator<Item = String> {
    let text = text.to_lowercase().replace('\u{2019}', "'");
    let words: Vec<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        // "a''b" is two words, as the counting script's pattern splits it.
        .flat_map(|w| w.split("''"))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    words.into_iter()
}

/// How rare `word` (already as [`words`] gives it) is: `ln(N / (c + 1))`.
pub fn rarity(word: &str) -> f64 {
    let c = counts();
    (c.total / (c.of.get(word).copied().unwrap_or(0) as f64 + 1.0)).ln()
}

/// The words of a user's corrected transcripts, each with its rarity above [`RARITY_FLOOR`]
/// (words at or below it are left out).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lexicon {
    weights: HashMap<String, f64>,
}

impl Lexicon {
    /// The lexicon of `transcripts` (the user's corrections).
    pub fn from_transcripts<'a>(transcripts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut weights = HashMap::new();
        for t in transcripts {
            for w in words(t) {
                let r = rarity(&w) - RARITY_FLOOR;
                if r > 0.0 {
                    weights.insert(w, r);
                }
            }
        }
        Lexicon { weights }
    }

    /// The sum, over the words of `text` (each time one occurs), of their weight in the lexicon.
    pub fn boost(&self, text: &str) -> f64 {
        words(text).filter_map(|w| self.weights.get(&w)).sum()
    }

    /// `beta` times the boost of each text (one per hypothesis of a list).
    pub fn boosts<'a>(&self, texts: impl IntoIterator<Item = &'a str>, beta: f64) -> Vec<f64> {
        texts.into_iter().map(|t| beta * self.boost(t)).collect()
    }

    /// The words and their weights, the heaviest first.
    pub fn entries(&self) -> Vec<(&str, f64)> {
        let mut v: Vec<(&str, f64)> = self.weights.iter().map(|(w, &x)| (w.as_str(), x)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts file read here by hand, apart from `counts()`.
    fn file() -> (f64, HashMap<String, f64>) {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(COUNTS), &mut s).unwrap();
        let total: f64 = s.lines().next().unwrap()[8..].parse().unwrap();
        let m = s.lines().skip(1).map(|l| {
            let mut it = l.split(' ');
            (it.next().unwrap().to_string(), it.next().unwrap().parse().unwrap())
        });
        (total, m.collect())
    }

    #[test]
    fn words_split_as_the_counting_script() {
        let w: Vec<String> = words("Mister QUILTER's 'gospel', don’t--o'clock 42nd ''tis a'''b").collect();
        assert_eq!(w, ["mister", "quilter's", "gospel", "don't", "o'clock", "42nd", "tis", "a", "b"]);
    }

    #[test]
    fn rare_corrected_words_are_boosted_common_ones_not() {
        let (total, c) = file();
        assert!(total > 900_000.0 && c["the"] > 40_000.0, "the counts file: total {total}, the {}", c["the"]);
        let lex = Lexicon::from_transcripts(["Mister Quilter is the apostle of the middle classes"]);
        // "quilter" is in neither book: rarity ln(N).
        let quilter = total.ln() - RARITY_FLOOR;
        let middle = (total / (c["middle"] + 1.0)).ln() - RARITY_FLOOR;
        assert!((lex.boost("quilter") - quilter).abs() < 1e-12);
        assert!((lex.boost("the MIDDLE, quilter and quilter") - (middle + 2.0 * quilter)).abs() < 1e-12);
        // Common words ("the", "is", "of") are not in it; words the user never wrote earn nothing.
        for w in ["the", "is", "of"] {
            assert!((total / (c[w] + 1.0)).ln() <= RARITY_FLOOR, "{w} is common");
            assert_eq!(lex.boost(w), 0.0, "{w}");
        }
        assert_eq!(lex.boost("quilder is in the middle"), middle);
        let e = lex.entries();
        assert_eq!(e[0], ("apostle", quilter), "unseen words weigh most; ties in word order: {e:?}");
        assert!(e.contains(&("quilter", quilter)));
        assert!(e.windows(2).all(|p| p[0].1 >= p[1].1) && e.iter().any(|&(w, x)| w == "middle" && x == middle));
        assert!(Lexicon::from_transcripts([""]).is_empty());
    }
}
