//! Typed errors for unreadable or malformed input: each names the file, the line and the field.

use std::fmt;

/// Where in the input a problem was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file, as the user named it (or `<memory>` for in-memory input).
    pub file: String,
    /// The 1-based line; 0 when the problem is not tied to one line.
    pub line: u64,
    /// The field at fault, when there is one (`type`, `value`, ...).
    pub field: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field \"{field}\"")?;
        }
        Ok(())
    }
}

/// A history that cannot be read or does not make sense. Never a verdict.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no events at all.
    #[error("{file}: empty history: no events")]
    Empty {
        /// The file.
        file: String,
    },
    /// The format could not be recognised, or `--format` names an unknown one.
    #[error("{file}: {message}")]
    UnknownFormat {
        /// The file.
        file: String,
        /// What was seen.
        message: String,
    },
    /// A line or a field is malformed, or the events do not form a well-formed history
    /// (a second invoke on a busy process, a completion with no invoke, ...).
    #[error("{location}: {message}")]
    Malformed {
        /// Where.
        location: Location,
        /// What is wrong, lowercase and without a trailing period.
        message: String,
    },
}

impl InputError {
    /// A malformed-input error at `file:line`, optionally naming a field.
    pub fn malformed(
        file: &str,
        line: u64,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> InputError {
        InputError::Malformed {
            location: Location {
                file: file.to_string(),
                line,
                field: field.map(str::to_string),
            },
            message: message.into(),
        }
    }
}
