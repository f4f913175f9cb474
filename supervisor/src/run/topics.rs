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
    /// The socket file's mode.
    mode: u32,
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
    /// changed is returned, to be reported), and a new `mode` is given to its file at once.
    /// Its `path` cannot change: running subscribers were told the old one and reconnect
    /// there when the publisher restarts. All or nothing: on an error nothing changes and
    /// none of the new sockets is kept.
    pub(super) fn create(&mut self, manifest: &Manifest) -> Result<Vec<String>, (String, std::io::Error)> {
        let mut changed = Vec::new();
        let mut settings = Vec::new();
        let mut new = BTreeMap::new();
        let undo = |new: &BTreeMap<String, Topic>| {
            for topic in new.values() {
                let _ = std::fs::remove_file(&topic.handed.path);
            }
        };
        for decl in &manifest.topics {
            let path = decl
                .path
                .clone()
                .unwrap_or_else(|| self.dir.join(format!("topic.{}.sock", decl.name)));
            if let Some(topic) = self.topics.get(&decl.name) {
                if path != topic.handed.path {
                    undo(&new);
                    return Err((
                        format!("topic {}: moving its socket to {}", decl.name, path.display()),
                        std::io::Error::other(format!(
                            "its socket stays at {} while the topic exists (its subscribers reconnect there); \
                             rename the topic or restart the supervisor to move it",
                            topic.handed.path.display()
                        )),
                    ));
                }
                let now = handed(decl, path);
                if now != topic.handed || decl.mode != topic.mode {
                    settings.push((decl.name.clone(), now, decl.mode));
                }
                continue;
            }
            // As a `listen` socket: not in a directory others can write to, and a file left
            // by an earlier run replaced unless something answers there.
            match super::bind_endpoint(&procwire_rpc::Endpoint::Unix(path.clone()), decl.mode, None) {
                Ok(socket) => {
                    new.insert(
                        decl.name.clone(),
                        Topic {
                            socket,
                            handed: handed(decl, path),
                            mode: decl.mode,
                        },
                    );
                }
                Err(e) => {
                    undo(&new);
                    return Err((format!("topic {}: binding {}", decl.name, path.display()), e));
                }
            }
        }
        for (name, handed, mode) in settings {
            let topic = self.topics.get_mut(&name).expect("checked above");
            if mode != topic.mode {
                use std::os::unix::fs::PermissionsExt;
                match std::fs::set_permissions(&topic.handed.path, std::fs::Permissions::from_mode(mode)) {
                    Ok(()) => {
                        topic.mode = mode;
                        changed.push(format!("topic {name}: its socket now has mode {mode:04o}"));
                    }
                    Err(e) => changed.push(format!(
                        "topic {name}: its socket keeps mode {:04o}: chmod {}: {e}",
                        topic.mode,
                        topic.handed.path.display()
                    )),
                }
            }
            if handed != topic.handed {
                changed.push(format!(
                    "topic {name}: its new settings apply to the publisher's next start"
                ));
                topic.handed = handed;
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
    fn a_reload_gives_a_topics_socket_its_new_mode_and_refuses_to_move_it_changing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut topics = Topics::new(dir.path());
        let mut decl = TopicDecl::new("ticks");
        topics.create(&Manifest::new("t").topic(decl.clone())).unwrap();
        let path = dir.path().join("topic.ticks.sock");
        let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        decl.mode = 0o666;
        let changed = topics.create(&Manifest::new("t").topic(decl.clone())).unwrap();
        assert_eq!(changed, ["topic ticks: its socket now has mode 0666"]);
        assert_eq!(mode(), 0o666, "the new mode is the file's at once");
        // A new path is refused, and so is everything else in that reload.
        let mut moved = decl.clone();
        moved.path = Some(dir.path().join("elsewhere.sock"));
        moved.capacity = 9;
        moved.mode = 0o600;
        let mut other = TopicDecl::new("other");
        other.mode = 0o600;
        let (what, e) = topics
            .create(&Manifest::new("t").topic(other).topic(moved))
            .unwrap_err();
        assert!(what.contains("topic ticks: moving its socket"), "{what}");
        assert!(e.to_string().contains("its socket stays at"), "{e}");
        assert_eq!(mode(), 0o666, "nothing changed");
        assert!(!dir.path().join("topic.other.sock").exists(), "nor was the other bound");
        assert!(!dir.path().join("elsewhere.sock").exists());
        let mut pool = Pool::new("p", vec!["true".into()]);
        pool.subscribes = vec!["ticks".into()];
        assert_eq!(Handed::parse(&topics.env_for(&pool)[0].1).unwrap().options.capacity, 64);
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
