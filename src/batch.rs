//! A batch of token sequences padded to one length, and the (row, position, target) slots at
//! which the masked-LM head is evaluated. This is what both backends consume.

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[rows × seq]` token ids, each row padded with the pad id after its length.
    pub ids: Vec<u32>,
    /// Real length of each row (special tokens included).
    pub lens: Vec<u32>,
    pub seq: usize,
}

impl Batch {
    /// Pads `seqs` to the longest of them.
    pub fn pad(seqs: &[&[u32]], pad_id: u32) -> Result<Self> {
        let seq = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if seqs.is_empty() || seq == 0 {
            return Err(Error::Input("empty batch".into()));
        }
        let mut ids = Vec::with_capacity(seqs.len() * seq);
        let mut lens = Vec::with_capacity(seqs.len());
        for s in seqs {
            if s.is_empty() {
                return Err(Error::Input("empty token sequence".into()));
            }
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(pad_id, seq - s.len()));
            lens.push(s.len() as u32);
        }
        Ok(Batch { ids, lens, seq })
    }

    pub fn rows(&self) -> usize {
        self.lens.len()
    }

    /// Checks ids against the vocabulary and lengths against the position table.
    pub fn validate(&self, vocab: usize, max_tokens: usize) -> Result<()> {
        if self.ids.len() != self.rows() * self.seq {
            return Err(Error::Input("batch ids do not match rows × seq".into()));
        }
        if self.seq > max_tokens {
            return Err(Error::Input(format!("sequence length {} exceeds the model's {max_tokens} positions", self.seq)));
        }
        if let Some(&bad) = self.ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::Input(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        if self.lens.iter().any(|&l| l == 0 || l as usize > self.seq) {
            return Err(Error::Input("row length out of range".into()));
        }
        Ok(())
    }

    /// Rows `lo..hi` as a batch of their own (same padded length).
    pub fn slice_rows(&self, lo: usize, hi: usize) -> Batch {
        Batch { ids: self.ids[lo * self.seq..hi * self.seq].to_vec(), lens: self.lens[lo..hi].to_vec(), seq: self.seq }
    }
}

/// `[rows × seq, h]` zeros with row b's first position set to `v[b]` (`v` is `[rows, h]`): the
/// gradient of a loss on the [CLS] vectors, spread over the hidden states.
pub fn at_first_positions(v: &[f32], rows: usize, seq: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * seq * h];
    for b in 0..rows {
        out[b * seq * h..][..h].copy_from_slice(&v[b * h..(b + 1) * h]);
    }
    out
}

/// Where the MLM head is evaluated: the log-probability of `target` at `(row, pos)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub row: u32,
    pub pos: u32,
    pub target: u32,
}

pub fn validate_slots(batch: &Batch, slots: &[Slot], vocab: usize) -> Result<()> {
    for s in slots {
        if s.row as usize >= batch.rows() || s.pos >= batch.lens[s.row as usize] || s.target as usize >= vocab {
            return Err(Error::Input(format!("MLM slot {s:?} is outside the batch or vocabulary")));
        }
    }
    Ok(())
}
