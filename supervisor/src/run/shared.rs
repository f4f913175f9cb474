//! The shared memory regions the supervisor owns (`[shared.NAME]`): created once, kept for
//! the supervisor's life, across worker restarts and reloads, and handed to the workers of
//! the pools that list them.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;

use procwire_rpc::shm::{Region, ShmError};

use crate::manifest::{Manifest, Pool};

/// The regions, by name.
#[derive(Debug, Default)]
pub(super) struct SharedRegions {
    regions: BTreeMap<String, Region>,
}

impl SharedRegions {
    /// Creates every region `manifest` names that does not exist yet. One that exists keeps
    /// its memory, and its size: workers already running map it, so it cannot change under
    /// them; each such region is returned, to be reported.
    pub(super) fn create(&mut self, manifest: &Manifest) -> Result<Vec<String>, (String, ShmError)> {
        let mut kept = Vec::new();
        let mut new = BTreeMap::new();
        for shared in &manifest.shared {
            if let Some(region) = self.regions.get(&shared.name) {
                if region.len() as u64 != shared.size {
                    kept.push(format!(
                        "shared region {} keeps its size of {} bytes (not {}): workers map it",
                        shared.name,
                        region.len(),
                        shared.size
                    ));
                }
                continue;
            }
            let what = || format!("shared region {}", shared.name);
            let size = usize::try_from(shared.size).map_err(|_| {
                (
                    what(),
                    ShmError::BadSize {
                        size: shared.size,
                        max: isize::MAX as u64,
                    },
                )
            })?;
            let region =
                Region::create_labelled(&format!("procwire-{}", shared.name), size).map_err(|e| (what(), e))?;
            new.insert(shared.name.clone(), region);
        }
        // All or nothing: a failure above leaves the set as it was.
        self.regions.extend(new);
        Ok(kept)
    }

    /// Drops the regions no `[shared.NAME]` names any more; workers still running keep their
    /// mappings, and the memory goes when the last of them exits.
    pub(super) fn retain(&mut self, manifest: &Manifest) {
        self.regions
            .retain(|name, _| manifest.shared.iter().any(|shared| &shared.name == name));
    }

    /// The regions `pool` lists, with their names, in its order.
    pub(super) fn for_pool(&self, pool: &Pool) -> Vec<(BorrowedFd<'_>, String)> {
        pool.shared
            .iter()
            .filter_map(|name| self.regions.get(name).map(|region| (region.as_fd(), name.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn manifest(regions: &[(&str, u64)]) -> Manifest {
        regions
            .iter()
            .fold(Manifest::new("t"), |m, (name, size)| m.shared_region(name, *size))
    }

    #[test]
    fn regions_are_created_once_and_keep_their_memory_and_size_across_reloads() {
        let mut shared = SharedRegions::default();
        assert!(shared.create(&manifest(&[("a", 4096), ("b", 100)])).unwrap().is_empty());
        let mut pool = Pool::new("p", vec!["true".into()]);
        pool.shared = vec!["b".into(), "a".into()];
        let before: Vec<(i32, String)> = shared
            .for_pool(&pool)
            .iter()
            .map(|(fd, name)| (fd.as_raw_fd(), name.clone()))
            .collect();
        assert_eq!(before.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        // A reload that changes b's size keeps b as it is, and says so.
        let kept = shared.create(&manifest(&[("a", 4096), ("b", 200)])).unwrap();
        assert_eq!(kept.len(), 1);
        assert!(kept[0].contains("keeps its size of 100 bytes (not 200)"), "{}", kept[0]);
        let after: Vec<i32> = shared.for_pool(&pool).iter().map(|(fd, _)| fd.as_raw_fd()).collect();
        assert_eq!(
            after,
            before.iter().map(|(fd, _)| *fd).collect::<Vec<_>>(),
            "the same memfds"
        );
        // A reload without a drops it.
        shared.retain(&manifest(&[("b", 100)]));
        let left: Vec<String> = shared.for_pool(&pool).into_iter().map(|(_, n)| n).collect();
        assert_eq!(left, ["b"]);
    }
}
