//! The kernel's message queue limits, hit across real processes: each error names the knob,
//! its value and what was asked for, where the kernel's own says only EINVAL, ENOSPC or
//! EMFILE.

#[allow(dead_code)]
#[macro_use]
#[path = "support/mod.rs"]
mod support;

use libtest_mimic::Failed;
use procwire_rpc::transport::mq;
use procwire_rpc::ErrorChain;
use support::*;

fn a_server_over_its_rlimit_msgqueue_refuses_the_client_naming_the_limit() -> Result<(), Failed> {
    // 1000 bytes hold no queue of 4 messages of 8 KiB.
    let peer = Peer::spawn_with_env(Kind::Mq, &[(RLIMIT_MSGQUEUE_ENV, "1000".into())]);
    let err = mq::connect(peer.addr()).unwrap_err();
    let text = ErrorChain(&err).to_string();
    let attrs = mq::Options::default().attrs;
    let asked = mq::limits::cost(attrs);
    assert!(
        text.contains(&format!(
            "its {asked} bytes ({} messages of {} bytes, and the kernel's bookkeeping) do not fit in what this \
             user's queues leave of RLIMIT_MSGQUEUE = 1000 bytes",
            attrs.max_messages, attrs.message_size
        )),
        "{text}"
    );
    // The listener lives on: the limit costs each connection, not the server.
    let again = ErrorChain(&mq::connect(peer.addr()).unwrap_err()).to_string();
    assert!(again.contains("RLIMIT_MSGQUEUE = 1000 bytes"), "{again}");
    assert_eq!(peer.stop(), Some(0));
    Ok(())
}

fn the_queue_past_queues_max_is_refused_naming_the_knob_and_its_value() -> Result<(), Failed> {
    let out = run_child("mq-fill", &[]);
    if let Some(why) = out.strip_prefix("skip: ") {
        println!("skipped: {why}");
        return Ok(());
    }
    let (made, refusal) = out
        .strip_prefix("made ")
        .and_then(|rest| rest.split_once(" refused "))
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    // A fresh IPC namespace starts with queues_max = 256; a process with CAP_SYS_RESOURCE
    // is not held to it, and meets RLIMIT_MSGQUEUE instead.
    if refusal.contains("RLIMIT_MSGQUEUE") {
        println!("queues_max does not bind this process (CAP_SYS_RESOURCE): {refusal}");
        return Ok(());
    }
    assert!(
        refusal.contains(&format!(
            "the system already holds /proc/sys/fs/mqueue/queues_max = {made} queues"
        )),
        "after {made}: {refusal}"
    );
    Ok(())
}

test_main![
    a_server_over_its_rlimit_msgqueue_refuses_the_client_naming_the_limit,
    the_queue_past_queues_max_is_refused_naming_the_knob_and_its_value,
];
