//! cgroup v2, as much of it as containment needs: where the hierarchy is mounted
//! (`/proc/self/mountinfo`), which cgroup this process is in (`/proc/self/cgroup`), making and
//! removing cgroups below it, moving a process in (by writing `0` to `cgroup.procs` from the
//! process itself), killing everything in a subtree (`cgroup.kill`, Linux 5.14, else
//! `SIGKILL` to each pid of each `cgroup.procs`), and waiting until a subtree is empty
//! (`populated 0` in `cgroup.events`, which poll reports as `POLLPRI` when it changes).
//!
//! No controller is enabled: the cgroups only group processes, so the "no internal
//! processes" rule never applies and the supervisor's own cgroup may keep the supervisor.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The cgroup v2 mount in `mountinfo` (the text of `/proc/self/mountinfo`): its mount point
/// and the path within the hierarchy that it shows (`/` unless mounted from a subtree).
fn mount(mountinfo: &str) -> Option<(PathBuf, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = before.split(' ');
        let root = unescape(fields.nth(3)?);
        let point = unescape(fields.next()?);
        Some((PathBuf::from(point), PathBuf::from(root)))
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup v2 path in `cgroup` (the text of `/proc/self/cgroup`): the `0::`
/// line.
fn own_path(cgroup: &str) -> Option<PathBuf> {
    cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(PathBuf::from)
}

/// Where in the file system the cgroup at `path` (as `/proc/self/cgroup` names it) is, given
/// the mount point and the hierarchy path the mount shows.
fn locate(point: &Path, root: &Path, path: &Path) -> Option<PathBuf> {
    let inside = path.strip_prefix(root).ok()?;
    if inside.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(point.join(inside))
}

/// The directory of this process's own cgroup v2, or why there is none to use.
pub(crate) fn own() -> std::io::Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let (point, root) = mount(&mountinfo).ok_or_else(|| std::io::Error::other("no cgroup2 file system is mounted"))?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")?;
    let path =
        own_path(&cgroup).ok_or_else(|| std::io::Error::other("/proc/self/cgroup names no cgroup v2 (no 0:: line)"))?;
    locate(&point, &root, &path).ok_or_else(|| {
        std::io::Error::other(format!(
            "this process's cgroup {} is outside the cgroup2 mount at {} (which shows {})",
            path.display(),
            point.display(),
            root.display()
        ))
    })
}

/// Whether `dir` is a directory of a cgroup2 file system.
pub(crate) fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// One cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// The cgroup at `dir`, which exists.
    pub(crate) fn at(dir: PathBuf) -> Cgroup {
        Cgroup { dir }
    }

    /// Makes the cgroup at `dir` (an existing one is used as it is).
    pub(crate) fn make(dir: PathBuf) -> std::io::Result<Cgroup> {
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(Cgroup { dir }),
        }
    }

    /// Its directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its directory, open: what `clone3(CLONE_INTO_CGROUP)` takes.
    pub(crate) fn open(&self) -> std::io::Result<OwnedFd> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
            .open(&self.dir)?;
        Ok(dir.into())
    }

    /// Its `cgroup.procs`, open for writing: a process that writes `0` to it moves itself in
    /// (`write` is async-signal-safe, so a forked child can do it before exec).
    pub(crate) fn procs_writer(&self) -> std::io::Result<OwnedFd> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(self.dir.join("cgroup.procs"))?;
        Ok(file.into())
    }

    /// The pids in this cgroup and every cgroup below it.
    fn pids(&self) -> Vec<Pid> {
        let mut pids = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .map(Pid::from_raw),
                );
            }
            dirs.extend(children(&dir));
        }
        pids
    }

    /// SIGKILLs every process in the subtree; returns how many there were to kill. With
    /// `cgroup.kill` the kernel does it, also to processes forking meanwhile; without it, each
    /// pid is signalled, a few rounds over, for those forked while it went.
    pub(crate) fn kill(&self) -> std::io::Result<usize> {
        let count = self.pids().len();
        match std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
        {
            Ok(mut file) => file.write_all(b"1")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                for _ in 0..8 {
                    let pids = self.pids();
                    if pids.is_empty() {
                        break;
                    }
                    for pid in pids {
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                }
            }
            Err(e) => return Err(e),
        }
        Ok(count)
    }

    /// Whether any process is in the subtree (`populated` in `cgroup.events`).
    pub(crate) fn populated(&self) -> std::io::Result<bool> {
        let text = std::fs::read_to_string(self.dir.join("cgroup.events"))?;
        Ok(!text.lines().any(|line| line == "populated 0"))
    }

    /// Waits until no process is left in the subtree (killed ones are gone when they exit,
    /// reaped or not); false if `deadline` came first.
    pub(crate) fn wait_empty(&self, deadline: Instant) -> std::io::Result<bool> {
        let mut events = std::fs::File::open(self.dir.join("cgroup.events"))?;
        loop {
            let mut text = String::new();
            events.rewind()?;
            events.read_to_string(&mut text)?;
            if text.lines().any(|line| line == "populated 0") {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            let mut fds = [PollFd::new(events.as_fd(), PollFlags::POLLPRI)];
            match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Removes the cgroup and every cgroup below it, deepest first. Each must be empty.
    pub(crate) fn remove(&self) -> std::io::Result<()> {
        for child in children(&self.dir) {
            Cgroup::at(child).remove()?;
        }
        match std::fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Kills everything in the subtree, waits for it to go until `deadline`, and removes it.
    /// Returns how many processes it killed.
    pub(crate) fn end(&self, deadline: Instant) -> std::io::Result<usize> {
        let killed = self.kill()?;
        if !self.wait_empty(deadline)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("processes still in {} after SIGKILL", self.dir.display()),
            ));
        }
        self.remove()?;
        Ok(killed)
    }
}

/// The cgroups directly below `dir`.
fn children(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_among_v1_mounts_with_its_escapes_undone() {
        let mountinfo = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime shared:9 - cgroup2 cgroup2 rw
";
        assert_eq!(
            mount(mountinfo),
            Some((PathBuf::from("/sys/fs/cgroup/uni fied"), PathBuf::from("/")))
        );
        assert_eq!(
            mount("35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"),
            None
        );
    }

    #[test]
    fn the_own_cgroup_is_the_zero_line_placed_under_the_mount_point() {
        let cgroup = "4:memory:/x\n0::/system.slice/app.service\n";
        let path = own_path(cgroup).unwrap();
        assert_eq!(path, PathBuf::from("/system.slice/app.service"));
        let point = Path::new("/sys/fs/cgroup");
        assert_eq!(
            locate(point, Path::new("/"), &path),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/app.service"))
        );
        // A mount of a subtree shows paths below its root only.
        assert_eq!(
            locate(point, Path::new("/system.slice"), &path),
            Some(PathBuf::from("/sys/fs/cgroup/app.service"))
        );
        assert_eq!(locate(point, Path::new("/user.slice"), &path), None);
        assert_eq!(locate(point, Path::new("/"), Path::new("/../etc")), None);
        assert_eq!(own_path("1:cpu:/\n"), None);
    }
}
