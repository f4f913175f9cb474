//! [`Access`]: which local users may connect, checked with the peer's kernel-reported
//! credentials (`SO_PEERCRED`) as a connection is accepted, before any handshake.

use crate::transport::Credentials;

/// The environment variable holding the uids a supervisor allows on a worker's endpoints:
/// decimal, comma-separated (`0,1000`).
pub const ALLOW_UIDS_ENV: &str = "PROCWIRE_ALLOW_UIDS";
/// The environment variable holding the gids allowed besides the uids, as
/// [`ALLOW_UIDS_ENV`].
pub const ALLOW_GIDS_ENV: &str = "PROCWIRE_ALLOW_GIDS";

/// Which local peers a server serves ([`ServerConfig::allow`](super::ServerConfig::allow)).
///
/// A peer is served if its uid is listed, or its gid is (the gid `SO_PEERCRED` reports: the
/// peer's effective group when it connected; supplementary groups are not consulted), or it
/// is root. Root is always served: it can open any socket file and read any process's memory
/// anyway, so refusing it would protect nothing. Peers whose transport has no credentials
/// (TCP, pipes) are not checked: TCP is for `tcp:` (Noise) keys to guard, pipes reach only
/// the process given the other end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

/// An [`ALLOW_UIDS_ENV`] or [`ALLOW_GIDS_ENV`] that is not a list of ids.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is not a comma-separated list of decimal ids")]
pub struct AccessEnvError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
}

impl Access {
    /// Serves nobody but root; add uids and gids with [`uid`](Self::uid) and
    /// [`gid`](Self::gid).
    pub fn new() -> Self {
        Access::default()
    }

    /// Serves only this process's effective uid (and root).
    pub fn own_uid() -> Self {
        Access::new().uid(nix::unistd::geteuid().as_raw())
    }

    /// Also serves peers running as `uid`.
    pub fn uid(mut self, uid: u32) -> Self {
        if !self.uids.contains(&uid) {
            self.uids.push(uid);
        }
        self
    }

    /// Also serves peers whose (effective, primary) gid is `gid`.
    pub fn gid(mut self, gid: u32) -> Self {
        if !self.gids.contains(&gid) {
            self.gids.push(gid);
        }
        self
    }

    /// The uids served besides root.
    pub fn uids(&self) -> &[u32] {
        &self.uids
    }

    /// The gids served.
    pub fn gids(&self) -> &[u32] {
        &self.gids
    }

    /// Whether a peer with these credentials is served.
    pub fn permits(&self, peer: &Credentials) -> bool {
        peer.uid == 0 || self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }

    /// The access a supervisor set for this worker in [`ALLOW_UIDS_ENV`] and
    /// [`ALLOW_GIDS_ENV`]; `None` if neither is set (the process was not started by one).
    pub fn from_env() -> Result<Option<Access>, AccessEnvError> {
        let uids = std::env::var(ALLOW_UIDS_ENV).ok();
        let gids = std::env::var(ALLOW_GIDS_ENV).ok();
        if uids.is_none() && gids.is_none() {
            return Ok(None);
        }
        let mut access = Access::new();
        for uid in parse_ids(ALLOW_UIDS_ENV, uids.as_deref())? {
            access = access.uid(uid);
        }
        for gid in parse_ids(ALLOW_GIDS_ENV, gids.as_deref())? {
            access = access.gid(gid);
        }
        Ok(Some(access))
    }

    /// The values of [`ALLOW_UIDS_ENV`] and [`ALLOW_GIDS_ENV`] that give this access.
    pub fn to_env(&self) -> [(&'static str, String); 2] {
        let join = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        [(ALLOW_UIDS_ENV, join(&self.uids)), (ALLOW_GIDS_ENV, join(&self.gids))]
    }
}

fn parse_ids(var: &'static str, value: Option<&str>) -> Result<Vec<u32>, AccessEnvError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(|id| id.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| AccessEnvError {
            var,
            value: value.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Credentials {
        Credentials { pid: 1, uid, gid }
    }

    #[test]
    fn a_listed_uid_or_gid_or_root_is_served_and_no_one_else() {
        let access = Access::new().uid(1000).gid(50);
        assert!(access.permits(&peer(1000, 1000)));
        assert!(access.permits(&peer(2000, 50)));
        assert!(access.permits(&peer(0, 0)));
        assert!(!access.permits(&peer(2000, 2000)));
    }

    #[test]
    fn the_environment_round_trips_and_garbage_in_it_is_an_error_naming_the_variable() {
        let access = Access::new().uid(0).uid(1000).gid(7);
        let [(uids_var, uids), (gids_var, gids)] = access.to_env();
        assert_eq!(
            (uids_var, uids.as_str(), gids_var, gids.as_str()),
            (ALLOW_UIDS_ENV, "0,1000", ALLOW_GIDS_ENV, "7")
        );
        assert_eq!(parse_ids(ALLOW_UIDS_ENV, Some(&uids)).unwrap(), [0, 1000]);
        assert_eq!(parse_ids(ALLOW_GIDS_ENV, Some("")).unwrap(), Vec::<u32>::new());
        let error = parse_ids(ALLOW_UIDS_ENV, Some("0,alice")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "PROCWIRE_ALLOW_UIDS=\"0,alice\" is not a comma-separated list of decimal ids"
        );
    }
}
