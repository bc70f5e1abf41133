//! Errors of writing reports.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot draw {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error("nothing to plot for {}: {message}", path.display())]
    Empty { path: PathBuf, message: String },
}

impl ReportError {
    pub(crate) fn draw(path: &std::path::Path, e: impl std::fmt::Display) -> ReportError {
        ReportError::Draw { path: path.to_path_buf(), message: e.to_string() }
    }
}
