//! The message queues the supervisor owns (`[queue.NAME]`): created at start, kept across
//! worker restarts and reloads, handed to the workers of the pools that list them (by
//! descriptor, so a pool running as another user gets them too), and removed on exit.
//!
//! A queue's name is `/procwire.UID.SUPERVISOR.PID-N.NAME`: unique to this supervisor, so
//! that embedded supervisors of one name (which take no name lock) never meet. A supervisor that
//! dies cannot remove its queues, and they would hold the user's `RLIMIT_MSGQUEUE` memory
//! until reboot; so each supervisor writes the names it holds to `RUNTIME/queues.PID-N` (the
//! runtime directory of [`lock`](super::lock)), and every supervisor starting removes the
//! queues listed by files whose process is gone.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::unistd::Pid;
use procwire_rpc::transport::mq::{Attrs, MqError, Queue};

use crate::manifest::{Manifest, Pool};

/// What every name this module makes starts with.
const PREFIX: &str = "/procwire.";

/// The queues, by manifest name.
#[derive(Debug)]
pub(super) struct Queues {
    queues: BTreeMap<String, Queue>,
    /// `/procwire.UID.SUPERVISOR.PID-N.`
    prefix: String,
    /// Where the names are recorded, if the runtime directory can be had.
    record: Option<PathBuf>,
}

impl Queues {
    /// No queues yet, for the supervisor `supervisor`.
    pub(super) fn new(supervisor: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let supervisor: String = supervisor
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        Queues {
            queues: BTreeMap::new(),
            prefix: format!("{PREFIX}{}.{supervisor}.{id}.", nix::unistd::getuid()),
            record: super::lock::runtime_dir()
                .ok()
                .map(|dir| dir.join(format!("queues.{id}"))),
        }
    }

    /// The system name of queue `name`.
    pub(super) fn system_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates every queue `manifest` names that does not exist yet. One that exists keeps
    /// its messages and its shape: workers have it open; each such queue is returned, to be
    /// reported. All or nothing: on an error, none of the new ones is kept.
    pub(super) fn create(&mut self, manifest: &Manifest) -> Result<Vec<String>, (String, MqError)> {
        let mut kept = Vec::new();
        let mut new = BTreeMap::new();
        for decl in &manifest.queues {
            let attrs = Attrs::new(decl.messages, decl.message_size as usize);
            if let Some(queue) = self.queues.get(&decl.name) {
                if queue.attrs() != attrs {
                    kept.push(format!(
                        "queue {} keeps its {} messages of {} bytes (not {} of {}): workers have it open",
                        decl.name,
                        queue.attrs().max_messages,
                        queue.attrs().message_size,
                        decl.messages,
                        decl.message_size
                    ));
                }
                continue;
            }
            let system = self.system_name(&decl.name);
            match Queue::create(&system, attrs) {
                Ok(queue) => {
                    new.insert(decl.name.clone(), queue);
                }
                Err(e) => {
                    for queue in new.values() {
                        let _ = Queue::unlink(queue.name());
                    }
                    return Err((format!("queue {}", decl.name), e));
                }
            }
        }
        self.queues.extend(new);
        self.write_record();
        Ok(kept)
    }

    /// Removes the queues no `[queue.NAME]` names any more. Workers that have one open keep
    /// it until they exit.
    pub(super) fn retain(&mut self, manifest: &Manifest) {
        self.queues.retain(|name, queue| {
            let keep = manifest.queues.iter().any(|decl| &decl.name == name);
            if !keep {
                let _ = Queue::unlink(queue.name());
            }
            keep
        });
        self.write_record();
    }

    /// The queues `pool` lists, with their names, in its order.
    pub(super) fn for_pool(&self, pool: &Pool) -> Vec<(BorrowedFd<'_>, String)> {
        pool.queues
            .iter()
            .filter_map(|name| self.queues.get(name).map(|queue| (queue.as_fd(), name.clone())))
            .collect()
    }

    /// Records the names held, so that the next supervisor removes them if this one dies.
    fn write_record(&self) {
        let Some(record) = &self.record else {
            return;
        };
        if self.queues.is_empty() {
            let _ = std::fs::remove_file(record);
            return;
        }
        let names: String = self.queues.values().map(|q| format!("{}\n", q.name())).collect();
        let _ = std::fs::write(record, names);
    }

    /// Removes the queues that supervisors of this user which are gone left behind; returns
    /// their names.
    pub(super) fn remove_leftovers() -> Vec<String> {
        let Ok(dir) = super::lock::runtime_dir() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(pid) = file
                .to_str()
                .and_then(|f| f.strip_prefix("queues."))
                .and_then(|id| id.split('-').next())
                .and_then(|pid| pid.parse::<i32>().ok())
            else {
                continue;
            };
            // Alive (or not ours to ask about): its queues are its own.
            if pid == std::process::id() as i32 || nix::sys::signal::kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH)
            {
                continue;
            }
            let names = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for name in names.lines().filter(|name| name.starts_with(PREFIX)) {
                if Queue::unlink(name).unwrap_or(false) {
                    removed.push(name.to_owned());
                }
            }
            let _ = std::fs::remove_file(entry.path());
        }
        removed
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        for queue in self.queues.values() {
            let _ = Queue::unlink(queue.name());
        }
        self.queues.clear();
        self.write_record();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::QueueDecl;

    fn manifest(queues: &[(&str, usize)]) -> Manifest {
        queues.iter().fold(Manifest::new("t"), |m, (name, messages)| {
            let mut decl = QueueDecl::new(name);
            decl.messages = *messages;
            decl.message_size = 64;
            m.queue(decl)
        })
    }

    #[test]
    fn queues_are_created_once_keep_their_messages_across_reloads_and_go_on_drop() {
        let mut queues = Queues::new("queues-test");
        assert!(queues.create(&manifest(&[("a", 2), ("b", 1)])).unwrap().is_empty());
        let mut pool = Pool::new("p", vec!["true".into()]);
        pool.queues = vec!["b".into(), "a".into()];
        let names: Vec<String> = queues.for_pool(&pool).into_iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["b", "a"]);
        let a = Queue::open(&queues.system_name("a")).unwrap();
        a.send(b"kept", procwire_rpc::Wait::NonBlock).unwrap();
        // A reload that reshapes a keeps it as it is, messages and all, and says so.
        let kept = queues.create(&manifest(&[("a", 5), ("b", 1)])).unwrap();
        assert!(
            kept[0].contains("queue a keeps its 2 messages of 64 bytes (not 5 of 64)"),
            "{kept:?}"
        );
        assert_eq!(a.len().unwrap(), 1);
        // A reload without b removes its name.
        queues.retain(&manifest(&[("a", 2)]));
        assert!(Queue::open(&queues.system_name("b")).is_err());
        let record = std::fs::read_to_string(queues.record.as_ref().unwrap()).unwrap();
        assert_eq!(record.trim(), queues.system_name("a"));
        let (name, record) = (queues.system_name("a"), queues.record.clone().unwrap());
        drop(queues);
        assert!(Queue::open(&name).is_err(), "removed on drop");
        assert!(!record.exists());
    }
}
