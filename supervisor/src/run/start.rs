//! Starting one worker: its endpoints, shared regions, queues and cgroup gathered for
//! [`spawn::spawn`], and what the loop keeps of it (its pid, pidfd, log pipes, probes).

use super::*;

impl Runner {
    pub(super) fn spawn(&mut self, w: WorkerId) -> Event {
        let pool = self.policy.pool(w.pool).clone();
        let listen: Vec<(std::os::fd::BorrowedFd<'_>, String)> = pool
            .listen
            .iter()
            .filter_map(|e| {
                let endpoint = e.for_worker(w.index);
                // The worker wraps a socket named so as a shared-memory or mq listener, and
                // serves a TCP socket without authentication only if it is named so.
                use procwire_workers::activation::{MQ_SUFFIX, PLAIN_SUFFIX, SHM_SUFFIX};
                let name = match endpoint {
                    Endpoint::Shm(_) => format!("{}{SHM_SUFFIX}", pool.name),
                    Endpoint::Mq(_) => format!("{}{MQ_SUFFIX}", pool.name),
                    Endpoint::TcpPlain { .. } => format!("{}{PLAIN_SUFFIX}", pool.name),
                    _ => pool.name.clone(),
                };
                self.listeners.get(&endpoint).map(|fd| (fd.as_fd(), name))
            })
            .collect();
        let shared = self.shared.for_pool(&pool);
        let cgroup = match self.containment.for_worker(&pool.name, w.index) {
            Ok(fd) => fd,
            Err(e) => return Event::SpawnFailed(w, format!("{}: {e}", program(&pool))),
        };
        let queues = self.queues.for_pool(&pool);
        let topics = self.topics.sockets_for(&pool);
        let topic_env = self.topics.env_for(&pool);
        let ctx = spawn::Context {
            cgroup: cgroup.as_ref().map(|fd| fd.as_fd()),
            listen: &listen,
            shared: &shared,
            queues: &queues,
            topics: &topics,
            topic_env: &topic_env,
            supervisor: &self.manifest.supervisor.name,
            notify_socket: self.notify.path(),
            base: &self.base,
        };
        match spawn::spawn(&pool, w.index, &ctx) {
            Ok(spawned) => {
                self.pids.insert(spawned.pid, w);
                self.workers.insert(w, spawned.pid);
                self.last_pid.insert(w, spawned.pid);
                self.watch_child(spawned.pid);
                self.report(w, "started");
                self.happened(w, crate::control::What::Spawned);
                for (fd, stream, output) in [
                    (spawned.stdout, Stream::Out, &pool.stdout),
                    (spawned.stderr, Stream::Err, &pool.stderr),
                ] {
                    if let (Some(fd), Some(sink)) = (fd, self.sink(output, pool.log_rotate)) {
                        let pipe = LogPipe::new(fd, spawned.pid, &pool.name, w.index, stream, sink)
                            .with_tail(self.observed.tail(w, &pool.name));
                        self.logs.push(pipe);
                    }
                }
                if matches!(pool.ready, Ready::Tcp { .. } | Ready::Exec(_)) {
                    self.probes.insert(w, Instant::now());
                }
                Event::Spawned(w)
            }
            Err(e) => Event::SpawnFailed(w, format!("{}: {e}", program(&pool))),
        }
    }
}
