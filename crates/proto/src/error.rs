//! The crate's errors.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A wire message that does not describe a valid domain value.
///
/// `field` names the offending field as a path from the message that was
/// converted, e.g. `events[3].exec.argv` or `events[0].net.remote.ip.addr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required message or oneof is absent.
    #[error("{field}: missing")]
    Missing {
        /// Path of the field.
        field: String,
    },
    /// An enum field holds a value this version does not know (or `*_UNSPECIFIED`).
    #[error("{field}: unknown enum value {value}")]
    UnknownEnum {
        /// Path of the field.
        field: String,
        /// The value received.
        value: i32,
    },
    /// A number does not fit the domain type.
    #[error("{field}: {value} out of range (maximum {max})")]
    OutOfRange {
        /// Path of the field.
        field: String,
        /// The value received.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// Any other invalid value.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConvertError {
    /// Prefixes the field path with `outer` (`outer.field`).
    pub fn within(self, outer: &str) -> Self {
        let join = |f: String| {
            if f.starts_with('[') {
                format!("{outer}{f}")
            } else {
                format!("{outer}.{f}")
            }
        };
        match self {
            ConvertError::Missing { field } => ConvertError::Missing { field: join(field) },
            ConvertError::UnknownEnum { field, value } => ConvertError::UnknownEnum {
                field: join(field),
                value,
            },
            ConvertError::OutOfRange { field, value, max } => ConvertError::OutOfRange {
                field: join(field),
                value,
                max,
            },
            ConvertError::Invalid { field, reason } => ConvertError::Invalid {
                field: join(field),
                reason,
            },
        }
    }

    /// The field path.
    pub fn field(&self) -> &str {
        match self {
            ConvertError::Missing { field }
            | ConvertError::UnknownEnum { field, .. }
            | ConvertError::OutOfRange { field, .. }
            | ConvertError::Invalid { field, .. } => field,
        }
    }

    pub(crate) fn missing(field: &str) -> Self {
        ConvertError::Missing {
            field: field.to_string(),
        }
    }

    pub(crate) fn unknown_enum(field: &str, value: i32) -> Self {
        ConvertError::UnknownEnum {
            field: field.to_string(),
            value,
        }
    }
}

/// Errors of TLS material, configuration and transport set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file does not hold what it should.
    #[error("{path}: {reason}")]
    Pem {
        /// The file (or a description of the in-memory source).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Credentials that are missing, incomplete, expired or not usable as
    /// they are (the message says what to do).
    #[error("{path}: {reason}")]
    Credentials {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A certificate name that cannot be used (it also names files).
    #[error("invalid certificate name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Generating certificates failed.
    #[error("generating certificates: {0}")]
    CertGen(#[from] rcgen::Error),
    /// The endpoint address is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// What was given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
    /// tonic refused the TLS or server configuration, or the socket.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reading the listener's address failed.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The server task ended abnormally.
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Error {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Pem { .. } => "pem",
            Error::Credentials { .. } => "credentials",
            Error::Name { .. } => "name",
            Error::CertGen(_) => "certgen",
            Error::Endpoint { .. } => "endpoint",
            Error::Transport(_) => "transport",
            Error::Listener(_) => "listener",
            Error::Join(_) => "join",
        }
    }
}
