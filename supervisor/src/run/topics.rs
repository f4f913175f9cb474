//! The topics the supervisor owns (`[topic.NAME]`): a listening Unix socket each, in the
//! supervisor's runtime directory or at the topic's `path`, bound at start (mode 0600 unless the topic says), kept
//! across worker restarts and reloads, and removed on exit.
//!
//! The supervisor only holds the socket: the fan-out runs in the one worker of the pool whose
//! `publishes` lists the topic, which inherits the socket; subscribers, told its path,
//! connect to it. While the publisher restarts, their connects wait in the socket's backlog,
//! and the supervisor's event loop never reads or writes a topic's messages, so no slow
//! subscriber can hold it up.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use procwire_rpc::topic::named::Handed;
use procwire_rpc::topic::Options;

use crate::manifest::{Manifest, Pool, TopicDecl};

/// One topic's socket and what its workers are told.
#[derive(Debug)]
struct Topic {
    socket: OwnedFd,
    handed: Handed,
}

/// The topics, by name.
#[derive(Debug)]
pub(super) struct Topics {
    topics: BTreeMap<String, Topic>,
    dir: PathBuf,
}

fn handed(decl: &TopicDecl, path: PathBuf) -> Handed {
    let options = Options::default()
        .capacity(decl.capacity)
        .overflow(decl.overflow)
        .last_value(decl.last_value);
    let mut handed = Handed::new(path, options);
    handed.transport = decl.transport;
    handed.message_size = decl.message_size as usize;
    handed
}

impl Topics {
    /// No topics yet; their sockets go in `dir`.
    pub(super) fn new(dir: &Path) -> Self {
        Topics {
            topics: BTreeMap::new(),
            dir: dir.to_path_buf(),
        }
    }

    /// Binds the socket of every topic `manifest` names that has none yet. One that exists
    /// keeps its socket; its new settings reach the workers started from now on (each one
    /// changed is returned, to be reported). All or nothing: on an error none of the new
    /// sockets is kept.
    pub(super) fn create(&mut self, manifest: &Manifest) -> Result<Vec<String>, (String, std::io::Error)> {
        let mut changed = Vec::new();
        let mut new = BTreeMap::new();
        for decl in &manifest.topics {
            if let Some(topic) = self.topics.get_mut(&decl.name) {
                let now = handed(decl, topic.handed.path.clone());
                if now != topic.handed {
                    changed.push(format!(
                        "topic {}: its new settings apply to the publisher's next start",
                        decl.name
                    ));
                    topic.handed = now;
                }
                continue;
            }
            let path = decl
                .path
                .clone()
                .unwrap_or_else(|| self.dir.join(format!("topic.{}.sock", decl.name)));
            // As a `listen` socket: not in a directory others can write to, and a file left
            // by an earlier run replaced unless something answers there.
            match super::bind_endpoint(&procwire_rpc::Endpoint::Unix(path.clone()), decl.mode, None) {
                Ok(socket) => {
                    new.insert(
                        decl.name.clone(),
                        Topic {
                            socket,
                            handed: handed(decl, path),
                        },
                    );
                }
                Err(e) => {
                    for topic in new.values() {
                        let _ = std::fs::remove_file(&topic.handed.path);
                    }
                    return Err((format!("topic {}: binding {}", decl.name, path.display()), e));
                }
            }
        }
        self.topics.extend(new);
        Ok(changed)
    }

    /// Closes the sockets of the topics no `[topic.NAME]` names any more.
    pub(super) fn retain(&mut self, manifest: &Manifest) {
        self.topics.retain(|name, topic| {
            let keep = manifest.topics.iter().any(|decl| &decl.name == name);
            if !keep {
                let _ = std::fs::remove_file(&topic.handed.path);
            }
            keep
        });
    }

    /// The sockets of the topics `pool` publishes, with their names, in its order.
    pub(super) fn sockets_for(&self, pool: &Pool) -> Vec<(BorrowedFd<'_>, String)> {
        pool.publishes
            .iter()
            .filter_map(|name| self.topics.get(name).map(|t| (t.socket.as_fd(), name.clone())))
            .collect()
    }

    /// The `PROCWIRE_TOPIC_NAME` variables of every topic `pool` publishes or subscribes to.
    pub(super) fn env_for(&self, pool: &Pool) -> Vec<(String, String)> {
        pool.publishes
            .iter()
            .chain(&pool.subscribes)
            .filter_map(|name| {
                self.topics
                    .get(name)
                    .map(|t| (Handed::env_var(name), t.handed.to_env()))
            })
            .collect()
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        for topic in self.topics.values() {
            let _ = std::fs::remove_file(&topic.handed.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    use super::*;

    #[test]
    fn a_topics_socket_is_bound_once_with_its_mode_kept_across_reloads_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut topics = Topics::new(dir.path());
        let mut decl = TopicDecl::new("ticks");
        decl.capacity = 3;
        let manifest = Manifest::new("t").topic(decl.clone());
        assert!(topics.create(&manifest).unwrap().is_empty());
        let path = dir.path().join("topic.ticks.sock");
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let mut pool = Pool::new("p", vec!["true".into()]);
        pool.publishes = vec!["ticks".into()];
        let fd = topics.sockets_for(&pool)[0].0.try_clone_to_owned().unwrap();
        let env = topics.env_for(&pool);
        assert_eq!(env[0].0, "PROCWIRE_TOPIC_ticks");
        assert_eq!(Handed::parse(&env[0].1).unwrap().options.capacity, 3);
        // A reload with other settings keeps the socket, and says the settings changed.
        decl.capacity = 5;
        let changed = topics.create(&Manifest::new("t").topic(decl)).unwrap();
        assert_eq!(changed.len(), 1, "{changed:?}");
        let again = topics.sockets_for(&pool)[0].0.try_clone_to_owned().unwrap();
        let same = |a: &OwnedFd, b: &OwnedFd| {
            let (a, b) = (
                nix::sys::stat::fstat(a.as_raw_fd()).unwrap(),
                nix::sys::stat::fstat(b.as_raw_fd()).unwrap(),
            );
            (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
        };
        assert!(same(&fd, &again), "the same socket");
        drop(topics);
        assert!(!path.exists(), "removed on drop");
    }

    #[test]
    fn a_topic_with_a_path_is_bound_there_replacing_a_socket_file_left_by_an_earlier_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ticks.sock");
        // What a killed supervisor leaves: a socket file nothing answers at.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let mut decl = TopicDecl::new("ticks");
        decl.path = Some(path.clone());
        let mut topics = Topics::new(&dir.path().join("unused"));
        topics.create(&Manifest::new("t").topic(decl)).unwrap();
        std::os::unix::net::UnixStream::connect(&path).expect("bound at its path");
        let mut pool = Pool::new("p", vec!["true".into()]);
        pool.subscribes = vec!["ticks".into()];
        let env = topics.env_for(&pool);
        assert_eq!(Handed::parse(&env[0].1).unwrap().path, path);
        assert!(topics.sockets_for(&pool).is_empty(), "a subscriber gets no socket");
        drop(topics);
        assert!(!path.exists());
    }
}
