//! Rolling restarts of a supervised pool under load: into a new version of the same
//! service, and into a build whose service has one more method.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use libtest_mimic::Failed;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire::rpc::RpcError;
use procwire::supervisor::manifest::Manifest;

use super::{Calc, CalcPool, MyCalc, StopOnDrop};

/// The next build of `Calc`: one more method.
pub mod next {
    #[procwire::service]
    pub trait Calc {
        fn add(&self, a: i64, b: i64) -> i64;
        #[procwire(idempotent)]
        fn pid(&self) -> u32;
        #[procwire(idempotent)]
        fn version(&self) -> String;
        #[procwire(idempotent)]
        fn mul(&self, a: i64, b: i64) -> i64;
    }
}

impl next::Calc for MyCalc {
    fn add(&self, a: i64, b: i64) -> i64 {
        Calc::add(self, a, b)
    }
    fn pid(&self) -> u32 {
        Calc::pid(self)
    }
    fn version(&self) -> String {
        Calc::version(self)
    }
    fn mul(&self, a: i64, b: i64) -> i64 {
        a * b
    }
}

/// A pool of four `calc` workers started with `VERSION=1`, restarted one at a time (a
/// reload by HUP) into `VERSION=to` while eight callers run `call` on an old client
/// (`CalcPool`) and the test runs `meanwhile` with the supervisor's endpoints. Returns
/// how many calls failed (each is printed), once every new worker has reported in.
fn roll_under_load(
    to: &str,
    call: impl Fn(&CalcPool, i64) -> Result<(), RpcError> + Sync,
    meanwhile: impl FnOnce(&[procwire::rpc::Endpoint], &AtomicBool) + Send,
) -> Result<usize, Failed> {
    let dir = tempfile::tempdir()?;
    let report = std::os::unix::net::UnixDatagram::bind(dir.path().join("report"))?;
    report.set_read_timeout(Some(Duration::from_secs(30)))?;
    let manifest_text = |version: &str| {
        format!(
            r#"
[supervisor]
name = "rolling"

[pool.calc]
role = "calc"
workers = 4
ready = "notify"
listen = ["unix:calc-{{index}}.sock"]
backoff = {{ initial = "0s", max = "1s", factor = 2.0, jitter = 0.0, reset_after = "60s" }}
env = {{ VERSION = "{version}", REPORT = "{}" }}
"#,
            dir.path().join("report").display()
        )
    };
    let path = dir.path().join("rolling.toml");
    std::fs::write(&path, manifest_text("1"))?;
    let supervisor = procwire::Supervisor::start(Manifest::load(&path)?)?;
    let endpoints = supervisor.endpoints("calc");
    let pool = CalcPool::new(endpoints.clone());
    assert_eq!(pool.version()?, "1");
    let (answers, failures) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (first_tx, first_rx) = mpsc::channel::<()>();
    let (done, upgraded) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| -> Result<(), Failed> {
        for t in 0..8 {
            let (pool, answers, failures, done, first_tx, call) =
                (&pool, &answers, &failures, &done, first_tx.clone(), &call);
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    match call(pool, t) {
                        Ok(()) => {
                            answers.fetch_add(1, Ordering::Relaxed);
                            let _ = first_tx.send(());
                        }
                        Err(e) => {
                            eprintln!("a call failed during the rolling restart: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        // The callers stop however this scope ends, so that a missed report fails the test
        // instead of leaving it waiting for callers that never stop.
        let _stop_callers = StopOnDrop(&done);
        // Every caller is under way before the restart begins.
        for _ in 0..8 {
            first_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("every caller gets going");
        }
        s.spawn(|| meanwhile(&endpoints, &upgraded));
        let _upgraded = StopOnDrop(&upgraded);
        // The new version, applied by HUP: the workers restart one at a time.
        std::fs::write(&path, manifest_text(to))?;
        kill(Pid::this(), Signal::SIGHUP)?;
        let mut buf = [0u8; 16];
        for _ in 0..4 {
            report
                .recv(&mut buf)
                .expect("each new worker reports within the deadline");
        }
        Ok(())
    })?;
    assert!(
        answers.load(Ordering::Relaxed) >= 8,
        "every caller was answered before the restart began"
    );
    let versions: BTreeSet<String> = (0..8).map(|_| pool.version()).collect::<Result<_, _>>()?;
    assert_eq!(
        versions,
        BTreeSet::from([to.to_owned()]),
        "every worker runs the new version"
    );
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(failures.into_inner())
}

pub fn a_rolling_restart_through_supervisor_owned_sockets_fails_no_call() -> Result<(), Failed> {
    let version = |pool: &CalcPool, _| {
        let v = pool.version()?;
        assert!(v == "1" || v == "2", "{v}");
        Ok(())
    };
    let failures = roll_under_load("2", version, |_, _| {})?;
    assert_eq!(failures, 0, "no call failed during the rolling restart");
    Ok(())
}

pub fn a_rolling_upgrade_that_adds_a_method_fails_no_call_of_old_clients() -> Result<(), Failed> {
    let next_n = std::sync::atomic::AtomicI64::new(0);
    let old_calls = |pool: &CalcPool, t: i64| {
        // `add` is not idempotent: only a call that did not run may go elsewhere.
        let n = next_n.fetch_add(1, Ordering::Relaxed);
        assert_eq!(pool.add(t, n)?, t + n, "a right answer or none");
        let v = pool.version()?;
        assert!(v == "1" || v == "next", "{v}");
        Ok(())
    };
    // A new client meanwhile: `mul` is answered by the upgraded workers, and refused unsent
    // while none is there yet, never failed otherwise.
    let (answered, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let new_client = |endpoints: &[procwire::rpc::Endpoint], upgraded: &AtomicBool| {
        let pool = next::CalcPool::new(endpoints.to_vec());
        while !upgraded.load(Ordering::Relaxed) {
            match pool.mul(6, 7) {
                Ok(product) => {
                    assert_eq!(product, 42);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                Err(RpcError::Incompatible {
                    method: "mul",
                    theirs: None,
                    ..
                }) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => panic!("a call of the new method failed otherwise: {e}"),
            }
        }
    };
    let failures = roll_under_load("next", old_calls, new_client)?;
    assert_eq!(failures, 0, "no call of an old client failed during the upgrade");
    assert!(
        answered.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed) > 0,
        "the new client called during the upgrade"
    );
    Ok(())
}
