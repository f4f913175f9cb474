//! Manifest reading: what is accepted and each refusal with its place.

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
    let manifest =
        accepted("[pool.zeta]\ncommand = [\"z\"]\n[pool.alpha]\ncommand = [\"a\"]\n[pool.mid]\ncommand = [\"m\"]\n");
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
