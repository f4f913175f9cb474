//! Helpers for the control-plane tests: running `procwire` verbs as clients of a test's
//! supervisor, and reading `status --json`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::{number_after, Supervisor};

/// Runs `procwire ARGS...` as a client of the supervisor whose runtime directory is `dir`.
pub fn procwire(dir: &Path, args: &[&str]) -> Output {
    client(dir, args).output().expect("run procwire")
}

pub fn client(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_procwire"));
    command
        .args(args)
        .env("XDG_RUNTIME_DIR", dir)
        .env_remove("PROCWIRE_CONTROL")
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

/// `procwire ARGS...`, which must succeed; its standard output.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let output = procwire(dir, args);
    assert!(
        output.status.success(),
        "procwire {args:?} ended with {}; stdout:\n{}stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

pub fn status_json(dir: &Path) -> Value {
    serde_json::from_str(&ok(dir, &["status", "--json"])).expect("status --json prints JSON")
}

/// The status of worker `index` of `pool`.
pub fn worker<'a>(status: &'a Value, pool: &str, index: u64) -> &'a Value {
    let pool = status["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool} in {status:#}"));
    pool["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["index"] == index)
        .unwrap_or_else(|| panic!("no worker {index} in {pool:#}"))
}

pub fn pool_state<'a>(status: &'a Value, pool: &str) -> &'a Value {
    &status["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool} in {status:#}"))["state"]
}

/// The pid worker `which` (`web.0`) printed the `n`th time it started.
pub fn printed_pid(sup: &Supervisor, which: &str, n: usize) -> i64 {
    number_after(&sup.wait_for_nth(&format!("{which} | pid "), n), "pid ")
}

/// Waits for the supervisor's line saying that worker `which` (`web.1`) ended.
pub fn wait_ended(sup: &Supervisor, which: &str) {
    let about = format!(" {which} (pid ");
    sup.wait_until(&format!("{which} ended"), |seen| {
        seen.lines
            .iter()
            .find(|l| l.text.contains(&about) && l.text.contains("ended with"))
            .map(|_| ())
    });
}

/// Whether `python3` runs here (workers that send sd_notify messages use it).
pub fn have_python() -> bool {
    Command::new("python3")
        .args(["-c", ""])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}
