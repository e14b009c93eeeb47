//! Pipeline input and output: bounded lines from a file or stdin, and buffered lines to a file
//! or stdout. stdout carries data only; messages go to stderr.

use std::io::Write;
use std::path::Path;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::error::{CliError, CliResult};

/// The longest line read (a dump line is one row; a diff line one batch of keys).
pub(crate) const MAX_LINE: u64 = 64 * 1024 * 1024;

/// Lines of a file or of stdin (`-`), each at most [`MAX_LINE`] bytes.
pub(crate) struct Lines {
    reader: Box<dyn AsyncBufRead + Unpin>,
    /// The number of the line last read, from 1.
    pub(crate) number: u64,
}

impl Lines {
    /// stdin.
    pub(crate) fn stdin() -> Self {
        Self {
            reader: Box::new(BufReader::with_capacity(1 << 20, tokio::io::stdin())),
            number: 0,
        }
    }

    /// A file, or stdin for `-`. A missing file is a usage error naming it.
    pub(crate) async fn open(path: &str) -> CliResult<Self> {
        if path == "-" {
            return Ok(Self::stdin());
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| CliError::usage(format!("file {path} can't be read: {e}")))?;
        Ok(Self {
            reader: Box::new(BufReader::with_capacity(1 << 20, file)),
            number: 0,
        })
    }

    /// The next line without its line ending, or `None` at the end. A line longer than
    /// [`MAX_LINE`] or not UTF-8 is an error naming its number.
    pub(crate) async fn next(&mut self) -> CliResult<Option<String>> {
        let mut buf = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .await?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        if buf.len() as u64 > MAX_LINE {
            return Err(CliError::Runtime(cqrs_actors::Error::invalid_data(
                format!("line {} is longer than {MAX_LINE} bytes", self.number),
            )));
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        String::from_utf8(buf).map(Some).map_err(|_| {
            CliError::Runtime(cqrs_actors::Error::invalid_data(format!(
                "line {} is not UTF-8",
                self.number
            )))
        })
    }
}

/// Where a command writes its data.
pub(crate) struct Output {
    inner: Box<dyn Write>,
}

impl Output {
    /// stdout.
    pub(crate) fn stdout() -> Self {
        Self {
            inner: Box::new(std::io::BufWriter::with_capacity(
                1 << 20,
                std::io::stdout(),
            )),
        }
    }

    /// A new file (an existing one only with `force`), or stdout for `-`.
    pub(crate) fn create(path: &str, force: bool) -> CliResult<Self> {
        if path == "-" {
            return Ok(Self::stdout());
        }
        if !force && Path::new(path).exists() {
            return Err(CliError::usage(format!(
                "file {path} exists! (--force overwrites it)"
            )));
        }
        let file = std::fs::File::create(path)
            .map_err(|e| CliError::usage(format!("file {path} can't be written: {e}")))?;
        Ok(Self {
            inner: Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Writes one line.
    pub(crate) fn line(&mut self, text: &str) -> CliResult {
        self.inner.write_all(text.as_bytes())?;
        self.inner.write_all(b"\n")?;
        Ok(())
    }

    /// Flushes what is buffered (a reader downstream sees whole lines as they come).
    pub(crate) fn flush(&mut self) -> CliResult {
        self.inner.flush()?;
        Ok(())
    }
}

/// Writes a message line to stderr.
pub(crate) fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
