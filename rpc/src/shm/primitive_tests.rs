//! In-process tests of the primitives: headers, timeouts, a thread that dies holding a lock.
//! The cross-process tests are in `rpc/tests/shm.rs`.

use std::time::{Duration, Instant};

use super::*;

const SHORT: Duration = Duration::from_millis(50);

#[test]
fn opening_where_nothing_was_created_names_the_primitive_and_the_magic() {
    let region = Region::create(4096).unwrap();
    let err = RobustMutex::<u64>::open(&region, 0).unwrap_err();
    assert!(
        matches!(
            err,
            ShmError::BadMagic {
                what: "robust mutex",
                found: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no robust mutex at offset 0"), "{err}");
    Semaphore::create(&region, 1024, 2).unwrap();
    let err = Barrier::open(&region, 1024).unwrap_err();
    assert!(matches!(err, ShmError::BadMagic { what: "barrier", .. }), "{err}");
}

#[test]
fn a_corrupt_header_or_state_is_a_clear_error() {
    let region = Region::create(4096).unwrap();
    BinarySemaphore::create(&region, 0, false).unwrap();
    region.write(4, &99u32).unwrap();
    let err = BinarySemaphore::open(&region, 0).unwrap_err();
    assert!(matches!(err, ShmError::BadVersion { found: 99, .. }), "{err}");
    region.write(4, &1u32).unwrap();
    region.write(8, &7u32).unwrap();
    let err = BinarySemaphore::open(&region, 0).unwrap_err();
    assert!(matches!(err, ShmError::Corrupt { .. }), "{err}");
    RobustMutex::create(&region, 512, 0u32).unwrap();
    let err = RobustMutex::<u64>::open(&region, 512).unwrap_err();
    assert!(err.to_string().contains("holds 4 bytes of data, not the 8"), "{err}");
    Barrier::create(&region, 1024, 3).unwrap();
    region.write(1024 + 16, &5u64).unwrap();
    let err = Barrier::open(&region, 1024).unwrap_err();
    assert!(err.to_string().contains("5 arrivals for 3 parties"), "{err}");
}

#[test]
fn primitives_outside_the_region_or_misaligned_are_refused() {
    let region = Region::create(4096).unwrap();
    assert!(matches!(
        Semaphore::create(&region, 4000, 1),
        Err(ShmError::OutOfBounds { .. })
    ));
    assert!(matches!(
        Barrier::create(&region, 4, 2),
        Err(ShmError::Misaligned { .. })
    ));
    assert!(matches!(
        Semaphore::create(&region, 0, 0),
        Err(ShmError::Invalid { .. })
    ));
    assert!(matches!(Barrier::create(&region, 0, 0), Err(ShmError::Invalid { .. })));
}

#[test]
fn try_and_timeout_forms_give_up_while_held() {
    let region = Region::create(8192).unwrap();
    let mutex = RobustMutex::create(&region, 0, 0u64).unwrap();
    let sem = Semaphore::create(&region, 1024, 1).unwrap();
    let bin = BinarySemaphore::create(&region, 2048, false).unwrap();
    let spin = Spinlock::create(&region, 3072, 0u32).unwrap();
    let barrier = Barrier::create(&region, 4096, 2).unwrap();

    let _permit = sem.acquire().unwrap();
    let _spun = spin.lock();
    std::thread::scope(|s| {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let mutex = &mutex;
        s.spawn(move || {
            let _guard = mutex.lock().unwrap();
            held_tx.send(()).unwrap();
            let _ = done_rx.recv();
        });
        held_rx.recv().unwrap();
        assert!(mutex.try_lock().unwrap().is_none());
        let start = Instant::now();
        assert!(mutex.lock_timeout(SHORT).unwrap().is_none());
        assert!(start.elapsed() >= SHORT);
        drop(done_tx);
    });
    // The permit is this process's, so a second acquire here waits too.
    assert!(sem.try_acquire().unwrap().is_none());
    let start = Instant::now();
    assert!(sem.acquire_timeout(SHORT).unwrap().is_none());
    assert_eq!(sem.available().unwrap(), 0, "failing to acquire gives nothing back");
    assert!(start.elapsed() >= SHORT);
    assert!(!bin.try_wait());
    assert!(!bin.wait_timeout(SHORT));
    assert!(spin.try_lock().is_none());
    assert!(spin.lock_timeout(SHORT).is_none());
    assert_eq!(spin.holder(), Some(std::process::id()));
    assert_eq!(barrier.wait_timeout(SHORT).unwrap(), None);
    // The one that timed out no longer counts: two fresh arrivals pass generation 0.
    std::thread::scope(|s| {
        let other = s.spawn(|| barrier.wait().unwrap());
        let mine = barrier.wait().unwrap();
        let theirs = other.join().unwrap();
        assert_eq!((mine.generation, theirs.generation), (0, 0));
        assert!(mine.leader != theirs.leader);
    });
    bin.post();
    bin.post();
    assert!(bin.try_wait());
    assert!(!bin.try_wait(), "two posts make one, not two");
}

#[test]
fn a_thread_that_dies_holding_the_mutex_makes_the_next_locker_repair() {
    let region = Region::create(4096).unwrap();
    let mutex = RobustMutex::create(&region, 0, [0u64; 2]).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let guard = mutex.lock().unwrap().recover(|_| {}).unwrap();
            guard.store(&[1, 0]); // half an update
            std::mem::forget(guard); // the thread ends holding the lock
        });
    });
    let Locked::OwnerDied(recovery) = mutex.lock().unwrap() else {
        panic!("the next locker must be told the holder died");
    };
    assert_eq!(recovery.load(), [1, 0]);
    recovery.store(&[1, 1]);
    drop(recovery.consistent().unwrap());
    let guard = mutex.lock().unwrap();
    assert!(!guard.owner_died());
    assert_eq!(guard.recover(|_| unreachable!()).unwrap().load(), [1, 1]);
}

#[test]
fn a_recovery_dropped_without_repair_makes_the_mutex_unrecoverable() {
    let region = Region::create(4096).unwrap();
    let mutex = RobustMutex::create(&region, 0, 0u32).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(mutex.lock().unwrap()));
    });
    let locked = mutex.lock().unwrap();
    assert!(locked.owner_died());
    drop(locked);
    let err = mutex.lock().unwrap_err();
    assert!(matches!(err, ShmError::Unrecoverable { offset: 0 }), "{err}");
}

#[test]
fn permits_of_a_pid_come_back_on_reclaim_and_a_stale_release_gives_nothing() {
    let region = Region::create(4096).unwrap();
    let sem = Semaphore::create(&region, 0, 3).unwrap();
    let a = sem.acquire().unwrap();
    let b = sem.acquire().unwrap();
    assert_eq!(sem.available().unwrap(), 1);
    assert_eq!(sem.reclaim(std::process::id() + 1).unwrap(), 0);
    assert_eq!(sem.reclaim(std::process::id()).unwrap(), 2);
    assert_eq!(sem.available().unwrap(), 3);
    drop(a);
    b.release().unwrap();
    assert_eq!(
        sem.available().unwrap(),
        3,
        "permits reclaimed are not given back twice"
    );
}

#[test]
fn open_or_create_creates_once_and_then_opens_and_refuses_another_kind() {
    let region = Region::create(8192).unwrap();
    let sem = Semaphore::open_or_create(&region, 0, 3).unwrap();
    let _permit = sem.acquire().unwrap();
    // A second call opens what is there: the permit taken stays taken.
    let again = Semaphore::open_or_create(&region, 0, 3).unwrap();
    assert_eq!(again.available().unwrap(), 2);
    let err = Barrier::open_or_create(&region, 0, 2).unwrap_err();
    assert!(matches!(err, ShmError::BadMagic { what: "barrier", .. }), "{err}");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let b = BinarySemaphore::open_or_create(&region, 1024, false).unwrap();
                b.post();
            });
        }
    });
    assert!(BinarySemaphore::open(&region, 1024).unwrap().try_wait());
    let barrier = Barrier::open_or_create(&region, 2048, 1).unwrap();
    assert!(barrier.wait().unwrap().leader);
}

#[test]
fn open_or_create_takes_over_from_an_initialiser_that_died() {
    let region = Region::create(4096).unwrap();
    // A process that began initialising (the marker, its pid) and is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    region.write(0, &[u32::MAX, pid]).unwrap();
    let mutex = RobustMutex::open_or_create(&region, 0, 7u64).unwrap();
    assert_eq!(mutex.lock().unwrap().recover(|_| unreachable!()).unwrap().load(), 7);
    assert!(
        RobustMutex::<u64>::open(&region, 0).is_ok(),
        "published after the take-over"
    );
}
