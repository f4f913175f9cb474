//! `procwire_workers::shared` in a child process that was handed a region.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use libtest_mimic::{Arguments, Failed, Trial};
use procwire_rpc::shm::Region;

const ROLE: &str = "PROCWIRE_SHARED_TEST_ROLE";

fn a_worker_maps_a_region_by_name_once_and_sees_the_parents_memory() -> Result<(), Failed> {
    let region = Region::create(4096)?;
    region.atomic::<AtomicU64>(0)?.store(41, Ordering::Release);
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE, "child").stdout(Stdio::piped());
    region.pass_to(&mut cmd, "stats")?;
    let out = cmd.output()?;
    assert!(out.status.success(), "child failed: {}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "same mapping; missing: PROCWIRE_SHARED_nope does not name an inherited region: it is not set"
    );
    assert_eq!(
        region.atomic::<AtomicU64>(0)?.load(Ordering::Acquire),
        42,
        "the child's write is the parent's memory"
    );
    Ok(())
}

fn child() {
    let first = procwire_workers::shared("stats").expect("the region the parent passed");
    let again = procwire_workers::shared("stats").expect("the same region again");
    first.atomic::<AtomicU64>(0).unwrap().fetch_add(1, Ordering::AcqRel);
    let same = if std::ptr::eq(first, again) {
        "same mapping"
    } else {
        "two mappings"
    };
    let missing = procwire_workers::shared("nope").unwrap_err();
    println!("{same}; missing: {missing}");
}

fn main() {
    if std::env::var_os(ROLE).is_some() {
        child();
        return;
    }
    let trials = vec![Trial::test(
        "a_worker_maps_a_region_by_name_once_and_sees_the_parents_memory",
        a_worker_maps_a_region_by_name_once_and_sees_the_parents_memory,
    )];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
