//! The crate's one error type.

/// Everything that can go wrong in this crate.
///
/// Each variant has a stable label ([`Error::label`]) for metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedder failed or returned vectors of the wrong shape.
    #[error("embedding failed: {0}")]
    Embedding(String),
    /// The profile was learned with another embedding model than the one given.
    #[error("profile was learned with model `{profile}` but the embedder is `{embedder}`")]
    ModelMismatch {
        /// Model id recorded in the profile.
        profile: String,
        /// Model id of the embedder passed in.
        embedder: String,
    },
    /// A serialised profile could not be parsed as YAML of the expected shape.
    #[error("malformed profile YAML: {0}")]
    Yaml(String),
    /// A serialised profile parsed but a field holds an invalid value.
    #[error("invalid profile field `{field}`: {reason}")]
    InvalidField {
        /// Path of the field, e.g. `spec.files[2].paths[0]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration `{field}`: {reason}")]
    InvalidConfig {
        /// Name of the setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Serialising the profile failed.
    #[error("serialising profile failed: {0}")]
    Serialize(String),
    /// An internal invariant was broken (a bug in this crate).
    #[error("internal invariant broken: {0}")]
    Internal(&'static str),
}

impl Error {
    /// A stable, low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Embedding(_) => "embedding",
            Error::ModelMismatch { .. } => "model_mismatch",
            Error::Yaml(_) => "yaml",
            Error::InvalidField { .. } => "invalid_field",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::Serialize(_) => "serialize",
            Error::Internal(_) => "internal",
        }
    }

    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
