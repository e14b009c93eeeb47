//! The error type shared by every cqrs-sync crate.
//!
//! Every failure of a message ends in one of three places: an applied row, a retry or a dead
//! letter. [`ErrorKind::is_retryable`] is the one place that decides between the last two, and
//! it is written without a wildcard arm so that a new kind forces a decision.

use std::fmt;

/// What went wrong, as far as a caller needs to branch on it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The body could not be decoded (malformed JSON or MessagePack, a missing required key,
    /// a wrong type, an unknown signal type or content type).
    Decode,
    /// No replica model is registered for the message's CQRS id.
    UnknownCqrsId,
    /// The message's `expires` is in the past.
    Expired,
    /// The message decoded, but its data cannot be applied as it is (missing pk,
    /// missing `cqrs_revision`/`cqrs_updated`, a missing required column, a type mismatch).
    InvalidData,
    /// A replica handler (user code) failed; worth another try.
    Handler,
    /// A replica handler panicked.
    Panic,
    /// The database refused or lost the operation.
    Database,
    /// The broker or the connection to it failed.
    Transport,
    /// The broker accepted a publish but no queue was bound to its routing key.
    Unroutable,
    /// The actor that should handle the request is gone (shutdown or crash).
    Unavailable,
    /// The configuration is invalid; the message names the key.
    Config,
    /// Two models were registered with the same CQRS id.
    DuplicateCqrsId,
}

impl ErrorKind {
    /// Whether a message that failed with this kind is worth another attempt (a parked retry)
    /// rather than going straight to the dead-letter queue.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        match self {
            ErrorKind::Handler
            | ErrorKind::Panic
            | ErrorKind::Database
            | ErrorKind::Transport
            | ErrorKind::Unavailable => true,
            ErrorKind::Decode
            | ErrorKind::UnknownCqrsId
            | ErrorKind::Expired
            | ErrorKind::InvalidData
            | ErrorKind::Unroutable
            | ErrorKind::Config
            | ErrorKind::DuplicateCqrsId => false,
        }
    }

    /// A short stable name, used as the `x-cqrs-reason` header of dead letters and in logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Decode => "decode",
            ErrorKind::UnknownCqrsId => "unknown_cqrs_id",
            ErrorKind::Expired => "expired",
            ErrorKind::InvalidData => "invalid_data",
            ErrorKind::Handler => "handler",
            ErrorKind::Panic => "panic",
            ErrorKind::Database => "database",
            ErrorKind::Transport => "transport",
            ErrorKind::Unroutable => "unroutable",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Config => "config",
            ErrorKind::DuplicateCqrsId => "duplicate_cqrs_id",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest message an [`Error`] keeps, in bytes; a longer one is cut and ends in `...`.
///
/// Error texts become log lines and the `x-cqrs-error` header of dead letters, and may carry
/// text from a message, a database or user code; the bound keeps every one of them well below
/// the smallest AMQP frame (4 KiB).
pub const MAX_MESSAGE_LEN: usize = 2048;

fn bounded(message: String) -> String {
    if message.len() <= MAX_MESSAGE_LEN {
        message
    } else {
        crate::values::abbreviate(&message, MAX_MESSAGE_LEN)
    }
}

/// An error with a kind to branch on and a message that says what happened (at most
/// [`MAX_MESSAGE_LEN`] bytes).
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: bounded(message.into()),
            source: None,
        }
    }

    /// An error of `kind` that wraps another error.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: bounded(message.into()),
            source: Some(Box::new(source)),
        }
    }

    /// A retryable failure of user code in a replica handler.
    pub fn handler(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Handler, message)
    }

    /// Data that cannot be applied as it is; the message goes to the dead-letter queue.
    pub fn invalid_data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidData, message)
    }

    /// A configuration error; `key` names the setting.
    pub fn config(key: &str, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Config, format!("{key}: {message}"))
    }

    /// A transport failure.
    pub fn transport(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transport, message)
    }

    /// The actor that should have answered is gone.
    pub fn unavailable(what: &str) -> Self {
        Self::new(ErrorKind::Unavailable, format!("{what} is not running"))
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message, without the kind.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shorthand for `self.kind().is_retryable()`.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl From<actix::MailboxError> for Error {
    fn from(err: actix::MailboxError) -> Self {
        Error::with_source(ErrorKind::Unavailable, "actor mailbox closed", err)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_errors_retry_and_bad_data_does_not() {
        assert!(Error::handler("db locked").is_retryable());
        assert!(!Error::invalid_data("no pk").is_retryable());
        assert!(!ErrorKind::Decode.is_retryable());
        assert!(!ErrorKind::Expired.is_retryable());
        assert_eq!(ErrorKind::UnknownCqrsId.to_string(), "unknown_cqrs_id");
    }

    #[test]
    fn messages_are_bounded() {
        let huge = Error::handler("é".repeat(100_000));
        assert!(huge.message().len() <= MAX_MESSAGE_LEN);
        assert!(huge.message().ends_with("..."));
        assert_eq!(Error::handler("short").message(), "short");
    }
}
