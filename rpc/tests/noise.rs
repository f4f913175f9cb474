//! TCP authenticated and encrypted with Noise, across real processes: the right key works,
//! a wrong key or no key is refused, with a clear error on both sides. (The conformance suite
//! also runs every case over `noise`.)

#[allow(dead_code)]
#[macro_use]
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use procwire_rpc::serde_bytes::ByteBuf;
use procwire_rpc::transport::noise::{self, NoiseKey};
use procwire_rpc::transport::tcp;
use procwire_rpc::{Client, ErrorChain};
use support::*;

type Outcome = Result<(), Failed>;

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(30))
}

fn the_right_key_round_trips_calls_and_a_mib_and_the_server_knows_its_name() -> Outcome {
    let mut peer = Peer::spawn(Kind::Noise);
    let client = Client::connect(peer.transport(), info())?;
    assert_eq!(client.call::<_, i64>(ADD, &(40i64, 2i64), soon())?, 42);
    let data = ByteBuf::from((0..1 << 20).map(|i: u32| (i * 7) as u8).collect::<Vec<u8>>());
    let back: ByteBuf = client.call(ECHO, &data, soon())?;
    assert!(back == data, "the 1 MiB echo came back different");
    let name: Option<String> = client.call(KEY_NAME, &(), soon())?;
    assert_eq!(name.as_deref(), Some(KEY_ENV));
    Ok(())
}

fn a_wrong_key_is_refused_on_both_sides() -> Outcome {
    let peer = Peer::spawn_logging_failures(Kind::Noise);
    let wrong = NoiseKey::new("wrong", [0x11; 32]);
    let err = noise::connect(peer.addr(), &wrong).expect_err("a wrong key is refused");
    let text = ErrorChain(&err).to_string();
    assert!(text.contains("authentication with"), "{text}");
    assert!(text.contains("does not know this key"), "{text}");
    // The server wrote its side before it closed the connection the client saw close.
    let failures = peer.failures();
    assert!(
        failures.contains("holds none of this server's keys") && failures.contains("tcp:127.0.0.1:"),
        "the server's side: {failures:?}"
    );
    Ok(())
}

fn a_plain_tcp_client_is_refused_by_a_noise_server() -> Outcome {
    let peer = Peer::spawn_logging_failures(Kind::Noise);
    let transport = tcp::connect(peer.addr())?;
    let err = Client::connect(transport, info()).expect_err("a plain client is refused");
    let text = ErrorChain(&err).to_string();
    assert!(text.contains("closed the connection"), "{text}");
    let failures = peer.failures();
    assert!(
        failures.contains("holds none of this server's keys"),
        "the server's side: {failures:?}"
    );
    Ok(())
}

fn a_noise_client_is_refused_by_a_plain_tcp_server() -> Outcome {
    let peer = Peer::spawn(Kind::Tcp);
    let err = noise::connect(peer.addr(), &suite_key()).expect_err("a plain server cannot authenticate");
    let text = ErrorChain(&err).to_string();
    assert!(text.contains("authentication with"), "{text}");
    Ok(())
}

fn a_tcp_endpoint_is_authenticated_with_the_key_from_the_environment() -> Outcome {
    let peer = Peer::spawn(Kind::Noise);
    // `tcp:` is Noise: the plain spelling is refused by this server, the old one is an alias.
    let endpoint = format!("tcp:{}", peer.addr());
    let sum = run_endpoint_client(&endpoint, &[("PROCWIRE_KEY", suite_key_hex())])?;
    assert_eq!(sum, "sum 42");
    let alias = format!("tcp+noise:{}", peer.addr());
    assert_eq!(
        run_endpoint_client(&alias, &[("PROCWIRE_KEY", suite_key_hex())])?,
        "sum 42"
    );
    let plain = format!("tcp+plain:{}", peer.addr());
    let refused = run_endpoint_client(&plain, &[("PROCWIRE_KEY", suite_key_hex())])
        .expect_err("a tcp+plain: client is not served by a tcp: server");
    assert!(refused.contains("closed the connection"), "{refused}");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("suite.key");
    std::fs::write(&file, suite_key_hex())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    }
    let sum = run_endpoint_client(&endpoint, &[("PROCWIRE_KEY_FILE", file.display().to_string())])?;
    assert_eq!(sum, "sum 42");
    let missing = run_endpoint_client(&endpoint, &[]).expect_err("no key, no connection");
    assert!(
        missing.contains("needs a key") && missing.contains("PROCWIRE_KEY_FILE"),
        "{missing}"
    );
    Ok(())
}

test_main![
    a_tcp_endpoint_is_authenticated_with_the_key_from_the_environment,
    the_right_key_round_trips_calls_and_a_mib_and_the_server_knows_its_name,
    a_wrong_key_is_refused_on_both_sides,
    a_plain_tcp_client_is_refused_by_a_noise_server,
    a_noise_client_is_refused_by_a_plain_tcp_server,
];
