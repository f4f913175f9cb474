//! Access control on Unix endpoints (`ServerConfig::allow`), across real processes running
//! as other users: a peer whose uid or gid is allowed is served, any other is refused before
//! the handshake, with a clear error. Needs root to run clients as other uids; without it,
//! each test says so and passes.

#[allow(dead_code)]
#[macro_use]
#[path = "support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;

use libtest_mimic::Failed;
use procwire_rpc::Access;
use support::*;

type Outcome = Result<(), Failed>;

/// Users with no account: root may run a process as any uid.
const ALLOWED_UID: u32 = 64_001;
const OTHER_UID: u32 = 64_002;
const ALLOWED_GID: u32 = 64_003;

/// Whether clients can be run as other users; if not, says why.
fn can_switch_users(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    println!("skipping {test}: running clients as other uids needs root");
    false
}

/// A server allowing `access`, whose socket file and directory anyone may reach, so that
/// only the credentials check stands between other users and the service.
fn open_server(access: &Access) -> Peer {
    let peer = Peer::spawn_allowing(Kind::Unix, access);
    let path = std::path::Path::new(peer.addr());
    let dir = path.parent().expect("the socket's directory");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("open the directory");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("open the socket file");
    peer
}

fn an_allowed_uid_is_served_and_another_uid_is_refused_before_the_handshake() -> Outcome {
    if !can_switch_users("an_allowed_uid_is_served_and_another_uid_is_refused_before_the_handshake") {
        return Ok(());
    }
    let peer = open_server(&Access::new().uid(ALLOWED_UID));
    let endpoint = format!("unix:{}", peer.addr());
    let served = run_endpoint_client_as(&endpoint, ALLOWED_UID, ALLOWED_UID)?;
    assert_eq!(served, "sum 42");
    let refused = run_endpoint_client_as(&endpoint, OTHER_UID, OTHER_UID).expect_err("uid not allowed");
    assert!(refused.contains("the server refused the connection"), "{refused}");
    // Root is always served, and the server goes on serving after a refusal.
    let mut peer = peer;
    let client = procwire_rpc::Client::connect(peer.transport(), info())?;
    assert_eq!(client.call::<_, i64>(ADD, &(1i64, 2i64), None)?, 3);
    Ok(())
}

fn a_peer_whose_group_is_allowed_is_served_whatever_its_uid() -> Outcome {
    if !can_switch_users("a_peer_whose_group_is_allowed_is_served_whatever_its_uid") {
        return Ok(());
    }
    let peer = open_server(&Access::new().uid(ALLOWED_UID).gid(ALLOWED_GID));
    let endpoint = format!("unix:{}", peer.addr());
    assert_eq!(run_endpoint_client_as(&endpoint, OTHER_UID, ALLOWED_GID)?, "sum 42");
    let refused = run_endpoint_client_as(&endpoint, OTHER_UID, OTHER_UID).expect_err("neither allowed");
    assert!(refused.contains("the server refused the connection"), "{refused}");
    Ok(())
}

fn without_an_allow_list_every_peer_the_socket_file_lets_in_is_served() -> Outcome {
    if !can_switch_users("without_an_allow_list_every_peer_the_socket_file_lets_in_is_served") {
        return Ok(());
    }
    // No PROCWIRE_ALLOW_* at all: the check is off, as for a server outside a supervisor.
    let peer = Peer::spawn(Kind::Unix);
    let path = std::path::Path::new(peer.addr());
    std::fs::set_permissions(path.parent().unwrap(), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    let endpoint = format!("unix:{}", peer.addr());
    assert_eq!(run_endpoint_client_as(&endpoint, OTHER_UID, OTHER_UID)?, "sum 42");
    Ok(())
}

test_main!(
    an_allowed_uid_is_served_and_another_uid_is_refused_before_the_handshake,
    a_peer_whose_group_is_allowed_is_served_whatever_its_uid,
    without_an_allow_list_every_peer_the_socket_file_lets_in_is_served,
);
