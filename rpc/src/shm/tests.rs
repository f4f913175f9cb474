//! In-process tests of regions: checks, copies, passing over a socket.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

use super::*;

#[test]
fn a_new_region_is_zeroed_and_copies_round_trip_at_any_offset() {
    let region = Region::create(100).unwrap();
    assert_eq!(region.len(), 100);
    assert_eq!(region.read::<[u8; 100]>(0).unwrap(), [0; 100]);
    let data: Vec<u8> = (0..37).collect();
    for offset in [0, 1, 7, 8, 63] {
        region.write_bytes(offset, &data).unwrap();
        let mut back = vec![0; data.len()];
        region.read_bytes(offset, &mut back).unwrap();
        assert_eq!(back, data, "at offset {offset}");
    }
    region.write(3, &0x1122_3344_5566_7788u64).unwrap();
    assert_eq!(region.read::<u64>(3).unwrap(), 0x1122_3344_5566_7788);
    let view = region.view::<[u16; 4]>(90).unwrap();
    view.store(&[1, 2, 3, 4]);
    assert_eq!(view.load(), [1, 2, 3, 4]);
}

#[test]
fn accesses_outside_the_region_or_misaligned_are_errors() {
    let region = Region::create(64).unwrap();
    assert!(matches!(
        region.read::<u64>(57),
        Err(ShmError::OutOfBounds {
            offset: 57,
            len: 8,
            size: 64
        })
    ));
    assert!(matches!(
        region.write_bytes(usize::MAX, &[1]),
        Err(ShmError::OutOfBounds { .. })
    ));
    assert!(matches!(region.view::<u32>(61), Err(ShmError::OutOfBounds { .. })));
    assert!(matches!(
        region.atomic::<AtomicU64>(4),
        Err(ShmError::Misaligned {
            offset: 4,
            align: 8,
            ..
        })
    ));
    assert!(region.atomic::<AtomicU32>(60).is_ok());
    assert!(matches!(
        region.atomic::<AtomicU32>(64),
        Err(ShmError::OutOfBounds { .. })
    ));
    assert!(matches!(Region::create(0), Err(ShmError::BadSize { size: 0, .. })));
}

#[test]
fn from_fd_refuses_what_is_not_a_sealed_memfd() {
    let (pipe, _write) = nix::unistd::pipe().unwrap();
    let err = Region::from_fd(pipe).unwrap_err();
    assert!(matches!(err, ShmError::NotAMemfd { .. }), "{err}");
    let unsealed = memfd_create(
        c"unsealed",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .unwrap();
    nix::unistd::ftruncate(&unsealed, 4096).unwrap();
    let err = Region::from_fd(unsealed).unwrap_err();
    assert!(matches!(err, ShmError::NotSealed { .. }), "{err}");
    assert!(
        err.to_string().contains("not sealed against shrinking and growing"),
        "{err}"
    );
}

#[test]
fn a_region_sent_over_a_socket_is_the_same_memory() {
    let (a, b) = UnixStream::pair().unwrap();
    let region = Region::create(4096).unwrap();
    send_region(&a, &region).unwrap();
    let other = recv_region(&b).unwrap();
    assert_ne!(other.as_fd().as_raw_fd(), region.as_fd().as_raw_fd());
    assert_eq!(other.len(), 4096);
    region.atomic::<AtomicU64>(8).unwrap().store(42, Ordering::Release);
    assert_eq!(other.atomic::<AtomicU64>(8).unwrap().load(Ordering::Acquire), 42);
    drop(a);
    let err = recv_region(&b).unwrap_err();
    assert!(matches!(err, ShmError::PeerClosed { .. }), "{err}");
}

#[test]
fn a_message_without_a_descriptor_is_not_a_region() {
    let (a, b) = UnixStream::pair().unwrap();
    send_fds(a.as_fd(), b"R", &[]).unwrap();
    let err = recv_region(&b).unwrap_err();
    assert!(
        matches!(
            err,
            ShmError::MissingFds {
                got: 0,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_region_names_and_missing_variables_are_clear_errors() {
    assert!(matches!(env_var("a b"), Err(ShmError::BadName { .. })));
    assert!(matches!(env_var(""), Err(ShmError::BadName { .. })));
    assert_eq!(env_var("stats-1").unwrap(), "PROCWIRE_SHARED_stats-1");
    let err = Region::from_env("never_passed_to_this_test").unwrap_err();
    assert!(
        matches!(
            err,
            ShmError::Env {
                problem: EnvProblem::Unset,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_os_failure_says_the_os_reason_in_its_text() {
    // More than any address space: the mapping must fail, and say why.
    let err = Region::create(1 << 60).unwrap_err();
    assert!(matches!(err, ShmError::Os { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("failed: ") && text.contains("os error"), "{text}");
}
