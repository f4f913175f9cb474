//! Followers of a running supervisor, driven as an operator would: `procwire logs -f` and
//! `procwire events [--json]` are the real binary long-polling `procwire up`'s control
//! socket while real `sh` workers run. Every wait is on a line with a deadline.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::Value;
use support::control::*;
use support::*;

/// The manifest's path, for a follower to find its supervisor by (`--file`).
fn manifest(dir: &std::path::Path, name: &str) -> String {
    dir.join(format!("{name}.toml"))
        .to_str()
        .expect("a UTF-8 path")
        .to_owned()
}

#[test]
fn logs_follow_prints_the_recent_lines_then_the_targets_new_ones_and_ends_with_the_supervisor() {
    let dir = temp_dir();
    let mut gate = Gate::new(&dir.path().join("gate"));
    let mut other_gate = Gate::new(&dir.path().join("other-gate"));
    let (gate_path, other_path) = (dir.path().join("gate"), dir.path().join("other-gate"));
    let (gate_path, other_path) = (gate_path.to_str().unwrap(), other_path.to_str().unwrap());
    let mut sup = Supervisor::start(
        dir.path(),
        "tailf",
        &format!(
            r#"
[pool.talk]
command = ["sh", "-c", 'echo "pid $$"; while read go < {gate_path:?}; do echo "late $go"; done']

[pool.other]
command = ["sh", "-c", 'echo "other $$"; while read go < {other_path:?}; do echo "other late"; done']
"#
        ),
    );
    let pid = printed_pid(&sup, "talk.0", 1);
    sup.wait_for("other.0 | other ");
    let file = manifest(dir.path(), "tailf");
    let mut follower = Supervisor::spawn(&["logs", "talk", "-f", "-n", "5", "--file", &file], None);
    follower.wait_for(&format!("talk.0 | pid {pid}"));
    follower.wait_for("procwire: following new lines");

    gate.open(1);
    follower.wait_for("talk.0 | late go");
    other_gate.open(1);
    sup.wait_for("other.0 | other late");
    gate.open(1);
    follower.wait_for_nth("talk.0 | late go", 2);
    assert!(
        !follower.output().contains("other"),
        "a follower of one pool gets only its lines:\n{}",
        follower.output()
    );

    ok(dir.path(), &["down"]);
    sup.expect_exit(0);
    follower.wait_for("procwire: the supervisor has ended");
    follower.expect_exit(0);
}

#[test]
fn a_follower_that_never_reads_does_not_stall_the_supervisor_and_is_told_what_it_missed() {
    let dir = temp_dir();
    let mut gate = Gate::new(&dir.path().join("gate"));
    let gate_path = dir.path().join("gate");
    let sup = Supervisor::start(
        dir.path(),
        "slow",
        &format!(
            r#"
[pool.flood]
command = ["sh", "-c", 'echo "pid $$"; read go < {:?}; i=0; while [ $i -lt 20000 ]; do echo "flood $i"; i=$((i+1)); done; echo "flood done"; exec sleep 1000']
"#,
            gate_path.to_str().unwrap()
        ),
    );
    printed_pid(&sup, "flood.0", 1);
    // A follower whose output nobody reads: once its pipe is full, it stops asking.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_procwire"))
        .args(["logs", "-f", "--file", &manifest(dir.path(), "slow")])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("PROCWIRE_CONTROL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the follower");
    let notes = Arc::new(Shared::default());
    read_lines(follower.stderr.take().unwrap(), Stream::Err, Arc::clone(&notes));
    let stdout = follower.stdout.take().unwrap();
    let mut following = Supervisor {
        child: follower,
        shared: notes,
        status: None,
    };
    following.wait_for("procwire: following new lines");

    gate.open(1);
    // The supervisor keeps reading the worker and answering while the follower is stuck.
    sup.wait_for("flood.0 | flood done");
    let status = status_json(dir.path());
    assert_eq!(worker(&status, "flood", 0)["state"], "ready", "{status:#}");

    // Now read: the follower catches up, past a marker where it missed lines.
    read_lines(stdout, Stream::Out, Arc::clone(&following.shared));
    let marker = following.wait_for("[procwire: ");
    let missed = marker
        .strip_prefix("[procwire: ")
        .and_then(|rest| rest.strip_suffix(" lines missed]"))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(missed.is_some_and(|n| n > 0), "{marker}");
    following.wait_for("flood.0 | flood done");
    let lines = following.texts(Stream::Out);
    assert!(
        lines.len() < 20_000,
        "some lines were dropped, not all kept: {}",
        lines.len()
    );
    following.kill();
}

#[test]
fn events_stream_each_lifecycle_step_in_the_documented_json_shape() {
    let dir = temp_dir();
    let mut gate = Gate::new(&dir.path().join("gate"));
    let gate_path = dir.path().join("gate");
    let pools = format!(
        r#"
[pool.web]
command = ["sh", "-c", 'echo "pid $$"; exec sleep 1000']

[pool.crash]
command = ["sh", "-c", 'echo "pid $$"; read go < {:?}; exit 3']
backoff = {{ initial = "300ms", jitter = 0.0 }}
limit = {{ start_attempts = 2 }}
"#,
        gate_path.to_str().unwrap()
    );
    let mut sup = Supervisor::start(dir.path(), "events", &pools);
    let web0 = printed_pid(&sup, "web.0", 1);
    let crash = printed_pid(&sup, "crash.0", 1);
    let file = manifest(dir.path(), "events");
    let mut follower = Supervisor::spawn(&["events", "--json", "--file", &file], None);
    follower.wait_for("procwire: following events");
    let event = |n: usize, name: &str| -> Value {
        let needle = format!("\"event\":\"{name}\"");
        let line = follower.wait_until(&format!("event #{n} {name}"), |seen| {
            seen.lines
                .iter()
                .filter(|l| l.text.contains(&needle))
                .nth(n - 1)
                .map(|l| l.text.clone())
        });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    };

    ok(dir.path(), &["scale", "web", "2"]);
    let scaled = event(1, "scaled");
    assert_eq!(
        keys(&scaled),
        ["event", "from", "index", "pid", "pool", "seq", "time", "to"]
    );
    assert_eq!(
        (scaled["pool"].as_str(), scaled["from"].as_u64(), scaled["to"].as_u64()),
        (Some("web"), Some(1), Some(2))
    );
    assert_eq!((&scaled["index"], &scaled["pid"]), (&Value::Null, &Value::Null));
    let spawned = event(1, "spawned");
    assert_eq!(keys(&spawned), ["event", "index", "pid", "pool", "seq", "time"]);
    assert_eq!(
        (spawned["pool"].as_str(), spawned["index"].as_u64()),
        (Some("web"), Some(1))
    );
    let ready = event(1, "ready");
    assert_eq!(ready["pid"], spawned["pid"]);
    assert!(
        ready["seq"].as_u64() > spawned["seq"].as_u64(),
        "{spawned} then {ready}"
    );

    // A failed start: its exit with the code, the restart's delay, then the give-up.
    gate.open(1);
    let exited = event(1, "exited");
    assert_eq!(keys(&exited), ["event", "exit", "index", "pid", "pool", "seq", "time"]);
    assert_eq!(exited["pid"], crash);
    assert_eq!(exited["exit"], serde_json::json!({"code": 3}));
    let restarting = event(1, "restarting");
    assert_eq!(
        keys(&restarting),
        ["delay_ms", "event", "index", "pid", "pool", "seq", "time"]
    );
    assert_eq!(restarting["delay_ms"], 300);
    printed_pid(&sup, "crash.0", 2);
    gate.open(1);
    let gave_up = event(1, "gave_up");
    assert_eq!(
        keys(&gave_up),
        ["event", "index", "pid", "pool", "reason", "seq", "time"]
    );
    assert!(
        gave_up["reason"]
            .as_str()
            .unwrap()
            .contains("never got started after 2 attempts"),
        "{gave_up}"
    );

    std::fs::write(
        &file,
        format!("{pools}\n[pool.db]\ncommand = [\"sh\", \"-c\", 'exec sleep 1000']\n"),
    )
    .unwrap();
    ok(dir.path(), &["reload"]);
    let reloaded = event(1, "reloaded");
    assert_eq!(
        keys(&reloaded),
        ["changes", "event", "index", "pid", "pool", "seq", "time"]
    );
    assert_eq!(reloaded["pool"], Value::Null);
    assert_eq!(reloaded["changes"], serde_json::json!(["pool db was added"]));
    // The stream is ordered and numbered without gaps.
    let seqs: Vec<u64> = follower
        .texts(Stream::Out)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(web0 > 0);

    ok(dir.path(), &["down"]);
    sup.expect_exit(0);
    follower.wait_for("procwire: the supervisor has ended");
    follower.expect_exit(0);
}

#[test]
fn events_as_text_name_the_worker_and_what_happened() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "textual",
        "[pool.web]\ncommand = [\"sh\", \"-c\", 'echo \"pid $$\"; exec sleep 1000']\n",
    );
    let web0 = printed_pid(&sup, "web.0", 1);
    let mut follower = Supervisor::spawn(&["events", "--file", &manifest(dir.path(), "textual")], None);
    follower.wait_for("procwire: following events");
    ok(dir.path(), &["restart", "web"]);
    follower.wait_for_containing(&format!("web.0 (pid {web0}) exited, killed by SIGTERM"));
    let new = printed_pid(&sup, "web.0", 2);
    follower.wait_for_containing(&format!("web.0 (pid {new}) spawned"));
    ok(dir.path(), &["down"]);
    sup.expect_exit(0);
    follower.expect_exit(0);
}
