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
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::manifest::defaults::default_pool;
    use crate::manifest::testing::{accepted, refused, web, PATH};
    use crate::manifest::*;

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
            no_new_privs: false,
            umask: None,
            rlimits: BTreeMap::from([("nofile".to_owned(), 4096)]),
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            log_rotate: Some(LogRotate {
                size: 10 << 20,
                keep: 5,
            }),
            listen: Vec::new(),
            mode: 0o600,
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            key_file: None,
            accept_key_files: Vec::new(),
            role: None,
            notify_access: NotifyAccess::Main,
            shared: Vec::new(),
            queues: Vec::new(),
            publishes: Vec::new(),
            subscribes: Vec::new(),
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
        refused(&web("workers = 4294967295"), 3, 11, &["`workers` must be at most 1024"]);
        refused(&web("workers = 1025"), 3, 11, &["`workers` must be at most 1024"]);
        assert_eq!(accepted(&web("workers = 1024")).pools[0].workers, 1024);
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

    #[test]
    fn notify_access_is_main_by_default_or_all() {
        assert_eq!(accepted(&web("")).pools[0].notify_access, NotifyAccess::Main);
        assert_eq!(
            accepted(&web("notify_access = \"all\"")).pools[0].notify_access,
            NotifyAccess::All
        );
        refused(
            &web("notify_access = \"exec\""),
            3,
            17,
            &["`notify_access` must be one of \"main\", \"all\", not \"exec\""],
        );
    }
}
