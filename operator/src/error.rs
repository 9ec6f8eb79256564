//! The operator's one error type; each variant maps to a stable label for
//! metrics (`kestrel_operator_errors_total{kind=…}`) and output lines.

use crate::engine::EngineError;
use crate::store::StoreError;

/// What went wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing stored state.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine (a profile that does not load, an embedding failure, an
    /// unknown workload in a command).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The config file or a setting in it.
    #[error("config: {0}")]
    Config(String),
    /// Scoring could not be set up (rules, weights, the LLM endpoint).
    #[error("scoring: {0}")]
    Scoring(#[from] kestrel_scoring::Error),
    /// A runtime or thread could not be started.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl Error {
    /// A short stable label for metrics and output lines.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Store(e) => e.label(),
            Error::Engine(e) => e.label(),
            Error::Config(_) => "config",
            Error::Scoring(_) => "scoring",
            Error::Runtime(_) => "runtime",
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
