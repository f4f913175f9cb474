//! Reading and checking a manifest: TOML text to [`Manifest`], every refusal with
//! `file:line:col` of the offending key or value.
//!
//! The TOML is parsed into `toml`'s spanned document tree ([`DeTable`]) and walked by hand, in
//! file order, so that the first problem in the file is the one reported, and every message
//! names what is wrong and what would be right.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::de::{DeArray, DeString, DeTable, DeValue};
use toml::Spanned;

use super::{
    Backoff, Condition, Endpoint, Limit, LimitAction, LogRotate, Manifest, Output, Pool, Ready, Restart, Signal,
    Strategy, SupervisorConfig,
};

/// Why a manifest was refused.
///
/// Its `Display` is one line: `FILE:LINE:COL: message` (1-based line and column of the
/// offending key or value), or `FILE: cannot read: ...` when the file could not be read.
#[derive(Debug, thiserror::Error)]
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
}

impl ManifestError {
    /// The manifest's path.
    pub fn path(&self) -> &Path {
        match self {
            ManifestError::Io { path, .. } | ManifestError::Invalid { path, .. } => path,
        }
    }

    /// 1-based `(line, column)` of the problem; `None` for I/O errors.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            ManifestError::Io { .. } => None,
            ManifestError::Invalid { line, column, .. } => Some((*line, *column)),
        }
    }
}

impl Manifest {
    /// Reads and checks `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Manifest::parse(&text, path)
    }

    /// Parses and checks `text` as if read from `path` (relative paths resolve against
    /// `path`'s directory; the supervisor's name defaults to `path`'s stem).
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let checker = Checker { text, path };
        let root = DeTable::parse(text).map_err(|error| checker.toml_error(&error))?;
        checker.manifest(root.get_ref())
    }

    /// The start plan: pools in dependency order, grouped into waves that can start together.
    ///
    /// A pool's wave comes after the waves of every pool it is `after`; within a wave, pools
    /// are in file order. (A checked manifest has no cycles; if one was built by hand with a
    /// cycle, the pools on or behind it make up a last wave.)
    pub fn plan(&self) -> Vec<Vec<&Pool>> {
        let mut waves: Vec<Vec<&Pool>> = Vec::new();
        let mut placed: HashSet<&str> = HashSet::new();
        let known: Vec<&str> = self.pools.iter().map(|pool| pool.name.as_str()).collect();
        let mut remaining: Vec<&Pool> = self.pools.iter().collect();
        while !remaining.is_empty() {
            // `placed` holds the pools of earlier waves only.
            let (ready, blocked): (Vec<&Pool>, Vec<&Pool>) = remaining.iter().partition(|pool| {
                pool.after.iter().all(|(dependency, _)| {
                    placed.contains(dependency.as_str()) || !known.contains(&dependency.as_str())
                })
            });
            if ready.is_empty() {
                waves.push(blocked);
                break;
            }
            placed.extend(ready.iter().map(|pool| pool.name.as_str()));
            waves.push(ready);
            remaining = blocked;
        }
        waves
    }
}

const TOP_KEYS: &[&str] = &["supervisor", "pool"];
const SUPERVISOR_KEYS: &[&str] = &["name", "shutdown_timeout"];
const POOL_KEYS: &[&str] = &[
    "command",
    "workers",
    "ready",
    "ready_timeout",
    "restart",
    "success_codes",
    "backoff",
    "limit",
    "strategy",
    "after",
    "watchdog",
    "stop_signal",
    "stop_timeout",
    "reload_signal",
    "forward",
    "env",
    "cwd",
    "user",
    "group",
    "rlimits",
    "stdout",
    "stderr",
    "log_rotate",
    "listen",
    "mode",
    "role",
];
const BACKOFF_KEYS: &[&str] = &["initial", "max", "factor", "jitter", "reset_after"];
const LIMIT_KEYS: &[&str] = &["restarts", "within", "start_attempts", "then"];
const LOG_ROTATE_KEYS: &[&str] = &["size", "keep"];
const RLIMIT_NAMES: &[&str] = &["nofile", "nproc", "core", "memlock", "stack", "as", "cpu", "fsize"];

const RESTARTS: &[(&str, Restart)] = &[
    ("always", Restart::Always),
    ("on-failure", Restart::OnFailure),
    ("never", Restart::Never),
];
const STRATEGIES: &[(&str, Strategy)] = &[
    ("one-for-one", Strategy::OneForOne),
    ("one-for-all", Strategy::OneForAll),
];
const CONDITIONS: &[(&str, Condition)] = &[
    ("started", Condition::Started),
    ("ready", Condition::Ready),
    ("completed", Condition::Completed),
];
const LIMIT_ACTIONS: &[(&str, LimitAction)] = &[("stop", LimitAction::Stop), ("shutdown", LimitAction::Shutdown)];

const DURATION_HINT: &str = "write a number and a unit (ns, us, ms, s, m, h, d), like \"100ms\", \"30s\" or \"1.5h\"";
const SIZE_HINT: &str = "write a number of bytes, optionally with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), \
                         like \"10MiB\"";

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;
type Checked<T> = Result<T, ManifestError>;

/// A table's entries, in file order.
fn in_file_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Key<'i>, &'t Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Walks the document, turning byte offsets into `file:line:col` errors.
struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Checker<'_> {
    /// An error at byte offset `at` of the text.
    fn error_at(&self, at: usize, message: impl Into<String>) -> ManifestError {
        let (line, column) = line_column(self.text, at);
        ManifestError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: one_line(&message.into()),
        }
    }

    /// An error at the start of `span`.
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ManifestError {
        self.error_at(span.start, message)
    }

    fn toml_error(&self, error: &toml::de::Error) -> ManifestError {
        let span = error.span().unwrap_or(0..0);
        let mut message = format!("invalid TOML: {}", error.message().trim());
        if message.ends_with("duplicate key") {
            if let Some(key) = self.text.get(span.clone()).filter(|key| !key.is_empty()) {
                message.push_str(&format!(" {}", quote(key)));
            }
        }
        self.error_at(span.start, message)
    }

    fn unknown_key(&self, key: &Key<'_>, place: &str, allowed: &[&str]) -> ManifestError {
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

    fn string<'v>(&self, name: &str, value: &'v Value<'_>) -> Checked<&'v str> {
        match value.get_ref() {
            DeValue::String(string) => Ok(string.as_ref()),
            other => Err(self.type_error(name, "a string", other, value)),
        }
    }

    fn non_empty_string<'v>(&self, name: &str, value: &'v Value<'_>) -> Checked<&'v str> {
        let string = self.string(name, value)?;
        if string.is_empty() {
            return Err(self.error(value.span(), format!("`{name}` must not be empty")));
        }
        if string.contains('\0') {
            return Err(self.error(value.span(), format!("`{name}` must not contain a NUL character")));
        }
        Ok(string)
    }

    fn integer(&self, name: &str, value: &Value<'_>) -> Checked<i128> {
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
    fn integer_in<T: TryFrom<i128>>(&self, name: &str, value: &Value<'_>, min: i128, max: i128) -> Checked<T> {
        let integer = self.integer(name, value)?;
        if integer < min {
            return Err(self.error(value.span(), format!("`{name}` must be at least {min}, not {integer}")));
        }
        if integer > max {
            return Err(self.error(value.span(), format!("`{name}` must be at most {max}, not {integer}")));
        }
        T::try_from(integer).map_err(|_| self.error(value.span(), format!("`{name}` is out of range")))
    }

    fn float(&self, name: &str, value: &Value<'_>) -> Checked<f64> {
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

    fn table<'v, 'i>(&self, name: &str, value: &'v Value<'i>) -> Checked<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Ok(table),
            other => Err(self.type_error(name, "a table", other, value)),
        }
    }

    fn array<'v, 'i>(&self, name: &str, value: &'v Value<'i>) -> Checked<&'v DeArray<'i>> {
        match value.get_ref() {
            DeValue::Array(array) => Ok(array),
            other => Err(self.type_error(name, "an array", other, value)),
        }
    }

    fn type_error(&self, name: &str, expected: &str, found: &DeValue<'_>, value: &Value<'_>) -> ManifestError {
        self.error(
            value.span(),
            format!("`{name}` must be {expected}, not {}", type_name(found)),
        )
    }

    fn choice<T: Copy>(&self, name: &str, value: &Value<'_>, choices: &[(&str, T)]) -> Checked<T> {
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

    fn duration(&self, name: &str, value: &Value<'_>) -> Checked<Duration> {
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
        // Far beyond any use, and a deadline that far out would overflow the clock.
        const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        if duration > LONGEST {
            return Err(self.error(value.span(), format!("`{name}`: {string:?} is longer than 100 years")));
        }
        Ok(duration)
    }

    fn positive_duration(&self, name: &str, value: &Value<'_>) -> Checked<Duration> {
        let duration = self.duration(name, value)?;
        if duration.is_zero() {
            return Err(self.error(value.span(), format!("`{name}` must be longer than zero")));
        }
        Ok(duration)
    }

    fn size(&self, name: &str, value: &Value<'_>) -> Checked<u64> {
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

    fn signal(&self, name: &str, value: &Value<'_>) -> Checked<Signal> {
        let string = self.string(name, value)?;
        parse_signal(string).map_err(|why| self.error(value.span(), format!("`{name}`: {why}")))
    }

    /// A path, relative to the manifest's directory.
    fn resolve(&self, path: &str) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
            _ => PathBuf::from(path),
        }
    }

    // ----- the document -----

    fn manifest(&self, root: &DeTable<'_>) -> Checked<Manifest> {
        let mut supervisor = None;
        let mut pools = None;
        for (key, value) in in_file_order(root) {
            match key.get_ref().as_ref() {
                "supervisor" => supervisor = Some(self.supervisor(value)?),
                "pool" => pools = Some(self.pools(key, value)?),
                _ => return Err(self.unknown_key(key, "the top level", TOP_KEYS)),
            }
        }
        let Some(pools) = pools else {
            return Err(self.error_at(0, "no pools: add at least one [pool.NAME] table"));
        };
        let supervisor = match supervisor {
            Some(supervisor) => supervisor,
            None => SupervisorConfig {
                name: self.default_name(),
                shutdown_timeout: Duration::from_secs(30),
            },
        };
        Ok(Manifest {
            path: self.path.to_path_buf(),
            supervisor,
            pools,
        })
    }

    fn default_name(&self) -> String {
        self.path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .filter(|stem| !stem.is_empty())
            .unwrap_or_else(|| "procwire".to_owned())
    }

    fn supervisor(&self, value: &Value<'_>) -> Checked<SupervisorConfig> {
        let table = self.table("supervisor", value)?;
        let mut config = SupervisorConfig {
            name: self.default_name(),
            shutdown_timeout: Duration::from_secs(30),
        };
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "name" => {
                    let name = self.non_empty_string("name", value)?;
                    if name.contains('/') {
                        return Err(self.error(value.span(), "`name` must not contain `/` (it names a socket file)"));
                    }
                    config.name = name.to_owned();
                }
                "shutdown_timeout" => config.shutdown_timeout = self.duration("shutdown_timeout", value)?,
                _ => return Err(self.unknown_key(key, "[supervisor]", SUPERVISOR_KEYS)),
            }
        }
        Ok(config)
    }

    fn pools(&self, pool_key: &Key<'_>, value: &Value<'_>) -> Checked<Vec<Pool>> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.error(
                value.span(),
                format!(
                    "`pool` must be a table of [pool.NAME] tables, not {}",
                    type_name(value.get_ref())
                ),
            ));
        };
        if table.is_empty() {
            return Err(self.error(pool_key.span(), "no pools: add at least one [pool.NAME] table"));
        }
        let mut pools = Vec::new();
        let mut after_spans = Vec::new();
        for (key, value) in in_file_order(table) {
            let (pool, spans) = self.pool(key, value)?;
            pools.push(pool);
            after_spans.push(spans);
        }
        self.check_after(&pools, &after_spans)?;
        Ok(pools)
    }

    /// One `[pool.NAME]` table, and the spans of its `after` keys.
    fn pool(&self, key: &Key<'_>, value: &Value<'_>) -> Checked<(Pool, Vec<Range<usize>>)> {
        let name: &str = key.get_ref().as_ref();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(self.error(
                key.span(),
                format!("bad pool name {}: use letters, digits, `-` and `_`", quote(name)),
            ));
        }
        let place = format!("[pool.{name}]");
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.error(
                value.span(),
                format!(
                    "`pool.{name}` must be a table like {place}, not {}",
                    type_name(value.get_ref())
                ),
            ));
        };
        let mut pool = default_pool(name);
        let mut after_spans = Vec::new();
        let mut has_command = false;
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "command" => {
                    if pool.role.is_some() {
                        return Err(self.error(key.span(), format!("{place} has both `role` and `command`; give one")));
                    }
                    pool.command = self.argv("command", value)?;
                    has_command = true;
                }
                "role" => {
                    if has_command {
                        return Err(self.error(key.span(), format!("{place} has both `command` and `role`; give one")));
                    }
                    let role = self.non_empty_string("role", value)?;
                    pool.role = Some(role.to_owned());
                    has_command = true;
                }
                "workers" => {
                    pool.workers = self.integer_in("workers", value, 1, i128::from(u32::MAX))?;
                }
                "ready" => pool.ready = self.ready(value)?,
                "ready_timeout" => pool.ready_timeout = self.positive_duration("ready_timeout", value)?,
                "restart" => pool.restart = self.choice("restart", value, RESTARTS)?,
                "success_codes" => {
                    let array = self.array("success_codes", value)?;
                    pool.success_codes = array
                        .iter()
                        .map(|code| self.integer_in("success_codes", code, 0, 255))
                        .collect::<Checked<_>>()?;
                }
                "backoff" => pool.backoff = self.backoff(value)?,
                "limit" => pool.limit = self.limit(value)?,
                "strategy" => pool.strategy = self.choice("strategy", value, STRATEGIES)?,
                "after" => {
                    let table = self.table("after", value)?;
                    for (dependency, condition) in in_file_order(table) {
                        let condition =
                            self.choice(&format!("after.{}", dependency.get_ref()), condition, CONDITIONS)?;
                        pool.after.push((dependency.get_ref().to_string(), condition));
                        after_spans.push(dependency.span());
                    }
                }
                "watchdog" => pool.watchdog = Some(self.positive_duration("watchdog", value)?),
                "stop_signal" => pool.stop_signal = self.signal("stop_signal", value)?,
                "stop_timeout" => pool.stop_timeout = self.duration("stop_timeout", value)?,
                "reload_signal" => pool.reload_signal = self.signal("reload_signal", value)?,
                "forward" => pool.forward = self.forward(value)?,
                "env" => pool.env = self.env(value)?,
                "cwd" => pool.cwd = Some(self.resolve(self.non_empty_string("cwd", value)?)),
                "user" => pool.user = Some(self.non_empty_string("user", value)?.to_owned()),
                "group" => pool.group = Some(self.non_empty_string("group", value)?.to_owned()),
                "rlimits" => pool.rlimits = self.rlimits(value)?,
                "stdout" => pool.stdout = self.output("stdout", value)?,
                "stderr" => pool.stderr = self.output("stderr", value)?,
                "log_rotate" => pool.log_rotate = Some(self.log_rotate(value)?),
                "listen" => {
                    let array = self.array("listen", value)?;
                    for item in array.iter() {
                        let endpoint = self.endpoint(item)?;
                        if pool.listen.contains(&endpoint) {
                            return Err(self.error(item.span(), format!("`listen` names {endpoint} twice")));
                        }
                        pool.listen.push(endpoint);
                    }
                }
                "mode" => {
                    let text = self.non_empty_string("mode", value)?;
                    pool.mode = u32::from_str_radix(text.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| {
                            self.error(
                                value.span(),
                                format!("`mode` must be octal permissions like \"0660\", not {text:?}"),
                            )
                        })?;
                }
                _ => return Err(self.unknown_key(key, &place, POOL_KEYS)),
            }
        }
        if !has_command {
            return Err(self.error(
                key.span(),
                format!("{place} has no `command` (the argv to run, like [\"./web\"])"),
            ));
        }
        Ok((pool, after_spans))
    }

    fn argv(&self, name: &str, value: &Value<'_>) -> Checked<Vec<String>> {
        let array = self.array(name, value)?;
        if array.is_empty() {
            return Err(self.error(
                value.span(),
                format!("`{name}` is empty: it needs at least the program to run"),
            ));
        }
        let mut argv = Vec::new();
        for (index, arg) in array.iter().enumerate() {
            let string = self.string(&format!("{name}[{index}]"), arg)?;
            if index == 0 && string.is_empty() {
                return Err(self.error(arg.span(), format!("`{name}[0]`, the program to run, is empty")));
            }
            if string.contains('\0') {
                return Err(self.error(arg.span(), format!("`{name}[{index}]` contains a NUL character")));
            }
            argv.push(string.to_owned());
        }
        Ok(argv)
    }

    fn endpoint(&self, value: &Value<'_>) -> Checked<Endpoint> {
        let string = self.non_empty_string("listen", value)?;
        if let Some(path) = string.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(self.error(
                    value.span(),
                    "`listen`: \"unix:\" needs a path, like \"unix:run/app.sock\"",
                ));
            }
            return Ok(Endpoint::Unix(self.resolve(path)));
        }
        if string.starts_with("tcp:") {
            return match parse_ready(string) {
                Ok(Ready::Tcp { host, port }) => Ok(Endpoint::Tcp { host, port }),
                Ok(_) => unreachable!("a tcp: string parses as a tcp endpoint"),
                Err(why) => Err(self.error(value.span(), format!("`listen`: {why}"))),
            };
        }
        Err(self.error(
            value.span(),
            format!("`listen` entries are \"unix:PATH\" or \"tcp:HOST:PORT\", not {string:?}"),
        ))
    }

    fn ready(&self, value: &Value<'_>) -> Checked<Ready> {
        let string = self.string("ready", value)?;
        parse_ready(string).map_err(|why| self.error(value.span(), format!("`ready`: {why}")))
    }

    fn backoff(&self, value: &Value<'_>) -> Checked<Backoff> {
        let table = self.table("backoff", value)?;
        let mut backoff = default_backoff();
        let (mut initial_span, mut max_span) = (None, None);
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "initial" => {
                    backoff.initial = self.duration("backoff.initial", value)?;
                    initial_span = Some(value.span());
                }
                "max" => {
                    backoff.max = self.duration("backoff.max", value)?;
                    max_span = Some(value.span());
                }
                "factor" => {
                    backoff.factor = self.float("backoff.factor", value)?;
                    if backoff.factor < 1.0 {
                        return Err(self.error(
                            value.span(),
                            format!("`backoff.factor` must be at least 1.0, not {}", backoff.factor),
                        ));
                    }
                }
                "jitter" => {
                    backoff.jitter = self.float("backoff.jitter", value)?;
                    if !(0.0..1.0).contains(&backoff.jitter) {
                        return Err(self.error(
                            value.span(),
                            format!(
                                "`backoff.jitter` must be at least 0 and less than 1 (a fraction of the delay), not {}",
                                backoff.jitter
                            ),
                        ));
                    }
                }
                "reset_after" => backoff.reset_after = self.duration("backoff.reset_after", value)?,
                _ => return Err(self.unknown_key(key, "`backoff`", BACKOFF_KEYS)),
            }
        }
        if backoff.max < backoff.initial {
            let span = max_span.or(initial_span).unwrap_or_else(|| value.span());
            return Err(self.error(
                span,
                format!(
                    "`backoff.max` ({:?}) is less than `backoff.initial` ({:?})",
                    backoff.max, backoff.initial
                ),
            ));
        }
        Ok(backoff)
    }

    fn limit(&self, value: &Value<'_>) -> Checked<Limit> {
        let table = self.table("limit", value)?;
        let mut limit = default_limit();
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "restarts" => limit.restarts = self.integer_in("limit.restarts", value, 0, i128::from(u32::MAX))?,
                "within" => limit.within = self.positive_duration("limit.within", value)?,
                "start_attempts" => {
                    limit.start_attempts = self.integer_in("limit.start_attempts", value, 0, i128::from(u32::MAX))?
                }
                "then" => limit.then = self.choice("limit.then", value, LIMIT_ACTIONS)?,
                _ => return Err(self.unknown_key(key, "`limit`", LIMIT_KEYS)),
            }
        }
        Ok(limit)
    }

    fn forward(&self, value: &Value<'_>) -> Checked<Vec<Signal>> {
        let array = self.array("forward", value)?;
        let mut signals = Vec::new();
        for item in array.iter() {
            let signal = self.signal("forward", item)?;
            if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
                return Err(self.error(
                    item.span(),
                    format!(
                        "`forward`: {} cannot be caught, so it cannot be forwarded",
                        signal_name(signal)
                    ),
                ));
            }
            if matches!(signal, Signal::SIGTERM | Signal::SIGINT | Signal::SIGCHLD) {
                return Err(self.error(
                    item.span(),
                    format!(
                        "`forward`: {} is the supervisor's own (it stops the supervisor, or reports children); use `stop_signal` to choose what workers get",
                        signal_name(signal)
                    ),
                ));
            }
            if signals.contains(&signal) {
                return Err(self.error(item.span(), format!("`forward` lists {} twice", signal_name(signal))));
            }
            signals.push(signal);
        }
        Ok(signals)
    }

    fn env(&self, value: &Value<'_>) -> Checked<BTreeMap<String, String>> {
        let table = self.table("env", value)?;
        let mut env = BTreeMap::new();
        for (key, value) in in_file_order(table) {
            let name: &str = key.get_ref().as_ref();
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(self.error(
                    key.span(),
                    format!(
                        "bad environment variable name {}: it must be non-empty, without `=`",
                        quote(name)
                    ),
                ));
            }
            let label = format!("env.{name}");
            let string = self.string(&label, value)?;
            if string.contains('\0') {
                return Err(self.error(value.span(), format!("`{label}` contains a NUL character")));
            }
            env.insert(name.to_owned(), string.to_owned());
        }
        Ok(env)
    }

    fn rlimits(&self, value: &Value<'_>) -> Checked<BTreeMap<String, u64>> {
        let table = self.table("rlimits", value)?;
        let mut rlimits = BTreeMap::new();
        for (key, value) in in_file_order(table) {
            let name: &str = key.get_ref().as_ref();
            if !RLIMIT_NAMES.contains(&name) {
                return Err(self.error(
                    key.span(),
                    format!(
                        "unknown resource limit {}; known: {}",
                        quote(name),
                        RLIMIT_NAMES.join(", ")
                    ),
                ));
            }
            let limit = self.integer_in(&format!("rlimits.{name}"), value, 0, i128::from(u64::MAX))?;
            rlimits.insert(name.to_owned(), limit);
        }
        Ok(rlimits)
    }

    fn output(&self, name: &str, value: &Value<'_>) -> Checked<Output> {
        let string = self.string(name, value)?;
        match string {
            "inherit" => Ok(Output::Inherit),
            "discard" => Ok(Output::Discard),
            _ => match string.strip_prefix("file:") {
                Some("") => Err(self.error(
                    value.span(),
                    format!("`{name}`: \"file:\" needs a path, like \"file:web.log\""),
                )),
                Some(path) if path.contains('\0') => {
                    Err(self.error(value.span(), format!("`{name}`: the path contains a NUL character")))
                }
                Some(path) => Ok(Output::File(self.resolve(path))),
                None => Err(self.error(
                    value.span(),
                    format!("`{name}` must be one of \"inherit\", \"discard\", \"file:PATH\", not {string:?}"),
                )),
            },
        }
    }

    fn log_rotate(&self, value: &Value<'_>) -> Checked<LogRotate> {
        let table = self.table("log_rotate", value)?;
        let (mut size, mut keep) = (None, None);
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "size" => {
                    let bytes = self.size("log_rotate.size", value)?;
                    if bytes == 0 {
                        return Err(self.error(value.span(), "`log_rotate.size` must be more than 0 bytes"));
                    }
                    size = Some(bytes);
                }
                "keep" => keep = Some(self.integer_in("log_rotate.keep", value, 0, i128::from(u32::MAX))?),
                _ => return Err(self.unknown_key(key, "`log_rotate`", LOG_ROTATE_KEYS)),
            }
        }
        match (size, keep) {
            (Some(size), Some(keep)) => Ok(LogRotate { size, keep }),
            (None, _) => Err(self.error(value.span(), "`log_rotate` needs `size` (like \"10MiB\")")),
            (_, None) => Err(self.error(
                value.span(),
                "`log_rotate` needs `keep` (how many rotated files to keep)",
            )),
        }
    }

    /// Every `after` names a pool, and `after` has no cycle.
    fn check_after(&self, pools: &[Pool], after_spans: &[Vec<Range<usize>>]) -> Checked<()> {
        let index: HashMap<&str, usize> = pools
            .iter()
            .enumerate()
            .map(|(i, pool)| (pool.name.as_str(), i))
            .collect();
        for (pool, spans) in pools.iter().zip(after_spans) {
            for ((dependency, _), span) in pool.after.iter().zip(spans) {
                if !index.contains_key(dependency.as_str()) {
                    let names: Vec<&str> = pools.iter().map(|pool| pool.name.as_str()).collect();
                    return Err(self.error(
                        span.clone(),
                        format!(
                            "[pool.{}] is after unknown pool {}; pools: {}",
                            pool.name,
                            quote(dependency),
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        // Depth-first search in file order; a dependency still on the stack closes a cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnStack,
            Done,
        }
        struct Search<'p> {
            pools: &'p [Pool],
            index: &'p HashMap<&'p str, usize>,
            marks: Vec<Mark>,
            stack: Vec<usize>,
        }
        impl Search<'_> {
            /// `Some((pool, edge, cycle))` for the first cycle found from `node`.
            fn visit(&mut self, node: usize) -> Option<(usize, usize, Vec<usize>)> {
                self.marks[node] = Mark::OnStack;
                self.stack.push(node);
                for (edge, (dependency, _)) in self.pools[node].after.iter().enumerate() {
                    let next = self.index[dependency.as_str()];
                    match self.marks[next] {
                        Mark::Done => {}
                        Mark::OnStack => {
                            let from = self.stack.iter().position(|&n| n == next).unwrap_or(0);
                            let mut cycle = self.stack[from..].to_vec();
                            cycle.push(next);
                            return Some((node, edge, cycle));
                        }
                        Mark::New => {
                            if let Some(found) = self.visit(next) {
                                return Some(found);
                            }
                        }
                    }
                }
                self.stack.pop();
                self.marks[node] = Mark::Done;
                None
            }
        }
        let mut search = Search {
            pools,
            index: &index,
            marks: vec![Mark::New; pools.len()],
            stack: Vec::new(),
        };
        for start in 0..pools.len() {
            if search.marks[start] != Mark::New {
                continue;
            }
            if let Some((node, edge, cycle)) = search.visit(start) {
                let names: Vec<&str> = cycle.iter().map(|&n| pools[n].name.as_str()).collect();
                return Err(self.error(
                    after_spans[node][edge].clone(),
                    format!("cycle in `after`: {}", names.join(" -> ")),
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn default_pool(name: &str) -> Pool {
    Pool {
        name: name.to_owned(),
        command: Vec::new(),
        workers: 1,
        ready: Ready::Spawned,
        ready_timeout: Duration::from_secs(30),
        restart: Restart::OnFailure,
        success_codes: vec![0],
        backoff: default_backoff(),
        limit: default_limit(),
        strategy: Strategy::OneForOne,
        after: Vec::new(),
        watchdog: None,
        stop_signal: Signal::SIGTERM,
        stop_timeout: Duration::from_secs(10),
        reload_signal: Signal::SIGHUP,
        forward: Vec::new(),
        env: BTreeMap::new(),
        cwd: None,
        user: None,
        group: None,
        rlimits: BTreeMap::new(),
        stdout: Output::Inherit,
        stderr: Output::Inherit,
        log_rotate: None,
        listen: Vec::new(),
        mode: 0o600,
        role: None,
    }
}

fn default_backoff() -> Backoff {
    Backoff::default()
}

fn default_limit() -> Limit {
    Limit::default()
}

// ----- strings with a grammar -----

/// `"spawned"`, `"notify"`, `"tcp:HOST:PORT"` or `"exec:COMMAND ARGS..."` (split on whitespace).
fn parse_ready(string: &str) -> Result<Ready, String> {
    const VALID: &str = "\"spawned\", \"notify\", \"tcp:HOST:PORT\" or \"exec:COMMAND ARGS...\"";
    if string == "spawned" {
        return Ok(Ready::Spawned);
    }
    if string == "notify" {
        return Ok(Ready::Notify);
    }
    if let Some(address) = string.strip_prefix("tcp:") {
        let Some((host, port)) = address.rsplit_once(':') else {
            let missing = if address.parse::<u16>().is_ok() { "host" } else { "port" };
            return Err(format!(
                "{string:?} has no {missing}; write \"tcp:HOST:PORT\", like \"tcp:127.0.0.1:8080\""
            ));
        };
        let host = match host.strip_prefix('[') {
            Some(bracketed) => bracketed
                .strip_suffix(']')
                .ok_or_else(|| format!("{string:?}: an IPv6 address needs closing `]`, like \"tcp:[::1]:8080\""))?,
            None if host.contains(':') => {
                return Err(format!(
                    "{string:?}: put an IPv6 address in brackets, like \"tcp:[::1]:8080\""
                ));
            }
            None => host,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!(
                "{string:?} has no valid host; write \"tcp:HOST:PORT\", like \"tcp:127.0.0.1:8080\""
            ));
        }
        return match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Ready::Tcp {
                host: host.to_owned(),
                port,
            }),
            _ => Err(format!(
                "{string:?}: the port must be a number from 1 to 65535, not {port:?}"
            )),
        };
    }
    if let Some(command) = string.strip_prefix("exec:") {
        let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if argv.is_empty() {
            return Err("\"exec:\" needs a command to run, like \"exec:./probe --quiet\"".to_owned());
        }
        return Ok(Ready::Exec(argv));
    }
    Err(format!("must be one of {VALID}, not {string:?}"))
}

/// A signal by name, with or without `SIG`, in any case: `"TERM"`, `"SIGTERM"`, `"term"`.
fn parse_signal(string: &str) -> Result<Signal, String> {
    let upper = string.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_alphanumeric()) {
        if let Ok(signal) = Signal::from_str(&format!("SIG{bare}")) {
            return Ok(signal);
        }
    }
    Err(format!("unknown signal {string:?}; use a name like \"TERM\", \"INT\", \"HUP\", \"QUIT\", \"USR1\" or \"USR2\" (SIG prefix optional)"))
}

/// A signal's name without `SIG`.
fn signal_name(signal: Signal) -> &'static str {
    let name = signal.as_str();
    name.strip_prefix("SIG").unwrap_or(name)
}

/// A duration: one or more `NUMBER UNIT` parts (`"30s"`, `"1.5h"`, `"1m30s"`), units `ns`,
/// `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`.
fn parse_duration(string: &str) -> Result<Duration, String> {
    let text = string.trim();
    if text.is_empty() {
        return Err(format!("it is empty; {DURATION_HINT}"));
    }
    if text.starts_with('-') {
        return Err("a duration cannot be negative".to_owned());
    }
    let mut rest = text;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        if number.is_empty() {
            return Err(format!("expected a number at {rest:?}; {DURATION_HINT}"));
        }
        let after = after.trim_start();
        let unit_len = after.find(|c: char| !c.is_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "" => return Err(format!("{number:?} has no unit; {DURATION_HINT}")),
            other => return Err(format!("unknown unit {other:?}; {DURATION_HINT}")),
        };
        let (value, _) = scale_decimal(number, per_unit)?;
        nanos = nanos.checked_add(value).ok_or("it is too long")?;
        rest = after.trim_start();
    }
    let seconds = u64::try_from(nanos / 1_000_000_000).map_err(|_| "it is too long".to_owned())?;
    Ok(Duration::new(seconds, (nanos % 1_000_000_000) as u32))
}

/// A size in bytes: a number, optionally followed by `B`, `KB`, `MB`, `GB`, `TB` (powers of
/// 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), in any case.
fn parse_size(string: &str) -> Result<u64, String> {
    let text = string.trim();
    if text.is_empty() {
        return Err(format!("it is empty; {SIZE_HINT}"));
    }
    if text.starts_with('-') {
        return Err("a size cannot be negative".to_owned());
    }
    let (number, unit) = split_number(text);
    if number.is_empty() {
        return Err(format!("expected a number at {text:?}; {SIZE_HINT}"));
    }
    let per_unit: u128 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("unknown unit {:?}; {SIZE_HINT}", unit.trim_start())),
    };
    let (bytes, exact) = scale_decimal(number, per_unit)?;
    if !exact {
        return Err("it is not a whole number of bytes".to_owned());
    }
    u64::try_from(bytes).map_err(|_| "it is too large".to_owned())
}

/// Splits a leading decimal number (digits and dots) off `text`.
fn split_number(text: &str) -> (&str, &str) {
    let len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(len)
}

/// `number` (like `"1.5"`) times `unit`, truncated to an integer, and whether that was exact.
fn scale_decimal(number: &str, unit: u128) -> Result<(u128, bool), String> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("{number:?} is not a number"));
    }
    if fraction.len() > 18 {
        return Err(format!("{number:?} has too many decimals"));
    }
    let too_large = || format!("{number:?} is too large");
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let fraction_digits: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| too_large())?
    };
    let denominator = 10u128.pow(fraction.len() as u32);
    let scaled_fraction = fraction_digits * unit;
    let value = whole
        .checked_mul(unit)
        .and_then(|value| value.checked_add(scaled_fraction / denominator))
        .ok_or_else(too_large)?;
    Ok((value, scaled_fraction % denominator == 0))
}

// ----- small helpers -----

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
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
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A user-written name in backquotes, with control characters escaped.
fn quote(name: &str) -> String {
    format!("`{}`", name.escape_debug())
}

fn type_name(value: &DeValue<'_>) -> &'static str {
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
    use super::*;

    const PATH: &str = "/srv/app/demo.toml";

    /// A pool `web` whose `command` is on line 2; `extra` starts on line 3.
    fn web(extra: &str) -> String {
        format!("[pool.web]\ncommand = [\"./web\"]\n{extra}\n")
    }

    #[track_caller]
    fn accepted(text: &str) -> Manifest {
        Manifest::parse(text, PATH).unwrap_or_else(|error| panic!("refused: {error}\n{text}"))
    }

    /// Asserts `text` is refused at `line:column` with a message containing each of `needles`.
    #[track_caller]
    fn refused(text: &str, line: usize, column: usize, needles: &[&str]) -> String {
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

    const FULL: &str = r#"[supervisor]
name = "demo"                 # names the control socket and log prefix (default: file stem)
shutdown_timeout = "30s"      # deadline for the whole ordered shutdown

[pool.db]
command = ["redis-server", "--port", "0", "--supervised", "systemd"]   # argv, no shell
ready = "notify"
ready_timeout = "30s"

[pool.web]
command = ["./web", "--worker", "{index}"]
workers = 4
restart = "on-failure"
success_codes = [0]
backoff = { initial = "100ms", max = "30s", factor = 2.0, jitter = 0.1, reset_after = "60s" }
limit = { restarts = 10, within = "60s", then = "stop" }
strategy = "one-for-one"
after = { db = "ready" }
watchdog = "10s"
stop_signal = "TERM"
stop_timeout = "10s"
reload_signal = "HUP"
forward = ["USR1"]
env = { RUST_LOG = "info" }
cwd = "."
user = "nobody"
rlimits = { nofile = 4096 }
stdout = "inherit"
log_rotate = { size = "10MiB", keep = 5 }
"#;

    #[test]
    fn the_full_example_from_the_issue_is_accepted_with_every_value() {
        let manifest = accepted(FULL);
        assert_eq!(manifest.path, Path::new(PATH));
        assert_eq!(
            manifest.supervisor,
            SupervisorConfig {
                name: "demo".into(),
                shutdown_timeout: Duration::from_secs(30)
            }
        );
        let names: Vec<&str> = manifest.pools.iter().map(|pool| pool.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        let db = &manifest.pools[0];
        assert_eq!(db.command, ["redis-server", "--port", "0", "--supervised", "systemd"]);
        assert_eq!(db.ready, Ready::Notify);
        let web = &manifest.pools[1];
        let expected = Pool {
            name: "web".into(),
            command: vec!["./web".into(), "--worker".into(), "{index}".into()],
            workers: 4,
            ready: Ready::Spawned,
            ready_timeout: Duration::from_secs(30),
            restart: Restart::OnFailure,
            success_codes: vec![0],
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(30),
                factor: 2.0,
                jitter: 0.1,
                reset_after: Duration::from_secs(60),
            },
            limit: Limit {
                restarts: 10,
                within: Duration::from_secs(60),
                start_attempts: 10,
                then: LimitAction::Stop,
            },
            strategy: Strategy::OneForOne,
            after: vec![("db".into(), Condition::Ready)],
            watchdog: Some(Duration::from_secs(10)),
            stop_signal: Signal::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            reload_signal: Signal::SIGHUP,
            forward: vec![Signal::SIGUSR1],
            env: BTreeMap::from([("RUST_LOG".to_owned(), "info".to_owned())]),
            cwd: Some(PathBuf::from("/srv/app/.")),
            user: Some("nobody".into()),
            group: None,
            rlimits: BTreeMap::from([("nofile".to_owned(), 4096)]),
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            log_rotate: Some(LogRotate {
                size: 10 << 20,
                keep: 5,
            }),
            listen: Vec::new(),
            mode: 0o600,
            role: None,
        };
        assert_eq!(*web, expected);
    }

    #[test]
    fn omitted_keys_take_the_documented_defaults() {
        let manifest = accepted("[pool.web]\ncommand = [\"./web\"]\n");
        assert_eq!(
            manifest.supervisor,
            SupervisorConfig {
                name: "demo".into(),
                shutdown_timeout: Duration::from_secs(30)
            }
        );
        assert_eq!(manifest.pools, [default_pool_with_command("web", "./web")]);
        let pool = &manifest.pools[0];
        assert_eq!(pool.workers, 1);
        assert_eq!(pool.ready, Ready::Spawned);
        assert_eq!(pool.ready_timeout, Duration::from_secs(30));
        assert_eq!(pool.restart, Restart::OnFailure);
        assert_eq!(pool.success_codes, [0]);
        assert_eq!(pool.backoff.initial, Duration::from_millis(100));
        assert_eq!(pool.backoff.max, Duration::from_secs(30));
        assert_eq!(pool.backoff.factor, 2.0);
        assert_eq!(pool.backoff.jitter, 0.1);
        assert_eq!(pool.backoff.reset_after, Duration::from_secs(1));
        assert_eq!(
            pool.limit,
            Limit {
                restarts: 10,
                within: Duration::from_secs(60),
                start_attempts: 10,
                then: LimitAction::Stop
            }
        );
        assert_eq!(pool.strategy, Strategy::OneForOne);
        assert!(pool.after.is_empty());
        assert_eq!(pool.watchdog, None);
        assert_eq!(pool.stop_signal, Signal::SIGTERM);
        assert_eq!(pool.stop_timeout, Duration::from_secs(10));
        assert_eq!(pool.reload_signal, Signal::SIGHUP);
        assert!(pool.forward.is_empty() && pool.env.is_empty() && pool.rlimits.is_empty());
        assert_eq!((&pool.cwd, &pool.user, &pool.group), (&None, &None, &None));
        assert_eq!((&pool.stdout, &pool.stderr), (&Output::Inherit, &Output::Inherit));
        assert_eq!(pool.log_rotate, None);
    }

    fn default_pool_with_command(name: &str, program: &str) -> Pool {
        Pool {
            command: vec![program.to_owned()],
            ..default_pool(name)
        }
    }

    #[test]
    fn backoff_and_limit_tables_fill_in_the_keys_they_omit() {
        let manifest = accepted(&web("backoff = { max = \"5s\" }\nlimit = { then = \"shutdown\" }"));
        let pool = &manifest.pools[0];
        assert_eq!(
            pool.backoff,
            Backoff {
                max: Duration::from_secs(5),
                ..default_backoff()
            }
        );
        assert_eq!(
            pool.limit,
            Limit {
                then: LimitAction::Shutdown,
                ..default_limit()
            }
        );
    }

    #[test]
    fn the_supervisor_name_defaults_to_the_file_stem() {
        let manifest = Manifest::parse("[pool.a]\ncommand = [\"a\"]\n", "conf/my-app.prod.toml").unwrap();
        assert_eq!(manifest.supervisor.name, "my-app.prod");
        let manifest = Manifest::parse(
            "[supervisor]\nshutdown_timeout = \"5s\"\n[pool.a]\ncommand = [\"a\"]\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(manifest.supervisor.name, "x");
        assert_eq!(manifest.supervisor.shutdown_timeout, Duration::from_secs(5));
    }

    #[test]
    fn pools_keep_file_order_not_alphabetical_order() {
        let manifest = accepted(
            "[pool.zeta]\ncommand = [\"z\"]\n[pool.alpha]\ncommand = [\"a\"]\n[pool.mid]\ncommand = [\"m\"]\n",
        );
        let names: Vec<&str> = manifest.pools.iter().map(|pool| pool.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn relative_paths_resolve_against_the_manifest_directory() {
        let manifest = accepted(&web(
            "cwd = \"work\"\nstdout = \"file:logs/web.log\"\nstderr = \"file:/var/log/web.err\"",
        ));
        let pool = &manifest.pools[0];
        assert_eq!(pool.cwd.as_deref(), Some(Path::new("/srv/app/work")));
        assert_eq!(pool.stdout, Output::File(PathBuf::from("/srv/app/logs/web.log")));
        assert_eq!(pool.stderr, Output::File(PathBuf::from("/var/log/web.err")));
        let manifest = Manifest::parse(&web("cwd = \"work\""), "demo.toml").unwrap();
        assert_eq!(manifest.pools[0].cwd.as_deref(), Some(Path::new("work")));
    }

    #[test]
    fn discard_output_and_user_with_group_are_accepted_without_root() {
        let manifest = accepted(&web("stdout = \"discard\"\nuser = \"nobody\"\ngroup = \"nogroup\""));
        let pool = &manifest.pools[0];
        assert_eq!(pool.stdout, Output::Discard);
        assert_eq!(pool.user.as_deref(), Some("nobody"));
        assert_eq!(pool.group.as_deref(), Some("nogroup"));
    }

    // ----- unknown keys -----

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

    // ----- durations -----

    #[test]
    fn durations_accept_every_documented_form() {
        for (text, expected) in [
            ("100ms", Duration::from_millis(100)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            ("2d", Duration::from_secs(2 * 86_400)),
            ("1m30s", Duration::from_secs(90)),
            ("1h 30m", Duration::from_secs(5400)),
            ("0s", Duration::ZERO),
            (".5s", Duration::from_millis(500)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_refused_at_the_value() {
        for (value, needle) in [
            ("\"\"", "it is empty"),
            ("\"10\"", "has no unit"),
            ("\"-1s\"", "cannot be negative"),
            ("\"10 parsecs\"", "unknown unit \"parsecs\""),
            ("\"1.2.3s\"", "is not a number"),
            ("\"s\"", "expected a number"),
            ("\"99999999999999999999999h\"", "too long"),
            ("10", "not a bare number"),
            ("true", "not a boolean"),
        ] {
            let message = refused(
                &web(&format!("ready_timeout = {value}")),
                3,
                17,
                &["`ready_timeout`", needle],
            );
            if value.starts_with('"') {
                assert!(message.contains("bad duration"), "{message}");
            }
        }
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
    fn a_bad_duration_inside_backoff_is_refused_at_its_value() {
        refused(
            &web("backoff = { initial = \"fast\" }"),
            3,
            23,
            &["`backoff.initial`", "bad duration"],
        );
    }

    #[test]
    fn a_bad_shutdown_timeout_is_refused() {
        refused(
            "[supervisor]\nshutdown_timeout = \"30\"\n[pool.a]\ncommand = [\"a\"]\n",
            2,
            20,
            &["`shutdown_timeout`", "has no unit"],
        );
    }

    // ----- sizes -----

    #[test]
    fn sizes_accept_binary_and_decimal_units_and_plain_bytes() {
        for (text, expected) in [
            ("10MiB", 10 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("100", 100),
            ("100B", 100),
            ("10MB", 10_000_000),
            ("1.5KiB", 1536),
            ("2tib", 2 << 40),
        ] {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
        let manifest = accepted(&web("log_rotate = { size = 4096, keep = 1 }"));
        assert_eq!(manifest.pools[0].log_rotate, Some(LogRotate { size: 4096, keep: 1 }));
    }

    #[test]
    fn bad_sizes_are_refused_at_the_value() {
        for (value, needle) in [
            ("\"10 parsecs\"", "unknown unit"),
            ("\"\"", "it is empty"),
            ("\"-1MiB\"", "cannot be negative"),
            ("\"1.5B\"", "not a whole number of bytes"),
            ("\"MiB\"", "expected a number"),
            ("\"99999999TiB\"", "too large"),
            ("-5", "must be at least 0"),
            ("1.5", "must be a size, not a float"),
        ] {
            refused(
                &web(&format!("log_rotate = {{ size = {value}, keep = 1 }}")),
                3,
                23,
                &["`log_rotate.size`", needle],
            );
        }
        refused(
            &web("log_rotate = { size = \"0KiB\", keep = 1 }"),
            3,
            23,
            &["more than 0 bytes"],
        );
    }

    #[test]
    fn log_rotate_without_size_or_keep_is_refused() {
        refused(&web("log_rotate = { keep = 3 }"), 3, 14, &["`log_rotate` needs `size`"]);
        refused(
            &web("log_rotate = { size = \"1MiB\" }"),
            3,
            14,
            &["`log_rotate` needs `keep`"],
        );
    }

    // ----- enums -----

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

    // ----- ready -----

    #[test]
    fn ready_accepts_tcp_and_exec_probes() {
        assert_eq!(
            parse_ready("tcp:127.0.0.1:8080"),
            Ok(Ready::Tcp {
                host: "127.0.0.1".into(),
                port: 8080
            })
        );
        assert_eq!(
            parse_ready("tcp:localhost:1"),
            Ok(Ready::Tcp {
                host: "localhost".into(),
                port: 1
            })
        );
        assert_eq!(
            parse_ready("tcp:[::1]:65535"),
            Ok(Ready::Tcp {
                host: "::1".into(),
                port: 65535
            })
        );
        assert_eq!(
            parse_ready("exec:./probe  --quiet"),
            Ok(Ready::Exec(vec!["./probe".into(), "--quiet".into()]))
        );
        assert_eq!(parse_ready("spawned"), Ok(Ready::Spawned));
    }

    #[test]
    fn bad_tcp_addresses_are_refused() {
        for (value, needle) in [
            ("tcp:8080", "has no host"),
            ("tcp:localhost", "has no port"),
            ("tcp::8080", "has no valid host"),
            ("tcp:localhost:", "port must be a number from 1 to 65535"),
            ("tcp:localhost:http", "port must be a number"),
            ("tcp:localhost:0", "port must be a number"),
            ("tcp:localhost:65536", "port must be a number"),
            ("tcp:::1:80", "in brackets"),
            ("tcp:[::1:80", "closing `]`"),
        ] {
            refused(&web(&format!("ready = \"{value}\"")), 3, 9, &["`ready`", needle]);
        }
    }

    #[test]
    fn an_empty_exec_probe_is_refused() {
        refused(&web("ready = \"exec:\""), 3, 9, &["\"exec:\" needs a command"]);
        refused(&web("ready = \"exec:   \""), 3, 9, &["needs a command"]);
    }

    // ----- after -----

    #[test]
    fn a_cycle_in_after_is_refused_naming_the_cycle() {
        let text = "[pool.a]\ncommand = [\"a\"]\nafter = { b = \"ready\" }\n\n[pool.b]\ncommand = [\"b\"]\nafter = { a = \"started\" }\n";
        refused(text, 7, 11, &["cycle in `after`: a -> b -> a"]);
    }

    #[test]
    fn a_longer_cycle_is_named_from_where_it_closes() {
        let text = "[pool.x]\ncommand = [\"x\"]\nafter.a = \"ready\"\n[pool.a]\ncommand = [\"a\"]\nafter.b = \"ready\"\n\
                    [pool.b]\ncommand = [\"b\"]\nafter.c = \"ready\"\n[pool.c]\ncommand = [\"c\"]\nafter.a = \"completed\"\n";
        refused(text, 12, 7, &["cycle in `after`: a -> b -> c -> a"]);
    }

    #[test]
    fn a_pool_after_itself_is_a_cycle() {
        refused(
            &web("after = { web = \"ready\" }"),
            3,
            11,
            &["cycle in `after`: web -> web"],
        );
    }

    #[test]
    fn an_unknown_pool_in_after_is_refused() {
        refused(
            "[pool.db]\ncommand = [\"db\"]\n[pool.web]\ncommand = [\"w\"]\nafter = { dbx = \"ready\" }\n",
            5,
            11,
            &["[pool.web] is after unknown pool `dbx`", "pools: db, web"],
        );
    }

    #[test]
    fn after_keeps_file_order() {
        let manifest = accepted(
            "[pool.b]\ncommand = [\"b\"]\n[pool.a]\ncommand = [\"a\"]\n\
             [pool.c]\ncommand = [\"c\"]\nafter = { b = \"completed\", a = \"started\" }\n",
        );
        assert_eq!(
            manifest.pools[2].after,
            [("b".into(), Condition::Completed), ("a".into(), Condition::Started)]
        );
    }

    // ----- command, workers -----

    #[test]
    fn an_empty_command_is_refused() {
        refused("[pool.web]\ncommand = []\n", 2, 11, &["`command` is empty"]);
    }

    #[test]
    fn an_empty_program_name_is_refused() {
        refused(
            "[pool.web]\ncommand = [\"\", \"--flag\"]\n",
            2,
            12,
            &["`command[0]`, the program to run, is empty"],
        );
    }

    #[test]
    fn a_command_that_is_not_an_array_of_strings_is_refused() {
        refused(
            "[pool.web]\ncommand = \"./web --port 1\"\n",
            2,
            11,
            &["`command` must be an array, not a string"],
        );
        refused(
            "[pool.web]\ncommand = [\"./web\", 8080]\n",
            2,
            21,
            &["`command[1]` must be a string, not an integer"],
        );
    }

    #[test]
    fn a_pool_without_command_is_refused_at_its_name() {
        refused("[pool.web]\nworkers = 2\n", 1, 7, &["[pool.web] has no `command`"]);
    }

    #[test]
    fn zero_workers_are_refused() {
        refused(&web("workers = 0"), 3, 11, &["`workers` must be at least 1, not 0"]);
        refused(&web("workers = -3"), 3, 11, &["`workers` must be at least 1"]);
        refused(
            &web("workers = 5000000000"),
            3,
            11,
            &["`workers` must be at most 4294967295"],
        );
        refused(
            &web("workers = \"4\""),
            3,
            11,
            &["`workers` must be an integer, not a string"],
        );
    }

    #[test]
    fn success_codes_must_be_exit_codes() {
        assert_eq!(
            accepted(&web("success_codes = [0, 2, 255]")).pools[0].success_codes,
            [0, 2, 255]
        );
        refused(
            &web("success_codes = [0, 256]"),
            3,
            21,
            &["`success_codes` must be at most 255"],
        );
    }

    // ----- signals -----

    #[test]
    fn signals_are_accepted_with_or_without_sig() {
        let manifest = accepted(&web(
            "stop_signal = \"SIGINT\"\nreload_signal = \"USR2\"\nforward = [\"SIGUSR1\", \"winch\"]",
        ));
        let pool = &manifest.pools[0];
        assert_eq!(pool.stop_signal, Signal::SIGINT);
        assert_eq!(pool.reload_signal, Signal::SIGUSR2);
        assert_eq!(pool.forward, [Signal::SIGUSR1, Signal::SIGWINCH]);
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGTERM"), Ok(Signal::SIGTERM));
    }

    #[test]
    fn bad_signal_names_are_refused() {
        refused(
            &web("stop_signal = \"TERMINATE\""),
            3,
            15,
            &["`stop_signal`: unknown signal \"TERMINATE\"", "\"TERM\""],
        );
        refused(&web("reload_signal = \"\""), 3, 17, &["unknown signal \"\""]);
        refused(&web("stop_signal = \"SIG\""), 3, 15, &["unknown signal"]);
        refused(&web("stop_signal = 15"), 3, 15, &["`stop_signal` must be a string"]);
        refused(
            &web("forward = [\"USR1\", \"BOGUS\"]"),
            3,
            20,
            &["`forward`: unknown signal \"BOGUS\""],
        );
    }

    #[test]
    fn forwarding_an_uncatchable_or_repeated_signal_is_refused() {
        refused(
            &web("forward = [\"USR1\", \"KILL\"]"),
            3,
            20,
            &["KILL cannot be caught"],
        );
        refused(&web("forward = [\"USR1\", \"SIGUSR1\"]"), 3, 20, &["lists USR1 twice"]);
    }

    #[test]
    fn forwarding_the_supervisors_own_signals_is_refused() {
        refused(&web("forward = [\"TERM\"]"), 3, 12, &["TERM is the supervisor's own"]);
        refused(
            &web("forward = [\"USR2\", \"CHLD\"]"),
            3,
            20,
            &["CHLD is the supervisor's own"],
        );
    }

    #[test]
    fn a_duration_past_a_hundred_years_is_refused() {
        refused(&web("stop_timeout = \"200000d\""), 3, 16, &["longer than 100 years"]);
    }

    // ----- rlimits, env, backoff numbers -----

    #[test]
    fn unknown_rlimit_names_are_refused() {
        refused(
            &web("rlimits = { nofile = 1024, files = 10 }"),
            3,
            28,
            &[
                "unknown resource limit `files`",
                "nofile, nproc, core, memlock, stack, as, cpu, fsize",
            ],
        );
        refused(
            &web("rlimits = { core = -1 }"),
            3,
            20,
            &["`rlimits.core` must be at least 0"],
        );
    }

    #[test]
    fn env_values_must_be_strings() {
        refused(
            &web("env = { PORT = 8080 }"),
            3,
            16,
            &["`env.PORT` must be a string, not an integer"],
        );
        refused(
            &web("env = { \"A=B\" = \"x\" }"),
            3,
            9,
            &["bad environment variable name `A=B`"],
        );
    }

    #[test]
    fn a_backoff_factor_below_one_is_refused() {
        refused(
            &web("backoff = { factor = 0.5 }"),
            3,
            22,
            &["`backoff.factor` must be at least 1.0, not 0.5"],
        );
        assert_eq!(accepted(&web("backoff = { factor = 1 }")).pools[0].backoff.factor, 1.0);
        refused(
            &web("backoff = { factor = nan }"),
            3,
            22,
            &["`backoff.factor` must be a finite number"],
        );
    }

    #[test]
    fn jitter_outside_zero_to_one_is_refused() {
        refused(
            &web("backoff = { jitter = 1.0 }"),
            3,
            22,
            &["`backoff.jitter` must be at least 0 and less than 1"],
        );
        refused(&web("backoff = { jitter = -0.1 }"), 3, 22, &["`backoff.jitter`"]);
        assert_eq!(
            accepted(&web("backoff = { jitter = 0.0 }")).pools[0].backoff.jitter,
            0.0
        );
        assert_eq!(
            accepted(&web("backoff = { jitter = 0.99 }")).pools[0].backoff.jitter,
            0.99
        );
    }

    #[test]
    fn a_backoff_max_below_initial_is_refused() {
        refused(
            &web("backoff = { initial = \"10s\", max = \"1s\" }"),
            3,
            36,
            &["`backoff.max` (1s) is less than `backoff.initial` (10s)"],
        );
        refused(
            &web("backoff = { initial = \"1m\" }"),
            3,
            23,
            &["`backoff.max` (30s) is less than"],
        );
    }

    // ----- names, tables, pools -----

    #[test]
    fn a_manifest_without_pools_is_refused() {
        refused("", 1, 1, &["no pools"]);
        refused("[supervisor]\nname = \"x\"\n", 1, 1, &["no pools", "[pool.NAME]"]);
        refused("[supervisor]\nname = \"x\"\n[pool]\n", 3, 2, &["no pools"]);
    }

    #[test]
    fn pool_must_be_a_table_of_tables() {
        refused(
            "pool = 3\n",
            1,
            8,
            &["`pool` must be a table of [pool.NAME] tables, not an integer"],
        );
        refused(
            "[[pool]]\ncommand = [\"x\"]\n",
            1,
            1,
            &["`pool` must be a table of [pool.NAME] tables, not an array"],
        );
        refused(
            "[pool]\nweb = \"./web\"\n",
            2,
            7,
            &["`pool.web` must be a table like [pool.web]"],
        );
    }

    #[test]
    fn a_pool_name_with_odd_characters_is_refused() {
        refused(
            "[pool.\"my pool\"]\ncommand = [\"x\"]\n",
            1,
            7,
            &["bad pool name `my pool`"],
        );
    }

    #[test]
    fn a_supervisor_name_with_a_slash_is_refused() {
        refused(
            "[supervisor]\nname = \"a/b\"\n[pool.a]\ncommand = [\"a\"]\n",
            2,
            8,
            &["must not contain `/`"],
        );
        refused(
            "[supervisor]\nname = \"\"\n[pool.a]\ncommand = [\"a\"]\n",
            2,
            8,
            &["`name` must not be empty"],
        );
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

    #[test]
    fn columns_count_characters_not_bytes() {
        refused(
            &web("env = { \"CAFÉ\" = \"é\", X = 1 }"),
            3,
            27,
            &["`env.X` must be a string"],
        );
    }

    // ----- the error type and load -----

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

    #[test]
    fn load_reads_the_file_and_reports_unreadable_files() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("svc.toml");
        std::fs::write(&path, web("cwd = \"data\"")).unwrap();
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(manifest.supervisor.name, "svc");
        assert_eq!(manifest.pools[0].cwd, Some(dir.path().join("data")));

        let missing = dir.path().join("missing.toml");
        let error = Manifest::load(&missing).unwrap_err();
        assert!(matches!(error, ManifestError::Io { .. }));
        assert_eq!(error.location(), None);
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    // ----- plan -----

    fn plan_names(manifest: &Manifest) -> Vec<Vec<&str>> {
        manifest
            .plan()
            .iter()
            .map(|wave| wave.iter().map(|pool| pool.name.as_str()).collect())
            .collect()
    }

    #[test]
    fn a_pool_after_two_independent_pools_starts_in_the_second_wave() {
        let manifest = accepted(
            "[pool.Z]\ncommand = [\"z\"]\nafter = { X = \"completed\", Y = \"completed\" }\n\
             [pool.X]\ncommand = [\"x\"]\n[pool.Y]\ncommand = [\"y\"]\n",
        );
        assert_eq!(plan_names(&manifest), [vec!["X", "Y"], vec!["Z"]]);
    }

    #[test]
    fn a_chain_of_dependencies_gives_one_wave_per_link() {
        let manifest = accepted(
            "[pool.web]\ncommand = [\"w\"]\nafter = { cache = \"ready\", db = \"ready\" }\n\
             [pool.cache]\ncommand = [\"c\"]\nafter = { db = \"started\" }\n\
             [pool.db]\ncommand = [\"d\"]\n[pool.metrics]\ncommand = [\"m\"]\n",
        );
        assert_eq!(
            plan_names(&manifest),
            [vec!["db", "metrics"], vec!["cache"], vec!["web"]]
        );
    }

    #[test]
    fn plan_of_a_hand_built_cycle_ends_with_the_stuck_pools() {
        let mut manifest =
            accepted("[pool.a]\ncommand = [\"a\"]\n[pool.b]\ncommand = [\"b\"]\n[pool.c]\ncommand = [\"c\"]\n");
        manifest.pools[0].after.push(("b".into(), Condition::Ready));
        manifest.pools[1].after.push(("a".into(), Condition::Ready));
        assert_eq!(plan_names(&manifest), [vec!["c"], vec!["a", "b"]]);
    }
}
