//! Why a manifest was refused, and where: [`ManifestError`] and turning a byte offset into
//! a 1-based `line:column`.

use std::path::{Path, PathBuf};

#[cfg(doc)]
use super::Manifest;
use super::ValidationError;

/// Why a manifest was refused.
///
/// Its `Display` is one line: `FILE:LINE:COL: message` (1-based line and column of the
/// offending key or value), or `FILE: cannot read: ...` when the file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read: {error}", path.display())]
    Io {
        /// The manifest's path.
        path: PathBuf,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// The text is not TOML, or not a valid manifest.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The manifest's path.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column (in characters) of the offending key or value.
        column: usize,
        /// What is wrong, on one line.
        message: String,
    },
    /// The manifest is well-formed but cannot run here (see [`Manifest::validate_for`]);
    /// from [`Manifest::load_validated`], pointing at the key at fault when there is one.
    #[error("{}: {error}", at(path, *location))]
    Unrunnable {
        /// The manifest's path.
        path: PathBuf,
        /// 1-based `(line, column)` of the key at fault, if the file has it.
        location: Option<(usize, usize)>,
        /// What is wrong (boxed: it is large, and errors should be small).
        #[source]
        error: Box<ValidationError>,
    },
}

/// `FILE:LINE:COL`, or `FILE` without a location.
fn at(path: &Path, location: Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => format!("{}:{line}:{column}", path.display()),
        None => path.display().to_string(),
    }
}

impl ManifestError {
    /// The manifest's path.
    pub fn path(&self) -> &Path {
        match self {
            ManifestError::Io { path, .. }
            | ManifestError::Invalid { path, .. }
            | ManifestError::Unrunnable { path, .. } => path,
        }
    }

    /// 1-based `(line, column)` of the problem; `None` for I/O errors and for problems of
    /// the file as a whole.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            ManifestError::Io { .. } => None,
            ManifestError::Invalid { line, column, .. } => Some((*line, *column)),
            ManifestError::Unrunnable { location, .. } => *location,
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(super) fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// `message` on one line.
pub(super) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::manifest::testing::{refused, web, PATH};
    use crate::manifest::Manifest;

    #[test]
    fn columns_count_characters_not_bytes() {
        refused(
            &web("env = { \"CAFÉ\" = \"é\", X = 1 }"),
            3,
            27,
            &["`env.X` must be a string"],
        );
    }

    #[test]
    fn an_error_displays_as_one_line_with_file_line_and_column() {
        let error = Manifest::parse(&web("workers = 0"), PATH).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/srv/app/demo.toml:3:11: `workers` must be at least 1, not 0"
        );
        assert_eq!(error.location(), Some((3, 11)));
        assert_eq!(error.path(), Path::new(PATH));
    }
}
