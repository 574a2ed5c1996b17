//! Config errors and warnings, and the source text they point into: every
//! error names the file, the line and the key.

use std::fmt;

use toml::Spanned;

use crate::model::line_col;

/// A config that cannot be used, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Something legal but worth a second look (`check-config` prints these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.line, self.key, self.message)
    }
}

/// The config text being validated: turns offsets into the lines that
/// errors and warnings name.
pub(super) struct Source<'a> {
    pub(super) file: String,
    pub(super) text: &'a str,
}

impl Source<'_> {
    /// The line (1-based) of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }

    /// An error at the line of `offset`.
    pub(super) fn err_at(&self, offset: usize, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line(offset),
            key: key.to_string(),
            message,
        }
    }
}

/// Where a section starts (0 when the file has none).
pub(super) fn section_at<T>(s: &Option<Spanned<T>>) -> usize {
    s.as_ref().map(|x| x.span().start).unwrap_or(0)
}
