//! Replies of bytes: a large byte string is received straight into the buffer the caller
//! gets, over every stream transport and shared memory, and a server that lies about one,
//! cuts one short or dies sending one gives the caller a clear error.

use procwire_rpc::serde_bytes::ByteBuf;
use procwire_rpc::{Client, RpcError};

use super::{connect, soon, Outcome};
use crate::support::*;

/// The reply to a 1 MiB echo (and to a 3 MiB `grow`, which the server builds) is the very
/// buffer the receiver read the bytes into: no copy between the transport and the caller.
/// Noise and message queues keep their copy (a decrypted or whole-message buffer), and give
/// the same bytes.
pub(crate) fn a_large_reply_of_bytes_is_the_buffer_it_was_received_into(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    for round in 0..3 {
        let back = client
            .call::<_, ByteBuf>(ECHO, &ByteBuf::from(data.clone()), soon())?
            .into_vec();
        assert!(back == data, "round {round}: the echo came back different");
        if kind.splits_replies() {
            assert_eq!(
                back.as_ptr() as usize,
                procwire_rpc::__private::last_split_bytes(),
                "round {round}: the reply is not the buffer its bytes were received into"
            );
        }
    }
    let grown = client.call::<_, ByteBuf>(GROW, &(3u64 << 20), soon())?.into_vec();
    assert!(grown.len() == 3 << 20 && grown.iter().all(|&b| b == 7), "grow's reply");
    if kind.splits_replies() {
        assert_eq!(grown.as_ptr() as usize, procwire_rpc::__private::last_split_bytes());
    }
    // A small reply after them still arrives whole.
    let sum: i64 = client.call(ADD, &(2i64, 3i64), soon())?;
    assert_eq!(sum, 5);
    Ok(())
}

/// A server (a child process speaking raw frames over pipes) sends a reply of bytes that is
/// wrong in the way `mode` says; the echo fails with an error containing `expect`, at once.
fn bad_reply_of_bytes(mode: &str, expect: &str) -> Outcome {
    let mut peer = Peer::spawn_evil(mode);
    let client = Client::connect(peer.transport(), info())?;
    let err = client
        .call::<_, ByteBuf>(ECHO, &ByteBuf::from(vec![1; 10]), soon())
        .unwrap_err();
    assert!(
        !matches!(err, RpcError::DeadlineExceeded { .. }),
        "{mode}: the call waited out its deadline: {err}"
    );
    assert!(
        err.to_string().contains(expect),
        "{mode}: expected {expect:?} in: {err}"
    );
    Ok(())
}

/// A length prefix announcing more bytes than the frame holds.
pub(crate) fn a_byte_string_longer_than_its_frame_is_a_decode_error() -> Outcome {
    bad_reply_of_bytes("bytes-longer-than-frame", "cannot decode the reply of `echo`")
}

/// A length prefix near `u64::MAX`: refused without allocating what it claims.
pub(crate) fn a_byte_string_of_absurd_length_is_a_decode_error_without_allocating_it() -> Outcome {
    bad_reply_of_bytes("bytes-absurd-length", "cannot decode the reply of `echo`")
}

/// Fewer bytes announced than the frame holds: the rest is not silently dropped.
pub(crate) fn a_byte_string_shorter_than_its_frame_is_a_decode_error() -> Outcome {
    bad_reply_of_bytes("bytes-shorter-than-frame", "cannot decode the reply of `echo`")
}

/// The server closes its end halfway through the bytes.
pub(crate) fn a_byte_string_cut_short_fails_the_call_as_truncated() -> Outcome {
    bad_reply_of_bytes("bytes-truncated", "closed the connection mid-frame")
}

/// The server is SIGKILLed halfway through the bytes.
pub(crate) fn a_server_that_dies_inside_a_byte_string_fails_the_call_as_truncated() -> Outcome {
    bad_reply_of_bytes("bytes-then-die", "closed the connection mid-frame")
}
