//! `Manifest::validate` on manifests built in code, where the parser's checks never ran.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::super::{Condition, Endpoint, Manifest, Pool, Ready};
use super::{Host, ValidationError, MAX_WORKERS, UNIX_PATH_MAX};

/// A pool `name` running `sh` (on every PATH).
fn sh(name: &str) -> Pool {
    Pool::new(name, vec!["sh".into(), "-c".into(), "true".into()])
}

fn manifest(pools: Vec<Pool>) -> Manifest {
    pools.into_iter().fold(Manifest::new("t"), Manifest::pool)
}

#[test]
fn a_manifest_of_programs_that_exist_is_valid() {
    manifest(vec![sh("a"), sh("b")]).validate().unwrap();
}

#[test]
fn an_empty_command_built_in_code_is_refused_instead_of_panicking_in_spawn() {
    let error = manifest(vec![Pool::new("w", Vec::new())]).validate().unwrap_err();
    assert!(
        matches!(error, ValidationError::EmptyCommand { ref pool } if pool == "w"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "pool w: `command` is empty: it needs at least the program to run"
    );
    let error = manifest(vec![Pool::new("w", vec![String::new()])])
        .validate()
        .unwrap_err();
    assert!(matches!(error, ValidationError::EmptyCommand { .. }), "{error:?}");
}

#[test]
fn an_embedded_supervisor_refuses_an_empty_command_with_an_error_not_a_panic() {
    let result = crate::Supervisor::start(manifest(vec![Pool::new("w", Vec::new())]));
    match result {
        Err(crate::run::RunError::Invalid(ValidationError::EmptyCommand { pool })) => assert_eq!(pool, "w"),
        other => panic!("expected the empty command to be refused, got {other:?}"),
    }
}

#[test]
fn a_role_is_valid_embedded_and_refused_for_procwire_up() {
    let mut pool = Pool::new("calc", Vec::new());
    pool.role = Some("calc".into());
    let manifest = manifest(vec![pool]);
    manifest.validate_for(Host::Embedded).unwrap();
    let error = manifest.validate_for(Host::Command).unwrap_err();
    assert!(matches!(error, ValidationError::Role { .. }), "{error:?}");
}

#[test]
fn worker_counts_outside_one_to_the_maximum_are_refused() {
    for workers in [0, MAX_WORKERS + 1, u32::MAX] {
        let mut pool = sh("w");
        pool.workers = workers;
        let error = manifest(vec![pool]).validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("pool w: `workers` is {workers}; it must be from 1 to 1024")
        );
    }
    let mut pool = sh("w");
    pool.workers = MAX_WORKERS;
    manifest(vec![pool]).validate().unwrap();
}

#[test]
fn two_pools_of_one_name_and_bad_names_are_refused() {
    let error = manifest(vec![sh("a"), sh("a")]).validate().unwrap_err();
    assert!(matches!(error, ValidationError::DuplicatePool { .. }), "{error:?}");
    let error = manifest(vec![sh("my pool")]).validate().unwrap_err();
    assert!(matches!(error, ValidationError::PoolName { .. }), "{error:?}");
    let mut bad = manifest(vec![sh("a")]);
    bad.supervisor.name = "a/b".into();
    let error = bad.validate().unwrap_err();
    assert!(matches!(error, ValidationError::SupervisorName { .. }), "{error:?}");
}

#[test]
fn a_cycle_or_an_unknown_dependency_built_in_code_is_refused() {
    let (mut a, mut b) = (sh("a"), sh("b"));
    a.after.push(("b".into(), Condition::Ready));
    b.after.push(("a".into(), Condition::Started));
    let error = manifest(vec![a, b]).validate().unwrap_err();
    assert_eq!(error.to_string(), "cycle in `after`: a -> b -> a");
    let mut c = sh("c");
    c.after.push(("nope".into(), Condition::Ready));
    let error = manifest(vec![c]).validate().unwrap_err();
    assert!(error.to_string().contains("unknown pool `nope`"), "{error}");
}

#[test]
fn settings_that_would_panic_or_overflow_at_run_time_are_refused() {
    let mut pool = sh("w");
    pool.backoff.factor = f64::NAN;
    assert!(manifest(vec![pool])
        .validate()
        .unwrap_err()
        .to_string()
        .contains("backoff.factor"));
    let mut pool = sh("w");
    pool.stop_timeout = Duration::MAX;
    let error = manifest(vec![pool]).validate().unwrap_err();
    assert!(
        error.to_string().contains("`stop_timeout`") && error.to_string().contains("100 years"),
        "{error}"
    );
    let mut pool = sh("w");
    pool.backoff.max = Duration::from_millis(1);
    assert!(manifest(vec![pool])
        .validate()
        .unwrap_err()
        .to_string()
        .contains("backoff.max"));
    let mut pool = sh("w");
    pool.rlimits.insert("files".into(), 1);
    assert!(manifest(vec![pool])
        .validate()
        .unwrap_err()
        .to_string()
        .contains("rlimits.files"));
    let mut pool = sh("w");
    pool.forward.push(nix::sys::signal::Signal::SIGKILL);
    assert!(manifest(vec![pool])
        .validate()
        .unwrap_err()
        .to_string()
        .contains("forward"));
}

#[test]
fn a_umask_above_0777_built_in_code_is_refused() {
    let mut pool = sh("w");
    pool.umask = Some(0o1022);
    let error = manifest(vec![pool]).validate().unwrap_err().to_string();
    assert!(error.contains("`umask`") && error.contains("not 1022"), "{error}");
    let mut pool = sh("w");
    pool.umask = Some(0o777);
    manifest(vec![pool]).validate().unwrap();
}

#[test]
fn the_program_is_looked_up_in_the_pools_own_path() {
    let dir = tempfile::TempDir::new().unwrap();
    let program = dir.path().join("only-here");
    std::fs::write(&program, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut pool = Pool::new("w", vec!["only-here".into()]);
    assert!(matches!(
        manifest(vec![pool.clone()]).validate().unwrap_err(),
        ValidationError::ProgramNotFound { .. }
    ));
    pool.env.insert("PATH".into(), dir.path().display().to_string());
    manifest(vec![pool]).validate().unwrap();
}

#[test]
fn an_exec_probe_program_must_exist() {
    let mut pool = sh("w");
    pool.ready = Ready::Exec(vec!["procwire-no-such-probe".into()]);
    let error = manifest(vec![pool]).validate().unwrap_err();
    assert!(
        matches!(error, ValidationError::ProgramNotFound { key: "ready", .. }),
        "{error:?}"
    );
}

#[test]
fn the_unix_path_limit_is_the_one_bind_enforces() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = |length: usize| {
        let prefix = dir.path().as_os_str().len() + 1;
        dir.path().join("s".repeat(length - prefix))
    };
    let longest = path(UNIX_PATH_MAX);
    std::os::unix::net::UnixListener::bind(&longest).expect("bind accepts a path of UNIX_PATH_MAX bytes");
    std::fs::remove_file(&longest).unwrap();
    assert!(std::os::unix::net::UnixListener::bind(path(UNIX_PATH_MAX + 1)).is_err());
    let mut pool = sh("w");
    pool.listen = vec![Endpoint::Unix(longest)];
    manifest(vec![pool.clone()]).validate().unwrap();
    pool.listen = vec![Endpoint::Unix(path(UNIX_PATH_MAX + 1))];
    let error = manifest(vec![pool]).validate().unwrap_err();
    assert!(
        matches!(error, ValidationError::PathTooLong { length: 108, .. }),
        "{error:?}"
    );
}

#[test]
fn every_workers_listen_path_is_checked_after_index_is_replaced() {
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("w0")).unwrap();
    let mut pool = sh("w");
    pool.workers = 2;
    pool.listen = vec![Endpoint::Unix(dir.path().join("w{index}/s.sock"))];
    let error = manifest(vec![pool]).validate().unwrap_err();
    match error {
        ValidationError::ListenDirectory { dir: missing, .. } => assert_eq!(missing, dir.path().join("w1")),
        other => panic!("expected worker 1's directory to be missing, got {other:?}"),
    }
}

#[test]
fn a_file_in_a_sockets_place_is_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let taken = dir.path().join("taken.sock");
    std::fs::write(&taken, "not a socket").unwrap();
    let mut pool = sh("w");
    pool.listen = vec![Endpoint::Unix(taken)];
    let error = manifest(vec![pool]).validate().unwrap_err();
    assert!(matches!(error, ValidationError::NotASocket { .. }), "{error:?}");
}

#[test]
fn an_unknown_user_is_refused() {
    let mut pool = sh("w");
    pool.user = Some("procwire-no-such-user".into());
    let error = manifest(vec![pool]).validate().unwrap_err();
    assert_eq!(
        error.to_string(),
        "pool w: `user`: no user named \"procwire-no-such-user\""
    );
}

#[test]
fn an_authenticated_tcp_listen_needs_a_key_its_workers_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = sh("w");
    pool.listen = vec!["tcp:127.0.0.1:7000".parse().unwrap()];
    let error = manifest(vec![pool.clone()]).validate().unwrap_err();
    assert!(matches!(error, ValidationError::NoKey { index: 0, .. }), "{error:?}");
    // Plain TCP needs none.
    let mut plain = sh("p");
    plain.listen = vec!["tcp+plain:127.0.0.1:7000".parse().unwrap()];
    manifest(vec![plain]).validate().unwrap();
    let key = dir.path().join("w.key");
    std::fs::write(&key, [7; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    pool.key_file = Some(key.clone());
    manifest(vec![pool.clone()]).validate().unwrap();
    if !nix::unistd::geteuid().is_root() {
        println!("skipping the part with `user`: running workers as another user needs root");
        return;
    }
    // Workers of another user could not read a key file that only root may read.
    pool.user = Some("nobody".into());
    let error = manifest(vec![pool.clone()]).validate().unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("pool w: `key_file` {} belongs to uid ", key.display()))
            && error.ends_with("chown it to nobody"),
        "{error}"
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    nix::unistd::chown(&key, Some(nobody.uid), None).unwrap();
    manifest(vec![pool]).validate().unwrap();
}
