//! `procwire up FILE`, run as the real binary with real worker processes.
//!
//! No test sleeps to synchronise: each one waits for an event (a line of output, a process's
//! exit) with a deadline, and fails with every line seen so far if the deadline passes.
//! Workers are `sh -c` one-liners; where a test needs to hold a worker back until it says
//! so, the worker reads a line from a FIFO (a [`Gate`]) that the test writes to.

mod support;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use support::*;

#[test]
fn a_crashing_worker_is_restarted_after_its_backoff() {
    let dir = temp_dir();
    // The first run crashes, the second stays up; each says when (in ns of the wall clock).
    let mut sup = Supervisor::start(
        dir.path(),
        "crash",
        r#"
[pool.crash]
command = ["sh", "-c", '''echo "started $(date +%s%N)"; if [ -e ran ]; then exec sleep 1000; fi; touch ran; echo "crashing $(date +%s%N)"; exit 1''']
backoff = { initial = "100ms", jitter = 0.0 }
"#,
    );
    let crashing = number_after(&sup.wait_for("crash.0 | crashing "), "crashing ");
    let message = unpid(&sup.wait_until("the restart line", |seen| {
        seen.lines
            .iter()
            .find(|l| l.text.starts_with("procwire[crash]: crash.0 (pid ") && l.text.contains(" ended with "))
            .map(|l| l.text.clone())
    }));
    assert_eq!(
        message,
        "procwire[crash]: crash.0 (pid _) ended with exit code 1; restarting in 100 ms"
    );
    let restarted = number_after(&sup.wait_for_nth("crash.0 | started ", 2), "started ");
    // The restart waits out the backoff, which counts from the exit, after `crashing`.
    assert!(
        restarted - crashing >= 100_000_000,
        "restarted {} ms after the crash, before its 100 ms backoff",
        (restarted - crashing) / 1_000_000
    );
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    let starts = sup
        .lines()
        .iter()
        .filter(|l| l.text.starts_with("crash.0 | started "))
        .count();
    assert_eq!(starts, 2, "{}", sup.output());
}

#[test]
fn a_crash_loop_gives_up_after_the_limit_and_with_nothing_else_running_the_supervisor_exits_1() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "loop",
        r#"
[pool.crash]
command = ["sh", "-c", "echo boom; exit 7"]
backoff = { initial = "10ms" }
limit = { restarts = 3, within = "1m", then = "stop" }
"#,
    );
    sup.expect_exit(1);
    // The first run and 3 restarts; the 4th restart would exceed the limit.
    let runs = sup.texts(Stream::Out).iter().filter(|l| *l == "crash.0 | boom").count();
    assert_eq!(runs, 4, "{}", sup.output());
    let restarts = sup
        .texts(Stream::Err)
        .iter()
        .filter(|l| unpid(l).starts_with("procwire[loop]: crash.0 (pid _) ended with exit code 7; restarting in "))
        .count();
    assert_eq!(restarts, 3, "{}", sup.output());
    sup.assert_has_report(
        "procwire[loop]: crash.0 (pid _) gave up: more than 3 restarts within 60 s; last exits: \
         exit code 7, exit code 7, exit code 7, exit code 7; it stays down",
    );
}

#[test]
fn a_crash_loop_past_a_shutdown_limit_stops_the_other_pools_and_the_supervisor_exits_non_zero() {
    let dir = temp_dir();
    let mut gate = Gate::new(&dir.path().join("gate"));
    let mut sup = Supervisor::start(
        dir.path(),
        "doom",
        r#"
[pool.other]
command = ["sh", "-c", '''trap 'echo other-stopping; exit 0' TERM; echo other-up; sleep 1000 & wait''']

[pool.crash]
command = ["sh", "-c", "read go < gate; echo boom; exit 7"]
backoff = { initial = "10ms" }
limit = { restarts = 2, within = "1m", then = "shutdown" }
"#,
    );
    // The crash loop begins once `other` has its TERM trap in place.
    sup.wait_for("other.0 | other-up");
    gate.open(10);
    let status = sup.finish();
    assert_eq!(status.code(), Some(1), "{status}; lines:\n{}", sup.output());
    sup.assert_has_line("other.0 | other-stopping");
    sup.assert_has_report(
        "procwire[doom]: crash.0 (pid _) gave up: more than 2 restarts within 60 s; last exits: \
         exit code 7, exit code 7, exit code 7; shutting the supervisor down",
    );
}

#[test]
fn a_worker_that_never_gets_started_is_given_up_after_start_attempts_and_the_supervisor_exits_1() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "never",
        r#"
[pool.crash]
command = ["sh", "-c", "echo boom; exit 3"]
backoff = { initial = "1ms", factor = 1.0 }
limit = { start_attempts = 4 }
"#,
    );
    sup.expect_exit(1);
    let runs = sup.texts(Stream::Out).iter().filter(|l| *l == "crash.0 | boom").count();
    assert_eq!(runs, 4, "{}", sup.output());
    sup.assert_has_report(
        "procwire[never]: crash.0 (pid _) gave up: never got started after 4 attempts (none was ready \
         for 1 s); last exits: exit code 3, exit code 3, exit code 3, exit code 3; it stays down",
    );
}

// ----- shutdown -----

#[test]
fn term_sends_every_worker_its_stop_signal_dependents_first_and_the_supervisor_exits_0() {
    let dir = temp_dir();
    // A web worker leaves a file behind before it exits; the db lists those files when it is
    // told to stop. (Output order between workers says nothing: the supervisor may reap a
    // worker before it has read the worker's last lines.)
    let mut sup = Supervisor::start(
        dir.path(),
        "stop",
        r#"
[pool.db]
command = ["sh", "-c", '''trap 'echo db-stopping after *.stopped; exit 0' USR2; echo db-up; sleep 1000 & wait''']
stop_signal = "USR2"

[pool.web]
command = ["sh", "-c", '''trap 'touch web-{index}.stopped; echo web-stopping; exit 0' TERM; echo web-up; sleep 1000 & wait''']
workers = 2
after = { db = "started" }
"#,
    );
    for line in ["db.0 | db-up", "web.0 | web-up", "web.1 | web-up"] {
        sup.wait_for(line);
    }
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    for line in [
        "web.0 | web-stopping",
        "web.1 | web-stopping",
        "db.0 | db-stopping after web-0.stopped web-1.stopped",
    ] {
        sup.assert_has_line(line);
    }
}

#[test]
fn a_worker_that_ignores_its_stop_signal_is_killed_after_stop_timeout_and_the_supervisor_exits_0() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "stubborn",
        r#"
[pool.stubborn]
command = ["sh", "-c", "trap '' TERM; echo stubborn-up; exec sleep 1000"]
stop_timeout = "300ms"
"#,
    );
    sup.wait_for("stubborn.0 | stubborn-up");
    let asked = Instant::now();
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    sup.assert_has_report("procwire[stubborn]: stubborn.0 (pid _) did not stop in time; killing it");
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "exited {:?} after TERM, before the stop timeout",
        asked.elapsed()
    );
}

#[test]
fn sigkill_to_the_supervisor_leaves_no_worker_alive() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "orphans",
        r#"
[pool.a]
command = ["sh", "-c", "echo pid $$; exec sleep 1000"]
workers = 2

[pool.b]
command = ["sh", "-c", "echo pid $$; exec sleep 1000"]
"#,
    );
    // Opened while the workers are known to run, so a reused pid cannot fool the wait.
    let workers: Vec<(i64, OwnedFd)> = ["a.0 | pid ", "a.1 | pid ", "b.0 | pid "]
        .iter()
        .map(|prefix| {
            let pid = number_after(&sup.wait_for(prefix), "pid ");
            let fd = pidfd(pid as i32).unwrap_or_else(|| panic!("worker {pid} is gone already"));
            (pid, fd)
        })
        .collect();
    sup.kill();
    let deadline = Instant::now() + DEADLINE;
    for (pid, fd) in &workers {
        assert!(
            exited_by(fd, deadline),
            "worker {pid} still runs {DEADLINE:?} after its supervisor was killed"
        );
    }
}

#[test]
fn an_orphaned_grandchild_is_reaped_by_the_supervisor_and_leaves_no_zombie() {
    let dir = temp_dir();
    let mut gate = Gate::new(&dir.path().join("gate"));
    // The worker starts a grandchild through a subshell that exits at once, so the grandchild
    // is re-parented to the supervisor (a child subreaper); it ends when the gate opens. The
    // worker's `sleep` ignores USR1, so the worker stays up and answers every forwarded USR1.
    let mut sup = Supervisor::start(
        dir.path(),
        "reaper",
        r#"
[pool.w]
command = ["sh", "-c", '''trap '' USR1; sleep 1000 & trap 'echo got-usr1' USR1; (sh -c 'echo gc $$; read go < gate' &); echo spawned $$; while :; do wait; done''']
forward = ["USR1"]
"#,
    );
    let grandchild = number_after(&sup.wait_for("w.0 | gc "), "gc ");
    // The worker said `spawned` after the subshell ended, so the grandchild was re-parented.
    let worker = number_after(&sup.wait_for("w.0 | spawned "), "spawned ");
    let stat = proc_stat(grandchild).expect("the grandchild waits at the gate");
    assert_eq!(stat.ppid, i64::from(sup.pid().as_raw()), "the grandchild's parent");
    let fd = pidfd(grandchild as i32).expect("the grandchild waits at the gate");
    gate.open(1);
    assert!(exited_by(&fd, Instant::now() + DEADLINE), "the grandchild did not end");
    // Its SIGCHLD is pending at the supervisor now, ahead of this USR1. The supervisor reads
    // every pending signal (forwarding the USR1 as it goes), then reaps, and only on its next
    // turn reads the worker's answer from the pipe: once that answer is out, the grandchild
    // has been reaped.
    sup.signal(Signal::SIGUSR1);
    sup.wait_for("w.0 | got-usr1");
    let kids = children(sup.pid()).expect("the supervisor's children");
    assert!(kids.contains(&worker), "the worker {worker} is not among {kids:?}");
    assert!(
        !kids.contains(&grandchild),
        "grandchild {grandchild} not reaped: {kids:?}"
    );
    for kid in kids {
        if let Some(stat) = proc_stat(kid) {
            assert_ne!(stat.state, 'Z', "child {kid} of the supervisor is a zombie");
        }
    }
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}

// ----- order -----

#[test]
fn a_pool_after_two_others_completed_starts_only_once_both_succeeded() {
    let dir = temp_dir();
    let mut x_gate = Gate::new(&dir.path().join("x-gate"));
    let mut y_gate = Gate::new(&dir.path().join("y-gate"));
    let mut sup = Supervisor::start(
        dir.path(),
        "order",
        r#"
[pool.x]
command = ["sh", "-c", "echo x-up; read go < x-gate; echo x-done"]

[pool.y]
command = ["sh", "-c", "echo y-up; read go < y-gate; echo y-done"]

[pool.z]
command = ["sh", "-c", "echo z-start"]
after = { x = "completed", y = "completed" }
"#,
    );
    // X and Y run side by side.
    sup.wait_for("x.0 | x-up");
    sup.wait_for("y.0 | y-up");
    x_gate.open(1);
    sup.wait_for("x.0 | x-done");
    y_gate.open(1);
    sup.wait_for("z.0 | z-start");
    sup.expect_exit(0);
    let out = sup.texts(Stream::Out);
    let z = position(&out, "z.0 | z-start");
    assert!(position(&out, "x.0 | x-done") < z, "{out:#?}");
    assert!(position(&out, "y.0 | y-done") < z, "{out:#?}");
}

#[test]
fn a_pool_after_a_failed_one_never_starts_and_the_supervisor_says_why_and_exits_1() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "order",
        r#"
[pool.x]
command = ["sh", "-c", "echo x-failing; exit 3"]
restart = "never"

[pool.y]
command = ["sh", "-c", "echo y-done"]

[pool.z]
command = ["sh", "-c", "echo z-start"]
after = { x = "completed", y = "completed" }
"#,
    );
    sup.expect_exit(1);
    sup.assert_has_report("procwire[order]: x.0 (pid _) ended with exit code 3; its restart policy says no restart");
    sup.assert_has_line("procwire[order]: pool z will not start: x can no longer become completed");
    assert!(
        !sup.lines().iter().any(|line| line.text.contains("z-start")),
        "z started:\n{}",
        sup.output()
    );
}

// ----- readiness -----

fn python3_runs() -> bool {
    Command::new("python3")
        .args(["-c", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn a_pool_after_another_ready_starts_once_that_one_sent_ready_on_the_notify_socket() {
    if !python3_runs() {
        eprintln!("skipped: this test needs python3 to send READY=1 from the worker's own pid");
        return;
    }
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "ready",
        r#"
[pool.web]
command = ["sh", "-c", "echo web-up; exec sleep 1000"]
after = { db = "ready" }

[pool.db]
command = ["python3", "-c", '''import os,socket,time; s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); print("db-up", flush=True); s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"]); time.sleep(1000)''']
ready = "notify"
"#,
    );
    sup.wait_for("web.0 | web-up");
    let out = sup.texts(Stream::Out);
    assert!(
        position(&out, "db.0 | db-up") < position(&out, "web.0 | web-up"),
        "{out:#?}"
    );
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}

#[test]
fn a_worker_not_ready_within_its_ready_timeout_is_killed_and_the_supervisor_says_so() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "late",
        r#"
[pool.db]
command = ["sh", "-c", "echo db-pid $$; exec sleep 1000"]
ready = "notify"
ready_timeout = "300ms"

[pool.web]
command = ["sh", "-c", "echo web-up; exec sleep 1000"]
after = { db = "ready" }
"#,
    );
    let pid = number_after(&sup.wait_for("db.0 | db-pid "), "db-pid ");
    let fd = pidfd(pid as i32).expect("the db worker runs");
    let message = unpid(&sup.wait_until("the not-ready line", |seen| {
        seen.lines
            .iter()
            .find(|l| l.text.starts_with("procwire[late]: db.0 (pid ") && l.text.contains(" not ready "))
            .map(|l| l.text.clone())
    }));
    assert_eq!(
        message,
        "procwire[late]: db.0 (pid _) not ready after 300ms; killing it"
    );
    assert!(
        exited_by(&fd, Instant::now() + DEADLINE),
        "the db worker was not killed; lines:\n{}",
        sup.output()
    );
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    assert!(
        !sup.lines().iter().any(|line| line.text.contains("web-up")),
        "web started without a ready db:\n{}",
        sup.output()
    );
}

// ----- output -----

#[test]
fn json_log_format_writes_one_object_per_worker_line() {
    let dir = temp_dir();
    let mut sup = Supervisor::start_with(
        dir.path(),
        "json",
        r#"
[pool.j]
command = ["sh", "-c", '''echo "out $PROCWIRE_INDEX"; printf '%s\n' 'a "quoted" \ line'; echo "err $PROCWIRE_INDEX" >&2''']
workers = 2
restart = "never"
"#,
        &["--log-format", "json"],
    );
    sup.expect_exit(0);
    let parse = |line: &str| -> (String, u64, String, String) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        let object = value.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
        assert_eq!(object.len(), 4, "{line}");
        let field = |name: &str| object.get(name).unwrap_or_else(|| panic!("no {name:?} in {line}"));
        (
            field("pool").as_str().expect("pool is a string").to_owned(),
            field("index").as_u64().expect("index is a number"),
            field("stream").as_str().expect("stream is a string").to_owned(),
            field("line").as_str().expect("line is a string").to_owned(),
        )
    };
    let mut out: Vec<_> = sup.texts(Stream::Out).iter().map(|l| parse(l)).collect();
    // The two workers' lines interleave; each worker's keep their order.
    out.sort_by_key(|record| record.1);
    let record = |index: u64, stream: &str, line: &str| ("j".to_owned(), index, stream.to_owned(), line.to_owned());
    assert_eq!(
        out,
        [
            record(0, "stdout", "out 0"),
            record(0, "stdout", r#"a "quoted" \ line"#),
            record(1, "stdout", "out 1"),
            record(1, "stdout", r#"a "quoted" \ line"#),
        ]
    );
    // The supervisor's own lines are JSON too, told apart by their "supervisor" key.
    let mut err: Vec<_> = sup
        .texts(Stream::Err)
        .iter()
        .filter(|l| !l.contains(r#""supervisor":"json""#))
        .map(|l| parse(l))
        .collect();
    err.sort_by_key(|record| record.1);
    assert_eq!(err, [record(0, "stderr", "err 0"), record(1, "stderr", "err 1")]);
}

/// Two pools: `a` fails its first run and exits 0 in its second; `r` runs until stopped and
/// is ready once a probe says so. Each worker says its pid.
const LIFECYCLE: &str = r#"
[pool.a]
command = ["sh", "-c", '''echo "pid $$"; if [ -e ran ]; then exit 0; fi; touch ran; exit 3''']
backoff = { jitter = 0.0 }

[pool.r]
command = ["sh", "-c", '''echo "pid $$"; trap 'exit 0' TERM; sleep 1000 & wait''']
ready = "exec:true"
"#;

#[test]
fn at_default_verbosity_the_supervisor_logs_spawns_readiness_exits_and_restarts_with_pids_and_timestamps() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(dir.path(), "life", LIFECYCLE);
    sup.wait_until("a's clean exit and r ready", |seen| {
        let texts: Vec<String> = seen.lines.iter().map(|l| unpid(&l.text)).collect();
        (texts.contains(&"procwire[life]: a.0 (pid _) ended with exit code 0".to_owned())
            && texts.contains(&"procwire[life]: r.0 (pid _) is ready".to_owned()))
        .then_some(())
    });
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    let err: Vec<String> = sup.texts(Stream::Err).iter().map(|l| unpid(l)).collect();
    let expected = [
        "procwire[life]: a.0 (pid _) started",
        "procwire[life]: a.0 (pid _) ended with exit code 3; restarting in 100 ms",
        "procwire[life]: a.0 (pid _) ended with exit code 0",
        "procwire[life]: r.0 (pid _) started",
        "procwire[life]: r.0 (pid _) is ready",
        "procwire[life]: r.0 (pid _) ended with exit code 0",
    ];
    for line in expected {
        assert!(err.iter().any(|l| l == line), "no {line:?} in:\n{}", sup.output());
    }
    // a: started, failed, started again, exited.
    let a: Vec<&String> = err.iter().filter(|l| l.starts_with("procwire[life]: a.0 ")).collect();
    assert_eq!(a.len(), 4, "{a:#?}");
    // The pids are the workers' own.
    let out = sup.texts(Stream::Out);
    for pool in ["a", "r"] {
        let pid = number_after(
            out.iter()
                .find(|l| l.starts_with(&format!("{pool}.0 | pid ")))
                .expect("the worker said its pid"),
            "pid ",
        );
        sup.assert_has_line(&format!("procwire[life]: {pool}.0 (pid {pid}) started"));
    }
    // Every supervisor line has a timestamp, in order; worker lines have none.
    let lines = sup.lines();
    let stamps: Vec<&String> = lines
        .iter()
        .filter(|l| l.text.starts_with("procwire[life]: "))
        .map(|l| {
            l.stamp
                .as_ref()
                .unwrap_or_else(|| panic!("no timestamp on {:?}", l.text))
        })
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:#?}");
    assert!(lines
        .iter()
        .filter(|l| l.text.contains(" | "))
        .all(|l| l.stamp.is_none()));
}

#[test]
fn with_log_format_json_the_supervisors_own_lines_are_json_objects_too() {
    let dir = temp_dir();
    let mut sup = Supervisor::start_with(dir.path(), "life", LIFECYCLE, &["--log-format", "json"]);
    sup.wait_until("a's clean exit and r ready", |seen| {
        let has = |needle: &str| seen.lines.iter().any(|l| l.text.contains(needle));
        (has(r#""message":"ended with exit code 0""#) && has(r#""message":"is ready""#)).then_some(())
    });
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    let records: Vec<serde_json::Value> = sup
        .lines()
        .iter()
        .map(|l| serde_json::from_str(&l.text).unwrap_or_else(|e| panic!("not JSON: {:?}: {e}", l.text)))
        .collect();
    let own: Vec<&serde_json::Value> = records.iter().filter(|r| r.get("supervisor").is_some()).collect();
    for record in &own {
        assert_eq!(record["supervisor"], "life", "{record}");
        let time = record["time"].as_str().unwrap_or_else(|| panic!("no time in {record}"));
        assert!(split_stamp(&format!("{time} x")).0.is_some(), "{record}");
        assert!(record["message"].is_string(), "{record}");
    }
    let find = |pool: &str, message: &str| {
        own.iter()
            .find(|r| r["pool"] == pool && r["message"] == message)
            .copied()
            .unwrap_or_else(|| panic!("no {pool} {message:?} record in:\n{}", sup.output()))
    };
    let started = find("a", "started");
    assert_eq!(started["index"], 0);
    assert!(started["pid"].as_i64().is_some_and(|pid| pid > 1), "{started}");
    find("a", "ended with exit code 3; restarting in 100 ms");
    find("a", "ended with exit code 0");
    find("r", "is ready");
}

#[test]
fn a_file_output_is_rotated_by_size_keeping_that_many_old_files() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "rotate",
        r#"
[pool.r]
command = ["sh", "-c", '''i=1; while [ $i -le 30 ]; do printf 'line %02d\n' $i; i=$((i + 1)); done''']
restart = "never"
stdout = "file:out.log"
log_rotate = { size = "100B", keep = 2 }
"#,
    );
    sup.expect_exit(0);
    assert!(sup.texts(Stream::Out).is_empty(), "{}", sup.output());
    // Each record, `r.0 | line NN\n`, is 14 bytes: 7 fit in 100 bytes. Lines 1-7, 8-14, 15-21,
    // 22-28 and 29-30 went to out.log in turn, which was rotated 4 times, keeping 2.
    let records =
        |lines: std::ops::RangeInclusive<u32>| -> String { lines.map(|i| format!("r.0 | line {i:02}\n")).collect() };
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(read("out.log"), records(29..=30));
    assert_eq!(read("out.log.1"), records(22..=28));
    assert_eq!(read("out.log.2"), records(15..=21));
    assert!(!dir.path().join("out.log.3").exists(), "out.log.3 was kept");
}

/// Writes `manifest` to `DIR/sub/rel.toml` and runs `procwire up sub/rel.toml` in DIR.
fn start_relative(dir: &Path, manifest: &str) -> Supervisor {
    let sub = dir.join("sub");
    std::fs::create_dir_all(sub.join("work")).expect("mkdir");
    std::fs::write(sub.join("rel.toml"), manifest).expect("write the manifest");
    Supervisor::spawn(&["up", "sub/rel.toml"], Some(dir))
}

#[test]
fn with_a_relative_manifest_path_a_file_output_is_next_to_the_manifest() {
    let dir = temp_dir();
    let mut sup = start_relative(
        dir.path(),
        r#"
[pool.w]
command = ["sh", "-c", "echo hello"]
restart = "never"
stdout = "file:out.log"
"#,
    );
    sup.expect_exit(0);
    let log = std::fs::read_to_string(dir.path().join("sub/out.log")).unwrap_or_else(|e| {
        panic!(
            "sub/out.log: {e}; sub/sub/out.log exists instead: {}",
            dir.path().join("sub/sub/out.log").exists()
        )
    });
    assert_eq!(log, "w.0 | hello\n");
}

#[test]
fn with_a_relative_manifest_path_cwd_is_relative_to_the_manifest_directory() {
    let dir = temp_dir();
    let mut sup = start_relative(
        dir.path(),
        r#"
[pool.w]
command = ["sh", "-c", "pwd"]
restart = "never"
cwd = "work"
"#,
    );
    sup.expect_exit(0);
    let work = dir.path().join("sub/work").canonicalize().expect("canonical path");
    assert_eq!(sup.texts(Stream::Out), [format!("w.0 | {}", work.display())]);
}

#[test]
fn a_manifest_error_at_up_exits_2_with_file_line_and_column_and_starts_nothing() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "bad",
        r#"[pool.a]
command = ["sh", "-c", "touch started"]
restart = "sometimes"
"#,
    );
    sup.expect_exit(2);
    let path = dir.path().join("bad.toml");
    assert_eq!(sup.texts(Stream::Out), Vec::<String>::new());
    assert_eq!(
        sup.texts(Stream::Err),
        [format!(
            "{}:3:11: `restart` must be one of \"always\", \"on-failure\", \"never\", not \"sometimes\"",
            path.display()
        )]
    );
    assert!(!dir.path().join("started").exists(), "a worker ran");
}

// ----- signals -----

#[test]
fn a_forwarded_signal_reaches_the_pools_workers_and_no_others() {
    let dir = temp_dir();
    // The `sleep` ignores USR1 (an ignored signal stays ignored across fork and exec), so each
    // worker stays up after answering.
    let worker =
        r#"["sh", "-c", '''trap '' USR1; sleep 1000 & trap 'echo got-usr1' USR1; echo up; while :; do wait; done''']"#;
    let mut sup = Supervisor::start(
        dir.path(),
        "forward",
        &format!(
            "[pool.f]\ncommand = {worker}\nworkers = 2\nforward = [\"USR1\"]\n\n[pool.quiet]\ncommand = {worker}\n"
        ),
    );
    for line in ["f.0 | up", "f.1 | up", "quiet.0 | up"] {
        sup.wait_for(line);
    }
    sup.signal(Signal::SIGUSR1);
    sup.wait_for("f.0 | got-usr1");
    sup.wait_for("f.1 | got-usr1");
    sup.signal(Signal::SIGUSR1);
    sup.wait_for_nth("f.0 | got-usr1", 2);
    sup.wait_for_nth("f.1 | got-usr1", 2);
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    assert!(
        !sup.lines().iter().any(|line| line.text == "quiet.0 | got-usr1"),
        "USR1 reached a pool that does not forward it:\n{}",
        sup.output()
    );
}

/// Whether this process may create PID namespaces (root, or unprivileged user namespaces).
fn can_unshare_pid() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn as_pid_1_of_a_pid_namespace_it_reaps_orphans_and_stops_gracefully_on_term() {
    if !can_unshare_pid() {
        eprintln!("skipped: cannot create a PID namespace here (needs root and util-linux's unshare)");
        return;
    }
    let dir = temp_dir();
    let manifest = r#"
[pool.w]
command = ["sh", "-c", "trap 'echo got-term; exit 0' TERM; (sh -c 'echo orphan-ran' &); echo worker-ready $$; sleep 1000 & wait"]
"#;
    let path = dir.path().join("pid1.toml");
    std::fs::write(&path, manifest).unwrap();
    let binary = env!("CARGO_BIN_EXE_procwire");
    let mut sup = Supervisor::spawn_program(
        "unshare",
        &[
            "--pid",
            "--fork",
            "--kill-child",
            binary,
            "up",
            "--verbose",
            path.to_str().unwrap(),
        ],
        None,
    );
    // Inside the namespace the supervisor is PID 1: the orphan is re-parented to it and reaped.
    sup.wait_for("w.0 | worker-ready");
    sup.wait_until("the orphan reaped by PID 1", |seen| {
        seen.lines
            .iter()
            .find(|l| l.text.contains("reaped orphan"))
            .map(|l| l.text.clone())
    });
    // TERM to PID 1 (the supervisor, unshare's child) stops it gracefully.
    let inner = children(sup.pid()).unwrap();
    assert_eq!(inner.len(), 1, "unshare runs the supervisor as its one child");
    kill(Pid::from_raw(inner[0] as i32), Signal::SIGTERM).unwrap();
    sup.wait_for("w.0 | got-term");
    sup.expect_exit(0);
}

#[test]
fn redis_server_speaking_sd_notify_runs_unchanged_and_its_dependent_starts_once_it_is_ready() {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: redis-server is not installed (.ci/run installs it)");
        return;
    }
    let dir = temp_dir();
    let socket = dir.path().join("redis.sock");
    let manifest = format!(
        r#"
[pool.db]
command = ["redis-server", "--port", "0", "--unixsocket", "{}", "--supervised", "systemd", "--save", "", "--appendonly", "no"]
ready = "notify"
ready_timeout = "20s"

[pool.web]
command = ["sh", "-c", "trap 'exit 0' TERM; echo web-started; sleep 1000 & wait"]
after = {{ db = "ready" }}
"#,
        socket.display()
    );
    let sup = Supervisor::start(dir.path(), "redis", &manifest);
    sup.wait_for("web.0 | web-started");
    // redis-server's own notification reached the supervisor (stderr), and web, which waits
    // for db to be ready, started (stdout). The two streams are read separately, so their
    // relative order here says nothing; the policy tests cover the ordering.
    sup.wait_until("redis-server's STATUS", |seen| {
        seen.lines
            .iter()
            .find(|l| unpid(&l.text) == "procwire[redis]: db.0 (pid _) status: Ready to accept connections")
            .map(|l| l.text.clone())
    });
    let out = sup.texts(Stream::Out);
    assert!(
        out.iter()
            .any(|l| l.starts_with("db.0 |") && l.contains("ready to accept connections")),
        "redis-server ran unchanged: {out:#?}"
    );
    let mut sup = sup;
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}

#[test]
fn a_worker_gets_only_stdin_stdout_and_stderr_and_its_settings() {
    let dir = temp_dir();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let root = nix::unistd::geteuid().is_root();
    let user = if root { "user = \"nobody\"" } else { "" };
    let manifest = format!(
        r#"
[pool.fds]
command = ["sh", "-c", "exec ls /proc/self/fd"]
restart = "never"

[pool.w]
command = ["sh", "-c", "echo idx=$IDX nofile=$(ulimit -n) uid=$(id -u) dir=$(basename $(pwd)) pool=$PROCWIRE_POOL index=$PROCWIRE_INDEX arg={{index}}"]
workers = 2
restart = "never"
env = {{ IDX = "i{{index}}" }}
rlimits = {{ nofile = 1234 }}
cwd = "work"
{user}
"#
    );
    let mut sup = Supervisor::start(dir.path(), "settings", &manifest);
    sup.expect_exit(0);
    // `ls` lists its own descriptors: 0, 1, 2 and the directory it is reading (3). A
    // descriptor leaked from the supervisor would take 3 and push the directory to 4.
    let mut fds: Vec<String> = sup
        .texts(Stream::Out)
        .into_iter()
        .filter_map(|l| l.strip_prefix("fds.0 | ").map(str::to_owned))
        .collect();
    fds.sort();
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "no descriptor of the supervisor leaks into a worker"
    );
    for index in 0..2 {
        let uid = if root {
            "65534".to_owned()
        } else {
            nix::unistd::geteuid().to_string()
        };
        sup.assert_has_line(&format!(
            "w.{index} | idx=i{index} nofile=1234 uid={uid} dir=work pool=w index={index} arg={index}"
        ));
    }
}

#[test]
fn hup_reloads_the_manifest_applying_only_the_difference_and_refuses_a_broken_one() {
    let dir = temp_dir();
    let first = r#"
[pool.a]
command = ["sh", "-c", "trap 'exit 0' TERM; echo a-up; sleep 1000 & wait"]
[pool.b]
command = ["sh", "-c", "trap 'echo b-stopped; exit 0' TERM; echo b-up; sleep 1000 & wait"]
"#;
    let mut sup = Supervisor::start(dir.path(), "reload", first);
    sup.wait_for("a.0 | a-up");
    sup.wait_for("b.0 | b-up");
    let second = r#"
[pool.a]
command = ["sh", "-c", "trap 'exit 0' TERM; echo a-up; sleep 1000 & wait"]
[pool.b]
command = ["sh", "-c", "trap 'exit 0' TERM; echo b2-up; sleep 1000 & wait"]
[pool.c]
command = ["sh", "-c", "trap 'exit 0' TERM; echo c-up; sleep 1000 & wait"]
"#;
    std::fs::write(dir.path().join("reload.toml"), second).unwrap();
    sup.signal(Signal::SIGHUP);
    sup.wait_for("c.0 | c-up");
    sup.wait_for("b.0 | b2-up");
    let lines: Vec<String> = sup.texts(Stream::Out);
    assert!(
        lines.iter().any(|l| l == "b.0 | b-stopped"),
        "the old b got its stop signal; lines:\n{}",
        sup.output()
    );
    assert!(
        position(&lines, "b.0 | b-stopped") < position(&lines, "b.0 | b2-up"),
        "the old b stops first"
    );
    // A manifest that no longer checks is refused; nothing changes.
    std::fs::write(dir.path().join("reload.toml"), "[pool.a]\ncommand = [\n").unwrap();
    sup.signal(Signal::SIGHUP);
    let refused = sup.wait_until("the refusal", |seen| {
        seen.lines
            .iter()
            .find(|l| l.text.contains("reload refused, nothing changed"))
            .map(|l| l.text.clone())
    });
    assert!(refused.contains("reload.toml:2:"), "the refusal says where: {refused}");
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    // a was never restarted: one start line, from before the reload.
    let a_starts = sup.texts(Stream::Out).iter().filter(|l| *l == "a.0 | a-up").count();
    assert_eq!(
        a_starts,
        1,
        "the unchanged pool was left alone; lines:\n{}",
        sup.output()
    );
}

#[test]
fn a_second_interrupt_kills_at_once_what_the_first_only_asked_to_stop() {
    let dir = temp_dir();
    let manifest = r#"
[pool.stubborn]
command = ["sh", "-c", "trap '' TERM INT; echo up; exec sleep 1000"]
stop_timeout = "60s"
"#;
    let mut sup = Supervisor::start(dir.path(), "interrupt", manifest);
    sup.wait_for("stubborn.0 | up");
    sup.signal(Signal::SIGINT);
    sup.wait_until("the first interrupt acknowledged", |seen| {
        seen.lines
            .iter()
            .find(|l| l.text.contains("interrupt again to kill at once"))
            .map(|_| ())
    });
    sup.signal(Signal::SIGINT);
    // Without the second interrupt this would take the 60 s stop timeout.
    sup.expect_exit(0);
}

#[test]
fn a_pools_listening_socket_is_bound_once_handed_to_every_worker_and_outlives_their_restarts() {
    if !python3_runs() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let dir = temp_dir();
    let socket = dir.path().join("run").join("w.sock");
    std::fs::create_dir(dir.path().join("run")).unwrap();
    // A worker that takes its listening socket by the socket-activation protocol and
    // answers each connection with its pid.
    let worker = "import os, socket\n\
        assert os.environ['LISTEN_PID'] == str(os.getpid()), 'LISTEN_PID is not mine'\n\
        assert os.environ['LISTEN_FDS'] == '1'\n\
        s = socket.socket(fileno=3)\n\
        print('serving', os.getpid(), os.environ['LISTEN_FDNAMES'], flush=True)\n\
        while True:\n    c, _ = s.accept(); c.sendall(str(os.getpid()).encode()); c.close()\n";
    let manifest = format!(
        r#"
[pool.w]
command = ["python3", "-c", {worker:?}]
workers = 2
listen = ["unix:run/w.sock"]
backoff = {{ initial = "0s", max = "1s", factor = 2.0, jitter = 0.0, reset_after = "60s" }}
"#
    );
    let mut sup = Supervisor::start(dir.path(), "listen", &manifest);
    let first = sup.wait_for("w.0 | serving");
    sup.wait_for("w.1 | serving");
    assert!(first.ends_with(" w"), "the descriptor is named after the pool: {first}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket files are private by default");
    let ask = || {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("the listener never closes");
        let mut pid = String::new();
        stream.read_to_string(&mut pid).unwrap();
        pid.parse::<i32>().unwrap()
    };
    let victim = ask();
    let victim_fd = pidfd(victim).expect("the victim is alive");
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    // A connection the dying worker had already accepted dies with it; wait for the death.
    assert!(exited_by(&victim_fd, Instant::now() + DEADLINE), "the victim died");
    // While the worker is down and restarting, connections are still accepted: queued by the
    // kernel on the socket the supervisor keeps open, and served by the other worker or the
    // replacement.
    for _ in 0..20 {
        assert_ne!(ask(), 0);
    }
    sup.wait_until("the replacement serving", |seen| {
        (seen.lines.iter().filter(|l| l.text.contains("| serving")).count() >= 3).then_some(())
    });
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}

#[test]
fn a_socket_in_a_world_writable_directory_is_refused() {
    let dir = temp_dir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let manifest = r#"
[pool.w]
command = ["true"]
listen = ["unix:open/w.sock"]
"#;
    let mut sup = Supervisor::start(dir.path(), "unsafe", manifest);
    sup.expect_exit(2);
    let err = sup.texts(Stream::Err).join("\n");
    assert!(
        err.contains("pool w: listen unix:") && err.contains("is writable by everyone"),
        "{err}"
    );
}

#[test]
fn a_worker_running_as_another_user_can_still_report_ready() {
    if !python3_runs() || !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: this test needs root (to run a worker as nobody) and python3");
        return;
    }
    let dir = temp_dir();
    use std::os::unix::fs::PermissionsExt;
    // The worker must be able to enter its working directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut sup = Supervisor::start(
        dir.path(),
        "nobody",
        r#"
[pool.db]
command = ["python3", "-c", '''import os,socket,time; s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"]); print("sent", os.getuid(), flush=True); time.sleep(1000)''']
ready = "notify"
ready_timeout = "20s"
user = "nobody"

[pool.web]
command = ["sh", "-c", "echo web-up; exec sleep 1000"]
after = { db = "ready" }
"#,
    );
    sup.wait_for("db.0 | sent 65534");
    sup.wait_for("web.0 | web-up");
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}

#[test]
fn a_worker_flooding_its_output_cannot_keep_the_supervisor_from_stopping() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "flood",
        r#"
[pool.flood]
command = ["sh", "-c", "echo flooding >&2; exec yes"]
stdout = "file:flood.log"
log_rotate = { size = "1MiB", keep = 1 }
"#,
    );
    sup.wait_until("the flood to start", |seen| {
        seen.lines.iter().find(|l| l.text == "flood.0 | flooding").map(|_| ())
    });
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}

#[test]
fn a_pool_role_is_refused_by_procwire_up_which_cannot_run_itself_as_a_worker() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(dir.path(), "role", "[pool.calc]\nrole = \"calc\"\n");
    sup.expect_exit(2);
    let err = sup.texts(Stream::Err).join("\n");
    assert!(
        err.contains("pool calc: `role`") && err.contains("embedded supervisor"),
        "{err}"
    );
}

#[test]
fn index_in_a_listen_path_gives_each_worker_a_socket_of_its_own() {
    if !python3_runs() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let dir = temp_dir();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let worker = "import os, socket\n\
        s = socket.socket(fileno=3)\n\
        print('serving', flush=True)\n\
        while True:\n    c, _ = s.accept(); c.sendall(str(os.getpid()).encode()); c.close()\n";
    let manifest = format!(
        r#"
[pool.w]
command = ["python3", "-c", {worker:?}]
workers = 2
listen = ["unix:run/w-{{index}}.sock"]
"#
    );
    let mut sup = Supervisor::start(dir.path(), "per-worker", &manifest);
    sup.wait_for("w.0 | serving");
    sup.wait_for("w.1 | serving");
    let ask = |i: u32| {
        let path = dir.path().join("run").join(format!("w-{i}.sock"));
        let mut stream = std::os::unix::net::UnixStream::connect(path).expect("a socket per worker");
        let mut pid = String::new();
        stream.read_to_string(&mut pid).unwrap();
        pid
    };
    let (first, second) = (ask(0), ask(1));
    assert_ne!(first, second, "each socket is served by its own worker");
    assert_eq!(ask(0), first, "and always by the same one");
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}

// ----- one supervisor per name and per socket -----

#[test]
fn a_second_up_of_the_same_name_or_socket_is_refused_naming_the_first_and_its_socket_keeps_working() {
    if !python3_runs() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let dir = temp_dir();
    let worker = "import socket\n\
        s = socket.socket(fileno=3)\n\
        print('serving', flush=True)\n\
        while True:\n    c, _ = s.accept(); c.sendall(b'pong'); c.close()\n";
    let manifest = format!(
        r#"
[pool.w]
command = ["python3", "-c", {worker:?}]
listen = ["unix:w.sock"]
"#
    );
    let mut first = Supervisor::start(dir.path(), "twice", &manifest);
    first.wait_for("w.0 | serving");
    let ask = || {
        let mut stream = std::os::unix::net::UnixStream::connect(dir.path().join("w.sock"))
            .expect("the first supervisor's socket accepts");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    assert_eq!(ask(), "pong");

    // The same manifest again: the name is taken.
    let mut second = Supervisor::start(dir.path(), "twice", &manifest);
    second.expect_exit(2);
    let err = second.texts(Stream::Err).join("\n");
    assert!(
        err.contains(&format!(
            "another supervisor named \"twice\" is running (pid {})",
            first.pid()
        )),
        "{err}"
    );
    assert_eq!(ask(), "pong", "the first supervisor's socket survives the second up");

    // Another name on the same socket: the socket is live, so it is not taken over.
    let mut third = Supervisor::start(dir.path(), "other", &manifest);
    third.expect_exit(2);
    let err = third.texts(Stream::Err).join("\n");
    assert!(
        err.contains("is a live socket") && err.contains(&format!("(pid {})", first.pid())),
        "{err}"
    );
    assert_eq!(ask(), "pong", "the first supervisor's socket survives a third up");

    first.signal(Signal::SIGTERM);
    first.expect_exit(0);
    // Once the first is gone, the name is free again.
    let mut again = Supervisor::start(dir.path(), "twice", &manifest);
    again.wait_for("w.0 | serving");
    assert_eq!(ask(), "pong");
    again.signal(Signal::SIGTERM);
    again.expect_exit(0);
}

// ----- notify_access -----

#[test]
fn with_notify_access_all_a_workers_child_can_report_ready_and_with_main_it_is_ignored_and_logged() {
    if !python3_runs() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let dir = temp_dir();
    // The shell stays the worker (the command after python keeps it from exec'ing it), and
    // the READY=1 comes from its child, which stays alive.
    let send = "import os, socket, time\n\
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
        s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
        print('sent', os.getpid(), flush=True)\n\
        time.sleep(1000)\n";
    let shell = format!("echo shell $$; python3 -c \"{send}\"; echo after");
    let manifest = format!(
        r#"
[pool.all]
command = ["sh", "-c", {shell:?}]
ready = "notify"
notify_access = "all"

[pool.main]
command = ["sh", "-c", {shell:?}]
ready = "notify"
ready_timeout = "1h"

[pool.after-all]
command = ["sh", "-c", "echo started; exec sleep 1000"]
after = {{ all = "ready" }}

[pool.after-main]
command = ["sh", "-c", "echo started; exec sleep 1000"]
after = {{ main = "ready" }}
"#
    );
    let mut sup = Supervisor::start_with(dir.path(), "access", &manifest, &["-v"]);
    let shell_pid = number_after(&sup.wait_for("all.0 | shell"), "shell ");
    let sender = number_after(&sup.wait_for("all.0 | sent"), "sent ");
    assert_ne!(sender, shell_pid, "READY=1 comes from the worker's child");
    sup.wait_for("after-all.0 | started");

    let sender = number_after(&sup.wait_for("main.0 | sent"), "sent ");
    let ignored = sup.wait_for_containing(&format!("ignored notify message from pid {sender} "));
    assert!(ignored.contains("READY=1"), "{ignored}");
    assert!(
        !sup.texts(Stream::Out).iter().any(|l| l.starts_with("after-main.0")),
        "a pool after `main` started although main's READY=1 came from a child:\n{}",
        sup.output()
    );
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}

#[test]
fn hup_refuses_a_manifest_whose_program_is_missing_and_keeps_what_runs() {
    let dir = temp_dir();
    let first = r#"
[pool.a]
command = ["sh", "-c", "trap 'exit 0' TERM; echo a-up; sleep 1000 & wait"]
"#;
    let mut sup = Supervisor::start(dir.path(), "revalidate", first);
    sup.wait_for("a.0 | a-up");
    let path = dir.path().join("revalidate.toml");
    std::fs::write(&path, "[pool.a]\ncommand = [\"procwire-no-such-program\"]\n").unwrap();
    sup.signal(Signal::SIGHUP);
    let refused = sup.wait_for_containing("reload refused, nothing changed");
    assert!(
        refused.contains(&format!(
            "{}:2:12: pool a: `command`: program \"procwire-no-such-program\" is not in PATH",
            path.display()
        )),
        "{refused}"
    );
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    let a_starts = sup.texts(Stream::Out).iter().filter(|l| *l == "a.0 | a-up").count();
    assert_eq!(a_starts, 1, "the running pool was left alone; lines:\n{}", sup.output());
}

/// The worker's own `/proc/self/status` line `NAME:`, as `sh` prints it: `NAME=VALUE`.
fn print_status(name: &str) -> String {
    format!("echo {name}=$(sed -n 's/^{name}:[[:space:]]*//p' /proc/self/status)")
}

#[test]
fn a_worker_of_a_no_new_privs_pool_has_it_set_and_others_inherit_the_supervisors() {
    if own_status("NoNewPrivs").as_deref() != Some("0") {
        eprintln!("skipped: this test process already has NoNewPrivs set (or no such line), so every worker would");
        return;
    }
    let dir = temp_dir();
    let print = print_status("NoNewPrivs");
    let manifest = format!(
        r#"
[pool.locked]
command = ["sh", "-c", "{print}"]
restart = "never"
no_new_privs = true

[pool.plain]
command = ["sh", "-c", "{print}"]
restart = "never"
"#
    );
    let mut sup = Supervisor::start(dir.path(), "nnp", &manifest);
    sup.expect_exit(0);
    sup.assert_has_line("locked.0 | NoNewPrivs=1");
    sup.assert_has_line("plain.0 | NoNewPrivs=0");
}

#[test]
fn a_pools_umask_is_the_workers_and_without_one_the_supervisors_is_inherited() {
    let Some(own) = own_status("Umask") else {
        eprintln!("skipped: this kernel has no Umask line in /proc/self/status");
        return;
    };
    if own == "0027" {
        eprintln!("skipped: this test process's own umask is already 0027");
        return;
    }
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "umask",
        r#"
[pool.masked]
command = ["sh", "-c", "echo umask=$(umask)"]
restart = "never"
umask = "0027"

[pool.plain]
command = ["sh", "-c", "echo umask=$(umask)"]
restart = "never"
"#,
    );
    sup.expect_exit(0);
    sup.assert_has_line("masked.0 | umask=0027");
    sup.assert_has_line(&format!("plain.0 | umask={own}"));
}

#[test]
fn a_worker_run_as_a_user_with_a_group_gets_that_users_supplementary_groups_not_the_supervisors() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: this test needs root (to run a worker as nobody)");
        return;
    }
    let (Ok(Some(nobody)), Ok(Some(daemon))) = (
        nix::unistd::User::from_name("nobody"),
        nix::unistd::Group::from_name("daemon"),
    ) else {
        eprintln!("skipped: this test needs a user `nobody` and a group `daemon`");
        return;
    };
    let name = std::ffi::CString::new("nobody").unwrap();
    let mut expected: Vec<u32> = nix::unistd::getgrouplist(&name, daemon.gid)
        .unwrap()
        .iter()
        .map(|gid| gid.as_raw())
        .collect();
    expected.sort_unstable();
    expected.dedup();
    let parse = |text: &str| {
        let mut gids: Vec<u32> = text.split_whitespace().map(|g| g.parse().unwrap()).collect();
        gids.sort_unstable();
        gids
    };
    // Without setgroups the worker would keep the supervisor's supplementary groups.
    let own = parse(&own_status("Groups").unwrap());
    assert_ne!(own, expected, "the test cannot tell the two apart");
    let dir = temp_dir();
    use std::os::unix::fs::PermissionsExt;
    // The worker must be able to enter its working directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let print = print_status("Groups");
    let manifest = format!(
        r#"
[pool.w]
command = ["sh", "-c", "echo ids=$(id -u),$(id -g); {print}"]
restart = "never"
user = "nobody"
group = "daemon"
"#
    );
    let mut sup = Supervisor::start(dir.path(), "groups", &manifest);
    sup.expect_exit(0);
    sup.assert_has_line(&format!("w.0 | ids={},{}", nobody.uid, daemon.gid));
    let line = sup
        .texts(Stream::Out)
        .into_iter()
        .find_map(|l| l.strip_prefix("w.0 | Groups=").map(str::to_owned))
        .unwrap_or_else(|| panic!("no Groups line:\n{}", sup.output()));
    assert_eq!(parse(&line), expected, "{}", sup.output());
}
