//! The crate's one error type.

use std::path::PathBuf;
use std::sync::Arc;

/// Errors from configuring, loading or running an embedder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model failed to produce vectors for the input.
    #[error("embedding failed: {0}")]
    Inference(String),
    /// A file the embedder needs does not exist (or is not a regular file).
    #[error("{what} not found at {path}: {hint}")]
    MissingFile {
        /// Which file: "ONNX model", "tokenizer", "ONNX Runtime library".
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// The ONNX Runtime shared library exists but could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Runtime {
        /// The library file.
        path: PathBuf,
        /// What the loader said.
        message: String,
    },
    /// The tokenizer file exists but could not be parsed or configured.
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer {
        /// The `tokenizer.json` file.
        path: PathBuf,
        /// What the tokenizer library said.
        message: String,
    },
    /// The model file exists but ONNX Runtime rejected it (corrupt, wrong format,
    /// or inputs the embedder cannot feed).
    #[error("cannot load model {model_id} from {path}: {message}")]
    Model {
        /// The configured model id.
        model_id: String,
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The model's output does not have the shape the configuration expects.
    #[error("model {model_id} returned output shape {shape:?}, expected {expected}")]
    OutputShape {
        /// The configured model id.
        model_id: String,
        /// The shape the model declared or returned (-1: dynamic).
        shape: Vec<i64>,
        /// What was expected, in words.
        expected: String,
    },
    /// The configuration is inconsistent (zero dimension, unknown pooling, …).
    #[error("invalid embedder configuration: {0}")]
    Config(String),
    /// The batching thread has stopped; no more requests are served.
    #[error("the embedding service has shut down")]
    Closed,
    /// One failure shared by every request of a batch.
    #[error(transparent)]
    Shared(Arc<Error>),
}

impl Error {
    /// A short stable label for metrics (`kestrel_embed_errors_total{kind=…}`).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Inference(_) => "inference",
            Error::MissingFile { .. } => "missing_file",
            Error::Runtime { .. } => "runtime",
            Error::Tokenizer { .. } => "tokenizer",
            Error::Model { .. } => "model",
            Error::OutputShape { .. } => "output_shape",
            Error::Config(_) => "config",
            Error::Closed => "closed",
            Error::Shared(inner) => inner.label(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
