//! A pool's `allow_uids` and `allow_gids`, through `procwire up`: the socket files get the
//! mode and group the lists need, and the workers are told the lists (which
//! procwire-workers enforces with SO_PEERCRED: tests/worker.rs at the workspace root, and
//! rpc/tests/access.rs, run clients as other uids against them).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use nix::sys::signal::Signal;

use support::*;

#[test]
fn allow_lists_set_the_socket_files_mode_and_group_and_reach_the_workers() {
    let dir = temp_dir();
    let me = nix::unistd::geteuid().as_raw();
    if !nix::unistd::geteuid().is_root() {
        // chown to a group the user is not in needs root.
        println!("skipping allow_lists_set_the_socket_files_mode_and_group_and_reach_the_workers: needs root");
        return;
    }
    let d = dir.path().display();
    let say = r#"command = ["sh", "-c", "echo uids=$PROCWIRE_ALLOW_UIDS gids=$PROCWIRE_ALLOW_GIDS; exec sleep 1000"]"#;
    let mut sup = Supervisor::start(
        dir.path(),
        "access",
        &format!(
            r#"
[pool.own]
{say}
listen = ["unix:{d}/own.sock"]

[pool.group]
{say}
listen = ["unix:{d}/group.sock"]
allow_gids = [64003]

[pool.users]
{say}
listen = ["unix:{d}/users.sock"]
allow_uids = ["nobody", 64001]
"#
        ),
    );
    sup.wait_for(&format!("own.0 | uids={me} gids="));
    sup.wait_for(&format!("group.0 | uids={me} gids=64003"));
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("`nobody` was found when the manifest was read")
        .uid;
    sup.wait_for(&format!("users.0 | uids={me},{nobody},64001 gids="));
    let file = |name: &str| std::fs::metadata(dir.path().join(name)).expect("the socket file");
    assert_eq!(file("own.sock").permissions().mode() & 0o777, 0o600);
    let group = file("group.sock");
    assert_eq!(
        (group.permissions().mode() & 0o777, group.gid()),
        (0o660, 64003),
        "one group: the file is that group's"
    );
    assert_eq!(
        file("users.sock").permissions().mode() & 0o777,
        0o666,
        "other users: the file lets them reach the credentials check"
    );
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
}
