//! Why a configuration could not be used, and the checked conversions every
//! section goes through, so that each error names the file, line and column.

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::filetrust::TrustError;
use crate::policy::parse_duration_unbounded;

/// Largest configuration file we read (named in [`ConfigError::TooLarge`]).
pub(super) const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// Config path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file or its directory is not protected from non-root writers.
    #[error("refusing untrusted file: {0}")]
    Untrusted(#[from] TrustError),
    /// The file is larger than any sane configuration.
    #[error("{path}: larger than {MAX_CONFIG_SIZE} bytes")]
    TooLarge {
        /// Config path.
        path: PathBuf,
    },
    /// Syntax or schema error at a position in the file.
    #[error("{path}:{line}:{column}: {message}")]
    At {
        /// Config path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// The text being parsed: turns byte spans into positioned errors, and
/// holds the checked conversions of values every section shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConfigText<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> ConfigText<'a> {
    /// `text`, read from `path` (only named in errors).
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        Self { path, text }
    }

    /// An error at `span` (no span: the start of the file).
    pub(crate) fn error(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        let (line, column) = line_column(self.text, span.map_or(0, |span| span.start));
        ConfigError::At {
            path: self.path.to_owned(),
            line,
            column,
            message,
        }
    }

    /// A path that must be absolute: nothing in the file is relative to anything.
    pub(crate) fn absolute_path(
        &self,
        value: &Spanned<PathBuf>,
        key: &str,
    ) -> Result<PathBuf, ConfigError> {
        if value.get_ref().is_absolute() {
            Ok(value.get_ref().clone())
        } else {
            Err(self.error(
                Some(value.span()),
                format!("{key}: path {:?} must be absolute", value.get_ref()),
            ))
        }
    }

    /// The error for a name that is none of `names`.
    pub(crate) fn unknown_choice(
        &self,
        value: &Spanned<String>,
        key: &str,
        names: &[&str],
    ) -> ConfigError {
        self.error(
            Some(value.span()),
            format!(
                "{key}: unknown value {:?}; expected one of: {}",
                value.get_ref(),
                names.join(", ")
            ),
        )
    }

    /// A duration such as `"30s"` within `bounds` (inclusive), each key
    /// with bounds of its own.
    pub(crate) fn duration_in(
        &self,
        value: &Spanned<String>,
        key: &str,
        bounds: RangeInclusive<Duration>,
    ) -> Result<Duration, ConfigError> {
        let error = |message: String| self.error(Some(value.span()), format!("{key}: {message}"));
        let parsed = parse_duration_unbounded(value.get_ref()).map_err(error)?;
        if !bounds.contains(&parsed) {
            return Err(error(format!(
                "{:?} is out of range {:?}..={:?}",
                value.get_ref(),
                bounds.start(),
                bounds.end()
            )));
        }
        Ok(parsed)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé=x", 7), (2, 4));
        assert_eq!(line_column("", 5), (1, 1));
    }
}
