//! Test support for the manifest's unit tests: a sample pool and assertions on acceptance and
//! on refusals at a given `line:column`.

use std::path::Path;

use super::{Manifest, ManifestError};

pub(super) const PATH: &str = "/srv/app/demo.toml";

/// A pool `web` whose `command` is on line 2; `extra` starts on line 3.
pub(super) fn web(extra: &str) -> String {
    format!("[pool.web]\ncommand = [\"./web\"]\n{extra}\n")
}

#[track_caller]
pub(super) fn accepted(text: &str) -> Manifest {
    Manifest::parse(text, PATH).unwrap_or_else(|error| panic!("refused: {error}\n{text}"))
}

/// Asserts `text` is refused at `line:column` with a message containing each of `needles`.
#[track_caller]
pub(super) fn refused(text: &str, line: usize, column: usize, needles: &[&str]) -> String {
    match Manifest::parse(text, PATH) {
        Err(ManifestError::Invalid {
            path,
            line: l,
            column: c,
            message,
        }) => {
            assert_eq!(path, Path::new(PATH));
            assert_eq!((l, c), (line, column), "wrong location for {message:?} in\n{text}");
            for needle in needles {
                assert!(message.contains(needle), "{message:?} does not mention {needle:?}");
            }
            assert!(!message.contains('\n'), "{message:?} is not one line");
            message
        }
        other => panic!("expected a refusal at {line}:{column}, got {other:?} for\n{text}"),
    }
}
