//! Errors of reading descriptions: each names the file, the line and what to fix.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{}:{line}:{col}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, col: usize, message: String },

    #[error("{}:{line}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, message: String },
}

impl ModelError {
    /// A parse error of a file whose examples are in `examples` (models/configs/, ...).
    pub(crate) fn parse(path: &Path, e: ron::error::SpannedError, examples: &str) -> ModelError {
        let hint = match &e.code {
            ron::Error::NoSuchStructField { .. } => format!(" (remove the field or fix its spelling; see {examples} for examples)"),
            ron::Error::MissingStructField { .. } => format!(" (add the field; see {examples} for examples)"),
            ron::Error::ExpectedOption => " (an optional field is written Some(...), e.g. host_memory: Some(\"128GiB\"))".to_string(),
            _ => String::new(),
        };
        ModelError::Parse { path: path.to_path_buf(), line: e.span.start.line, col: e.span.start.col, message: format!("{}{hint}", e.code) }
    }
}

/// The 1-based line where `field:` first appears, or 1 if it is absent.
pub(crate) fn field_line(text: &str, field: &str) -> usize {
    let key = format!("{field}:");
    text.lines().position(|l| l.trim_start().starts_with(&key)).map(|i| i + 1).unwrap_or(1)
}
