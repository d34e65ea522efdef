//! The router's typed errors: one variant per case a caller acts on.

use std::path::PathBuf;

/// Everything that can go wrong while loading, training or running a router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The text to route is empty (or only whitespace).
    #[error("the text to route is empty")]
    EmptyText,
    /// The bytes handed to the router are not valid UTF-8.
    #[error("the text is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A model folder is missing a file or has one that cannot be read.
    #[error("model folder {dir}: {reason}")]
    BadModelDir {
        /// The folder that was given.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A model file does not have the sha256 pinned for it.
    #[error("{file} fails its hash check: expected sha256 {expected}, found {found}")]
    HashMismatch {
        /// The file that was checked.
        file: PathBuf,
        /// The pinned hash.
        expected: String,
        /// The hash of the file on disk.
        found: String,
    },
    /// The encoder available now is not the one the head was trained with.
    #[error("encoder mismatch: the router was trained with {expected}, but {found} is loaded")]
    EncoderMismatch {
        /// Encoder id and hash recorded in the artifact.
        expected: String,
        /// Encoder id and hash of the loaded encoder.
        found: String,
    },
    /// A router artifact directory is missing files or is inconsistent.
    #[error("router artifact {dir}: {reason}")]
    BadArtifact {
        /// The artifact directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Training or evaluation data could not be parsed.
    #[error("data {path}, line {line}: {reason}")]
    BadData {
        /// The data file.
        path: PathBuf,
        /// 1-based line number (0 when not tied to a line).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The training data is not usable (too few labels or examples).
    #[error("cannot train: {0}")]
    Training(String),
    /// The tokenizer rejected the input or its configuration.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed inside candle.
    #[error("tensor computation failed")]
    Tensor(#[from] candle_core::Error),
    /// The ONNX Runtime backend cannot be used here: its library or the exported `model.onnx`
    /// is missing or does not load. Callers fall back to the candle backend.
    #[error("ONNX Runtime unavailable: {0}")]
    OrtUnavailable(String),
    /// ONNX Runtime failed while running the model.
    #[error("ONNX Runtime inference failed: {0}")]
    Inference(String),
    /// Fetching a model failed.
    #[error("model fetch failed: {0}")]
    Fetch(String),
    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// The limit that was exceeded.
        after: std::time::Duration,
    },
    /// The async embedding service has shut down.
    #[error("the embedding batcher is closed")]
    BatcherClosed,
    /// A rule's regular expression does not compile.
    #[error("rule {intent}: bad pattern")]
    BadRule {
        /// The intent the rule routes to.
        intent: String,
        /// The compile error.
        #[source]
        source: regex::Error,
    },
    /// Reading or writing a file failed.
    #[error("i/o on {path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document could not be read or written.
    #[error("json in {path}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

impl RouterError {
    /// True when the error comes from the caller's input rather than from the router itself.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::EmptyText | Self::InvalidUtf8 { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Self::Json { path: path.into(), source }
    }
}

/// Result alias for the router crate.
pub type Result<T, E = RouterError> = std::result::Result<T, E>;
