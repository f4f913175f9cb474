//! Binding the sockets the supervisor owns for its workers (`listen` endpoints), once, with
//! the pool's mode and group, and handing an open socket over when a reload only changes its
//! kind.

use std::collections::BTreeMap;

use crate::manifest::{Endpoint, Manifest, Pool};

/// Binds every endpoint the manifest's pools name that is not bound yet. Unix socket files
/// are created with the pool's `mode` (default 0600), and only in a directory others cannot
/// write to, where nobody can swap the file for their own.
pub(super) fn bind_listeners(
    manifest: &Manifest,
    listeners: &mut BTreeMap<Endpoint, std::os::fd::OwnedFd>,
) -> Result<(), (String, std::io::Error)> {
    let named: std::collections::BTreeSet<Endpoint> = manifest.pools.iter().flat_map(Pool::endpoints).collect();
    for pool in &manifest.pools {
        for endpoint in pool.endpoints() {
            if listeners.contains_key(&endpoint) {
                continue;
            }
            let what = format!("pool {}: listen {endpoint}", pool.name);
            // Only a socket the manifest no longer names under its old kind is handed over:
            // two kinds at one address at once (`unix:P` and `shm:P`) stay an error.
            let unnamed = listeners.iter().filter(|(e, _)| !named.contains(*e));
            let fd = same_socket(unnamed, &endpoint)
                .unwrap_or_else(|| bind_endpoint(&endpoint, pool.mode, socket_group(pool)))
                .map_err(|e| (what, e))?;
            listeners.insert(endpoint, fd);
        }
    }
    Ok(())
}

/// A second descriptor of the open socket bound where `endpoint` binds (the same TCP host
/// and port, the same path) under another kind of endpoint: `tcp+plain:X` reloaded as
/// `tcp:X`, or `unix:P` as `shm:P`. The socket stays, and only the name it is handed to
/// workers under changes: binding anew would fail (address in use) while the old one is
/// open, and closing it first would refuse connections meanwhile and lose it if the reload
/// is refused later. The old name keeps its copy until no pool names it.
pub(super) fn same_socket<'a>(
    listeners: impl IntoIterator<Item = (&'a Endpoint, &'a std::os::fd::OwnedFd)>,
    endpoint: &Endpoint,
) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
    #[derive(PartialEq)]
    enum Place<'a> {
        Tcp(&'a str, u16),
        Path(&'a std::path::Path),
    }
    fn place(e: &Endpoint) -> Option<Place<'_>> {
        match e {
            Endpoint::TcpNoise { host, port } | Endpoint::TcpPlain { host, port } => Some(Place::Tcp(host, *port)),
            Endpoint::Unix(path) | Endpoint::Shm(path) | Endpoint::Mq(path) => Some(Place::Path(path)),
            _ => None,
        }
    }
    let wanted = place(endpoint)?;
    listeners
        .into_iter()
        .find(|(bound, _)| place(bound).as_ref() == Some(&wanted))
        .map(|(_, fd)| fd.try_clone())
}

/// A listening Unix socket at `path` whose file has exactly `mode` (and `group`, if given),
/// and never more in the meantime: bind(2) creates the file with the socket's own mode (set
/// first, with fchmod) less the umask, and a chmod then adds back what the umask took. The
/// process's umask, which every thread of an embedding program shares, is left alone. Nobody
/// can connect before listen(2), which comes last.
pub(crate) fn bind_unix(
    path: &std::path::Path,
    mode: u32,
    group: Option<nix::unistd::Gid>,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let mode = mode & 0o777;
    nix::sys::stat::fchmod(fd.as_raw_fd(), nix::sys::stat::Mode::from_bits_truncate(mode))?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    if let Some(group) = group {
        nix::unistd::chown(path, None, Some(group))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listen(&fd, Backlog::MAXCONN)?;
    Ok(fd)
}

/// The group a pool's Unix socket files belong to: the first of its `allow_gids`, if any.
pub(super) fn socket_group(pool: &Pool) -> Option<nix::unistd::Gid> {
    pool.allow_gids.first().map(|gid| nix::unistd::Gid::from_raw(*gid))
}

pub(super) fn bind_endpoint(
    endpoint: &Endpoint,
    mode: u32,
    group: Option<nix::unistd::Gid>,
) -> std::io::Result<std::os::fd::OwnedFd> {
    match endpoint {
        // The worker authenticates a `tcp:` socket's peers with the pool's key (see spawn).
        Endpoint::TcpNoise { host, port } | Endpoint::TcpPlain { host, port } => {
            Ok(std::net::TcpListener::bind((host.as_str(), *port))?.into())
        }
        // An shm or mq endpoint is a Unix socket that hands out shared-memory or
        // message-queue connections.
        Endpoint::Unix(path) | Endpoint::Shm(path) | Endpoint::Mq(path) => {
            use std::os::unix::fs::{FileTypeExt, PermissionsExt};
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            let dir_mode = std::fs::metadata(dir)?.permissions().mode();
            if dir_mode & 0o002 != 0 {
                return Err(std::io::Error::other(format!(
                    "{} is writable by everyone; put the socket in a private directory",
                    dir.display()
                )));
            }
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                // A socket file left by an earlier run, unless something still answers there.
                super::lock::remove_stale_socket(path)?;
            }
            bind_unix(path, mode, group)
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("the supervisor cannot own {other} yet"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn two_kinds_of_endpoint_at_one_path_in_one_manifest_are_refused_but_a_reload_may_swap_them() {
        use crate::manifest::{Endpoint, Manifest, Pool};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        let pool = |name: &str, listen: Endpoint| {
            let mut pool = Pool::new(name, vec!["true".into()]);
            pool.listen = vec![listen];
            pool
        };
        let both = Manifest::new("t")
            .pool(pool("a", Endpoint::Unix(path.clone())))
            .pool(pool("b", Endpoint::Shm(path.clone())));
        let mut listeners = std::collections::BTreeMap::new();
        let (what, _) = super::bind_listeners(&both, &mut listeners).unwrap_err();
        assert!(what.contains("pool b: listen shm:"), "{what}");
        drop(listeners);
        std::fs::remove_file(&path).unwrap();
        let mut listeners = std::collections::BTreeMap::new();
        super::bind_listeners(
            &Manifest::new("t").pool(pool("a", Endpoint::Unix(path.clone()))),
            &mut listeners,
        )
        .unwrap();
        super::bind_listeners(
            &Manifest::new("t").pool(pool("a", Endpoint::Shm(path.clone()))),
            &mut listeners,
        )
        .unwrap();
        assert_eq!(
            listeners.len(),
            2,
            "the same socket under both names until the old one is dropped"
        );
    }

    #[test]
    fn a_unix_socket_file_gets_exactly_its_mode_whatever_the_umask_takes_away() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o660, 0o666] {
            let path = dir.path().join(format!("s-{mode:o}.sock"));
            let _fd = super::bind_unix(&path, mode, None).unwrap();
            let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, mode, "{path:?}");
            std::os::unix::net::UnixStream::connect(&path).expect("it listens");
        }
    }
}
