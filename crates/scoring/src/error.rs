//! The crate's error type.

/// Errors of the scoring library.
///
/// Each variant maps to a stable metric label with [`Error::metric_label`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rule file is not valid YAML or does not match the rule schema.
    #[error("rule file {source_name}: {message}")]
    RuleSyntax {
        /// Which file (or `default pack`).
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// A rule is well-formed YAML but cannot be compiled.
    #[error("rule {rule_id}: {message}")]
    RuleCompile {
        /// The rule's id.
        rule_id: String,
        /// What is wrong (bad regex, glob, CIDR, unknown field, ...).
        message: String,
    },
    /// The scoring configuration is inconsistent.
    #[error("invalid scoring config: {0}")]
    Config(String),
    /// An HTTP request could not be built or sent, or its answer not read.
    #[error("http: {0}")]
    Http(String),
    /// The endpoint answered with an error status.
    #[error("http status {status}: {body}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The start of the body, for the log.
        body: String,
        /// The server's `Retry-After`, in seconds, if it sent one.
        retry_after_secs: Option<u64>,
    },
    /// The request did not finish in time.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The LLM answered, but not with a valid verdict.
    #[error("invalid LLM answer: {0}")]
    InvalidAnswer(String),
    /// The LLM call budget for this minute is spent.
    #[error("LLM budget exhausted")]
    BudgetExhausted,
    /// No LLM endpoint is configured.
    #[error("no LLM configured")]
    NotConfigured,
    /// Serialising an output failed.
    #[error("serialise: {0}")]
    Serialize(String),
}

impl Error {
    /// A short, stable label for metrics (`kestrel_scoring_errors_total{kind=...}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::RuleSyntax { .. } => "rule_syntax",
            Self::RuleCompile { .. } => "rule_compile",
            Self::Config(_) => "config",
            Self::Http(_) => "http",
            Self::HttpStatus { .. } => "http_status",
            Self::Timeout(_) => "timeout",
            Self::InvalidAnswer(_) => "invalid_answer",
            Self::BudgetExhausted => "budget_exhausted",
            Self::NotConfigured => "not_configured",
            Self::Serialize(_) => "serialize",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
