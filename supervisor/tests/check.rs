//! `procwire check FILE`, run as the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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

/// `text` written to `NAME.toml` in a new directory that also holds the programs `GOOD`
/// names (`web`, `migrate`, `metrics`), executable.
fn fixture(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::TempDir::new().unwrap();
    for program in ["web", "migrate", "metrics"] {
        let path = dir.path().join(program);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const GOOD: &str = r#"[supervisor]
name = "shop"

[pool.web]
command = ["./web", "--worker", "{index}"]
workers = 4
after = { db = "ready", migrate = "completed" }

[pool.db]
command = ["sh", "-c", "exec redis-server"]
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
    let (_dir, path) = fixture("shop", GOOD);
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
    let (_dir, path) = fixture(
        "bad",
        &GOOD.replace("workers = 4", "workers = 4\nrestart = \"sometimes\""),
    );
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
    let (_dir, path) = fixture(
        "cycle",
        &GOOD.replace(
            "ready = \"notify\"",
            "ready = \"notify\"\nafter = { web = \"started\" }",
        ),
    );
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

// ----- what `up` would refuse -----

/// Asserts that `check` refuses `text` with exit code 2 and exactly `message` after
/// `FILE:` (a location and the text), on one line.
#[track_caller]
fn refused(name: &str, text: &str, message: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = fixture(name, text);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr, format!("{}:{message}\n", path.display()));
    (dir, path)
}

#[test]
fn a_program_not_in_path_is_refused_at_its_command() {
    let search = std::env::var("PATH").unwrap();
    refused(
        "nosuch",
        "[pool.w]\ncommand = [\"procwire-no-such-program\", \"--flag\"]\n",
        &format!("2:12: pool w: `command`: program \"procwire-no-such-program\" is not in PATH ({search})"),
    );
}

#[test]
fn a_program_path_that_does_not_exist_is_refused_with_the_os_reason() {
    let (dir, path) = fixture("missing", "[pool.w]\nworkers = 2\ncommand = [\"./gone\"]\n");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let expected = format!(
        "{}:3:12: pool w: `command`: program {}: No such file or directory (os error 2)\n",
        path.display(),
        dir.path().join("gone").display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn a_program_file_without_execute_permission_is_refused() {
    let (dir, path) = fixture("noexec", "[pool.w]\ncommand = [\"./plain\"]\n");
    std::fs::write(dir.path().join("plain"), "#!/bin/sh\n").unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:2:12: pool w: `command`: program ", path.display()))
            && stderr.contains("plain: Permission denied"),
        "{stderr}"
    );
}

#[test]
fn an_exec_probe_whose_program_is_missing_is_refused() {
    let (dir, path) = fixture(
        "probe",
        "[pool.w]\ncommand = [\"./web\"]\nready = \"exec:./probe-gone --quiet\"\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let expected = format!(
        "{}:3:9: pool w: `ready`: program {}: No such file or directory (os error 2)\n",
        path.display(),
        dir.path().join("probe-gone").display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn a_listen_directory_that_does_not_exist_is_refused() {
    let (dir, path) = fixture(
        "nodir",
        "[pool.w]\ncommand = [\"./web\"]\nlisten = [\"tcp:127.0.0.1:1\", \"unix:run/w.sock\"]\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let expected = format!(
        "{}:3:30: pool w: listen unix:{}: directory {}: No such file or directory (os error 2)\n",
        path.display(),
        dir.path().join("run/w.sock").display(),
        dir.path().join("run").display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn a_world_writable_listen_directory_is_refused() {
    let (dir, path) = fixture(
        "open",
        "[pool.w]\ncommand = [\"./web\"]\nlisten = [\"unix:open/w.sock\"]\n",
    );
    std::fs::create_dir(dir.path().join("open")).unwrap();
    std::fs::set_permissions(dir.path().join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:3:11: pool w: listen unix:", path.display()))
            && stderr.contains("open is writable by everyone; put the socket in a private directory"),
        "{stderr}"
    );
}

#[test]
fn a_unix_path_of_107_bytes_passes_and_one_of_108_is_refused_naming_the_limit() {
    let (dir, path) = fixture("long", "");
    let prefix = dir.path().as_os_str().len() + 1;
    let name = |length: usize| "s".repeat(length - prefix);
    let manifest = |length: usize| {
        format!(
            "[pool.w]\ncommand = [\"./web\"]\nlisten = [\"unix:{}\"]\n",
            name(length)
        )
    };
    std::fs::write(&path, manifest(107)).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    std::fs::write(&path, manifest(108)).unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let expected = format!(
        "{}:3:11: pool w: listen unix:{}: the path is 108 bytes, and a Unix socket path can have at most 107 (108 with the terminating NUL); use a shorter or relative path\n",
        path.display(),
        dir.path().join(name(108)).display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn an_absurd_worker_count_is_refused_at_its_value() {
    refused(
        "many",
        "[pool.w]\ncommand = [\"./web\"]\nworkers = 4294967295\n",
        "3:11: `workers` must be at most 1024, not 4294967295",
    );
}

#[test]
fn a_role_is_refused_by_check_as_by_up() {
    refused(
        "role",
        "[pool.calc]\nrole = \"calc\"\n",
        "2:8: pool calc: `role` runs the supervising program itself in that role; only an embedded supervisor (procwire::Supervisor) can do that, not `procwire up`",
    );
}

#[test]
fn a_missing_working_directory_is_refused() {
    let (dir, path) = fixture("cwd", "[pool.w]\ncommand = [\"./web\"]\ncwd = \"nowhere\"\n");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let expected = format!(
        "{}:3:7: pool w: working directory {}: No such file or directory (os error 2)\n",
        path.display(),
        dir.path().join("nowhere").display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn up_refuses_a_missing_program_at_once_with_the_same_message_instead_of_a_crash_loop() {
    let (_dir, path) = fixture("upmissing", "[pool.w]\ncommand = [\"procwire-no-such-program\"]\n");
    let (_, _, from_check) = check(&path);
    let output = procwire(&["up", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr, from_check);
    assert!(stderr.contains("is not in PATH"), "{stderr}");
}

#[test]
fn an_unknown_user_is_refused_at_its_value() {
    refused(
        "user",
        "[pool.w]\ncommand = [\"./web\"]\nuser = \"procwire-no-such-user\"\n",
        "3:8: pool w: `user`: no user named \"procwire-no-such-user\"",
    );
}

#[test]
fn a_umask_above_0777_is_refused_at_its_value() {
    refused(
        "umask",
        "[pool.w]\ncommand = [\"sh\"]\nno_new_privs = true\numask = \"1000\"\n",
        "4:9: `umask` must be octal digits up to 0777, like \"0027\", not \"1000\"",
    );
}

/// A key file in `dir` holding `content`, with permissions `mode`.
fn key_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn an_authenticated_tcp_listen_without_a_key_is_refused_at_the_endpoint() {
    refused(
        "nokey",
        "[pool.w]\ncommand = [\"./web\"]\nlisten = [\"tcp+plain:127.0.0.1:7001\", \"tcp:127.0.0.1:7000\"]\n",
        "3:39: pool w: listen tcp:127.0.0.1:7000 is authenticated TCP and needs a key: give the pool \
         `key_file = \"PATH\"` (32 bytes, or 64 hex digits, readable only by its owner), or write \
         \"tcp+plain:…\" for TCP that serves anyone",
    );
}

#[test]
fn plain_tcp_needs_no_key_and_authenticated_tcp_passes_with_one() {
    let text = "[pool.w]\ncommand = [\"./web\"]\nlisten = [\"tcp+plain:127.0.0.1:7001\"]\n\n\
                [pool.s]\ncommand = [\"./web\"]\nlisten = [\"tcp:127.0.0.1:7000\"]\nkey_file = \"s.key\"\n";
    let (dir, path) = fixture("keyed", text);
    key_file(dir.path(), "s.key", &[7; 32], 0o600);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("0707"), "the key is not printed: {stdout}");
}

#[test]
fn a_key_file_list_is_checked_key_by_key_and_may_not_be_empty() {
    let text =
        "[pool.w]\ncommand = [\"./web\"]\nlisten = [\"tcp:127.0.0.1:7000\"]\nkey_file = [\"new.key\", \"old.key\"]\n";
    let (dir, path) = fixture("rotate", text);
    key_file(dir.path(), "new.key", &[7; 32], 0o600);
    // The second one, missing: refused, naming it.
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let old = dir.path().join("old.key");
    assert!(
        stderr.starts_with(&format!("{}:4:", path.display()))
            && stderr.contains(&format!("cannot read the key file {}", old.display())),
        "{stderr}"
    );
    key_file(dir.path(), "old.key", &[9; 32], 0o600);
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stderr}");

    let text = "[pool.w]\ncommand = [\"./web\"]\nlisten = [\"tcp:127.0.0.1:7000\"]\nkey_file = []\n";
    let (_dir, path) = fixture("nokeys", text);
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}:4:12: `key_file` is an empty list: name a key file\n",
            path.display()
        )
    );
}

#[test]
fn a_missing_short_or_exposed_key_file_is_refused_at_its_value() {
    let text = "[pool.w]\ncommand = [\"./web\"]\nlisten = [\"tcp:127.0.0.1:7000\"]\nkey_file = \"w.key\"\n";
    let (dir, path) = fixture("badkey", text);
    let key = dir.path().join("w.key");
    let at = format!("{}:4:12: pool w: `key_file`: ", path.display());
    let shown = key.display();
    for (content, mode, expected) in [
        (
            None,
            0o600,
            format!("cannot read the key file {shown}: No such file or directory (os error 2)"),
        ),
        (
            Some(&b"0123456789abcdef\n"[..]),
            0o600,
            format!("the key from {shown} is not 32 bytes (raw, or 64 hex digits): 16 characters"),
        ),
        (
            Some(&[7; 32][..]),
            0o640,
            format!("the key file {shown} may be read by others (mode 640); chmod 600 it"),
        ),
    ] {
        if let Some(content) = content {
            key_file(dir.path(), "w.key", content, mode);
        }
        let (code, _, stderr) = check(&path);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr, format!("{at}{expected}\n"));
    }
}
