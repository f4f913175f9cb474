//! SIGHUP: the manifest read again and the difference applied, or refused as a whole.

use super::*;

impl Runner {
    /// SIGHUP: read the manifest again and apply the difference. A manifest that no longer
    /// checks is refused and the running set stays as it is.
    pub(super) fn reload(&mut self) {
        match Manifest::load_validated(&self.manifest.path, self.host) {
            Ok(manifest) => {
                let _ = self.reload_with(manifest);
            }
            Err(e) => self.say(&format!("reload refused, nothing changed: {e}")),
        }
    }

    /// Applies the reloaded `manifest`; an error (said too) if its sockets cannot be bound.
    pub(super) fn reload_with(&mut self, manifest: Manifest) -> Result<(), String> {
        if let Err((what, e)) = bind_listeners(&manifest, &mut self.listeners) {
            let refusal = format!("reload refused, nothing changed: {what}: {e}");
            self.say(&refusal);
            return Err(refusal);
        }
        let created = self
            .shared
            .create(&manifest)
            .map_err(|(what, e)| format!("{what}: {e}"))
            .and_then(|mut kept| {
                kept.extend(
                    self.queues
                        .create(&manifest)
                        .map_err(|(what, e)| format!("{what}: {e}"))?,
                );
                kept.extend(
                    self.topics
                        .create(&manifest)
                        .map_err(|(what, e)| format!("{what}: {e}"))?,
                );
                Ok(kept)
            });
        match created {
            Ok(kept) => kept.iter().for_each(|note| self.say(&format!("reload: {note}"))),
            Err(why) => {
                let refusal = format!("reload refused, nothing changed: {why}");
                self.say(&refusal);
                return Err(refusal);
            }
        }
        self.say("reloading the manifest");
        for signal in watched_signals(&manifest, false) {
            if let Err(e) = self.signals.watch(signal) {
                self.say(&format!("reload: cannot watch {signal}, which a pool forwards: {e}"));
            }
        }
        let actions = self.policy.reload(Instant::now(), &manifest);
        self.reloaded(&actions);
        // Workers scaled by hand beyond the manifest's count keep (or get) their sockets.
        for pool in self.policy.views() {
            let workers = self.policy.worker_count(pool.id);
            if let Err(e) = self.bind_worker_sockets(pool.id, workers) {
                self.say(&format!("reload: pool {}: {e}", pool.name));
            }
        }
        // Sockets no pool names any more close; workers still running keep their copies.
        let used = self.worker_endpoints();
        let (kept, gone): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|(e, _)| used.contains(e));
        self.listeners = kept;
        // Their files go too, unless the path is kept as another kind (`unix:P` now `shm:P`).
        for endpoint in gone.keys() {
            if let Endpoint::Unix(path) | Endpoint::Shm(path) | Endpoint::Mq(path) = endpoint {
                if same_socket(&self.listeners, endpoint).is_none() {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        self.shared.retain(&manifest);
        self.queues.retain(&manifest);
        self.topics.retain(&manifest);
        self.manifest = manifest;
        self.apply(actions);
        Ok(())
    }
}
