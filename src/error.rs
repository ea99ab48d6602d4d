//! One error type for the whole library. Every failure a user can cause (bad files, bad input,
//! GPU limits) is a variant here with a clear message; nothing user-triggered panics.

use std::fmt;

/// A machine-readable category, stable across versions (the wasm API exposes it as `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Io,
    Config,
    Weights,
    Tokenizer,
    Input,
    Gpu,
    Adapter,
    Training,
    Cancelled,
    Unsupported,
    /// A computation met a NaN or an infinity (a broken adapter, an overflowing weight).
    Numeric,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Io => "io",
            ErrorKind::Config => "config",
            ErrorKind::Weights => "weights",
            ErrorKind::Tokenizer => "tokenizer",
            ErrorKind::Input => "input",
            ErrorKind::Gpu => "gpu",
            ErrorKind::Adapter => "adapter",
            ErrorKind::Training => "training",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Numeric => "numeric",
        };
        f.write_str(s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("config.json: {0}")]
    Config(String),
    #[error("unknown model_type {0:?}: lorb reads bert, roberta and distilbert models")]
    UnknownArchitecture(String),
    #[error("model.safetensors is not a valid safetensors file: {0}")]
    MalformedWeights(String),
    #[error("model.safetensors has no tensor {name:?} (looked for {tried})")]
    MissingTensor { name: String, tried: String },
    #[error("tensor {name:?} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("tensor {name:?} has dtype {dtype}; lorb reads F32, F16 and BF16")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("tokenizer vocabulary ({tokenizer} tokens) does not fit the model's embeddings ({model} rows)")]
    VocabMismatch { tokenizer: usize, model: usize },
    #[error("the model has no masked-LM head (PLL scoring needs one); use --method cls or a model with an MLM head")]
    NoMlmHead,
    #[error("no CLS scoring head: {0}")]
    NoClsHead(String),
    #[error("{}hypothesis {index} has {tokens} tokens, more than the model's {max} positions: {:?} (pass truncate to cut it)", in_utt(utt), excerpt(text))]
    TooLong { utt: String, index: usize, tokens: usize, max: usize, text: String },
    #[error("empty hypothesis (index {0}): nothing to score")]
    EmptyHypothesis(usize),
    #[error("n-best list {0:?} has no hypotheses")]
    EmptyNBest(String),
    #[error("n-best list {utt:?} has {n} hypotheses, more than the limit of {max} (for scoring, --max-hyps or maxHyps raises it)")]
    NBestTooLarge { utt: String, n: usize, max: usize },
    #[error("{what}, line {line}: {msg}")]
    Parse { what: String, line: usize, msg: String },
    #[error("{0}")]
    Input(String),
    #[error("GPU: {0}")]
    Gpu(String),
    #[error("GPU limit: {0}")]
    GpuLimit(String),
    #[error("adapter: {0}")]
    Adapter(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("training: {0}")]
    Training(String),
    #[error("training stopped at step {step}: non-finite {what}; the parameters of step {last_good} are kept")]
    NonFinite { step: u64, what: String, last_good: u64 },
    #[error("training cancelled after step {0}")]
    Cancelled(u64),
    #[error("n-best list {utt:?}, hypothesis {index}: the score is {value} (non-finite: check the adapter's and the model's values, λ and layer_norm_eps)")]
    NonFiniteScore { utt: String, index: usize, value: f64 },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::Config(_) | Error::UnknownArchitecture(_) => ErrorKind::Config,
            Error::MalformedWeights(_)
            | Error::MissingTensor { .. }
            | Error::ShapeMismatch { .. }
            | Error::UnsupportedDtype { .. }
            | Error::NoMlmHead
            | Error::NoClsHead(_) => ErrorKind::Weights,
            Error::Tokenizer(_) | Error::VocabMismatch { .. } => ErrorKind::Tokenizer,
            Error::TooLong { .. }
            | Error::EmptyHypothesis(_)
            | Error::EmptyNBest(_)
            | Error::NBestTooLarge { .. }
            | Error::Parse { .. }
            | Error::Input(_) => ErrorKind::Input,
            Error::Gpu(_) | Error::GpuLimit(_) => ErrorKind::Gpu,
            Error::Adapter(_) => ErrorKind::Adapter,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Training(_) | Error::NonFinite { .. } => ErrorKind::Training,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::NonFiniteScore { .. } => ErrorKind::Numeric,
        }
    }

    /// The same error about the n-best list `utt` (errors raised below the list level name
    /// none).
    pub fn in_list(self, utt: &str) -> Self {
        match self {
            Error::EmptyNBest(_) => Error::EmptyNBest(utt.into()),
            Error::NBestTooLarge { n, max, .. } => Error::NBestTooLarge { utt: utt.into(), n, max },
            Error::NonFiniteScore { index, value, .. } => Error::NonFiniteScore { utt: utt.into(), index, value },
            Error::TooLong { index, tokens, max, text, .. } => Error::TooLong { utt: utt.into(), index, tokens, max, text },
            e => e,
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
}

/// `n-best list "UTT", ` when the list is known.
fn in_utt(utt: &str) -> String {
    if utt.is_empty() {
        String::new()
    } else {
        format!("n-best list {utt:?}, ")
    }
}

/// The first 80 characters of a text, marked when cut (error messages quote, not copy).
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
