//! What a command's failure means for its exit code: 2 for a usage error (a flag, an id, a
//! filter or a file the user named wrong), 1 for a failure at run time.

use std::fmt;

/// A command's failure.
#[derive(Debug)]
pub enum CliError {
    /// The command was asked for something wrong; nothing was done. Exit code 2.
    Usage(String),
    /// It failed while running. Exit code 1.
    Runtime(cqrs_actors::Error),
}

impl CliError {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    /// The process exit code: 2 for usage, 1 for run time.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Runtime(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => f.write_str(m),
            CliError::Runtime(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<cqrs_actors::Error> for CliError {
    /// Configuration errors are the user's to fix (usage); the rest happened at run time.
    fn from(e: cqrs_actors::Error) -> Self {
        if e.kind() == cqrs_actors::ErrorKind::Config {
            CliError::Usage(e.to_string())
        } else {
            CliError::Runtime(e)
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Runtime(cqrs_actors::Error::handler(format!("i/o: {e}")))
    }
}

/// The result of a command.
pub type CliResult<T = ()> = std::result::Result<T, CliError>;
