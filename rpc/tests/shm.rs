//! The shared-memory primitives across real processes: this test binary re-run in child
//! roles, all mapping one region that the parent creates and passes by inheritance.

#[path = "support/children.rs"]
mod children;

use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Zeroable;
use std::time::{Duration, Instant};

use children::{Kid, LIMIT};
use libtest_mimic::{Arguments, Failed, Trial};
use procwire_rpc::shm::{
    Barrier, BinarySemaphore, EnvProblem, Locked, Region, RobustMutex, Semaphore, ShmError, Spinlock,
};

type Outcome = Result<(), Failed>;

/// The name the region is passed to children under.
const NAME: &str = "test";
/// Where the primitive under test is; the start barrier, the counters.
const PRIMITIVE: usize = 0;
const START: usize = 1024;
const IN_USE: usize = 2048;
const MAX_IN_USE: usize = 2056;
const ARRIVALS: usize = 2064;
const REGION: usize = 4096;

const PROCESSES: u32 = 4;
const INCREMENTS: u64 = 10_000;

/// The data the holder-death test protects: a count and a flag set while it is changed.
type Guarded = [u64; 2];

fn spawn(region: &Region, role: &str) -> Kid {
    Kid::spawn(role, |cmd| region.pass_to(cmd, NAME).expect("pass the region"))
}

fn spawn_many(region: &Region, role: &str, n: u32) -> Vec<Kid> {
    (0..n).map(|_| spawn(region, role)).collect()
}

fn counter(region: &Region, offset: usize) -> &AtomicU64 {
    region.atomic(offset).expect("a counter in the region")
}

fn four_processes_incrementing_under_the_robust_mutex_lose_no_increment() -> Outcome {
    let region = Region::create(REGION)?;
    let mutex = RobustMutex::create(&region, PRIMITIVE, 0u64)?;
    Barrier::create(&region, START, PROCESSES)?;
    for kid in spawn_many(&region, "mutex-count", PROCESSES) {
        kid.succeed();
    }
    let total = mutex.lock()?.recover(|_| panic!("nobody died"))?.load();
    assert_eq!(total, u64::from(PROCESSES) * INCREMENTS);
    Ok(())
}

fn processes_racing_to_open_or_create_in_a_zeroed_region_share_one_mutex() -> Outcome {
    // As a supervisor hands it over: zeroed, nothing created yet.
    let region = Region::create(REGION)?;
    for kid in spawn_many(&region, "open-or-create", PROCESSES) {
        kid.succeed();
    }
    let mutex = RobustMutex::<u64>::open(&region, PRIMITIVE)?;
    let total = mutex.lock()?.recover(|_| panic!("nobody died"))?.load();
    assert_eq!(
        total,
        u64::from(PROCESSES) * 1_000,
        "a second creation would have reset the count"
    );
    Ok(())
}

fn a_holder_killed_while_holding_the_mutex_is_reported_to_the_next_locker_who_repairs_it() -> Outcome {
    let region = Region::create(REGION)?;
    let mutex = RobustMutex::<Guarded>::create(&region, PRIMITIVE, [41, 0])?;
    let holder = spawn(&region, "mutex-hold");
    holder.expect_line("holding");
    holder.kill();
    let Locked::OwnerDied(recovery) = mutex.lock()? else {
        return Err("the next locker was not told that the holder died".into());
    };
    assert_eq!(
        recovery.load(),
        [42, 1],
        "the dead holder's half-done update is visible"
    );
    recovery.store(&[42, 0]);
    drop(recovery.consistent()?);
    // Repaired: another process now locks normally and sees the repair.
    let checker = spawn(&region, "mutex-check");
    assert_eq!(checker.next_line(), "held 42 0");
    checker.succeed();
    assert!(!mutex.lock()?.owner_died());
    Ok(())
}

/// What the random-kill test protects: a count, and how many increments each slot's
/// processes finished; `count == sum(done)` unless a holder died between the two stores.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Tally {
    count: u64,
    done: [u64; 4],
}

const KILLS: usize = 20;
const STOP: usize = 2072;
const HOLDER: usize = 2080;
const REPAIRS: usize = 2088;

fn killing_lock_holders_at_random_never_wedges_the_mutex_nor_loses_a_count() -> Outcome {
    let region = Region::create(REGION)?;
    let mutex = RobustMutex::create(&region, PRIMITIVE, Tally::zeroed())?;
    let spawn_slot = |slot: usize| {
        let kid = spawn(&region, &format!("tally {slot}"));
        kid.expect_line("running");
        kid
    };
    let mut kids: Vec<Kid> = (0..4).map(spawn_slot).collect();
    let holder = counter(&region, HOLDER);
    for k in 0..KILLS {
        // Most likely the process holding the lock now (each holds it most of the time).
        let pid = holder.load(Ordering::SeqCst);
        let slot = kids.iter().position(|kid| u64::from(kid.pid()) == pid).unwrap_or(k % 4);
        let replacement = spawn_slot(slot);
        std::mem::replace(&mut kids[slot], replacement).kill();
    }
    counter(&region, STOP).store(1, Ordering::SeqCst);
    for kid in kids {
        kid.succeed();
    }
    let tally = mutex.lock()?.recover(|t| t.count = t.done.iter().sum())?.load();
    assert_eq!(
        tally.count,
        tally.done.iter().sum::<u64>(),
        "every repair restored the count"
    );
    let repairs = counter(&region, REPAIRS).load(Ordering::SeqCst);
    assert!(
        repairs >= 1,
        "of {KILLS} holders killed, none was seen dead by the next locker"
    );
    Ok(())
}

fn the_semaphore_never_admits_more_processes_than_its_permits() -> Outcome {
    let region = Region::create(REGION)?;
    let sem = Semaphore::create(&region, PRIMITIVE, 2)?;
    Barrier::create(&region, START, PROCESSES)?;
    for kid in spawn_many(&region, "sem-work", PROCESSES) {
        kid.succeed();
    }
    let max = counter(&region, MAX_IN_USE).load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "{max} processes were in at once with 2 permits");
    assert_eq!(counter(&region, IN_USE).load(Ordering::SeqCst), 0);
    assert_eq!(sem.available()?, 2, "every permit came back");
    Ok(())
}

fn a_permit_held_by_a_killed_process_comes_back_on_reclaim() -> Outcome {
    let region = Region::create(REGION)?;
    let sem = Semaphore::create(&region, PRIMITIVE, 1)?;
    let holder = spawn(&region, "sem-hold");
    holder.expect_line("holding");
    let pid = holder.pid();
    assert!(sem.try_acquire()?.is_none(), "the child holds the only permit");
    holder.kill();
    assert_eq!(sem.reclaim(pid)?, 1);
    assert!(sem.try_acquire()?.is_some(), "the permit came back");
    Ok(())
}

fn a_waiter_gets_the_permit_of_a_killed_holder_without_a_reclaim() -> Outcome {
    let region = Region::create(REGION)?;
    let sem = Semaphore::create(&region, PRIMITIVE, 1)?;
    let holder = spawn(&region, "sem-hold");
    holder.expect_line("holding");
    holder.kill();
    // The waiter checks the holders' liveness as it waits.
    let permit = sem.acquire_timeout(LIMIT)?;
    assert!(permit.is_some(), "the dead holder's permit never came back");
    Ok(())
}

fn no_process_passes_a_barrier_generation_before_all_have_arrived() -> Outcome {
    let region = Region::create(REGION)?;
    Barrier::create(&region, PRIMITIVE, PROCESSES)?;
    // Each child checks, after passing generation k, that all arrivals of generation k
    // were counted; it fails (panics) otherwise.
    for kid in spawn_many(&region, "barrier", PROCESSES) {
        kid.succeed();
    }
    assert_eq!(
        counter(&region, ARRIVALS).load(Ordering::SeqCst),
        u64::from(PROCESSES) * ROUNDS
    );
    Ok(())
}

const ROUNDS: u64 = 300;

fn four_processes_incrementing_under_the_spinlock_lose_no_increment() -> Outcome {
    let region = Region::create(REGION)?;
    let lock = Spinlock::create(&region, PRIMITIVE, 0u64)?;
    Barrier::create(&region, START, PROCESSES)?;
    for kid in spawn_many(&region, "spin-count", PROCESSES) {
        kid.succeed();
    }
    assert_eq!(lock.lock().load(), u64::from(PROCESSES) * INCREMENTS);
    Ok(())
}

const PINGS: u64 = 2_000;

fn binary_semaphores_carry_signals_both_ways_between_two_processes() -> Outcome {
    let region = Region::create(REGION)?;
    let ping = BinarySemaphore::create(&region, PRIMITIVE, false)?;
    let pong = BinarySemaphore::create(&region, START, false)?;
    let turn = counter(&region, IN_USE);
    let kid = spawn(&region, "pong");
    for i in 0..PINGS {
        turn.store(2 * i + 1, Ordering::Relaxed);
        ping.post();
        assert!(pong.wait_timeout(LIMIT), "no pong {i}");
        // The child saw our store (post releases, wait acquires) and answered with its own.
        assert_eq!(turn.load(Ordering::Relaxed), 2 * i + 2);
    }
    kid.succeed();
    Ok(())
}

fn timeouts_on_primitives_held_by_another_process_return_after_the_timeout() -> Outcome {
    let region = Region::create(REGION)?;
    let mutex = RobustMutex::<Guarded>::create(&region, PRIMITIVE, [0, 0])?;
    let sem = Semaphore::create(&region, START, 1)?;
    let holder = spawn(&region, "hold-both");
    holder.expect_line("holding");
    let wait = Duration::from_millis(200);
    let start = Instant::now();
    assert!(mutex.lock_timeout(wait)?.is_none());
    assert!(start.elapsed() >= wait);
    assert!(mutex.try_lock()?.is_none());
    let start = Instant::now();
    assert!(sem.acquire_timeout(wait)?.is_none());
    assert!(start.elapsed() >= wait);
    holder.succeed();
    // Released normally: both are free again.
    assert!(!mutex.lock()?.owner_died());
    assert!(sem.try_acquire()?.is_some());
    Ok(())
}

fn a_child_claims_a_passed_region_once_and_sees_the_parents_writes() -> Outcome {
    let region = Region::create(REGION)?;
    region.write(100, b"from the parent")?;
    let kid = spawn(&region, "claim");
    assert_eq!(
        kid.next_line(),
        "from the parent; again: this process already claimed it"
    );
    kid.succeed();
    Ok(())
}

/// The child roles.
fn child(args: &[String]) {
    let region = Region::from_env(NAME).expect("the region passed by the parent");
    let start = || {
        Barrier::open(&region, START)
            .expect("start barrier")
            .wait()
            .expect("start")
    };
    match args[0].as_str() {
        "mutex-count" => {
            let mutex = RobustMutex::<u64>::open(&region, PRIMITIVE).unwrap();
            start();
            for _ in 0..INCREMENTS {
                let guard = mutex.lock().unwrap().recover(|_| panic!("nobody died")).unwrap();
                guard.update(|n| *n += 1);
            }
        }
        "open-or-create" => {
            let mutex = RobustMutex::open_or_create(&region, PRIMITIVE, 0u64).unwrap();
            let spin = Spinlock::open_or_create(&region, START, 0u64).unwrap();
            for _ in 0..1_000 {
                mutex
                    .lock()
                    .unwrap()
                    .recover(|_| panic!("nobody died"))
                    .unwrap()
                    .update(|n| *n += 1);
                spin.lock().update(|n| *n += 1);
            }
        }
        "tally" => {
            let slot: usize = args[1].parse().unwrap();
            let mutex = RobustMutex::<Tally>::open(&region, PRIMITIVE).unwrap();
            let (stop, holder, repairs) = (
                counter(&region, STOP),
                counter(&region, HOLDER),
                counter(&region, REPAIRS),
            );
            println!("running");
            while stop.load(Ordering::SeqCst) == 0 {
                let guard = match mutex.lock().unwrap() {
                    Locked::Held(guard) => guard,
                    Locked::OwnerDied(recovery) => {
                        repairs.fetch_add(1, Ordering::SeqCst);
                        recovery.update(|t| t.count = t.done.iter().sum());
                        recovery.consistent().unwrap()
                    }
                };
                holder.store(u64::from(std::process::id()), Ordering::SeqCst);
                // Work under the lock, so that a kill most likely finds this process holding it.
                for _ in 0..20_000 {
                    std::hint::spin_loop();
                }
                guard.update(|t| t.done[slot] += 1);
                guard.update(|t| t.count += 1);
            }
        }
        "mutex-hold" => {
            let mutex = RobustMutex::<Guarded>::open(&region, PRIMITIVE).unwrap();
            let guard = mutex.lock().unwrap().recover(|_| panic!("nobody died")).unwrap();
            guard.update(|[count, dirty]| {
                *count += 1;
                *dirty = 1;
            });
            println!("holding");
            Kid::park_until_released();
        }
        "mutex-check" => {
            let mutex = RobustMutex::<Guarded>::open(&region, PRIMITIVE).unwrap();
            let locked = mutex.lock().unwrap();
            match locked {
                Locked::Held(guard) => {
                    let [count, dirty] = guard.load();
                    println!("held {count} {dirty}");
                }
                Locked::OwnerDied(_) => println!("owner died"),
            }
        }
        "sem-work" => {
            let sem = Semaphore::open(&region, PRIMITIVE).unwrap();
            let (in_use, max) = (counter(&region, IN_USE), counter(&region, MAX_IN_USE));
            start();
            for _ in 0..2_000 {
                let permit = sem.acquire().unwrap();
                let now = in_use.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                std::thread::yield_now(); // let the others try while we are in
                in_use.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
            }
        }
        "sem-hold" => {
            let sem = Semaphore::open(&region, PRIMITIVE).unwrap();
            let _permit = sem.acquire().unwrap();
            println!("holding");
            Kid::park_until_released();
        }
        "hold-both" => {
            let mutex = RobustMutex::<Guarded>::open(&region, PRIMITIVE).unwrap();
            let sem = Semaphore::open(&region, START).unwrap();
            let _guard = mutex.lock().unwrap();
            let _permit = sem.acquire().unwrap();
            println!("holding");
            Kid::park_until_released();
        }
        "barrier" => {
            let barrier = Barrier::open(&region, PRIMITIVE).unwrap();
            let arrivals = counter(&region, ARRIVALS);
            let parties = u64::from(barrier.parties());
            for k in 0..ROUNDS {
                arrivals.fetch_add(1, Ordering::SeqCst);
                let passed = barrier.wait().unwrap();
                assert_eq!(u64::from(passed.generation), k);
                let seen = arrivals.load(Ordering::SeqCst);
                assert!(
                    seen >= parties * (k + 1),
                    "passed generation {k} having seen {seen} arrivals"
                );
            }
        }
        "spin-count" => {
            let lock = Spinlock::<u64>::open(&region, PRIMITIVE).unwrap();
            start();
            for _ in 0..INCREMENTS {
                lock.lock().update(|n| *n += 1);
            }
        }
        "pong" => {
            let ping = BinarySemaphore::open(&region, PRIMITIVE).unwrap();
            let pong = BinarySemaphore::open(&region, START).unwrap();
            let turn = counter(&region, IN_USE);
            for i in 0..PINGS {
                assert!(ping.wait_timeout(LIMIT), "no ping {i}");
                assert_eq!(turn.load(Ordering::Relaxed), 2 * i + 1);
                turn.store(2 * i + 2, Ordering::Relaxed);
                pong.post();
            }
        }
        "claim" => {
            let mut text = [0u8; 15];
            region.read_bytes(100, &mut text).unwrap();
            let again = match Region::from_env(NAME) {
                Err(ShmError::Env {
                    problem: EnvProblem::AlreadyClaimed,
                    ..
                }) => EnvProblem::AlreadyClaimed.to_string(),
                other => format!("unexpected: {other:?}"),
            };
            println!("{}; again: {again}", String::from_utf8_lossy(&text));
        }
        other => panic!("unknown child role {other}"),
    }
}

fn main() {
    if let Some(args) = children::role() {
        child(&args);
        return;
    }
    // Each test by its function's name.
    macro_rules! trials {
        ($($test:ident),* $(,)?) => { vec![$(Trial::test(stringify!($test), $test)),*] };
    }
    let trials = trials![
        four_processes_incrementing_under_the_robust_mutex_lose_no_increment,
        processes_racing_to_open_or_create_in_a_zeroed_region_share_one_mutex,
        a_holder_killed_while_holding_the_mutex_is_reported_to_the_next_locker_who_repairs_it,
        killing_lock_holders_at_random_never_wedges_the_mutex_nor_loses_a_count,
        the_semaphore_never_admits_more_processes_than_its_permits,
        a_permit_held_by_a_killed_process_comes_back_on_reclaim,
        a_waiter_gets_the_permit_of_a_killed_holder_without_a_reclaim,
        no_process_passes_a_barrier_generation_before_all_have_arrived,
        four_processes_incrementing_under_the_spinlock_lose_no_increment,
        binary_semaphores_carry_signals_both_ways_between_two_processes,
        timeouts_on_primitives_held_by_another_process_return_after_the_timeout,
        a_child_claims_a_passed_region_once_and_sees_the_parents_writes,
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
