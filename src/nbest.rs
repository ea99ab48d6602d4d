//! N-best lists: the JSON Lines format of ../shared/data (gzip or plain) and a plain text format.
//!
//! JSONL: one utterance per line, `{"utt", "ref"?, "hyps": [{"text", "score", ...fields}]}`.
//! Plain text: one hypothesis per line as `SCORE<TAB>TEXT`; a blank line ends an utterance.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Read};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    pub text: String,
    /// First-pass total log-score (higher is better).
    pub score: f64,
    /// Other numeric fields (first-pass components such as `decoder`, `ctc`, `lm`).
    #[serde(flatten)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

impl Hypothesis {
    pub fn field(&self, name: &str) -> Option<f64> {
        if name == "score" {
            return Some(self.score);
        }
        self.fields.get(name).and_then(|v| v.as_f64())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NBest {
    pub utt: String,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub hyps: Vec<Hypothesis>,
}

/// Reads a whole n-best file (gzip detected by its magic bytes).
pub fn read_file(path: impl AsRef<std::path::Path>) -> Result<Vec<NBest>> {
    let p = path.as_ref();
    let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
    parse_bytes(&bytes, &p.display().to_string())
}

/// Parses n-best bytes: gzip or plain; JSON Lines when the first non-blank line starts with `{`,
/// the `SCORE<TAB>TEXT` format otherwise.
pub fn parse_bytes(bytes: &[u8], what: &str) -> Result<Vec<NBest>> {
    let mut owned;
    let mut data: &[u8] = bytes;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        owned = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut owned)
            .map_err(|e| {
                // Name the line the stream broke in: one past the lines that came out whole.
                let line = owned.iter().filter(|&&b| b == b'\n').count() + 1;
                Error::Parse { what: what.into(), line, msg: format!("the gzip stream is broken or truncated here ({e})") }
            })?;
        data = &owned;
    }
    // A UTF-8 byte-order mark (as some editors write) is not part of the first line.
    data = data.strip_prefix("\u{feff}".as_bytes()).unwrap_or(data);
    let text = std::str::from_utf8(data).map_err(|e| {
        let line = data[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::Parse { what: what.into(), line, msg: "not valid UTF-8".into() }
    })?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if first.trim_start().starts_with('[') {
        return Err(Error::Parse { what: what.into(), line: 1, msg: "a JSON array: lorb reads JSON Lines, one {\"utt\", \"hyps\"} object per line".into() });
    }
    if first.trim_start().starts_with('{') {
        parse_jsonl(text, what)
    } else {
        parse_plain(text.as_bytes(), what)
    }
}

fn parse_jsonl(text: &str, what: &str) -> Result<Vec<NBest>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let nb: NBest = serde_json::from_str(line).map_err(|e| Error::Parse { what: what.into(), line: i + 1, msg: e.to_string() })?;
        if nb.hyps.is_empty() {
            return Err(Error::EmptyNBest(nb.utt));
        }
        out.push(nb);
    }
    Ok(out)
}

fn parse_plain(bytes: &[u8], what: &str) -> Result<Vec<NBest>> {
    let mut out = Vec::new();
    let mut cur: Vec<Hypothesis> = Vec::new();
    let flush = |cur: &mut Vec<Hypothesis>, out: &mut Vec<NBest>| {
        if !cur.is_empty() {
            out.push(NBest { utt: format!("utt{}", out.len()), reference: None, hyps: std::mem::take(cur) });
        }
    };
    for (i, line) in bytes.lines().enumerate() {
        let line = line.map_err(|e| Error::Parse { what: what.into(), line: i + 1, msg: e.to_string() })?;
        if line.trim().is_empty() {
            flush(&mut cur, &mut out);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (score, text) = line.split_once('\t').ok_or_else(|| Error::Parse {
            what: what.into(),
            line: i + 1,
            msg: "expected SCORE<TAB>TEXT".into(),
        })?;
        let score: f64 = score.trim().parse().ok().filter(|x: &f64| x.is_finite()).ok_or_else(|| Error::Parse {
            what: what.into(),
            line: i + 1,
            msg: format!("score {score:?} is not a finite number"),
        })?;
        cur.push(Hypothesis { text: text.to_string(), score, fields: BTreeMap::new() });
    }
    flush(&mut cur, &mut out);
    Ok(out)
}

/// The first-pass score s1 as a weighted sum of hypothesis fields, e.g. `score` (the default) or
/// `0.6*decoder+0.4*ctc` (the ESPnet lists' acoustic-only first pass).
#[derive(Debug, Clone, PartialEq)]
pub struct FirstPass {
    pub terms: Vec<(f64, String)>,
}

impl Default for FirstPass {
    fn default() -> Self {
        FirstPass { terms: vec![(1.0, "score".into())] }
    }
}

impl std::str::FromStr for FirstPass {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |m: &str| Error::Input(format!("first-pass expression {s:?}: {m}"));
        let mut terms = Vec::new();
        let norm = s.replace(' ', "").replace('-', "+-");
        for term in norm.split('+').filter(|t| !t.is_empty()) {
            let (coef, name) = match term.split_once('*') {
                Some((c, n)) => (c.parse::<f64>().ok().filter(|c| c.is_finite()).ok_or_else(|| bad("a coefficient must be a finite number"))?, n),
                None => match term.strip_prefix('-') {
                    Some(n) => (-1.0, n),
                    None => (1.0, term),
                },
            };
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(bad("bad field name"));
            }
            terms.push((coef, name.to_string()));
        }
        if terms.is_empty() {
            return Err(bad("empty"));
        }
        Ok(FirstPass { terms })
    }
}

/// The expression back as text, e.g. `0.6*decoder+0.4*ctc+0.9*lm` or `score` (parses to the same
/// terms).
impl std::fmt::Display for FirstPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (c, n)) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            if *c == 1.0 {
                f.write_str(n)?;
            } else {
                write!(f, "{c}*{n}")?;
            }
        }
        Ok(())
    }
}

impl FirstPass {
    /// s1 of `h`; a sum that overflows to ±∞ is an error, never a score.
    pub fn eval(&self, h: &Hypothesis) -> Result<f64> {
        let s: f64 = self.terms.iter().zip(self.values(h)?).map(|((c, _), x)| c * x).sum();
        if s.is_finite() {
            Ok(s)
        } else {
            Err(Error::Input(format!("the first-pass score {self} of hypothesis {:?} is {s}, not a finite number", h.text.chars().take(80).collect::<String>())))
        }
    }

    /// Each term's field value for `h` (unweighted), in the order of `terms`.
    pub fn values(&self, h: &Hypothesis) -> Result<Vec<f64>> {
        self.terms.iter().map(|(_, n)| h.field(n).ok_or_else(|| Error::Input(format!("hypothesis has no numeric field {n:?}")))).collect()
    }
}
