//! Keeping every process a worker starts inside a boundary the supervisor can end.
//!
//! Where this process's cgroup v2 is writable, the supervisor makes a subtree beside itself,
//! `OWN/procwire-NAME-PID-NONCE`, and puts each worker in a cgroup of its own in it,
//! `POOL.INDEX` (the child is cloned straight into it, so nothing it starts is ever outside).
//! When a worker exits or is killed, everything left in its cgroup is killed too, however it
//! detached (`setsid`, double fork); when the supervisor ends, the subtree goes.
//!
//! A cgroup that had to be killed is retired, and the worker's next incarnation gets a fresh
//! one (`POOL.INDEX.N`): the kernels at hand (6.18) compare a `CLONE_INTO_CGROUP` child's
//! kill sequence with its *parent's* cgroup's rather than its target's, so a child cloned
//! into a cgroup that was ever killed is SIGKILLed at birth. A worker that leaves nothing
//! behind (the usual case) keeps its cgroup, and its restart costs no mkdir.
//!
//! A supervisor that holds a name lock (`procwire up`) records the subtree's path in
//! `RUNTIME/NAME.cgroup`. If it is SIGKILLed, its workers die of their parent-death signal,
//! but what they started lives on in the subtree; the next supervisor of that name reads
//! the record, kills what is left there and removes it before it starts anything.
//!
//! Where cgroups cannot be used (none mounted, not writable, or `PROCWIRE_CGROUP=off`), the
//! fallback is the process group each worker leads (killed when the worker ends) and, for
//! `procwire up`, the child subreaper that re-parents orphans to the supervisor; what leaves
//! its process group escapes, and nothing is recovered after a crash. One line says which.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup::{self, Cgroup};

/// The environment variable that turns cgroups off (`off`): the fallback is used and said.
pub const CGROUP_ENV: &str = "PROCWIRE_CGROUP";

/// How long ending a subtree may wait for SIGKILLed processes to go.
const END_WITHIN: Duration = Duration::from_secs(10);

/// How the supervisor contains its workers' process trees.
#[derive(Debug)]
pub(crate) enum Containment {
    /// Each worker in a cgroup of its own under one subtree of the supervisor's.
    Cgroups {
        /// The supervisor's subtree.
        tree: Cgroup,
        /// The workers' cgroups by `POOL.INDEX`, made on first spawn, kept across restarts
        /// until one has to be killed.
        workers: BTreeMap<String, Cgroup>,
        /// Killed cgroups, removed once empty (or with the subtree).
        retired: Vec<Cgroup>,
        /// Cgroups made so far, numbering the replacements of retired ones.
        made: u64,
        /// The file recording `tree`'s path for a successor, if this supervisor has a name
        /// lock.
        record: Option<PathBuf>,
        /// Predecessors' subtrees that could not be ended, kept in the record.
        left: Vec<PathBuf>,
    },
    /// Process groups (and the subreaper where the supervisor is one); why not cgroups was
    /// said when it was set up.
    ProcessGroups,
}

/// What setting up containment found, to be said by the supervisor.
#[derive(Debug)]
pub(crate) struct SetUp {
    pub containment: Containment,
    /// Lines to say: what a predecessor left and was ended, and the fallback's explanation.
    pub notes: Vec<String>,
}

/// The record of `name`'s subtree in the runtime directory `runtime`.
fn record_path(runtime: &Path, name: &str) -> PathBuf {
    runtime.join(format!("{name}.cgroup"))
}

/// Ends what predecessors of `name` left in the subtrees the record names, one a line. Only
/// cgroup directories named as this supervisor names its subtrees are touched, whatever the
/// record says. Returns the subtrees that could not be ended, to be kept in the record.
fn end_predecessors(record: &Path, name: &str, notes: &mut Vec<String>) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(record) else {
        return Vec::new();
    };
    let mut left = Vec::new();
    for dir in text.lines().map(str::trim).filter(|l| !l.is_empty()).map(PathBuf::from) {
        let ours = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("procwire-{name}-")));
        if !(ours && dir.is_dir() && cgroup::is_cgroup2(&dir)) {
            continue;
        }
        match Cgroup::at(dir.clone()).end(Instant::now() + END_WITHIN) {
            Ok(0) => {}
            Ok(n) => notes.push(format!(
                "ended {n} process(es) a previous supervisor of this name left running in {}",
                dir.display()
            )),
            Err(e) => {
                notes.push(format!(
                    "cannot end what a previous supervisor left in {} (kept for the next start): {e}",
                    dir.display()
                ));
                left.push(dir);
            }
        }
    }
    left
}

/// Writes `dirs` into the record, one a line; no dirs, no record.
fn write_record(record: &Path, dirs: &[&Path]) -> std::io::Result<()> {
    if dirs.is_empty() {
        return match std::fs::remove_file(record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let text: String = dirs.iter().map(|d| format!("{}\n", d.display())).collect();
    std::fs::write(record, text)
}

impl Containment {
    /// Sets containment up for supervisor `name`. `runtime` is the directory of its name
    /// lock, if it holds one: only then is a predecessor's subtree recorded and ended.
    /// `subreaper`: whether orphans re-parent to this process (for the fallback's line).
    pub(crate) fn set_up(name: &str, runtime: Option<&Path>, subreaper: bool) -> SetUp {
        let mut notes = Vec::new();
        let record = runtime.map(|dir| record_path(dir, name));
        let left = match &record {
            Some(record) => end_predecessors(record, name, &mut notes),
            None => Vec::new(),
        };
        if let Some(record) = &record {
            let left: Vec<&Path> = left.iter().map(PathBuf::as_path).collect();
            let _ = write_record(record, &left);
        }
        let containment = match Containment::cgroups(name, record, left) {
            Ok(containment) => containment,
            Err(why) => {
                let reaped = if subreaper {
                    "orphans are re-parented to the supervisor and reaped"
                } else {
                    "orphans go to the program's own reaper"
                };
                notes.push(format!(
                    "containment: no cgroup ({why}); each worker's process group is killed when it ends and {reaped}, \
                     but a process that leaves its group (setsid) escapes, and what runs when the supervisor is killed \
                     is not ended by the next start"
                ));
                Containment::ProcessGroups
            }
        };
        SetUp { containment, notes }
    }

    /// `left`: the predecessors' subtrees that stay in the record.
    fn cgroups(name: &str, record: Option<PathBuf>, left: Vec<PathBuf>) -> Result<Containment, String> {
        if std::env::var(CGROUP_ENV).is_ok_and(|v| v == "off") {
            return Err(format!("{CGROUP_ENV}=off"));
        }
        let own = cgroup::own().map_err(|e| format!("cgroup v2: {e}"))?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = own.join(format!("procwire-{name}-{}-{nonce:08x}", std::process::id()));
        let tree = Cgroup::make(dir.clone()).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        // Moving a process needs write access to the common ancestor's cgroup.procs: ours.
        if let Err(e) = Cgroup::at(own.clone()).procs_writer() {
            let _ = tree.remove();
            return Err(format!(
                "cannot move processes out of {}: {e}",
                own.join("cgroup.procs").display()
            ));
        }
        if let Some(record) = &record {
            let all: Vec<&Path> = left.iter().map(PathBuf::as_path).chain([dir.as_path()]).collect();
            if let Err(e) = write_record(record, &all) {
                let _ = tree.remove();
                return Err(format!("cannot record the cgroup in {}: {e}", record.display()));
            }
        }
        Ok(Containment::Cgroups {
            tree,
            workers: BTreeMap::new(),
            retired: Vec::new(),
            made: 0,
            record,
            left,
        })
    }

    /// The subtree's directory, if cgroups are used.
    pub(crate) fn tree(&self) -> Option<&Path> {
        match self {
            Containment::Cgroups { tree, .. } => Some(tree.dir()),
            Containment::ProcessGroups => None,
        }
    }

    /// Worker `index` of `pool`'s cgroup, its directory open, for the worker to be cloned
    /// into (or to move itself in before exec); `None` without cgroups.
    pub(crate) fn for_worker(&mut self, pool: &str, index: u32) -> std::io::Result<Option<OwnedFd>> {
        let Containment::Cgroups {
            tree, workers, made, ..
        } = self
        else {
            return Ok(None);
        };
        let key = format!("{pool}.{index}");
        let cgroup = match workers.get(&key) {
            Some(cgroup) => cgroup,
            None => {
                // The first of a worker is named as it; replacements of retired ones get a
                // number.
                let name = match tree.dir().join(&key).exists() {
                    false => key.clone(),
                    true => format!("{key}.{made}"),
                };
                let cgroup = Cgroup::make(tree.dir().join(&name))
                    .map_err(|e| std::io::Error::new(e.kind(), format!("cgroup {name}: {e}")))?;
                *made += 1;
                workers.entry(key).or_insert(cgroup)
            }
        };
        cgroup
            .open()
            .map(Some)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", cgroup.dir().display())))
    }

    /// Kills everything left in worker `index` of `pool`'s cgroup (after the worker ended, or
    /// with it); nothing without cgroups, where its process group is killed instead. A cgroup
    /// with nothing left is not touched; one that was killed is retired (see the module's
    /// docs).
    pub(crate) fn kill_worker(&mut self, pool: &str, index: u32) -> std::io::Result<()> {
        let Containment::Cgroups { workers, retired, .. } = self else {
            return Ok(());
        };
        // The retired ones that have emptied since go now.
        retired.retain(|cgroup| cgroup.remove().is_err());
        let key = format!("{pool}.{index}");
        let Some(cgroup) = workers.get(&key) else {
            return Ok(());
        };
        if !cgroup.populated()? {
            return Ok(());
        }
        cgroup.kill()?;
        if let Some(cgroup) = workers.remove(&key) {
            retired.push(cgroup);
        }
        Ok(())
    }
}

impl Drop for Containment {
    fn drop(&mut self) {
        if let Containment::Cgroups { tree, record, left, .. } = self {
            // Whatever ended the supervisor, nothing it started outlives it; a subtree that
            // will not empty stays recorded for the next start.
            if tree.end(Instant::now() + END_WITHIN).is_ok() {
                if let Some(record) = record {
                    let left: Vec<&Path> = left.iter().map(PathBuf::as_path).collect();
                    let _ = write_record(record, &left);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_naming_what_is_not_this_supervisors_cgroup_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Named like a subtree of ours, but an ordinary directory; and one not named so.
        let lookalike = dir.path().join("procwire-n-1-0");
        std::fs::create_dir(&lookalike).unwrap();
        let record = record_path(dir.path(), "n");
        std::fs::write(&record, format!("{}\n/tmp\n\n", lookalike.display())).unwrap();
        let mut notes = Vec::new();
        assert_eq!(end_predecessors(&record, "n", &mut notes), Vec::<PathBuf>::new());
        assert!(notes.is_empty(), "{notes:?}");
        assert!(lookalike.is_dir(), "a directory that is no cgroup is left alone");
        write_record(&record, &[]).unwrap();
        assert!(!record.exists(), "no subtrees, no record");
    }
}
