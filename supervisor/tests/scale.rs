//! `procwire scale` of a pool with a socket per worker (`{index}` in `listen`), driven with
//! the real binary: the new workers' sockets exist before they start and are handed to them,
//! the removed workers' go at once, a reload keeps the scale and its sockets, and scaling
//! back while a removed worker still stops is refused with the reason. A reload that names a
//! socket no more removes its file (one kept at the same path as another kind stays).

mod support;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use support::control::*;
use support::*;

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[test]
fn scaling_a_pool_with_a_socket_per_worker_binds_and_removes_their_sockets_and_a_reload_keeps_them() {
    let dir = temp_dir();
    let socket = |i: u32| dir.path().join(format!("web-{i}.sock"));
    let sup = Supervisor::start(
        dir.path(),
        "sockets",
        &format!(
            r#"
[pool.web]
listen = ["unix:{}"]
command = ["sh", "-c", 'echo "listening on $LISTEN_FDS $LISTEN_FDNAMES"; echo "pid $$"; exec sleep 1000']
"#,
            dir.path().join("web-{index}.sock").display()
        ),
    );
    let web0 = printed_pid(&sup, "web.0", 1);
    assert!(is_socket(&socket(0)));
    assert!(!socket(1).exists());

    ok(dir.path(), &["scale", "web", "3"]);
    for i in [1, 2] {
        assert!(is_socket(&socket(i)), "web-{i}.sock is bound before its worker starts");
        sup.wait_for(&format!("web.{i} | listening on 1 web"));
        std::os::unix::net::UnixStream::connect(socket(i)).expect("the supervisor listens there");
    }

    // The manifest still says one worker: a reload changes nothing, scale and sockets kept.
    let reload = ok(dir.path(), &["reload"]);
    assert_eq!(reload.trim(), "nothing changed");
    let status = status_json(dir.path());
    assert_eq!(status["pools"][0]["workers"].as_array().unwrap().len(), 3, "{status:#}");
    assert!(is_socket(&socket(2)), "a reload keeps the scaled worker's socket");
    std::os::unix::net::UnixStream::connect(socket(2)).expect("still listening after the reload");

    ok(dir.path(), &["scale", "web", "1"]);
    assert!(
        !socket(1).exists() && !socket(2).exists(),
        "the removed workers' sockets go at once"
    );
    assert!(is_socket(&socket(0)));
    assert_eq!(worker(&status_json(dir.path()), "web", 0)["pid"], web0);
}

#[test]
fn scaling_down_a_pool_with_an_mq_socket_per_worker_removes_the_removed_workers_socket_files() {
    let dir = temp_dir();
    let socket = |i: u32| dir.path().join(format!("q-{i}.sock"));
    let sup = Supervisor::start(
        dir.path(),
        "mq-sockets",
        &format!(
            r#"
[pool.q]
listen = ["mq:{}"]
command = ["sh", "-c", 'echo "pid $$"; exec sleep 1000']
"#,
            dir.path().join("q-{index}.sock").display()
        ),
    );
    printed_pid(&sup, "q.0", 1);
    ok(dir.path(), &["scale", "q", "2"]);
    assert!(is_socket(&socket(1)), "q-1.sock is bound before its worker starts");
    ok(dir.path(), &["scale", "q", "1"]);
    assert!(!socket(1).exists(), "the removed worker's mq socket file goes at once");
    assert!(is_socket(&socket(0)));
}

#[test]
fn a_reload_that_drops_a_socket_removes_its_file_unless_the_path_is_kept_as_another_kind() {
    let dir = temp_dir();
    let manifest = |listen: &[String]| {
        format!("[pool.web]\nlisten = {listen:?}\ncommand = [\"sh\", \"-c\", 'echo \"pid $$\"; exec sleep 1000']\n")
    };
    let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let unix = |p: &Path| format!("unix:{}", p.display());
    let shm = |p: &Path| format!("shm:{}", p.display());
    let sup = Supervisor::start(dir.path(), "dropped", &manifest(&[unix(&a), unix(&b)]));
    printed_pid(&sup, "web.0", 1);
    assert!(is_socket(&a) && is_socket(&b));
    // b is named no more; a is named again, as shm: at the same path.
    std::fs::write(dir.path().join("dropped.toml"), manifest(&[shm(&a)])).unwrap();
    ok(dir.path(), &["reload"]);
    printed_pid(&sup, "web.0", 2);
    assert!(!b.exists(), "the socket file no pool names any more is removed");
    assert!(is_socket(&a), "the path kept as another kind keeps its file");
    std::os::unix::net::UnixStream::connect(&a).expect("and its socket still listens");
}

#[test]
fn scaling_back_while_a_removed_worker_still_stops_is_refused_with_the_reason() {
    let dir = temp_dir();
    let sup = Supervisor::start(
        dir.path(),
        "stopping",
        &format!(
            r#"
[pool.web]
workers = 2
listen = ["unix:{}"]
stop_timeout = "60s"
command = ["sh", "-c", 'trap "echo ignoring TERM" TERM; echo "pid $$"; while :; do sleep 1000 & wait $!; done']
"#,
            dir.path().join("web-{index}.sock").display()
        ),
    );
    printed_pid(&sup, "web.0", 1);
    printed_pid(&sup, "web.1", 1);
    ok(dir.path(), &["scale", "web", "1"]);
    sup.wait_for("web.1 | ignoring TERM");
    let output = procwire(dir.path(), &["scale", "web", "2"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot scale pool web: worker 1, removed by the last scale, is still stopping"),
        "{stderr}"
    );
}
