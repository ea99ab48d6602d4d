//! Text for masked-LM training: running text cut into sentence-sized pieces like the
//! hypotheses an MLM head will score.

/// The sentences of a text file: of each paragraph (blank-line separated) when the file has such
/// paragraphs, else of each line (one sentence per line, as in LM corpora); pieces under 3 words
/// are dropped.
pub fn sentences_of(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n");
    let units: Vec<String> = if text.contains("\n\n") { text.split("\n\n").map(|p| p.replace('\n', " ")).collect() } else { text.lines().map(str::to_string).collect() };
    units.iter().flat_map(|u| sentences(u)).filter(|l| l.split_whitespace().count() >= 3).collect()
}

/// A unit of running text (a line or a paragraph) cut into sentences (after `.`, `!`, `?` or
/// `;`; a piece under 3 words joins the one before), and those longer than 48 words into
/// pieces: books put whole paragraphs on one line.
pub fn sentences(unit: &str) -> Vec<String> {
    const MAX_WORDS: usize = 48;
    let mut out: Vec<Vec<&str>> = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for w in unit.split_whitespace() {
        cur.push(w);
        let bare = w.trim_end_matches(['"', '\'', ')', '\u{201d}', '\u{2019}']);
        let title = matches!(bare, "Mr." | "Mrs." | "Dr." | "St." | "Ms.");
        let ends = !title && bare.ends_with(['.', '!', '?', ';']);
        if ends || cur.len() == MAX_WORDS {
            match out.last_mut() {
                Some(prev) if cur.len() < 3 && prev.len() + cur.len() <= MAX_WORDS => prev.append(&mut cur),
                _ => out.push(std::mem::take(&mut cur)),
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter().map(|s| s.join(" ")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_become_sentences() {
        let p = "\"Poor Mr. Woodhouse!\" said Emma. It rained; we stayed in. And then";
        assert_eq!(sentences(p), ["\"Poor Mr. Woodhouse!\" said Emma. It rained;", "we stayed in.", "And then"]);
        let long = vec!["word"; 100].join(" ");
        assert_eq!(sentences(&long).iter().map(|s| s.split(' ').count()).collect::<Vec<_>>(), [48, 48, 4]);
        // Paragraphs wrapped over lines are joined; a file without blank lines is one unit a line.
        assert_eq!(sentences_of("It was a dark\r\nand stormy night.\r\n\r\nThe end of it all."), ["It was a dark and stormy night.", "The end of it all."]);
        assert_eq!(sentences_of("one sentence per line here\nanother one right here\nno"), ["one sentence per line here", "another one right here"]);
    }
}
