//! Reading and checking a manifest: TOML text to [`Manifest`], every refusal with
//! `file:line:col` of the offending key or value.
//!
//! The TOML is parsed into `toml`'s spanned document tree and walked by hand, in file order
//! (see [`super::walk`]), so that the first problem in the file is the one reported, and
//! every message names what is wrong and what would be right. This file walks the document,
//! `[supervisor]` and each `[pool.NAME]`; the compound values are in [`super::fields`].

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::access::Ids;
use super::defaults::default_pool;
use super::validate::MAX_WORKERS;
use super::walk::{in_file_order, quote, type_name, Checked, Checker, Key, Value};
use super::{Condition, Manifest, ManifestError, NotifyAccess, Pool, QueueDecl, Restart, Strategy, SupervisorConfig};

impl Manifest {
    /// Reads and checks `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        Manifest::parse(&read(path)?, path)
    }

    /// Parses and checks `text` as if read from `path` (relative paths resolve against
    /// `path`'s directory; the supervisor's name defaults to `path`'s stem).
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let checker = Checker { text, path };
        let root = DeTable::parse(text).map_err(|error| checker.toml_error(&error))?;
        checker.manifest(root.get_ref())
    }
}

/// The text of the manifest at `path`.
pub(super) fn read(path: &Path) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|error| ManifestError::Io {
        path: path.to_path_buf(),
        error,
    })
}

const TOP_KEYS: &[&str] = &["supervisor", "pool", "shared", "queue", "topic"];
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
    "no_new_privs",
    "umask",
    "rlimits",
    "stdout",
    "stderr",
    "log_rotate",
    "listen",
    "mode",
    "allow_uids",
    "allow_gids",
    "key_file",
    "role",
    "notify_access",
    "shared",
    "queues",
    "publishes",
    "subscribes",
];

const RESTARTS: &[(&str, Restart)] = &[
    ("always", Restart::Always),
    ("on-failure", Restart::OnFailure),
    ("never", Restart::Never),
];
const STRATEGIES: &[(&str, Strategy)] = &[
    ("one-for-one", Strategy::OneForOne),
    ("one-for-all", Strategy::OneForAll),
];
const NOTIFY_ACCESS: &[(&str, NotifyAccess)] = &[("main", NotifyAccess::Main), ("all", NotifyAccess::All)];
const CONDITIONS: &[(&str, Condition)] = &[
    ("started", Condition::Started),
    ("ready", Condition::Ready),
    ("completed", Condition::Completed),
];

impl Checker<'_> {
    pub(super) fn manifest(&self, root: &DeTable<'_>) -> Checked<Manifest> {
        let mut supervisor = None;
        let mut pools = None;
        let mut shared = Vec::new();
        let mut queues = Vec::new();
        let mut topics = Vec::new();
        for (key, value) in in_file_order(root) {
            match key.get_ref().as_ref() {
                "supervisor" => supervisor = Some(self.supervisor(value)?),
                "pool" => pools = Some(self.pools(key, value)?),
                "shared" => shared = self.shared_regions(key, value)?,
                "queue" => queues = self.queues(key, value)?,
                "topic" => topics = self.topics(key, value)?,
                _ => return Err(self.unknown_key(key, "the top level", TOP_KEYS)),
            }
        }
        let Some(pools) = pools else {
            return Err(self.error_at(0, "no pools: add at least one [pool.NAME] table"));
        };
        let known: Vec<&str> = shared.iter().map(|s| s.name.as_str()).collect();
        self.check_listed_names(root, &pools, &super::shared::SHARED, &known)?;
        let known: Vec<&str> = queues.iter().map(|q: &QueueDecl| q.name.as_str()).collect();
        self.check_listed_names(root, &pools, &super::queue::QUEUES, &known)?;
        self.check_topics(root, &pools, &topics)?;
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
            shared,
            queues,
            topics,
        })
    }

    pub(super) fn default_name(&self) -> String {
        self.path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .filter(|stem| !stem.is_empty())
            .unwrap_or_else(|| "procwire".to_owned())
    }

    pub(super) fn supervisor(&self, value: &Value<'_>) -> Checked<SupervisorConfig> {
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

    pub(super) fn pools(&self, pool_key: &Key<'_>, value: &Value<'_>) -> Checked<Vec<Pool>> {
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
    pub(super) fn pool(&self, key: &Key<'_>, value: &Value<'_>) -> Checked<(Pool, Vec<Range<usize>>)> {
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
        let mut mode_given = false;
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
                    pool.workers = self.integer_in("workers", value, 1, i128::from(MAX_WORKERS))?;
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
                "no_new_privs" => pool.no_new_privs = self.boolean("no_new_privs", value)?,
                "umask" => pool.umask = Some(self.umask(value)?),
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
                "notify_access" => pool.notify_access = self.choice("notify_access", value, NOTIFY_ACCESS)?,
                "shared" => pool.shared = self.listed_names("shared", value)?,
                "queues" => pool.queues = self.listed_names("queues", value)?,
                "publishes" => pool.publishes = self.listed_names("publishes", value)?,
                "subscribes" => pool.subscribes = self.listed_names("subscribes", value)?,
                "allow_uids" => pool.allow_uids = self.ids(Ids::Users, value)?,
                "allow_gids" => pool.allow_gids = self.ids(Ids::Groups, value)?,
                "key_file" => {
                    let mut files = self.key_files(value)?;
                    pool.key_file = Some(files.remove(0));
                    pool.accept_key_files = files;
                }
                "mode" => {
                    mode_given = true;
                    pool.mode = self.mode(value)?;
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
        if !mode_given {
            pool.mode = pool.default_mode();
        }
        Ok((pool, after_spans))
    }

    pub(super) fn argv(&self, name: &str, value: &Value<'_>) -> Checked<Vec<String>> {
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
}

#[cfg(test)]
mod tests;
