//! One-way calls as datagrams across real processes: a receiver child serves a generated
//! service's one-way methods on a Unix datagram socket and on UDP, and answers questions
//! about what it got over a Unix stream socket. The parent sends through the generated
//! `EventsDatagrams`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use procwire_rpc::datagram::{self, DatagramError, Receiver};
use procwire_rpc::transport::unix;
use procwire_rpc::Server;

const LIMIT: Duration = Duration::from_secs(30);
const ROLE_ENV: &str = "PROCWIRE_DATAGRAM_TEST_DIR";

#[procwire_macros::service]
trait Events {
    /// An event: fire and forget.
    #[procwire(oneway)]
    fn note(&self, text: String);
    /// The notes received once there are at least `count` (or after 30 s, those there are).
    fn seen(&self, count: usize) -> Vec<String>;
}

#[derive(Default)]
struct Log {
    notes: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Events for Log {
    fn note(&self, text: String) {
        self.notes.lock().unwrap().push(text);
        self.changed.notify_all();
    }

    fn seen(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut notes = self.notes.lock().unwrap();
        while notes.len() < count && Instant::now() < deadline {
            notes = self.changed.wait_timeout(notes, LIMIT).unwrap().0;
        }
        notes.clone()
    }
}

/// The receiver child: datagrams on DIR/events.sock and on UDP (its port printed), queries on
/// DIR/query.sock; ends when its stdin closes.
fn child(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let log = std::sync::Arc::new(EventsServer::new(Log::default()));
    let unix_server = datagram::serve(Receiver::bind_unix(dir.join("events.sock"))?, log.clone())?;
    let udp = Receiver::bind_udp("127.0.0.1:0")?;
    let port = udp.udp_addr().ok_or("a UDP address")?.port();
    let udp_server = datagram::serve(udp, log.clone())?;
    let query = Server::new(log).spawn(unix::Listener::bind(dir.join("query.sock"))?)?;
    println!("ready {port}");
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    drop((unix_server, udp_server));
    query.stop()?;
    Ok(())
}

struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn spawn(dir: &Path) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the receiver");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(LIMIT).expect("the receiver is ready in time");
        let port = line.trim().strip_prefix("ready ").expect("ready PORT").parse().unwrap();
        Peer { child, port }
    }

    fn seen(&self, dir: &Path, count: usize) -> Vec<String> {
        let client = EventsClient::connect(unix::connect(dir.join("query.sock")).unwrap()).unwrap();
        client.seen(count).unwrap()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn numbered(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag} {i}")).collect()
}

fn events_over_a_unix_datagram_socket_arrive_whole_and_in_order() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let peer = Peer::spawn(dir.path());
    let events = EventsDatagrams::unix(dir.path().join("events.sock"))?;
    let notes = numbered(200, "unix");
    for note in &notes {
        events.note(note.clone())?;
    }
    assert_eq!(peer.seen(dir.path(), notes.len()), notes);
    Ok(())
}

fn events_over_udp_arrive_and_an_oversized_one_is_refused_at_the_sender() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let peer = Peer::spawn(dir.path());
    let events = EventsDatagrams::udp(("127.0.0.1", peer.port))?;
    let err = events.note("x".repeat(2000)).unwrap_err();
    assert!(matches!(err, DatagramError::TooLarge { max: 1472, .. }), "{err}");
    // UDP promises no order; on one host, with a receive buffer far larger than these, none
    // is lost.
    let notes = numbered(20, "udp");
    for note in &notes {
        events.note(note.clone())?;
    }
    let mut seen = peer.seen(dir.path(), notes.len());
    seen.sort();
    let mut expected = notes.clone();
    expected.sort();
    assert_eq!(seen, expected, "nothing oversized arrived, everything else did");
    Ok(())
}

fn a_unix_sender_learns_its_receiver_is_gone_and_reaches_the_next_one() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path: PathBuf = dir.path().join("events.sock");
    let events = EventsDatagrams::unix(&path)?;
    {
        let peer = Peer::spawn(dir.path());
        events.note("first".into())?;
        assert_eq!(peer.seen(dir.path(), 1), ["first"]);
    }
    // The receiver exited (and removed its socket file): the send says so.
    let err = events.note("nobody".into()).unwrap_err();
    assert!(matches!(err, DatagramError::NoReceiver { .. }), "{err}");
    // A new receiver at the same path: the same sender reaches it.
    let peer = Peer::spawn(dir.path());
    events.note("second".into())?;
    assert_eq!(peer.seen(dir.path(), 1), ["second"]);
    Ok(())
}

fn main() {
    if let Some(dir) = std::env::var_os(ROLE_ENV) {
        if let Err(e) = child(Path::new(&dir)) {
            eprintln!("receiver: {e}");
            std::process::exit(2);
        }
        return;
    }
    let trials = vec![
        Trial::test(
            "events_over_a_unix_datagram_socket_arrive_whole_and_in_order",
            events_over_a_unix_datagram_socket_arrive_whole_and_in_order,
        ),
        Trial::test(
            "events_over_udp_arrive_and_an_oversized_one_is_refused_at_the_sender",
            events_over_udp_arrive_and_an_oversized_one_is_refused_at_the_sender,
        ),
        Trial::test(
            "a_unix_sender_learns_its_receiver_is_gone_and_reaches_the_next_one",
            a_unix_sender_learns_its_receiver_is_gone_and_reaches_the_next_one,
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
