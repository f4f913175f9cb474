//! [`Endpoint`]: where a service listens and a client connects, as one type for every
//! part of procwire (the manifest's `listen`, the worker runtime's `PROCWIRE_LISTEN` and
//! [`Worker::listen`](https://docs.rs/procwire-workers), the pool client, the supervisor's
//! `endpoints`).
//!
//! The grammar, parsed by [`FromStr`] and printed back by [`Display`](std::fmt::Display):
//!
//! | text                  | endpoint                                                |
//! |-----------------------|---------------------------------------------------------|
//! | `unix:PATH`           | a Unix stream socket at `PATH`                          |
//! | `tcp:HOST:PORT`       | TCP authenticated and encrypted with [`noise`](crate::transport::noise), with the key from `PROCWIRE_KEY_FILE` or `PROCWIRE_KEY` (see [`noise::key_from_env`](crate::transport::noise::key_from_env)); on a host name or IPv4 address, port 1 to 65535 |
//! | `tcp:[IPV6]:PORT`     | the same on an IPv6 address, in brackets                |
//! | `tcp+noise:HOST:PORT` | the same as `tcp:` (an alias, printed as `tcp:`)         |
//! | `tcp+plain:HOST:PORT` | TCP **without** authentication or encryption: anyone who reaches the address is served. For loopback tests, or behind something that authenticates (a TLS proxy, a VPN) |
//! | `shm:PATH`            | shared-memory rings, set up over a Unix socket at `PATH` |
//! | `mq:PATH`             | two POSIX message queues per connection, set up over a Unix socket at `PATH` ([`mq`](crate::transport::mq)) |
//!
//! TCP is authenticated unless asked otherwise: a `tcp:` endpoint needs a key on both ends,
//! and nothing but an explicit `tcp+plain:` serves unauthenticated peers.
//!
//! ```
//! use procwire_rpc::Endpoint;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint: Endpoint = "tcp:[::1]:8080".parse()?;
//! assert_eq!(endpoint, Endpoint::TcpNoise { host: "::1".into(), port: 8080 });
//! assert_eq!(endpoint.to_string(), "tcp:[::1]:8080");
//! assert_eq!("tcp+noise:[::1]:8080".parse::<Endpoint>()?, endpoint);
//! let plain: Endpoint = "tcp+plain:127.0.0.1:8080".parse()?;
//! assert_eq!(plain, Endpoint::TcpPlain { host: "127.0.0.1".into(), port: 8080 });
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::TransportError;
use crate::transport::{mq, noise, shm, tcp, unix, Listener, Transport};

/// Where a service listens and a client connects. More kinds of transport will come, so
/// match with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Endpoint {
    /// A Unix stream socket at this path.
    Unix(PathBuf),
    /// A TCP socket on this host and port that serves anyone who reaches it, with no
    /// authentication and no encryption (`tcp+plain:`).
    TcpPlain {
        /// Host name or address (an IPv6 address without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// Shared-memory rings ([`shm`](crate::transport::shm)), handed out by a Unix socket at
    /// this path.
    Shm(PathBuf),
    /// Two POSIX message queues per connection ([`mq`](crate::transport::mq)), set up over
    /// a Unix socket at this path.
    Mq(PathBuf),
    /// A TCP socket on this host and port whose peers authenticate and encrypt with Noise,
    /// with the key of [`noise::key_from_env`] (`tcp:`, or its alias `tcp+noise:`).
    TcpNoise {
        /// Host name or address (an IPv6 address without brackets).
        host: String,
        /// Port.
        port: u16,
    },
}

/// A text is not an [`Endpoint`]. Each message shows the text and a correct example.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// None of `unix:`, `tcp:`, `tcp+noise:`, `tcp+plain:`, `shm:`, `mq:`.
    #[error("endpoints are {KINDS}, not {text:?}")]
    UnknownKind {
        /// The text.
        text: String,
    },
    /// `unix:`, `shm:` or `mq:` with nothing after it.
    #[error("\"{kind}:\" needs a path, like \"{kind}:run/app.sock\"")]
    EmptyPath {
        /// `unix`, `shm` or `mq`.
        kind: &'static str,
    },
    /// `tcp:` without a host or without a port.
    #[error("{text:?} has no {missing}; write \"tcp:HOST:PORT\", like \"tcp:127.0.0.1:8080\"")]
    Incomplete {
        /// The text.
        text: String,
        /// `host` or `port`.
        missing: &'static str,
    },
    /// An IPv6 address opened with `[` and not closed.
    #[error("{text:?}: an IPv6 address needs closing `]`, like \"tcp:[::1]:8080\"")]
    UnclosedBracket {
        /// The text.
        text: String,
    },
    /// An IPv6 address without brackets.
    #[error("{text:?}: put an IPv6 address in brackets, like \"tcp:[::1]:8080\"")]
    UnbracketedIpv6 {
        /// The text.
        text: String,
    },
    /// An empty host, or one with spaces or slashes.
    #[error("{text:?} has no valid host; write \"tcp:HOST:PORT\", like \"tcp:127.0.0.1:8080\"")]
    BadHost {
        /// The text.
        text: String,
    },
    /// A port that is not a number from 1 to 65535.
    #[error("{text:?}: the port must be a number from 1 to 65535, not {port:?}")]
    BadPort {
        /// The text.
        text: String,
        /// The port as written.
        port: String,
    },
}

/// The kinds of endpoint, for messages.
pub(crate) const KINDS: &str =
    "\"unix:PATH\", \"tcp:HOST:PORT\" (authenticated), \"tcp+plain:HOST:PORT\", \"shm:PATH\" or \"mq:PATH\"";

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        for (kind, make) in [
            ("unix", Endpoint::Unix as fn(PathBuf) -> Endpoint),
            ("shm", Endpoint::Shm),
            ("mq", Endpoint::Mq),
        ] {
            if let Some(path) = text.strip_prefix(kind).and_then(|rest| rest.strip_prefix(':')) {
                if path.is_empty() {
                    return Err(EndpointError::EmptyPath { kind });
                }
                return Ok(make(PathBuf::from(path)));
            }
        }
        let prefixed = |prefix: &str, secured| text.strip_prefix(prefix).map(|address| (address, secured));
        let Some((address, secured)) = prefixed("tcp:", true)
            .or_else(|| prefixed("tcp+noise:", true))
            .or_else(|| prefixed("tcp+plain:", false))
        else {
            return Err(EndpointError::UnknownKind { text: text.to_owned() });
        };
        let text = || text.to_owned();
        let Some((host, port)) = address.rsplit_once(':') else {
            let missing = if address.parse::<u16>().is_ok() { "host" } else { "port" };
            return Err(EndpointError::Incomplete { text: text(), missing });
        };
        let host = match host.strip_prefix('[') {
            Some(bracketed) => bracketed
                .strip_suffix(']')
                .ok_or_else(|| EndpointError::UnclosedBracket { text: text() })?,
            None if host.contains(':') => return Err(EndpointError::UnbracketedIpv6 { text: text() }),
            None => host,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(EndpointError::BadHost { text: text() });
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 && secured => Ok(Endpoint::TcpNoise {
                host: host.to_owned(),
                port,
            }),
            Ok(port) if port > 0 => Ok(Endpoint::TcpPlain {
                host: host.to_owned(),
                port,
            }),
            _ => Err(EndpointError::BadPort {
                text: text(),
                port: port.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::TcpPlain { host, port } if host.contains(':') => write!(f, "tcp+plain:[{host}]:{port}"),
            Endpoint::TcpPlain { host, port } => write!(f, "tcp+plain:{host}:{port}"),
            Endpoint::Shm(path) => write!(f, "shm:{}", path.display()),
            Endpoint::Mq(path) => write!(f, "mq:{}", path.display()),
            Endpoint::TcpNoise { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Endpoint::TcpNoise { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

impl Endpoint {
    /// Connects to the service listening here.
    pub fn connect(&self) -> Result<Transport, TransportError> {
        match self {
            Endpoint::Unix(path) => unix::connect(path),
            Endpoint::TcpPlain { host, port } => tcp::connect((host.as_str(), *port)),
            Endpoint::Shm(path) => shm::connect(path),
            Endpoint::Mq(path) => mq::connect(path),
            Endpoint::TcpNoise { host, port } => noise::connect((host.as_str(), *port), &self.key()?),
        }
    }

    /// Listens here. A Unix socket file left by a dead server is replaced; a live one is an
    /// "address in use" error.
    pub fn bind(&self) -> Result<Box<dyn Listener>, TransportError> {
        Ok(match self {
            Endpoint::Unix(path) => Box::new(unix::Listener::bind(path)?),
            Endpoint::TcpPlain { host, port } => Box::new(tcp::Listener::bind((host.as_str(), *port))?),
            Endpoint::Shm(path) => Box::new(shm::Listener::bind(path)?),
            Endpoint::Mq(path) => Box::new(mq::Listener::bind(path)?),
            Endpoint::TcpNoise { host, port } => {
                Box::new(noise::Listener::bind((host.as_str(), *port), vec![self.key()?])?)
            }
        })
    }

    /// The key of a `tcp:` endpoint, from the environment.
    fn key(&self) -> Result<noise::NoiseKey, TransportError> {
        noise::key_from_env().map_err(|source| TransportError::Key {
            endpoint: self.to_string(),
            source,
        })
    }

    /// The endpoint of worker `index` of a pool: `{index}` in a Unix, shm or mq path is replaced, so
    /// that each worker has a socket of its own (`unix:run/calc-{index}.sock`); an endpoint
    /// without it is shared by all of them.
    pub fn for_worker(&self, index: u32) -> Endpoint {
        match self {
            Endpoint::Unix(path) => Endpoint::Unix(indexed(path, index)),
            Endpoint::Shm(path) => Endpoint::Shm(indexed(path, index)),
            Endpoint::Mq(path) => Endpoint::Mq(indexed(path, index)),
            other => other.clone(),
        }
    }
}

fn indexed(path: &std::path::Path, index: u32) -> PathBuf {
    PathBuf::from(path.to_string_lossy().replace("{index}", &index.to_string()))
}

/// What names an endpoint: an [`Endpoint`], or its text (`&str`, `String`), parsed when
/// it is used.
pub trait ToEndpoint {
    /// The endpoint, or why the text is not one.
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError>;
}

impl ToEndpoint for Endpoint {
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError> {
        Ok(self.clone())
    }
}

impl ToEndpoint for str {
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError> {
        self.parse()
    }
}

impl ToEndpoint for String {
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError> {
        self.parse()
    }
}

impl<T: ToEndpoint + ?Sized> ToEndpoint for &T {
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError> {
        (**self).to_endpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_text() {
        for text in [
            "unix:/run/app.sock",
            "unix:run/calc-{index}.sock",
            "tcp:127.0.0.1:8080",
            "tcp:localhost:1",
            "tcp:[::1]:65535",
            "tcp+plain:127.0.0.1:8080",
            "tcp+plain:[::1]:7000",
            "shm:/run/calc-{index}.sock",
            "mq:run/calc-{index}.sock",
        ] {
            let endpoint: Endpoint = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(endpoint.to_string(), text);
            assert_eq!(endpoint.to_string().parse::<Endpoint>(), Ok(endpoint));
        }
        assert_eq!(
            "tcp+plain:[::1]:80".parse(),
            Ok(Endpoint::TcpPlain {
                host: "::1".into(),
                port: 80
            })
        );
    }

    #[test]
    fn plain_tcp_is_spelled_out_and_tcp_alone_is_authenticated() {
        let noise = Endpoint::TcpNoise {
            host: "10.0.0.1".into(),
            port: 7000,
        };
        assert_eq!("tcp:10.0.0.1:7000".parse(), Ok(noise.clone()));
        // The old spelling is an alias, printed in the new one.
        assert_eq!("tcp+noise:10.0.0.1:7000".parse(), Ok(noise.clone()));
        assert_eq!(noise.to_string(), "tcp:10.0.0.1:7000");
        assert_eq!(
            "tcp+noise:[::1]:7000".parse::<Endpoint>().map(|e| e.to_string()),
            Ok("tcp:[::1]:7000".to_owned())
        );
        let plain: Endpoint = "tcp+plain:10.0.0.1:7000".parse().unwrap();
        assert_ne!(plain, noise);
        assert_eq!(plain.to_string(), "tcp+plain:10.0.0.1:7000");
    }

    #[test]
    fn bad_text_is_refused_with_a_message_that_shows_a_correct_one() {
        for (text, expected) in [
            (
                "udp:1.2.3.4:5",
                "endpoints are \"unix:PATH\", \"tcp:HOST:PORT\" (authenticated), \"tcp+plain:HOST:PORT\", \"shm:PATH\" or \"mq:PATH\"",
            ),
            ("tcp+tls:1.2.3.4:5", "endpoints are"),
            ("shm:", "\"shm:\" needs a path"),
            ("mq:", "\"mq:\" needs a path"),
            ("/run/app.sock", "endpoints are"),
            ("unix:", "needs a path"),
            ("tcp:8080", "has no host"),
            ("tcp:localhost", "has no port"),
            ("tcp+plain:localhost", "has no port"),
            ("tcp::8080", "no valid host"),
            ("tcp:a b:80", "no valid host"),
            ("tcp:[::1:80", "needs closing `]`"),
            ("tcp:::1:80", "in brackets"),
            ("tcp+plain:::1:80", "in brackets"),
            ("tcp:localhost:0", "port must be a number from 1 to 65535"),
            ("tcp:localhost:65536", "port must be a number"),
            ("tcp+noise:localhost:http", "port must be a number"),
        ] {
            let error = text.parse::<Endpoint>().expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_worker_index_fills_a_unix_path_and_leaves_tcp_alone() {
        let unix: Endpoint = "unix:run/calc-{index}.sock".parse().unwrap();
        assert_eq!(unix.for_worker(3).to_string(), "unix:run/calc-3.sock");
        let tcp: Endpoint = "tcp:localhost:80".parse().unwrap();
        assert_eq!(tcp.for_worker(3), tcp);
    }

    #[test]
    fn an_endpoint_binds_and_connects_on_the_same_address() {
        let dir = tempfile::tempdir().unwrap();
        for endpoint in [
            Endpoint::Unix(dir.path().join("e.sock")),
            Endpoint::Shm(dir.path().join("s.sock")),
            Endpoint::Mq(dir.path().join("m.sock")),
        ] {
            let mut listener = endpoint.bind().unwrap();
            // An shm connect waits for the listener to hand over the region.
            let client = std::thread::spawn({
                let endpoint = endpoint.clone();
                move || endpoint.connect().unwrap()
            });
            let server = listener
                .accept(crate::Wait::timeout(std::time::Duration::from_secs(30)))
                .unwrap();
            assert_eq!(server.peer.name, endpoint.to_string());
            client.join().unwrap();
        }
        let error = Endpoint::Unix(dir.path().join("absent.sock")).connect().unwrap_err();
        assert!(matches!(error, TransportError::Io { op: "connect", .. }), "{error}");
    }
}
