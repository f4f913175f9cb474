//! Pointing a [`ValidationError`] at its key in the manifest's file:
//! [`Manifest::load_validated`].

use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::error::line_column;
use super::schema::read;
use super::validate::{Host, Segment};
use super::walk::Value;
use super::{Manifest, ManifestError, ValidationError};

impl Manifest {
    /// Reads, checks and validates `path` for `host`: everything `procwire check` does. A
    /// problem [`validate_for`](Self::validate_for) finds comes back as
    /// [`ManifestError::Unrunnable`] with the `line:column` of the key at fault (of its
    /// value, or of its pool's table when the key was left at its default).
    pub fn load_validated(path: impl AsRef<Path>, host: Host) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let text = read(path)?;
        let manifest = Manifest::parse(&text, path)?;
        manifest.validate_for(host).map_err(|error| ManifestError::Unrunnable {
            path: path.to_path_buf(),
            location: locate(&text, &error).map(|at| line_column(&text, at)),
            error: Box::new(error),
        })?;
        Ok(manifest)
    }
}

/// The byte offset of the deepest part of `error`'s place that `text` has.
fn locate(text: &str, error: &ValidationError) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    let mut current: Option<&Value<'_>> = None;
    for segment in error.place() {
        if let Some(value) = current {
            match (value.get_ref(), &segment) {
                (DeValue::Table(inner), _) => table = inner,
                (DeValue::Array(array), Segment::Index(index)) => {
                    let item = array.get(*index)?;
                    return Some(item.span().start);
                }
                _ => return found,
            }
        }
        let (Segment::Key(name) | Segment::Name(name)) = &segment else {
            return found;
        };
        let Some((key, value)) = table.get_key_value(name.as_str()) else {
            return found;
        };
        found = Some(match segment {
            Segment::Name(_) => key.span().start,
            _ => value.span().start,
        });
        current = Some(value);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_error_points_at_the_value_at_fault_and_keeps_its_cause() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("app.toml");
        std::fs::write(
            &path,
            "[pool.ok]\ncommand = [\"sh\"]\n\n[pool.w]\ncommand = [\"sh\"]\nlisten = [\"unix:no/such/dir/w.sock\"]\n",
        )
        .unwrap();
        let error = Manifest::load_validated(&path, Host::Command).unwrap_err();
        assert_eq!(error.location(), Some((6, 11)));
        assert_eq!(error.path(), path);
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{}:6:11: pool w: listen unix:", path.display())),
            "{text}"
        );
        let ManifestError::Unrunnable { error: cause, .. } = &error else {
            panic!("expected Unrunnable, got {error:?}");
        };
        assert_eq!(cause.pool(), Some("w"));
        let io = std::error::Error::source(&**cause)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .expect("the OS error is the source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        // The same manifest is fine to parse: only validation refuses it.
        Manifest::load(&path).unwrap();
    }
}
