//! Topics by name: what a supervisor's `[topic.NAME]` tells the workers that publish and
//! subscribe to it, through their environment.
//!
//! The supervisor owns the topic's Unix socket. Every worker of a pool that lists the topic
//! (in `publishes` or `subscribes`) gets `PROCWIRE_TOPIC_NAME` = the topic's settings and
//! the socket's path ([`Handed`]); the publishing pool's worker also inherits the listening
//! socket itself, its number in `PROCWIRE_TOPICFD_NAME`, and wraps it with
//! [`Publisher::from_listener`](super::Publisher::from_listener) (or the shared-memory
//! publisher's). So publishers and subscribers never name each other's endpoints, and the
//! socket outlives a publisher's restart: subscribers connecting meanwhile wait in its
//! backlog. `procwire_workers::topic` turns these into typed handles.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::{Options, Overflow, TopicError};

/// Prefix of the variable with a topic's settings and path.
pub const ENV_PREFIX: &str = "PROCWIRE_TOPIC_";
/// Prefix of the variable with the publisher's inherited socket.
pub const FD_ENV_PREFIX: &str = "PROCWIRE_TOPICFD_";

/// How a topic's messages travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A queue and a writer thread per subscriber in the publisher, over each one's socket
    /// ([`Publisher`](super::Publisher)).
    Unix,
    /// One ring in shared memory, each message written once, a read cursor per subscriber
    /// (`shm::Publisher`).
    Shm,
}

impl Transport {
    /// Its name in a manifest (`transport = "shm"`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Shm => "shm",
        }
    }
}

/// A topic as a supervisor hands it to a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Handed {
    /// How its messages travel.
    pub transport: Transport,
    /// The publisher's settings.
    pub options: Options,
    /// Over shared memory: the largest message, in bytes (a ring slot's size).
    pub message_size: usize,
    /// The topic's socket, where subscribers connect.
    pub path: PathBuf,
}

impl Handed {
    /// A topic at `path`, over Unix sockets, with `options`.
    pub fn new(path: impl Into<PathBuf>, options: Options) -> Handed {
        Handed {
            transport: Transport::Unix,
            options,
            message_size: super::shm::DEFAULT_MESSAGE_SIZE,
            path: path.into(),
        }
    }

    /// The variable that carries topic `name`'s settings.
    pub fn env_var(name: &str) -> String {
        format!("{ENV_PREFIX}{name}")
    }

    /// The variable that carries topic `name`'s listening socket, for its publisher.
    pub fn fd_env_var(name: &str) -> String {
        format!("{FD_ENV_PREFIX}{name}")
    }

    /// The variable's value: `transport=..;capacity=..;overflow=..;last=..;message_size=..;path=PATH`,
    /// the path last, so that it may hold any character.
    pub fn to_env(&self) -> String {
        format!(
            "transport={};capacity={};overflow={};last={};message_size={};path={}",
            self.transport.name(),
            self.options.capacity,
            self.options.overflow.name(),
            self.options.last_value,
            self.message_size,
            self.path.display()
        )
    }

    /// Reads [`to_env`](Self::to_env)'s form; what is wrong, if anything.
    pub fn parse(text: &str) -> Result<Handed, String> {
        let mut handed = Handed::new(PathBuf::new(), Options::default());
        let mut rest = text;
        while !rest.is_empty() {
            let (key, value) = rest.split_once('=').ok_or_else(|| format!("no `=` in {rest:?}"))?;
            if key == "path" {
                handed.path = PathBuf::from(value);
                return Ok(handed);
            }
            let (value, next) = value.split_once(';').unwrap_or((value, ""));
            rest = next;
            let bad = || format!("bad {key} {value:?}");
            match key {
                "transport" => {
                    handed.transport = match value {
                        "unix" => Transport::Unix,
                        "shm" => Transport::Shm,
                        _ => return Err(bad()),
                    }
                }
                "capacity" => handed.options.capacity = value.parse().ok().filter(|c| *c > 0).ok_or_else(bad)?,
                "overflow" => handed.options.overflow = Overflow::from_name(value).ok_or_else(bad)?,
                "last" => handed.options.last_value = value.parse().map_err(|_| bad())?,
                "message_size" => handed.message_size = value.parse().ok().filter(|s| *s > 0).ok_or_else(bad)?,
                _ => return Err(format!("unknown setting {key:?}")),
            }
        }
        Err("no path".into())
    }

    /// Topic `name` as this process was handed it, over `transport`.
    pub fn from_env(name: &str, transport: Transport) -> Result<Handed, TopicError> {
        let var = Handed::env_var(name);
        let not_handed = |detail: String| TopicError::NotHanded {
            topic: name.to_owned(),
            detail,
        };
        let text = std::env::var(&var).map_err(|_| {
            not_handed(format!(
                "{var} is not set (is this process run by a supervisor whose pool lists the topic?)"
            ))
        })?;
        let handed = Handed::parse(&text).map_err(|why| not_handed(format!("{var}: {why}")))?;
        if handed.transport != transport {
            return Err(not_handed(format!(
                "it travels over {}, not {}: use the {} publisher and subscriber",
                handed.transport.name(),
                transport.name(),
                handed.transport.name()
            )));
        }
        Ok(handed)
    }

    /// The topic's socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket a supervisor handed this process to publish topic `name` on;
    /// once per process.
    pub fn listener(name: &str) -> Result<UnixListener, TopicError> {
        let var = Handed::fd_env_var(name);
        match crate::shm::claim_inherited_owned(&var) {
            Ok(fd) => Ok(UnixListener::from(fd)),
            Err(crate::shm::EnvProblem::Unset) => Err(TopicError::NotHanded {
                topic: name.to_owned(),
                detail: format!("{var} is not set: this process's pool does not publish it"),
            }),
            Err(problem) => Err(TopicError::Inherited {
                topic: name.to_owned(),
                var,
                problem,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handed_settings_read_back_what_was_written_even_with_a_semicolon_in_the_path() {
        let mut handed = Handed::new(
            "/run/a;b=c/t.sock",
            Options::default()
                .capacity(7)
                .overflow(Overflow::Disconnect)
                .last_value(false),
        );
        handed.transport = Transport::Shm;
        handed.message_size = 1000;
        assert_eq!(Handed::parse(&handed.to_env()), Ok(handed));
        assert_eq!(Handed::parse("capacity=0;path=/x").unwrap_err(), "bad capacity \"0\"");
        assert_eq!(
            Handed::parse("overflow=lose;path=/x").unwrap_err(),
            "bad overflow \"lose\""
        );
        assert_eq!(Handed::parse("capacity=3").unwrap_err(), "no path");
    }
}
