//! [`Subscriber`]: one connection to a topic's publisher, with gap detection.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::{Control, Event, TopicError, CONTROL, MESSAGE, SETUP_TIMEOUT};
use crate::error::TransportError;
use crate::protocol::Frame;
use crate::transport::{unix, Transport};
use crate::wait::Wait;

/// Where the subscriber is in the stream.
#[derive(Debug)]
enum Reading<T> {
    /// The next message is expected to be numbered so.
    Expecting(u64),
    /// A gap was reported; this message comes next.
    AfterGap(u64, T),
    /// The connection ended.
    Ended,
}

/// Receives the messages of type `T` on one topic. Not `Clone`: each subscriber has its own
/// queue in the publisher.
#[derive(Debug)]
pub struct Subscriber<T> {
    transport: Transport,
    topic: String,
    path: PathBuf,
    epoch: u64,
    /// Whether it asked for the last value (and asks again on reconnecting).
    last: bool,
    reading: Reading<T>,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Subscriber<T> {
    /// Subscribes to topic `topic` at the publisher's socket `path`, from the next message
    /// published.
    pub fn connect(path: impl AsRef<Path>, topic: &str) -> Result<Self, TopicError> {
        Self::subscribe(path.as_ref(), topic, false)
    }

    /// Like [`connect`](Self::connect), but the first message is the last one published
    /// before this subscriber joined, if there was one.
    pub fn connect_with_last(path: impl AsRef<Path>, topic: &str) -> Result<Self, TopicError> {
        Self::subscribe(path.as_ref(), topic, true)
    }

    fn subscribe(path: &Path, topic: &str, last: bool) -> Result<Self, TopicError> {
        let transport_error = |source| TopicError::Transport {
            topic: topic.to_owned(),
            source,
        };
        let mut transport = unix::connect(path).map_err(transport_error)?;
        let hello = Control::Hello {
            topic: topic.to_owned(),
            type_name: std::any::type_name::<T>().to_owned(),
            last,
        };
        let mut frame = Frame::from_payload(&[CONTROL]);
        frame.encode(&hello).map_err(|source| TopicError::Codec {
            topic: topic.to_owned(),
            what: "encoded",
            source,
        })?;
        transport
            .send(&mut frame, Wait::timeout(SETUP_TIMEOUT))
            .map_err(transport_error)?;
        let answer = transport.recv(Wait::timeout(SETUP_TIMEOUT)).map_err(transport_error)?;
        let peer = transport.peer.name.clone();
        let control = match answer.split_first() {
            Some((&CONTROL, rest)) => postcard::from_bytes::<Control>(rest).ok(),
            _ => None,
        };
        match control {
            Some(Control::Welcome { epoch, next }) => Ok(Subscriber {
                transport,
                topic: topic.to_owned(),
                path: path.to_path_buf(),
                epoch,
                last,
                reading: Reading::Expecting(next),
                _type: PhantomData,
            }),
            Some(Control::Refused { reason }) => Err(TopicError::Refused {
                topic: topic.to_owned(),
                peer,
                reason,
            }),
            _ => Err(TopicError::Protocol {
                peer,
                detail: "expected a welcome or a refusal".into(),
            }),
        }
    }

    /// The publisher run this subscriber is connected to: a new epoch after a reconnection
    /// means the publisher restarted, and its numbering with it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The publisher's socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Subscribes again at the same socket (after [`Event::Ended`], say, when a supervisor
    /// restarts the publisher on the socket it keeps: the connect waits in its backlog for
    /// the new run, up to 10 s for its welcome). Compare [`epoch`](Self::epoch) before and
    /// after to learn whether it is a new run, whose numbering starts over.
    pub fn reconnect(&mut self) -> Result<(), TopicError> {
        *self = Self::subscribe(&self.path, &self.topic, self.last)?;
        Ok(())
    }

    /// The next event, waiting as `wait` allows: a message, a gap before one, or the end
    /// (returned again by every later call).
    pub fn recv(&mut self, wait: Wait) -> Result<Event<T>, TopicError> {
        match std::mem::replace(&mut self.reading, Reading::Ended) {
            Reading::Ended => return Ok(Event::Ended { reason: None }),
            Reading::AfterGap(seq, value) => {
                self.reading = Reading::Expecting(seq + 1);
                return Ok(Event::Message { seq, value });
            }
            Reading::Expecting(next) => self.reading = Reading::Expecting(next),
        }
        let payload = match self.transport.recv(wait) {
            Ok(payload) => payload,
            Err(TransportError::Closed { .. } | TransportError::Truncated { .. }) => {
                self.reading = Reading::Ended;
                return Ok(Event::Ended { reason: None });
            }
            Err(source) => {
                return Err(TopicError::Transport {
                    topic: self.topic.clone(),
                    source,
                })
            }
        };
        let protocol = |detail: &str| TopicError::Protocol {
            peer: self.transport.peer.name.clone(),
            detail: detail.to_owned(),
        };
        match payload.split_first() {
            Some((&MESSAGE, rest)) if rest.len() >= 8 => {
                let mut seq = [0; 8];
                seq.copy_from_slice(&rest[..8]);
                let seq = u64::from_le_bytes(seq);
                let value: T = crate::protocol::decode_exact(&rest[8..]).map_err(|source| TopicError::Codec {
                    topic: self.topic.clone(),
                    what: "decoded",
                    source,
                })?;
                let Reading::Expecting(next) = self.reading else {
                    unreachable!("set above")
                };
                if seq < next {
                    return Err(protocol("a sequence number went backwards"));
                }
                if seq > next {
                    self.reading = Reading::AfterGap(seq, value);
                    return Ok(Event::Gap {
                        missed: seq - next,
                        next: seq,
                    });
                }
                self.reading = Reading::Expecting(seq + 1);
                Ok(Event::Message { seq, value })
            }
            Some((&CONTROL, rest)) => match postcard::from_bytes::<Control>(rest) {
                Ok(Control::Ended { reason }) => {
                    self.reading = Reading::Ended;
                    Ok(Event::Ended { reason: Some(reason) })
                }
                _ => Err(protocol("an unexpected control message")),
            },
            _ => Err(protocol("a frame that is neither a message nor a control message")),
        }
    }
}
