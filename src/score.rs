//! Second-pass scores s2 for hypotheses: RescoreBERT's CLS score and Salazar et al.'s
//! pseudo-log-likelihood (PLL), with token or whole-word (word-l2r) masking.
//!
//! Path of one hypothesis: text → [`TextEncoder::encode`] → token ids → [`Batch`] (one batch per
//! n-best list, padded to the list's longest hypothesis) → [`Backend`] → one score.

use crate::backend::Backend;
use crate::batch::{Batch, Slot};
use crate::error::{Error, Result};
use crate::model::{ClsHead, Model};
use crate::tokenize::{TextEncoder, Tokens};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `w·h_CLS + b` from the final layer.
    Cls,
    /// Pseudo-log-likelihood: mask each token alone.
    Pll,
    /// PLL-word-l2r: mask a token and the later pieces of its word.
    PllWord,
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cls" => Ok(Method::Cls),
            "pll" => Ok(Method::Pll),
            "pll-word" | "pll_word" => Ok(Method::PllWord),
            _ => Err(Error::Input(format!("method {s:?}: expected cls, pll or pll-word"))),
        }
    }
}

/// Every score leaving lorb is finite: the first non-finite one is an [`Error::NonFiniteScore`]
/// (its `utt` is filled in by [`Error::in_list`] where the list is known).
pub fn ensure_finite(scores: &[f64]) -> Result<()> {
    match scores.iter().position(|s| !s.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFiniteScore { utt: String::new(), index, value: scores[index] }),
    }
}

/// Most hypotheses per list by default, the same for every method (CLS, PLL) and every path
/// (the CLI, the JS API, training). Memory does not grow with it: both backends run a list in
/// chunks of bounded size. It guards time against runaway input: PLL scores one masked copy per
/// token, ≈ 20,000 copies for 1,000 hypotheses of 20 tokens. Scoring may raise it
/// ([`Scorer::max_hyps`]); training, which keeps a whole list's activations for the backward
/// pass, keeps it.
pub const DEFAULT_MAX_HYPS: usize = 1000;

/// A list of `n` hypotheses is allowed when `n ≤ max` (an [`Error::NBestTooLarge`] otherwise).
pub fn check_list_size(n: usize, max: usize) -> Result<()> {
    if n > max {
        return Err(Error::NBestTooLarge { utt: String::new(), n, max });
    }
    Ok(())
}

/// Most hypotheses per encoder batch when the GPU CLS-scores several lists together
/// ([`Scorer::score_lists`]).
pub const CLS_GROUP: usize = 2048;

pub struct Scorer {
    pub encoder: TextEncoder,
    pub backend: Backend,
    pub cls_head: Option<ClsHead>,
    pub max_hyps: usize,
    /// The adapter merged into the backend's weights, if any.
    adapter: Option<std::sync::Arc<crate::adapter::Adapter>>,
}

/// The masked copies of a list's hypotheses for PLL: each copy masks one scored token (and, for
/// word-l2r, the later pieces of its word); the slot asks for the original token there.
pub fn pll_copies(tokens: &[Tokens], mask_id: u32, whole_word: bool) -> (Vec<Vec<u32>>, Vec<Slot>, Vec<usize>) {
    let mut copies = Vec::new();
    let mut slots = Vec::new();
    let mut owner = Vec::new();
    for (h, t) in tokens.iter().enumerate() {
        for i in t.scored_positions() {
            let mut ids = t.ids.clone();
            ids[i] = mask_id;
            if whole_word {
                for j in i + 1..t.len() {
                    if !t.special[j] && t.word_ids[j].is_some() && t.word_ids[j] == t.word_ids[i] {
                        ids[j] = mask_id;
                    }
                }
            }
            slots.push(Slot { row: copies.len() as u32, pos: i as u32, target: t.ids[i] });
            copies.push(ids);
            owner.push(h);
        }
    }
    (copies, slots, owner)
}

impl Scorer {
    pub fn new(encoder: TextEncoder, backend: Backend, cls_head: Option<ClsHead>) -> Self {
        Scorer { encoder, backend, cls_head, max_hyps: DEFAULT_MAX_HYPS, adapter: None }
    }

    /// Loads `config.json`, `model.safetensors`, `tokenizer.json` (and `cls_head.safetensors`
    /// when the folder has one) from a model folder.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn load_dir(dir: impl AsRef<std::path::Path>, kind: crate::BackendKind) -> Result<Self> {
        Self::load_dir_with(dir, kind, crate::gpu::Dtype::F32, None).await
    }

    /// [`Scorer::load_dir`] with the GPU's weights in `dtype` and an adapter folder applied; an
    /// adapter with a trained MLM head gives an encoder-only model that head
    /// ([`Model::add_mlm_head_from`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn load_dir_with(dir: impl AsRef<std::path::Path>, kind: crate::BackendKind, dtype: crate::gpu::Dtype, adapter: Option<&std::path::Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut model = Model::load_dir(dir)?;
        let adapter = adapter.map(|a| crate::adapter::Adapter::load_dir(a, &model.config)).transpose()?;
        if let Some(a) = &adapter {
            model.add_mlm_head_from(a);
        }
        let encoder = TextEncoder::load(dir.join("tokenizer.json"), &model.config)?;
        let head_path = dir.join("cls_head.safetensors");
        let head = if head_path.exists() { Some(ClsHead::load(&head_path, model.config.hidden)?) } else { None };
        let backend = Backend::with_dtype(std::sync::Arc::new(model), kind, dtype).await?;
        let mut s = Scorer::new(encoder, backend, head);
        if let Some(a) = adapter {
            s.set_adapter(a).await?;
        }
        Ok(s)
    }

    pub fn model(&self) -> &Model {
        self.backend.model()
    }

    /// Applies a LoRA adapter (merged into the weights, replacing any earlier one); its CLS
    /// head, when it has one, becomes the scoring head.
    pub async fn set_adapter(&mut self, adapter: crate::adapter::Adapter) -> Result<()> {
        self.use_adapter(Some(std::sync::Arc::new(adapter))).await
    }

    /// The adapter merged now (to put back later with [`Scorer::use_adapter`]).
    pub fn adapter(&self) -> Option<std::sync::Arc<crate::adapter::Adapter>> {
        self.adapter.clone()
    }

    /// Merges `adapter` (replacing any earlier one; `None`: the base weights); its CLS head,
    /// when it has one, becomes the scoring head.
    pub async fn use_adapter(&mut self, adapter: Option<std::sync::Arc<crate::adapter::Adapter>>) -> Result<()> {
        if let Some(h) = adapter.as_ref().and_then(|a| a.cls_head.as_ref()) {
            self.cls_head = Some(h.clone());
        }
        self.backend.set_adapter(adapter.clone()).await?;
        self.adapter = adapter;
        Ok(())
    }

    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokens>> {
        let t: Vec<Tokens> = texts.iter().enumerate().map(|(i, t)| self.encoder.encode(i, t)).collect::<Result<_>>()?;
        let cut = t.iter().filter(|t| t.truncated).count();
        if cut > 0 {
            log::warn!("{cut} of {} hypotheses truncated to {} tokens", t.len(), self.encoder.max_tokens());
        }
        Ok(t)
    }

    fn batch(&self, tokens: &[Tokens]) -> Result<Batch> {
        let seqs: Vec<&[u32]> = tokens.iter().map(|t| t.ids.as_slice()).collect();
        Batch::pad(&seqs, self.encoder.pad_id())
    }

    /// Scores the hypotheses of one n-best list together (one batch, padded to the longest).
    /// Empty hypotheses are legitimate ASR outputs: their PLL is 0 (no tokens to score).
    pub async fn score_list(&mut self, texts: &[&str], method: Method) -> Result<Vec<f64>> {
        let s = self.score_list_unchecked(texts, method).await?;
        ensure_finite(&s)?;
        Ok(s)
    }

    /// A list of `n` hypotheses can be scored: not empty, not over [`Scorer::max_hyps`].
    fn check_list(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::EmptyNBest(String::new()));
        }
        check_list_size(n, self.max_hyps)
    }

    fn head(&self) -> Result<ClsHead> {
        self.cls_head.clone().ok_or_else(|| Error::NoClsHead("the model folder has no cls_head.safetensors and no adapter supplied one (on the command line: --head FILE)".into()))
    }

    /// s2 of every hypothesis of every list: the path of the CLI's list commands. PLL runs one
    /// list per batch (all its masked copies); CLS on the GPU runs several whole lists per batch,
    /// up to [`CLS_GROUP`] hypotheses (fewer, fuller submissions), on the CPU one list per batch
    /// (its packed tokens gain nothing from grouping). Results do not depend on the grouping.
    /// Each list is checked as in [`Scorer::score_list`] and every score is finite; errors name
    /// the list's utterance. `done(k)` reports `k` more lists scored.
    pub async fn score_lists(&mut self, lists: &[crate::nbest::NBest], method: Method, done: &mut dyn FnMut(usize)) -> Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(lists.len());
        if method != Method::Cls {
            for nb in lists {
                let texts: Vec<&str> = nb.hyps.iter().map(|h| h.text.as_str()).collect();
                out.push(self.score_list(&texts, method).await.map_err(|e| e.in_list(&nb.utt))?);
                done(1);
            }
            return Ok(out);
        }
        let head = self.head()?;
        let group = if self.backend.is_gpu() { CLS_GROUP } else { 1 };
        for (nb, s) in lists.iter().zip(self.cls_lists(lists, group, Some(&head), done).await?) {
            let s: Vec<f64> = s.into_iter().map(f64::from).collect();
            ensure_finite(&s).map_err(|e| e.in_list(&nb.utt))?;
            out.push(s);
        }
        Ok(out)
    }

    /// For each list, the CLS scores of its hypotheses under `head`, or without a head their
    /// final [CLS] vectors (`[hyps × H]`); several whole lists per encoder batch, up to `group`
    /// hypotheses (a longer list forms a batch alone). Lists are checked as in
    /// [`Scorer::score_list`]; errors name the list's utterance. `done(k)`: `k` more lists done.
    pub async fn cls_lists(&mut self, lists: &[crate::nbest::NBest], group: usize, head: Option<&ClsHead>, done: &mut dyn FnMut(usize)) -> Result<Vec<Vec<f32>>> {
        let per_hyp = if head.is_some() { 1 } else { self.model().config.hidden };
        let mut out = Vec::with_capacity(lists.len());
        let mut i = 0;
        while i < lists.len() {
            let (mut j, mut n, mut tokens) = (i, 0, Vec::new());
            while j < lists.len() && (j == i || n + lists[j].hyps.len() <= group) {
                let nb = &lists[j];
                let texts: Vec<&str> = nb.hyps.iter().map(|h| h.text.as_str()).collect();
                self.check_list(texts.len()).map_err(|e| e.in_list(&nb.utt))?;
                tokens.extend(self.tokenize(&texts).map_err(|e| e.in_list(&nb.utt))?);
                n += texts.len();
                j += 1;
            }
            let batch = self.batch(&tokens)?;
            let values = match head {
                Some(h) => self.backend.cls_scores(&batch, h).await?,
                None => self.backend.cls_vectors(&batch).await?,
            };
            let mut at = 0;
            for nb in &lists[i..j] {
                let k = nb.hyps.len() * per_hyp;
                out.push(values[at..at + k].to_vec());
                at += k;
            }
            done(j - i);
            i = j;
        }
        Ok(out)
    }

    async fn score_list_unchecked(&mut self, texts: &[&str], method: Method) -> Result<Vec<f64>> {
        self.check_list(texts.len())?;
        let tokens = self.tokenize(texts)?;
        match method {
            Method::Cls => {
                let head = self.head()?;
                let batch = self.batch(&tokens)?;
                Ok(self.backend.cls_scores(&batch, &head).await?.into_iter().map(f64::from).collect())
            }
            Method::Pll | Method::PllWord => {
                let mask = self.encoder.mask_id().ok_or_else(|| Error::Tokenizer("the tokenizer has no mask token".into()))?;
                if self.model().mlm.is_none() {
                    return Err(Error::NoMlmHead);
                }
                let (copies, slots, owner) = pll_copies(&tokens, mask, method == Method::PllWord);
                let mut out = vec![0f64; texts.len()];
                if copies.is_empty() {
                    return Ok(out);
                }
                let seqs: Vec<&[u32]> = copies.iter().map(|c| c.as_slice()).collect();
                let batch = Batch::pad(&seqs, self.encoder.pad_id())?;
                let lp = self.backend.masked_logprobs(&batch, &slots).await?;
                for (v, h) in lp.into_iter().zip(owner) {
                    out[h] += v as f64;
                }
                Ok(out)
            }
        }
    }

    /// Scores independent texts (each must be non-empty), in one batch.
    pub async fn score_texts(&mut self, texts: &[&str], method: Method) -> Result<Vec<f64>> {
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::EmptyHypothesis(i));
        }
        self.score_list(texts, method).await
    }

    /// Final [CLS] vectors of texts, one `Vec` of H values each.
    pub async fn cls_vectors(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::EmptyHypothesis(i));
        }
        let tokens = self.tokenize(texts)?;
        let batch = self.batch(&tokens)?;
        let h = self.model().config.hidden;
        Ok(self.backend.cls_vectors(&batch).await?.chunks_exact(h).map(|c| c.to_vec()).collect())
    }
}
