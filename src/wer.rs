//! Word error rate: word-level Levenshtein distance, summed over utterances, divided by the
//! number of reference words. Whitespace-split, case-sensitive, as ../shared/data defines it.

/// Word-level edit distance (substitutions, insertions, deletions all cost 1).
pub fn word_errors(reference: &str, hypothesis: &str) -> usize {
    let r: Vec<&str> = reference.split_whitespace().collect();
    let h: Vec<&str> = hypothesis.split_whitespace().collect();
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    let mut cur = vec![0; h.len() + 1];
    for (i, rw) in r.iter().enumerate() {
        cur[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[h.len()]
}

pub fn word_count(reference: &str) -> usize {
    reference.split_whitespace().count()
}

/// Accumulates errors and reference words over utterances.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WerCount {
    pub errors: usize,
    pub words: usize,
}

impl WerCount {
    pub fn add(&mut self, reference: &str, hypothesis: &str) {
        self.errors += word_errors(reference, hypothesis);
        self.words += word_count(reference);
    }
    /// WER in percent.
    pub fn percent(&self) -> f64 {
        if self.words == 0 {
            0.0
        } else {
            100.0 * self.errors as f64 / self.words as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn edit_distance_cases() {
        assert_eq!(word_errors("a b c", "a b c"), 0);
        assert_eq!(word_errors("a b c", "a x c"), 1);
        assert_eq!(word_errors("a b c", "a c"), 1);
        assert_eq!(word_errors("a b c", "a b c d"), 1);
        assert_eq!(word_errors("a b c", ""), 3);
        assert_eq!(word_errors("", "x y"), 2);
        assert_eq!(word_errors("the cat sat", "cat sat the"), 2);
        assert_eq!(word_errors("A b", "a b"), 1, "case-sensitive");
    }
}
