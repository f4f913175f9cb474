//! The control plane, driven as an operator would: `procwire up` runs real `sh` workers, and
//! the verbs (`status`, `stop`, `start`, `restart`, `signal`, `down`) are the real binary
//! talking to it over its control socket. Every wait is on an event (a line of output, an
//! exit) with a deadline, never a sleep.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use serde_json::Value;
use support::control::*;
use support::*;

/// Each worker says its pid (the shell `exec`s, so it is the worker's own) and stays up.
const TWO_POOLS: &str = r#"
[pool.web]
workers = 2
command = ["sh", "-c", 'echo "pid $$"; exec sleep 1000']

[pool.db]
command = ["sh", "-c", 'echo "pid $$"; exec sleep 1000']
"#;

#[test]
fn status_json_has_the_documented_shape_and_the_workers_real_pids() {
    let dir = temp_dir();
    let sup = Supervisor::start(dir.path(), "shape", TWO_POOLS);
    let pids = [
        printed_pid(&sup, "web.0", 1),
        printed_pid(&sup, "web.1", 1),
        printed_pid(&sup, "db.0", 1),
    ];
    let status = status_json(dir.path());
    assert_eq!(keys(&status), ["pools", "supervisor"]);
    assert_eq!(keys(&status["supervisor"]), ["manifest", "name", "pid", "uptime_ms"]);
    assert_eq!(status["supervisor"]["name"], "shape");
    assert_eq!(status["supervisor"]["pid"], i64::from(sup.pid().as_raw()));
    let names: Vec<&Value> = status["pools"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
    assert_eq!(names, ["web", "db"]);
    for (pool, index, pid) in [("web", 0, pids[0]), ("web", 1, pids[1]), ("db", 0, pids[2])] {
        assert_eq!(
            keys(&status["pools"][if pool == "web" { 0 } else { 1 }]),
            ["name", "state", "workers"]
        );
        let w = worker(&status, pool, index);
        assert_eq!(
            keys(w),
            [
                "index",
                "last_exit",
                "next_restart_ms",
                "pid",
                "restarts",
                "state",
                "status",
                "uptime_ms"
            ]
        );
        assert_eq!(w["pid"], pid, "{pool}.{index}: {status:#}");
        assert_eq!(w["state"], "ready");
        assert_eq!(w["restarts"], 0);
        assert!(w["uptime_ms"].is_u64(), "{w}");
        assert_eq!(w["last_exit"], Value::Null);
        assert_eq!(w["status"], Value::Null);
        assert_eq!(w["next_restart_ms"], Value::Null);
        assert_eq!(pool_state(&status, pool), "ready");
    }
    // One pool only, and the table names each worker with its pid.
    let one: Value = serde_json::from_str(&ok(dir.path(), &["status", "db", "--json"])).unwrap();
    assert_eq!(one["pools"].as_array().unwrap().len(), 1);
    let table = ok(dir.path(), &["status"]);
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with("web.1 ") && l.contains(&format!("pid {}", pids[1]))),
        "{table}"
    );
}

#[test]
fn a_worker_restarted_by_hand_gets_a_new_pid_and_one_stopped_by_hand_stays_stopped_while_another_pool_restarts() {
    let dir = temp_dir();
    let sup = Supervisor::start(dir.path(), "hand", TWO_POOLS);
    let web1 = printed_pid(&sup, "web.1", 1);
    let db = printed_pid(&sup, "db.0", 1);

    let said = ok(dir.path(), &["stop", "web.1"]);
    assert_eq!(said.trim(), format!("web.1 (pid {web1}): stopping"));
    sup.wait_for_containing(&format!("web.1 (pid {web1}) ended with killed by SIGTERM"));

    ok(dir.path(), &["restart", "db"]);
    let new_db = printed_pid(&sup, "db.0", 2);
    assert_ne!(new_db, db, "a restarted worker is a new process");

    let status = status_json(dir.path());
    let stopped = worker(&status, "web", 1);
    assert_eq!(stopped["state"], "stopped", "{status:#}");
    assert_eq!(stopped["pid"], Value::Null);
    assert_eq!(stopped["last_exit"], serde_json::json!({"signal": 15}));
    assert_eq!(pool_state(&status, "web"), "partial");
    let restarted = worker(&status, "db", 0);
    assert_eq!(restarted["pid"], new_db);
    assert_eq!(restarted["restarts"], 1);
    assert_eq!(restarted["state"], "ready");
    let starts = sup
        .texts(Stream::Out)
        .iter()
        .filter(|l| l.starts_with("web.1 | pid"))
        .count();
    assert_eq!(starts, 1, "the stopped worker was started again:\n{}", sup.output());

    ok(dir.path(), &["start", "web.1"]);
    let new_web1 = printed_pid(&sup, "web.1", 2);
    assert_ne!(new_web1, web1);
    let status = status_json(dir.path());
    assert_eq!(worker(&status, "web", 1)["pid"], new_web1);
    assert_eq!(worker(&status, "web", 1)["state"], "ready");
    assert_eq!(pool_state(&status, "web"), "ready");
}

#[test]
fn a_supervisor_whose_workers_are_all_stopped_by_hand_keeps_running_until_they_are_started() {
    let dir = temp_dir();
    let sup = Supervisor::start(dir.path(), "idle", TWO_POOLS);
    for which in ["web.0", "web.1", "db.0"] {
        printed_pid(&sup, which, 1);
    }
    ok(dir.path(), &["stop", "web"]);
    ok(dir.path(), &["stop", "db"]);
    for which in ["web.0", "web.1", "db.0"] {
        wait_ended(&sup, which);
    }
    // Nothing runs, and the supervisor still answers: it waits to be told.
    let status = status_json(dir.path());
    assert_eq!(pool_state(&status, "web"), "stopped", "{status:#}");
    assert_eq!(pool_state(&status, "db"), "stopped");
    ok(dir.path(), &["start", "db"]);
    printed_pid(&sup, "db.0", 2);
}

#[test]
fn signal_reaches_the_worker_and_down_stops_the_supervisor_and_removes_its_socket() {
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "sig",
        r#"
[pool.sig]
command = ["sh", "-c", 'trap "echo got USR1" USR1; echo "pid $$"; while :; do sleep 1000 & wait $!; done']
"#,
    );
    let pid = printed_pid(&sup, "sig.0", 1);
    let said = ok(dir.path(), &["signal", "sig.0", "usr1"]);
    assert_eq!(said.trim(), format!("sig.0 (pid {pid}): sent SIGUSR1"));
    sup.wait_for("sig.0 | got USR1");

    let socket = dir.path().join("procwire/sig.sock");
    assert!(socket.exists());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket's mode");
    let said = ok(dir.path(), &["down"]);
    assert_eq!(said.trim(), "the supervisor has ended (exit code 0)");
    sup.expect_exit(0);
    assert!(
        !socket.exists(),
        "the control socket is removed when the supervisor ends"
    );
}

#[test]
fn the_verbs_exit_codes_say_what_went_wrong() {
    let dir = temp_dir();
    // No supervisor: 3.
    let output = procwire(dir.path(), &["status"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no supervisor is running"));

    let sup = Supervisor::start(dir.path(), "codes", TWO_POOLS);
    printed_pid(&sup, "db.0", 1);
    // A pool or worker that does not exist: 1, naming what there is.
    let output = procwire(dir.path(), &["restart", "nope"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no pool named \"nope\" (pools: web, db)"), "{stderr}");
    let output = procwire(dir.path(), &["stop", "web.7"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("pool web has no worker 7 (it has 2)"));
    // Bad usage: 2.
    assert_eq!(procwire(dir.path(), &["signal", "web", "NOPE"]).status.code(), Some(2));
    assert_eq!(procwire(dir.path(), &["stop"]).status.code(), Some(2));
    // --control names the socket explicitly.
    let socket = dir.path().join("procwire/codes.sock");
    let explicit = ok(Path::new("/"), &["status", "--control", socket.to_str().unwrap()]);
    assert!(explicit.contains("supervisor codes"), "{explicit}");
}

#[test]
fn a_peer_of_another_uid_is_refused_before_any_method_runs() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root, to run the client as another user (nobody)");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        println!("skipped: there is no user nobody to run the client as");
        return;
    };
    let dir = temp_dir();
    // A socket others may reach, so that only the peer check stands in the way.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    let socket = open.join("ctl.sock");
    let sup = Supervisor::start_with(dir.path(), "peer", TWO_POOLS, &["--control", socket.to_str().unwrap()]);
    let web0 = printed_pid(&sup, "web.0", 1);
    for path in [dir.path(), &open] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let (uid, gid) = (nobody.uid, nobody.gid);
    let mut command = client(Path::new("/"), &["stop", "web", "--control", socket.to_str().unwrap()]);
    // SAFETY: between fork and exec only async-signal-safe calls (setgroups, setgid,
    // setuid), no allocation.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
            nix::unistd::setgid(gid).map_err(std::io::Error::from)?;
            nix::unistd::setuid(uid).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let output = command.output().expect("run procwire as nobody");
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not allowed to control the supervisor"), "{stderr}");
    sup.wait_for_containing("refused a control connection from pid ");
    sup.wait_for_containing(&format!("(uid {uid}): only uid 0 and root are served"));
    // Nothing was stopped: the same worker still runs, and its owner is served.
    let status: Value = serde_json::from_str(&ok(
        Path::new("/"),
        &["status", "--json", "--control", socket.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(worker(&status, "web", 0)["pid"], web0);
    assert_eq!(worker(&status, "web", 0)["state"], "ready");
}

#[test]
fn reload_dry_run_says_what_would_change_and_changes_nothing_then_reload_applies_it() {
    let dir = temp_dir();
    let sup = Supervisor::start(dir.path(), "re", TWO_POOLS);
    let web0 = printed_pid(&sup, "web.0", 1);
    printed_pid(&sup, "db.0", 1);
    // web's command changes (a rolling restart), db goes, cache comes.
    let changed = TWO_POOLS
        .replacen(r#"echo "pid $$";"#, r#"echo "pid $$"; echo v2;"#, 1)
        .replace("[pool.db]", "[pool.cache]");
    std::fs::write(dir.path().join("re.toml"), changed).unwrap();

    let said = ok(dir.path(), &["reload", "--dry-run"]);
    let mut lines: Vec<&str> = said.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "pool cache was added",
            "pool db was removed; stopping it",
            "pool web changed; restarting its workers one at a time"
        ],
        "{said}"
    );
    let status = status_json(dir.path());
    let names: Vec<&Value> = status["pools"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
    assert_eq!(names, ["web", "db"], "a dry run changes nothing");
    assert_eq!(worker(&status, "web", 0)["pid"], web0);

    assert_eq!(
        ok(dir.path(), &["reload"]),
        said,
        "the reload does what the dry run said"
    );
    printed_pid(&sup, "cache.0", 1);
    sup.wait_for("web.1 | v2");
    let status = status_json(dir.path());
    let names: Vec<&Value> = status["pools"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
    assert_eq!(names, ["web", "cache"]);
    assert_ne!(worker(&status, "web", 0)["pid"], web0);

    // A manifest that no longer checks is refused, and says why.
    std::fs::write(dir.path().join("re.toml"), "[pool.web]\nworkers = \"many\"\n").unwrap();
    let output = procwire(dir.path(), &["reload", "--dry-run"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("reload refused, nothing changed: ") && stderr.contains("re.toml:2:"),
        "{stderr}"
    );
}

#[test]
fn status_shows_a_workers_status_text_and_a_backoff_with_its_last_exit_and_next_restart() {
    if !have_python() {
        println!("skipped: needs python3, to send STATUS= from a worker");
        return;
    }
    let dir = temp_dir();
    let sup = Supervisor::start(
        dir.path(),
        "texts",
        r#"
[pool.talk]
ready = "notify"
command = ["python3", "-c", '''
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1\nSTATUS=serving 3 clients", os.environ["NOTIFY_SOCKET"])
print("sent", flush=True)
time.sleep(1000)
''']

[pool.crash]
command = ["sh", "-c", "exit 3"]
backoff = { initial = "1h", max = "1h", jitter = 0.0 }
"#,
    );
    sup.wait_for_containing("talk.0 (pid ");
    sup.wait_for_containing("status: serving 3 clients");
    sup.wait_for_containing("ended with exit code 3; restarting in ");
    let status = status_json(dir.path());
    let talk = worker(&status, "talk", 0);
    assert_eq!(talk["status"], "serving 3 clients", "{status:#}");
    assert_eq!(talk["state"], "ready");
    let crash = worker(&status, "crash", 0);
    assert_eq!(crash["state"], "backoff", "{status:#}");
    assert_eq!(crash["pid"], Value::Null);
    assert_eq!(crash["last_exit"], serde_json::json!({"code": 3}));
    let next = crash["next_restart_ms"].as_u64().expect("a backoff has a next restart");
    assert!(next > 0 && next <= 3_600_000, "{next}");
    // Started by hand, it does not wait out the hour.
    let said = ok(dir.path(), &["start", "crash"]);
    assert!(said.contains("starting (its backoff cut short)"), "{said}");
    sup.wait_until("the second exit of crash.0", |seen| {
        (seen
            .lines
            .iter()
            .filter(|l| l.text.contains("ended with exit code 3"))
            .count()
            >= 2)
            .then_some(())
    });
}

#[test]
fn completions_name_every_verb_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(Path::new("/"), &["completions", shell]);
        for verb in ["up", "status", "stop", "start", "restart", "signal", "reload", "down"] {
            assert!(script.contains(verb), "{shell}: no {verb} in\n{script}");
        }
    }
    assert_eq!(
        procwire(Path::new("/"), &["completions", "nosh"]).status.code(),
        Some(2)
    );
}

#[test]
fn scale_grows_and_shrinks_one_pool_while_its_other_workers_keep_their_pids() {
    let dir = temp_dir();
    let sup = Supervisor::start(dir.path(), "scale", TWO_POOLS);
    let web0 = printed_pid(&sup, "web.0", 1);
    let web1 = printed_pid(&sup, "web.1", 1);
    let db = printed_pid(&sup, "db.0", 1);

    let said = ok(dir.path(), &["scale", "web", "4"]);
    assert_eq!(said.lines().count(), 2, "{said}");
    assert!(
        said.contains("web.2") && said.contains("web.3") && said.contains("added; starting"),
        "{said}"
    );
    let web3 = printed_pid(&sup, "web.3", 1);
    printed_pid(&sup, "web.2", 1);
    let status = status_json(dir.path());
    let pids: Vec<&Value> = status["pools"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["pid"])
        .collect();
    assert_eq!(pids.len(), 4, "{status:#}");
    assert_eq!(
        (pids[0], pids[1], pids[3]),
        (&Value::from(web0), &Value::from(web1), &Value::from(web3))
    );
    assert_eq!(worker(&status, "db", 0)["pid"], db);

    ok(dir.path(), &["scale", "web", "1"]);
    for which in ["web.1", "web.2", "web.3"] {
        wait_ended(&sup, which);
    }
    let status = status_json(dir.path());
    let workers = status["pools"][0]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{status:#}");
    assert_eq!(workers[0]["pid"], web0);
    assert_eq!(workers[0]["state"], "ready");

    let output = procwire(dir.path(), &["scale", "web", "0"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
}

#[test]
fn a_rolling_restart_by_hand_restarts_one_worker_at_a_time_each_once_the_one_before_is_ready() {
    if !have_python() {
        println!("skipped: needs python3, to send READY=1 from a worker");
        return;
    }
    let dir = temp_dir();
    let mut gate = Gate::new(&dir.path().join("gate"));
    // The first run of each worker is ready at once; a restarted one once let through the gate.
    let script = dir.path().join("worker.py");
    std::fs::write(
        &script,
        format!(
            r#"
import os, socket, time
os.chdir({dir:?})
index = os.environ["PROCWIRE_INDEX"]
print("pid", os.getpid(), flush=True)
if os.path.exists("ran-" + index):
    os.read(os.open("gate", os.O_RDONLY), 3)
open("ran-" + index, "w").close()
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
time.sleep(1000)
"#,
            dir = dir.path().to_str().unwrap()
        ),
    )
    .unwrap();
    let sup = Supervisor::start(
        dir.path(),
        "roll",
        &format!(
            "[pool.web]\nworkers = 2\nready = \"notify\"\ncommand = [\"python3\", {:?}]\n",
            script.to_str().unwrap()
        ),
    );
    let (web0, web1) = (printed_pid(&sup, "web.0", 1), printed_pid(&sup, "web.1", 1));
    sup.wait_for_containing(&format!("web.0 (pid {web0}) is ready"));
    sup.wait_for_containing(&format!("web.1 (pid {web1}) is ready"));

    ok(dir.path(), &["restart", "web", "--rolling"]);
    let new0 = printed_pid(&sup, "web.0", 2);
    assert_ne!(new0, web0);
    // The new web.0 is held back from readiness: web.1 is not touched meanwhile.
    let status = status_json(dir.path());
    assert_eq!(worker(&status, "web", 0)["state"], "starting", "{status:#}");
    assert_eq!(worker(&status, "web", 1)["pid"], web1);
    assert_eq!(worker(&status, "web", 1)["state"], "ready");
    let output = procwire(dir.path(), &["restart", "web", "--rolling"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("under way already"));
    assert_eq!(
        procwire(dir.path(), &["restart", "web.1", "--rolling"]).status.code(),
        Some(2)
    );

    gate.open(1);
    let new1 = printed_pid(&sup, "web.1", 2);
    assert_ne!(new1, web1);
    gate.open(1);
    sup.wait_for_containing("pool web restarted, one worker at a time");
    let status = status_json(dir.path());
    for (index, pid) in [(0, new0), (1, new1)] {
        assert_eq!(worker(&status, "web", index)["pid"], pid, "{status:#}");
        assert_eq!(worker(&status, "web", index)["state"], "ready");
    }
}

#[test]
fn logs_prints_each_workers_recent_lines_kept_across_its_restart() {
    let dir = temp_dir();
    let sup = Supervisor::start(
        dir.path(),
        "logs",
        r#"
[pool.talk]
command = ["sh", "-c", 'for i in 1 2 3 4 5; do echo "line $i"; done; echo oops >&2; echo "pid $$"; exec sleep 1000']

[pool.quiet]
command = ["sh", "-c", 'echo "pid $$"; exec sleep 1000']
"#,
    );
    let first = printed_pid(&sup, "talk.0", 1);
    sup.wait_for("talk.0 | oops");
    printed_pid(&sup, "quiet.0", 1);
    // The last two: stdout's and stderr's last lines (the two streams' lines are kept in
    // the order the supervisor read them, which between streams may differ from the
    // order written).
    let last = ok(dir.path(), &["logs", "talk.0", "-n", "2"]);
    let mut last: Vec<&str> = last.lines().collect();
    last.sort_unstable();
    assert_eq!(last, ["talk.0 | oops".to_owned(), format!("talk.0 | pid {first}")]);
    let all = ok(dir.path(), &["logs"]);
    assert!(
        all.contains("talk.0 | line 1\n") && all.contains("quiet.0 | pid "),
        "{all}"
    );

    ok(dir.path(), &["restart", "talk"]);
    let second = printed_pid(&sup, "talk.0", 2);
    let both = ok(dir.path(), &["logs", "talk", "-n", "100"]);
    assert!(both.contains(&format!("talk.0 | pid {first}\n")), "{both}");
    assert!(both.contains(&format!("talk.0 | pid {second}\n")), "{both}");
    assert!(
        both.find(&format!("pid {first}")) < both.find(&format!("pid {second}")),
        "{both}"
    );
    assert_eq!(both.matches("talk.0 | line 1\n").count(), 2, "{both}");
}
