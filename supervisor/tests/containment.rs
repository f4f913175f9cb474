//! Containment of each worker's whole process tree: what a worker starts ends with it, even
//! outside its process group, and what a SIGKILLed supervisor left is ended by the next
//! start. Real processes throughout; survivors are found by a marker in their environment.
//! Where cgroups are not writable the supervisor says so, and the tests that need them skip
//! with that line as their reason.

mod support;

use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use support::*;

/// The environment variable that marks a test's processes.
const MARKER: &str = "PROCWIRE_TREE_MARKER";

/// The supervisor's containment line (it is said at `-v` either way); `None` with the line
/// printed as the reason to skip if it has no cgroups.
fn cgroups_used(sup: &Supervisor, test: &str) -> Option<String> {
    let line = sup.wait_for_containing("containment: ");
    if line.contains("containment: no cgroup") {
        println!("skipping {test}: {line}");
        return None;
    }
    Some(line)
}

#[test]
fn a_killed_worker_takes_along_what_it_started_even_in_a_session_of_its_own() {
    let dir = temp_dir();
    let marker = dir.path().display().to_string();
    let sup = Supervisor::start_with(
        dir.path(),
        "tree-worker",
        &format!(
            r#"
[pool.w]
command = ["sh", "-c", "setsid sleep 1000 & echo gc $!; echo worker $$; exec sleep 1000"]
env = {{ {MARKER} = "{marker}" }}
restart = "never"
"#
        ),
        &["-v"],
    );
    if cgroups_used(&sup, "a_killed_worker_takes_along_what_it_started").is_none() {
        return;
    }
    let grandchild = number_after(&sup.wait_for("w.0 | gc "), "gc ");
    let worker = number_after(&sup.wait_for("w.0 | worker "), "worker ");
    let fd = pidfd(grandchild as i32).expect("the grandchild runs");
    kill(Pid::from_raw(worker as i32), Signal::SIGKILL).expect("kill the worker");
    assert!(
        exited_by(&fd, Instant::now() + DEADLINE),
        "the grandchild {grandchild}, in a session of its own, outlived its worker; lines:\n{}",
        sup.output()
    );
    assert_eq!(marked(MARKER, &marker), Vec::<i64>::new(), "survivors");
}

#[test]
fn after_the_supervisor_is_sigkilled_the_next_start_ends_every_grandchild_it_left() {
    let dir = temp_dir();
    let marker = dir.path().display().to_string();
    let mut first = Supervisor::start_with(
        dir.path(),
        "tree",
        &format!(
            r#"
[pool.w]
command = ["sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait"]
workers = 2
env = {{ {MARKER} = "{marker}" }}
"#
        ),
        &["-v"],
    );
    if cgroups_used(
        &first,
        "after_the_supervisor_is_sigkilled_the_next_start_ends_every_grandchild",
    )
    .is_none()
    {
        return;
    }
    first.wait_for("w.0 | ready");
    first.wait_for("w.1 | ready");
    // Two workers and their four sleeps.
    let before = marked_at_least(MARKER, &marker, 6, Instant::now() + DEADLINE);
    assert!(before.len() >= 6, "the workers and their grandchildren: {before:?}");
    first.kill();
    let record = dir.path().join("procwire").join("tree.cgroup");
    assert!(
        record.exists(),
        "the killed supervisor's cgroup is recorded in {record:?}"
    );

    // The same name, in the same runtime directory, with nothing marked of its own.
    let mut next = Supervisor::start_with(
        dir.path(),
        "tree",
        r#"
[pool.other]
command = ["sh", "-c", "echo up; exec sleep 1000"]
"#,
        &["-v"],
    );
    // Its workers start only after what the first left is ended.
    next.wait_for("other.0 | up");
    next.wait_for_containing("a previous supervisor of this name left running in ");
    assert_eq!(
        marked(MARKER, &marker),
        Vec::<i64>::new(),
        "survivors of the killed supervisor after the next start; lines:\n{}",
        next.output()
    );
    next.signal(Signal::SIGTERM);
    next.expect_exit(0);
    assert!(!record.exists(), "a supervisor that ended cleanly leaves no record");
}

#[test]
fn without_cgroups_the_supervisor_says_in_one_line_what_is_and_is_not_contained() {
    let dir = temp_dir();
    let path = dir.path().join("flat.toml");
    std::fs::write(
        &path,
        r#"
[pool.w]
command = ["sh", "-c", "echo up; exec sleep 1000"]
"#,
    )
    .unwrap();
    let mut sup = Supervisor::spawn_with_env(
        env!("CARGO_BIN_EXE_procwire"),
        &["up", path.to_str().unwrap()],
        None,
        &[("PROCWIRE_CGROUP", "off")],
    );
    sup.wait_for("w.0 | up");
    let line = sup.wait_for_containing("containment: ");
    assert!(
        line.ends_with(
            "containment: no cgroup (PROCWIRE_CGROUP=off); each worker's process group is killed when it ends and \
             orphans are re-parented to the supervisor and reaped, but a process that leaves its group (setsid) \
             escapes, and what runs when the supervisor is killed is not ended by the next start"
        ),
        "{line}"
    );
    assert!(
        !dir.path().join("procwire").join("flat.cgroup").exists(),
        "nothing recorded without cgroups"
    );
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}

/// A worker whose cgroup had to be killed (it left a grandchild) comes back in a fresh one:
/// a child cloned into a cgroup that was ever killed is SIGKILLed at birth by the kernels at
/// hand, so a reused cgroup would leave the worker dead in a restart loop. Twice, so that
/// the replacement of a replacement is covered too.
#[test]
fn a_worker_whose_leftovers_were_killed_restarts_and_runs_in_a_fresh_cgroup() {
    let dir = temp_dir();
    let marker = dir.path().display().to_string();
    let sup = Supervisor::start_with(
        dir.path(),
        "tree-again",
        &format!(
            r#"
[pool.w]
command = ["sh", "-c", "setsid sleep 1000 & echo gc $!; echo worker $$; exec sleep 1000"]
env = {{ {MARKER} = "{marker}" }}
backoff = {{ initial = "0s" }}
"#
        ),
        &["-v"],
    );
    if cgroups_used(&sup, "a_worker_whose_leftovers_were_killed_restarts").is_none() {
        return;
    }
    for round in 1..=3 {
        let grandchild = number_after(&sup.wait_for_nth("w.0 | gc ", round), "gc ");
        let worker = number_after(&sup.wait_for_nth("w.0 | worker ", round), "worker ");
        if round == 3 {
            break;
        }
        let fd = pidfd(grandchild as i32).expect("the grandchild runs");
        kill(Pid::from_raw(worker as i32), Signal::SIGKILL).expect("kill the worker");
        assert!(
            exited_by(&fd, Instant::now() + DEADLINE),
            "round {round}: the grandchild outlived its worker; lines:\n{}",
            sup.output()
        );
    }
}
