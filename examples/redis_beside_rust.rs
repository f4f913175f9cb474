//! A program that is not Rust, supervised next to Rust workers: redis-server, which speaks
//! sd_notify (`--supervised systemd`) and runs unchanged, and a pool of Rust workers that
//! starts only once redis says it is ready.
//!
//! Run it with `cargo run --example redis_beside_rust` (it says so and exits if
//! redis-server is not installed).

use anyhow::Result;
use procwire::supervisor::manifest::{Condition, Endpoint, Manifest, Pool, Ready, SupervisorConfig};

#[procwire::service]
trait Cache {
    /// Where the worker would find redis.
    fn redis(&self) -> String;
}

struct Worker;

impl Cache for Worker {
    fn redis(&self) -> String {
        std::env::var("REDIS_SOCKET").unwrap_or_default()
    }
}

fn main() -> Result<()> {
    if procwire::role().as_deref() == Some("cache") {
        procwire::workers::Worker::new().serve(CacheServer::new(Worker))?;
        return Ok(());
    }
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("redis-server is not installed; this example needs it (apt-get install redis-server)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let redis_socket = dir.path().join("redis.sock");
    let db = Pool {
        ready: Ready::Notify,
        ..Pool::new(
            "db",
            [
                "redis-server",
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--supervised",
                "systemd",
            ]
            .into_iter()
            .map(String::from)
            .chain(["--unixsocket".into(), redis_socket.display().to_string()])
            .collect(),
        )
    };
    let mut cache = Pool {
        role: Some("cache".into()),
        workers: 2,
        ..Pool::new("cache", Vec::new())
    };
    cache.after = vec![("db".into(), Condition::Ready)];
    cache.listen = vec![Endpoint::Unix(dir.path().join("cache-{index}.sock"))];
    cache
        .env
        .insert("REDIS_SOCKET".into(), redis_socket.display().to_string());
    let manifest = Manifest {
        path: dir.path().join("redis.toml"),
        supervisor: SupervisorConfig {
            name: "redis-beside-rust".into(),
            shutdown_timeout: std::time::Duration::from_secs(10),
        },
        pools: vec![db, cache],
        shared: Vec::new(),
        queues: Vec::new(),
        topics: Vec::new(),
    };
    println!("== starting redis-server (sd_notify) and, once it is ready, two Rust workers");
    let supervisor = procwire::Supervisor::start(manifest)?;
    let pool = CachePool::new(supervisor.endpoints("cache"));
    println!("== a Rust worker answers; it was told redis is at {}", pool.redis()?);
    println!("== stopping: the workers first, then redis (reverse dependency order)");
    drop(pool);
    let code = supervisor.stop()?;
    println!("== done: the supervisor exited with code {code}");
    Ok(())
}
