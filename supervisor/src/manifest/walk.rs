//! Walking `toml`'s spanned document tree ([`DeTable`]): the [`Checker`] that turns a value
//! of the wrong type or shape into a `file:line:col` error, and the typed readers (string,
//! integer, duration, size, signal, one of a set of names, ...) that every table uses.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeArray, DeString, DeTable, DeValue};
use toml::Spanned;

use super::error::{line_column, one_line, ManifestError};
use super::grammar::{parse_duration, parse_signal, parse_size, DURATION_HINT, SIZE_HINT};
use super::validate::LONGEST;
use super::Signal;

pub(super) type Key<'i> = Spanned<DeString<'i>>;
pub(super) type Value<'i> = Spanned<DeValue<'i>>;
pub(super) type Checked<T> = Result<T, ManifestError>;

/// A table's entries, in file order.
pub(super) fn in_file_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Key<'i>, &'t Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Walks the document, turning byte offsets into `file:line:col` errors.
pub(super) struct Checker<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a Path,
}

impl Checker<'_> {
    /// An error at byte offset `at` of the text.
    pub(super) fn error_at(&self, at: usize, message: impl Into<String>) -> ManifestError {
        let (line, column) = line_column(self.text, at);
        ManifestError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: one_line(&message.into()),
        }
    }

    /// An error at the start of `span`.
    pub(super) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ManifestError {
        self.error_at(span.start, message)
    }

    pub(super) fn toml_error(&self, error: &toml::de::Error) -> ManifestError {
        let span = error.span().unwrap_or(0..0);
        let mut message = format!("invalid TOML: {}", error.message().trim());
        if message.ends_with("duplicate key") {
            if let Some(key) = self.text.get(span.clone()).filter(|key| !key.is_empty()) {
                message.push_str(&format!(" {}", quote(key)));
            }
        }
        self.error_at(span.start, message)
    }

    pub(super) fn unknown_key(&self, key: &Key<'_>, place: &str, allowed: &[&str]) -> ManifestError {
        let name = key.get_ref().as_ref();
        let suggestion = allowed
            .iter()
            .filter(|candidate| edit_distance(name, candidate) <= 2)
            .min_by_key(|candidate| edit_distance(name, candidate))
            .map(|candidate| format!(" (did you mean `{candidate}`?)"))
            .unwrap_or_default();
        self.error(
            key.span(),
            format!(
                "unknown key {} in {place}{suggestion}; allowed keys: {}",
                quote(name),
                allowed.join(", ")
            ),
        )
    }

    // ----- typed values -----

    pub(super) fn string<'v>(&self, name: &str, value: &'v Value<'_>) -> Checked<&'v str> {
        match value.get_ref() {
            DeValue::String(string) => Ok(string.as_ref()),
            other => Err(self.type_error(name, "a string", other, value)),
        }
    }

    pub(super) fn non_empty_string<'v>(&self, name: &str, value: &'v Value<'_>) -> Checked<&'v str> {
        let string = self.string(name, value)?;
        if string.is_empty() {
            return Err(self.error(value.span(), format!("`{name}` must not be empty")));
        }
        if string.contains('\0') {
            return Err(self.error(value.span(), format!("`{name}` must not contain a NUL character")));
        }
        Ok(string)
    }

    /// `key_file`: one path, or a non-empty array of them (for rotation), each resolved
    /// against the manifest's directory.
    pub(super) fn key_files(&self, value: &Value<'_>) -> Checked<Vec<PathBuf>> {
        let DeValue::Array(items) = value.get_ref() else {
            return Ok(vec![self.resolve(self.non_empty_string("key_file", value)?)]);
        };
        if items.is_empty() {
            return Err(self.error(value.span(), "`key_file` is an empty list: name a key file"));
        }
        items
            .iter()
            .map(|item| Ok(self.resolve(self.non_empty_string("key_file", item)?)))
            .collect()
    }

    pub(super) fn boolean(&self, name: &str, value: &Value<'_>) -> Checked<bool> {
        match value.get_ref() {
            DeValue::Boolean(boolean) => Ok(*boolean),
            other => Err(self.type_error(name, "a boolean", other, value)),
        }
    }

    pub(super) fn integer(&self, name: &str, value: &Value<'_>) -> Checked<i128> {
        match value.get_ref() {
            DeValue::Integer(integer) => {
                let digits: String = integer.as_str().chars().filter(|&c| c != '_').collect();
                i128::from_str_radix(&digits, integer.radix())
                    .map_err(|_| self.error(value.span(), format!("`{name}` is out of range")))
            }
            other => Err(self.type_error(name, "an integer", other, value)),
        }
    }

    /// An integer in `min..=max`.
    pub(super) fn integer_in<T: TryFrom<i128>>(
        &self,
        name: &str,
        value: &Value<'_>,
        min: i128,
        max: i128,
    ) -> Checked<T> {
        let integer = self.integer(name, value)?;
        if integer < min {
            return Err(self.error(value.span(), format!("`{name}` must be at least {min}, not {integer}")));
        }
        if integer > max {
            return Err(self.error(value.span(), format!("`{name}` must be at most {max}, not {integer}")));
        }
        T::try_from(integer).map_err(|_| self.error(value.span(), format!("`{name}` is out of range")))
    }

    pub(super) fn float(&self, name: &str, value: &Value<'_>) -> Checked<f64> {
        let number = match value.get_ref() {
            DeValue::Float(float) => {
                let digits: String = float.as_str().chars().filter(|&c| c != '_').collect();
                digits.parse::<f64>().ok()
            }
            DeValue::Integer(_) => self.integer(name, value).ok().map(|integer| integer as f64),
            other => return Err(self.type_error(name, "a number", other, value)),
        };
        match number {
            Some(number) if number.is_finite() => Ok(number),
            _ => Err(self.error(value.span(), format!("`{name}` must be a finite number"))),
        }
    }

    pub(super) fn table<'v, 'i>(&self, name: &str, value: &'v Value<'i>) -> Checked<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Ok(table),
            other => Err(self.type_error(name, "a table", other, value)),
        }
    }

    pub(super) fn array<'v, 'i>(&self, name: &str, value: &'v Value<'i>) -> Checked<&'v DeArray<'i>> {
        match value.get_ref() {
            DeValue::Array(array) => Ok(array),
            other => Err(self.type_error(name, "an array", other, value)),
        }
    }

    pub(super) fn type_error(
        &self,
        name: &str,
        expected: &str,
        found: &DeValue<'_>,
        value: &Value<'_>,
    ) -> ManifestError {
        self.error(
            value.span(),
            format!("`{name}` must be {expected}, not {}", type_name(found)),
        )
    }

    pub(super) fn choice<T: Copy>(&self, name: &str, value: &Value<'_>, choices: &[(&str, T)]) -> Checked<T> {
        let string = self.string(name, value)?;
        choices
            .iter()
            .find(|(key, _)| *key == string)
            .map(|(_, choice)| *choice)
            .ok_or_else(|| {
                let valid: Vec<String> = choices.iter().map(|(key, _)| format!("{key:?}")).collect();
                self.error(
                    value.span(),
                    format!("`{name}` must be one of {}, not {string:?}", valid.join(", ")),
                )
            })
    }

    pub(super) fn duration(&self, name: &str, value: &Value<'_>) -> Checked<Duration> {
        let DeValue::String(string) = value.get_ref() else {
            let message = match value.get_ref() {
                DeValue::Integer(_) | DeValue::Float(_) => {
                    format!("`{name}` must be a duration string with a unit, not a bare number; {DURATION_HINT}")
                }
                other => format!(
                    "`{name}` must be a duration string, not {}; {DURATION_HINT}",
                    type_name(other)
                ),
            };
            return Err(self.error(value.span(), message));
        };
        let duration = parse_duration(string)
            .map_err(|why| self.error(value.span(), format!("`{name}`: bad duration {string:?}: {why}")))?;
        if duration > LONGEST {
            return Err(self.error(value.span(), format!("`{name}`: {string:?} is longer than 100 years")));
        }
        Ok(duration)
    }

    pub(super) fn positive_duration(&self, name: &str, value: &Value<'_>) -> Checked<Duration> {
        let duration = self.duration(name, value)?;
        if duration.is_zero() {
            return Err(self.error(value.span(), format!("`{name}` must be longer than zero")));
        }
        Ok(duration)
    }

    pub(super) fn size(&self, name: &str, value: &Value<'_>) -> Checked<u64> {
        match value.get_ref() {
            DeValue::Integer(_) => self.integer_in(name, value, 0, i128::from(u64::MAX)),
            DeValue::String(string) => parse_size(string)
                .map_err(|why| self.error(value.span(), format!("`{name}`: bad size {string:?}: {why}"))),
            other => Err(self.error(
                value.span(),
                format!("`{name}` must be a size, not {}; {SIZE_HINT}", type_name(other)),
            )),
        }
    }

    pub(super) fn signal(&self, name: &str, value: &Value<'_>) -> Checked<Signal> {
        let string = self.string(name, value)?;
        parse_signal(string).map_err(|why| self.error(value.span(), format!("`{name}`: {why}")))
    }

    /// A path, relative to the manifest's directory.
    /// The entries of a top-level `[top.NAME]` table (`[queue.NAME]`, `[topic.NAME]`, ...),
    /// in file order: a table of tables, and not empty.
    pub(super) fn named_tables<'t, 'i>(
        &self,
        top: &str,
        top_key: &Key<'_>,
        value: &'t Value<'i>,
    ) -> Checked<Vec<(&'t Key<'i>, &'t Value<'i>)>> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.error(
                value.span(),
                format!(
                    "`{top}` must be a table of [{top}.NAME] tables, not {}",
                    type_name(value.get_ref())
                ),
            ));
        };
        if table.is_empty() {
            return Err(self.error(top_key.span(), format!("`{top}` has no [{top}.NAME] tables")));
        }
        Ok(in_file_order(table))
    }

    /// One `[top.NAME]` table's name (letters, digits, `-` and `_`, else refused as a bad
    /// `what` name) and entries, in file order.
    pub(super) fn named_table<'k, 't, 'i>(
        &self,
        top: &str,
        what: &str,
        key: &'k Key<'i>,
        value: &'t Value<'i>,
    ) -> Checked<(&'k str, Vec<(&'t Key<'i>, &'t Value<'i>)>)> {
        let name: &str = key.get_ref().as_ref();
        if procwire_rpc::shm::env_var(name).is_err() {
            return Err(self.error(
                key.span(),
                format!("bad {what} name {}: use letters, digits, `-` and `_`", quote(name)),
            ));
        }
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.error(
                value.span(),
                format!(
                    "`{top}.{name}` must be a table like [{top}.{name}], not {}",
                    type_name(value.get_ref())
                ),
            ));
        };
        Ok((name, in_file_order(table)))
    }

    /// A socket file's permissions: an octal string like `"0660"`.
    pub(super) fn mode(&self, value: &Value<'_>) -> Checked<u32> {
        let text = self.non_empty_string("mode", value)?;
        u32::from_str_radix(text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                self.error(
                    value.span(),
                    format!("`mode` must be octal permissions like \"0660\", not {text:?}"),
                )
            })
    }

    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
            _ => PathBuf::from(path),
        }
    }
}

/// A user-written name in backquotes, with control characters escaped.
pub(super) fn quote(name: &str) -> String {
    format!("`{}`", name.escape_debug())
}

pub(super) fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use crate::manifest::testing::{refused, web};

    #[test]
    fn an_unknown_top_level_key_is_refused_naming_the_allowed_keys() {
        refused(
            "[pool.web]\ncommand = [\"w\"]\n[pools.x]\n",
            3,
            2,
            &["unknown key `pools`", "(did you mean `pool`?)", "supervisor, pool"],
        );
    }

    #[test]
    fn an_unknown_key_in_a_pool_is_refused_with_a_suggestion() {
        refused(
            &web("worker = 4"),
            3,
            1,
            &[
                "unknown key `worker` in [pool.web]",
                "did you mean `workers`?",
                "command, workers",
            ],
        );
    }

    #[test]
    fn an_unknown_key_in_supervisor_is_refused() {
        refused(
            "[supervisor]\nname = \"x\"\ntimeout = \"1s\"\n[pool.a]\ncommand = [\"a\"]\n",
            3,
            1,
            &[
                "unknown key `timeout` in [supervisor]",
                "allowed keys: name, shutdown_timeout",
            ],
        );
    }

    #[test]
    fn unknown_keys_inside_backoff_limit_and_log_rotate_are_refused() {
        refused(
            &web("backoff = { initial = \"1s\", fator = 2.0 }"),
            3,
            29,
            &[
                "unknown key `fator` in `backoff`",
                "did you mean `factor`?",
                "initial, max, factor, jitter, reset_after",
            ],
        );
        refused(
            &web("limit = { restarts = 3, window = \"1m\" }"),
            3,
            25,
            &[
                "unknown key `window` in `limit`",
                "restarts, within, start_attempts, then",
            ],
        );
        refused(
            &web("[pool.web.log_rotate]\nsize = \"1MiB\"\nkeep = 2\ncount = 3"),
            6,
            1,
            &["unknown key `count` in `log_rotate`", "size, keep"],
        );
    }

    #[test]
    fn bad_enum_strings_are_refused_listing_the_valid_ones() {
        refused(
            &web("restart = \"sometimes\""),
            3,
            11,
            &[
                "`restart` must be one of \"always\", \"on-failure\", \"never\"",
                "not \"sometimes\"",
            ],
        );
        refused(
            &web("strategy = \"all-for-one\""),
            3,
            12,
            &["\"one-for-one\", \"one-for-all\""],
        );
        refused(
            &web("limit = { then = \"explode\" }"),
            3,
            18,
            &["`limit.then`", "\"stop\", \"shutdown\""],
        );
        refused(
            &web("stdout = \"terminal\""),
            3,
            10,
            &["`stdout`", "\"inherit\", \"discard\", \"file:PATH\""],
        );
        refused(&web("stderr = \"file:\""), 3, 10, &["`stderr`", "needs a path"]);
        refused(
            "[pool.db]\ncommand = [\"db\"]\n[pool.web]\ncommand = [\"w\"]\nafter = { db = \"healthy\" }\n",
            5,
            16,
            &["`after.db` must be one of \"started\", \"ready\", \"completed\""],
        );
        refused(
            &web("ready = \"listening\""),
            3,
            9,
            &["`ready`", "\"spawned\", \"notify\", \"tcp:HOST:PORT\""],
        );
    }

    #[test]
    fn enum_values_of_the_wrong_type_are_refused() {
        refused(
            &web("restart = true"),
            3,
            11,
            &["`restart` must be a string, not a boolean"],
        );
    }

    #[test]
    fn zero_watchdog_and_zero_limit_window_are_refused() {
        refused(
            &web("watchdog = \"0s\""),
            3,
            12,
            &["`watchdog` must be longer than zero"],
        );
        refused(
            &web("limit = { within = \"0ms\" }"),
            3,
            20,
            &["`limit.within` must be longer than zero"],
        );
    }

    #[test]
    fn a_duration_past_a_hundred_years_is_refused() {
        refused(&web("stop_timeout = \"200000d\""), 3, 16, &["longer than 100 years"]);
    }

    #[test]
    fn a_duplicate_pool_table_is_refused_by_the_toml_parser() {
        refused(
            "[pool.a]\ncommand = [\"a\"]\n[pool.a]\n",
            3,
            7,
            &["invalid TOML: duplicate key `a`"],
        );
        refused(
            &web("workers = 1\nworkers = 2"),
            4,
            1,
            &["invalid TOML: duplicate key `workers`"],
        );
    }

    #[test]
    fn invalid_toml_is_refused_with_its_location() {
        refused("[pool.a]\ncommand = [\"a\"\n", 2, 15, &["invalid TOML"]);
        refused("[pool.a]\ncommand = [\"a\"]\nworkers = \n", 3, 11, &["invalid TOML"]);
    }

    #[test]
    fn errors_come_in_file_order() {
        refused(&web("workers = 0\nrestart = \"x\""), 3, 11, &["workers"]);
        refused(&web("restart = \"x\"\nworkers = 0"), 3, 11, &["restart"]);
        refused(
            "[pool.b]\ncommand = [\"b\"]\nworkers = 0\n[pool.a]\nworkers = 0\n",
            3,
            11,
            &["workers"],
        );
    }
}
