//! `procwire check FILE`, run as the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn procwire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_procwire"))
        .args(args)
        .output()
        .expect("run procwire")
}

fn check(path: &Path) -> (Option<i32>, String, String) {
    let output = procwire(&["check", path.to_str().expect("UTF-8 path")]);
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    )
}

const GOOD: &str = r#"[supervisor]
name = "shop"

[pool.web]
command = ["./web", "--worker", "{index}"]
workers = 4
after = { db = "ready", migrate = "completed" }

[pool.db]
command = ["redis-server"]
ready = "notify"

[pool.migrate]
command = ["./migrate"]
restart = "never"
after = { db = "ready" }

[pool.metrics]
command = ["./metrics"]
ready = "tcp:127.0.0.1:9100"
"#;

#[test]
fn a_good_manifest_passes_and_its_start_plan_is_printed_in_waves() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("shop.toml");
    std::fs::write(&path, GOOD).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stderr, "");
    let expected = format!(
        "{}: ok: supervisor \"shop\", 4 pools in 3 waves\n\
         wave 1:\n  db: 1 worker, ready: notify\n  metrics: 1 worker, ready: tcp 127.0.0.1:9100\n\
         wave 2:\n  migrate: 1 worker, after: db ready\n\
         wave 3:\n  web: 4 workers, after: db ready, migrate completed\n",
        path.display()
    );
    assert_eq!(stdout, expected);
}

#[test]
fn a_bad_manifest_exits_2_with_one_line_naming_file_line_and_column() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        GOOD.replace("workers = 4", "workers = 4\nrestart = \"sometimes\""),
    )
    .unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "{}:7:11: `restart` must be one of \"always\", \"on-failure\", \"never\", not \"sometimes\"\n",
            path.display()
        )
    );
}

#[test]
fn a_cycle_is_refused_with_the_cycle_named() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("cycle.toml");
    std::fs::write(
        &path,
        GOOD.replace(
            "ready = \"notify\"",
            "ready = \"notify\"\nafter = { web = \"started\" }",
        ),
    )
    .unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        format!("{}:12:11: cycle in `after`: web -> db -> web\n", path.display())
    );
}

#[test]
fn a_missing_file_exits_2_saying_it_cannot_be_read() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("nowhere.toml");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(2));
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with(&format!("{}: cannot read: ", path.display())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn version_is_still_reported() {
    let output = procwire(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("procwire {}\n", env!("CARGO_PKG_VERSION"))
    );
}
