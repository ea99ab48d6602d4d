//! Text → token ids with the model's own `tokenizer.json` (the `tokenizers` crate, built without
//! its native-only features so that the same code runs in wasm32).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use tokenizers::Tokenizer;

/// What to do with a hypothesis longer than the model's position table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongPolicy {
    /// Return [`Error::TooLong`] (the default: nothing is scored on less than it was given).
    #[default]
    Refuse,
    /// Keep the first `max - 1` tokens and the closing special token, and log a warning.
    Truncate,
}

/// One tokenized hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// True for tokens the tokenizer added ([CLS], [SEP], <s>, </s>): never masked or scored.
    pub special: Vec<bool>,
    /// Index of the word each token belongs to (None for special tokens).
    pub word_ids: Vec<Option<u32>>,
    pub truncated: bool,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Positions of the tokens that PLL masks and scores.
    pub fn scored_positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.special.iter().enumerate().filter(|(_, s)| !**s).map(|(i, _)| i)
    }
}

pub struct TextEncoder {
    tok: Tokenizer,
    mask_id: Option<u32>,
    pad_id: u32,
    max_tokens: usize,
    pub policy: LongPolicy,
}

impl TextEncoder {
    /// Parses `tokenizer.json` and checks that its vocabulary fits the model's embedding table.
    pub fn from_bytes(tokenizer_json: &[u8], config: &ModelConfig) -> Result<Self> {
        // Parsed as JSON first: tokenizers 0.22 panics (`expect("Helper")` in its decoder's
        // deserializer) on a syntax error inside "decoder", and a panic aborts in the browser.
        // From a parsed value its deserializers only meet well-formed JSON, and return errors.
        let json: serde_json::Value = serde_json::from_slice(tokenizer_json).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut tok: Tokenizer = serde_json::from_value(json).map_err(|e| Error::Tokenizer(e.to_string()))?;
        tok.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
        tok.with_padding(None);
        let vocab = tok.get_vocab(true);
        let max_id = vocab.values().copied().max().map(|m| m as usize + 1).unwrap_or(0);
        if max_id > config.vocab_size {
            return Err(Error::VocabMismatch { tokenizer: max_id, model: config.vocab_size });
        }
        let mask_id = ["[MASK]", "<mask>"].iter().find_map(|t| tok.token_to_id(t));
        Ok(TextEncoder { tok, mask_id, pad_id: config.pad_token_id, max_tokens: config.max_tokens(), policy: LongPolicy::Refuse })
    }

    pub fn load(path: impl AsRef<std::path::Path>, config: &ModelConfig) -> Result<Self> {
        let p = path.as_ref();
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        Self::from_bytes(&bytes, config)
    }

    pub fn mask_id(&self) -> Option<u32> {
        self.mask_id
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenizes one hypothesis (`index` only labels errors). An empty text is an ASR output
    /// like any other (it tokenizes to the special tokens alone).
    pub fn encode(&self, index: usize, text: &str) -> Result<Tokens> {
        let enc = self.tok.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut t = Tokens {
            ids: enc.get_ids().to_vec(),
            special: enc.get_special_tokens_mask().iter().map(|&m| m != 0).collect(),
            word_ids: enc.get_word_ids().to_vec(),
            truncated: false,
        };
        for (i, s) in t.special.iter().enumerate() {
            if *s {
                t.word_ids[i] = None;
            }
        }
        if t.ids.len() > self.max_tokens {
            match self.policy {
                LongPolicy::Refuse => {
                    return Err(Error::TooLong { utt: String::new(), index, tokens: t.ids.len(), max: self.max_tokens, text: text.to_string() })
                }
                LongPolicy::Truncate => {
                    log::debug!("hypothesis {index} has {} tokens; truncated to {}", t.ids.len(), self.max_tokens);
                    // Keep the first max - 1 tokens and the closing one ([SEP], </s>).
                    fn cut<T: Copy>(v: &mut Vec<T>, keep: usize) {
                        let end = v[v.len() - 1];
                        v.truncate(keep);
                        v.push(end);
                    }
                    let keep = self.max_tokens - 1;
                    cut(&mut t.ids, keep);
                    cut(&mut t.special, keep);
                    cut(&mut t.word_ids, keep);
                    t.truncated = true;
                }
            }
        }
        Ok(t)
    }
}
