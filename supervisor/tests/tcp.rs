//! Authenticated TCP owned by the supervisor: `procwire up` binds a pool's
//! `listen = ["tcp:HOST:PORT"]` and hands it to the workers (this test binary, in the worker
//! role) by socket activation, with the path of the pool's `key_file` in
//! `PROCWIRE_KEY_FILE`; the worker wraps the socket in Noise, so that only a client with the
//! key is served. A `tcp+plain:` socket, named `POOL.plain`, is served without a key. The
//! `ready = "tcp:..."` probe works against the authenticated socket, unreported. And the
//! same rule under systemd's socket activation (`systemd-socket-activate`): a TCP socket is
//! served only with a key, unless it is named `NAME.plain`.

mod support;

use std::net::SocketAddr;

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::Signal;
use procwire_rpc::transport::noise::{self, NoiseKey};
use procwire_rpc::transport::tcp;
use procwire_rpc::{CallContext, ErrorChain};

use support::*;

/// Set in the workers' environment by the manifest.
const ROLE_ENV: &str = "PROCWIRE_TCP_TEST_ROLE";
/// The pool's key, as its file holds it.
const KEY_HEX: &str = "9f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

#[procwire_macros::service]
pub trait Calc {
    fn add(&self, a: i64, b: i64) -> i64;
    /// The name of the key the caller authenticated with.
    fn key_name(&self, ctx: &CallContext) -> Option<String>;
}

struct MyCalc;

impl Calc for MyCalc {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn key_name(&self, ctx: &CallContext) -> Option<String> {
        ctx.key_name().map(str::to_owned)
    }
}

/// The pool's key in `DIR/pool.key`, readable by its owner only.
fn write_key(dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    write_named_key(dir, "pool", KEY_HEX.as_bytes())
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The pid of `worker` (`calc.0`) once the supervisor says it is ready.
fn wait_ready(sup: &Supervisor, worker: &str) -> i64 {
    let line = sup.wait_until(&format!("{worker} ready"), |seen| {
        seen.lines
            .iter()
            .find(|l| l.text.contains(&format!("{worker} (pid ")) && l.text.ends_with("is ready"))
            .map(|l| l.text.clone())
    });
    number_after(&line, "(pid ")
}

fn a_supervised_tcp_pool_serves_only_clients_with_its_key_and_names_the_key() -> Result<(), Failed> {
    let dir = temp_dir();
    let key_path = write_key(dir.path())?;
    let (port, plain_port) = (free_port(), free_port());
    let exe = std::env::current_exe()?;
    let mut sup = Supervisor::start(
        dir.path(),
        "tcp",
        &format!(
            r#"
[pool.calc]
command = ["{exe}"]
ready = "tcp:127.0.0.1:{port}"
listen = ["tcp:127.0.0.1:{port}"]
key_file = "pool.key"
env = {{ {ROLE_ENV} = "worker" }}

[pool.open]
command = ["{exe}"]
ready = "notify"
listen = ["tcp+plain:127.0.0.1:{plain_port}"]
env = {{ {ROLE_ENV} = "worker" }}
"#,
            exe = exe.display()
        ),
    );
    let pid = wait_ready(&sup, "calc.0");
    wait_ready(&sup, "open.0");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;

    // The worker is told where the key is, never the key itself.
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains(&format!("PROCWIRE_KEY_FILE={}", key_path.display())),
        "the worker's environment names the key file"
    );
    assert!(
        !environ.contains(KEY_HEX),
        "the secret is not in the worker's environment"
    );
    assert!(
        environ.contains("LISTEN_FDNAMES=calc\0"),
        "the socket is not named plain"
    );

    // The right key: served, and the service sees the key's name (the file's stem).
    let key = NoiseKey::from_file(&key_path)?;
    let good = CalcClient::connect(noise::connect(addr, &key)?)?;
    assert_eq!(good.add(40, 2)?, 42);
    assert_eq!(good.key_name()?.as_deref(), Some("pool"));

    // A wrong key: refused before anything runs, and both sides say so.
    let wrong = NoiseKey::new("wrong", [0x11; 32]);
    let err = noise::connect(addr, &wrong).expect_err("a wrong key is refused");
    let text = ErrorChain(&err).to_string();
    assert!(text.contains("does not know this key"), "the client's side: {text}");
    let refused = sup.wait_for_containing("holds none of this server's keys");
    assert!(
        refused.starts_with("calc.0 | ")
            && refused.contains("refused a connection")
            && refused.contains("tcp:127.0.0.1:"),
        "the worker's side: {refused}"
    );

    // Plain TCP: refused too, with a handshake error on the client and a line in the log.
    let plain = tcp::connect(addr)?;
    let err = CalcClient::connect(plain).expect_err("a plain client is refused");
    let text = ErrorChain(&err).to_string();
    assert!(text.contains("closed the connection"), "the client's side: {text}");
    let refusals = |seen: &Seen| {
        seen.lines
            .iter()
            .filter(|l| l.text.starts_with("calc.0 | ") && l.text.contains("refused a connection"))
            .count()
    };
    sup.wait_until("a second refusal", |seen| (refusals(seen) >= 2).then_some(()));

    // The good client was served throughout, and a new one is served as well.
    assert_eq!(good.add(1, 2)?, 3);
    let again = CalcClient::connect(noise::connect(addr, &key)?)?;
    assert_eq!(again.key_name()?.as_deref(), Some("pool"));

    // The pool that asked for plain TCP serves a client without a key, which sees no key name.
    let open = CalcClient::connect(tcp::connect(("127.0.0.1", plain_port))?)?;
    assert_eq!(open.add(2, 2)?, 4);
    assert_eq!(open.key_name()?, None);

    // The readiness probe (`ready = "tcp:..."`) connected and hung up without a word: that
    // is not reported as a refused peer, only the two above are.
    assert_eq!(refusals(&sup.shared.lock()), 2, "{}", sup.output());
    drop((good, again, open));
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    Ok(())
}

/// A key file `DIR/NAME.key` holding `secret` (raw or hex), readable by its owner only.
fn write_named_key(dir: &std::path::Path, name: &str, secret: &[u8]) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{name}.key"));
    std::fs::write(&path, secret)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

fn a_pool_with_two_key_files_serves_clients_of_either_key_and_refuses_others() -> Result<(), Failed> {
    let dir = temp_dir();
    let new = write_named_key(dir.path(), "new", &[0x21; 32])?;
    let old = write_named_key(dir.path(), "old", &[0x43; 32])?;
    let port = free_port();
    let exe = std::env::current_exe()?;
    let mut sup = Supervisor::start(
        dir.path(),
        "rotate",
        &format!(
            r#"
[pool.calc]
command = ["{exe}"]
ready = "tcp:127.0.0.1:{port}"
listen = ["tcp:127.0.0.1:{port}"]
key_file = ["new.key", "old.key"]
env = {{ {ROLE_ENV} = "worker" }}
"#,
            exe = exe.display()
        ),
    );
    let pid = wait_ready(&sup, "calc.0");
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains(&format!("PROCWIRE_ACCEPT_KEY_FILES={}", old.display())),
        "the worker's environment names the second key file"
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    // Clients still on the old key and clients already on the new one are both served, and
    // the service sees which key each used.
    for (path, name) in [(&new, "new"), (&old, "old")] {
        let client = CalcClient::connect(noise::connect(addr, &NoiseKey::from_file(path)?)?)?;
        assert_eq!(client.add(20, 22)?, 42);
        assert_eq!(client.key_name()?.as_deref(), Some(name));
    }
    let err = noise::connect(addr, &NoiseKey::new("other", [0x65; 32])).expect_err("a third key is refused");
    let text = ErrorChain(&err).to_string();
    assert!(text.contains("does not know this key"), "{text}");
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    Ok(())
}

/// The lines of `stream`, as they come.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The next line containing `needle`; panics with the lines seen after [`DEADLINE`].
fn expect_line_with(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {needle:?} before the deadline; saw {seen:?}"),
        }
    }
}

/// Kills and reaps the child on the way out, whatever happened.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn a_socket_activated_worker_serves_tcp_only_with_a_key_unless_the_socket_is_named_plain() -> Result<(), Failed> {
    const TEST: &str = "a_socket_activated_worker_serves_tcp_only_with_a_key_unless_the_socket_is_named_plain";
    let activate = |port: u16, fdname: &str| -> std::io::Result<(Guard, std::sync::mpsc::Receiver<String>)> {
        let mut child = std::process::Command::new("systemd-socket-activate")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--fdname={fdname}"))
            .arg(format!("--setenv={ROLE_ENV}=worker"))
            .arg(std::env::current_exe()?)
            .env_remove("PROCWIRE_KEY")
            .env_remove("PROCWIRE_KEY_FILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let stderr = lines_of(child.stderr.take().expect("piped"));
        // It binds the socket and says so; on the first connection it becomes the worker
        // (exec, same pid) and hands it the listening socket as fd 3.
        expect_line_with(&stderr, "Listening on");
        Ok((Guard(child), stderr))
    };
    let port = free_port();
    let (mut worker, stderr) = match activate(port, "calc") {
        Ok(started) => started,
        Err(e) => {
            println!("skipping {TEST}: cannot run systemd-socket-activate: {e}");
            return Ok(());
        }
    };
    // A TCP socket not named plain, and no key: the worker does not serve it at all.
    let refused = CalcClient::connect(tcp::connect(("127.0.0.1", port))?).map(|calc| calc.add(1, 1));
    let said = expect_line_with(&stderr, "worker: cannot serve on");
    assert_eq!(
        said,
        format!(
            "worker: cannot serve on tcp:127.0.0.1:{port}: an inherited TCP socket not named NAME.plain needs a key: \
             no key: PROCWIRE_KEY_FILE (a key file) or PROCWIRE_KEY (64 hex digits) is not set"
        )
    );
    assert_eq!(worker.0.wait()?.code(), Some(3), "the worker exits instead of serving");
    assert!(!matches!(refused, Ok(Ok(_))), "the plain client was not served");

    // Named plain (`FileDescriptorName=calc.plain`), the same socket serves without a key.
    let port = free_port();
    let (worker, _stderr) = activate(port, "calc.plain")?;
    let calc = CalcClient::connect(tcp::connect(("127.0.0.1", port))?)?;
    assert_eq!(calc.add(2, 2)?, 4);
    assert_eq!(calc.key_name()?, None);
    drop(worker);
    Ok(())
}

/// The number of times `worker` (`calc.0`) said it is ready, once it is at least `n`.
fn wait_ready_times(sup: &Supervisor, worker: &str, n: usize) {
    sup.wait_until(&format!("{worker} ready {n} times"), |seen| {
        let ready = seen
            .lines
            .iter()
            .filter(|l| l.text.contains(&format!("{worker} (pid ")) && l.text.ends_with("is ready"))
            .count();
        (ready >= n).then_some(())
    });
}

fn a_reload_switching_a_listen_between_plain_and_authenticated_tcp_keeps_the_socket() -> Result<(), Failed> {
    let dir = temp_dir();
    let key_path = write_key(dir.path())?;
    let port = free_port();
    let exe = std::env::current_exe()?;
    let manifest = |listen: &str| {
        format!(
            r#"
[pool.calc]
command = ["{exe}"]
ready = "notify"
listen = ["{listen}"]
key_file = "pool.key"
env = {{ {ROLE_ENV} = "worker" }}
"#,
            exe = exe.display()
        )
    };
    let path = dir.path().join("switch.toml");
    let mut sup = Supervisor::start(dir.path(), "switch", &manifest(&format!("tcp+plain:127.0.0.1:{port}")));
    wait_ready_times(&sup, "calc.0", 1);
    let open = CalcClient::connect(tcp::connect(("127.0.0.1", port))?)?;
    assert_eq!(open.add(2, 2)?, 4);
    drop(open);

    // Plain to authenticated on the same address: the socket is handed over, not bound again
    // beside itself (which failed: address in use, and the reload was refused).
    std::fs::write(&path, manifest(&format!("tcp:127.0.0.1:{port}")))?;
    sup.signal(Signal::SIGHUP);
    sup.wait_for_containing("reloading the manifest");
    wait_ready_times(&sup, "calc.0", 2);
    assert!(
        !sup.output().contains("reload refused"),
        "the reload was applied: {}",
        sup.output()
    );
    let key = NoiseKey::from_file(&key_path)?;
    let good = CalcClient::connect(noise::connect(("127.0.0.1", port), &key)?)?;
    assert_eq!(good.key_name()?.as_deref(), Some("pool"));
    let plain = CalcClient::connect(tcp::connect(("127.0.0.1", port))?);
    assert!(plain.is_err(), "a plain client is refused once the listen says tcp:");
    drop(good);

    // And back: plain again, served without a key.
    std::fs::write(&path, manifest(&format!("tcp+plain:127.0.0.1:{port}")))?;
    sup.signal(Signal::SIGHUP);
    wait_ready_times(&sup, "calc.0", 3);
    let open = CalcClient::connect(tcp::connect(("127.0.0.1", port))?)?;
    assert_eq!(open.key_name()?, None);
    assert!(!sup.output().contains("reload refused"), "{}", sup.output());
    drop(open);
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    Ok(())
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("worker") {
        if let Err(e) = procwire_workers::Worker::new().serve(CalcServer::new(MyCalc)) {
            eprintln!("worker: {e}");
            std::process::exit(3);
        }
        return;
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "a_pool_with_two_key_files_serves_clients_of_either_key_and_refuses_others",
            a_pool_with_two_key_files_serves_clients_of_either_key_and_refuses_others,
        ),
        Trial::test(
            "a_supervised_tcp_pool_serves_only_clients_with_its_key_and_names_the_key",
            a_supervised_tcp_pool_serves_only_clients_with_its_key_and_names_the_key,
        ),
        Trial::test(
            "a_socket_activated_worker_serves_tcp_only_with_a_key_unless_the_socket_is_named_plain",
            a_socket_activated_worker_serves_tcp_only_with_a_key_unless_the_socket_is_named_plain,
        ),
        Trial::test(
            "a_reload_switching_a_listen_between_plain_and_authenticated_tcp_keeps_the_socket",
            a_reload_switching_a_listen_between_plain_and_authenticated_tcp_keeps_the_socket,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
