//! A pool's `allow_uids` and `allow_gids`: who besides the supervisor's user (and root) may
//! connect to its Unix endpoints, and the socket files' mode and group that follow.

use procwire_rpc::Access;

use super::walk::{quote, Checked, Checker, Value};
use super::Pool;

/// Which list: users or groups.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ids {
    Users,
    Groups,
}

impl Ids {
    fn key(self) -> &'static str {
        match self {
            Ids::Users => "allow_uids",
            Ids::Groups => "allow_gids",
        }
    }

    /// The id of the user or group named `name`, if there is one.
    fn look_up(self, name: &str) -> Result<Option<u32>, nix::Error> {
        Ok(match self {
            Ids::Users => nix::unistd::User::from_name(name)?.map(|u| u.uid.as_raw()),
            Ids::Groups => nix::unistd::Group::from_name(name)?.map(|g| g.gid.as_raw()),
        })
    }
}

impl Checker<'_> {
    /// An `allow_uids` or `allow_gids` array: ids, or names looked up now (an unknown name
    /// is an error at its place in the file).
    pub(super) fn ids(&self, which: Ids, value: &Value<'_>) -> Checked<Vec<u32>> {
        let key = which.key();
        let mut ids = Vec::new();
        for item in self.array(key, value)?.iter() {
            let id = match item.get_ref() {
                toml::de::DeValue::String(name) => match which.look_up(name) {
                    Ok(Some(id)) => id,
                    Ok(None) => {
                        let what = match which {
                            Ids::Users => "user",
                            Ids::Groups => "group",
                        };
                        return Err(self.error(item.span(), format!("`{key}`: no {what} named {}", quote(name))));
                    }
                    Err(e) => {
                        return Err(self.error(item.span(), format!("`{key}`: cannot look up {}: {e}", quote(name))))
                    }
                },
                _ => self.integer_in(key, item, 0, i128::from(u32::MAX - 1))?,
            };
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

impl Pool {
    /// Who may connect to the pool's Unix endpoints: the supervisor's effective uid, root,
    /// and the pool's `allow_uids` and `allow_gids`. Its workers are told in
    /// `PROCWIRE_ALLOW_UIDS` and `PROCWIRE_ALLOW_GIDS`.
    pub fn access(&self) -> Access {
        let mut access = Access::own_uid();
        for uid in &self.allow_uids {
            access = access.uid(*uid);
        }
        for gid in &self.allow_gids {
            access = access.gid(*gid);
        }
        access
    }

    /// The socket files' mode when the manifest gives no `mode`: 0600 when only the
    /// supervisor's user (and root) may connect; 0660 when one group may too (the file
    /// gets that group); else 0666, and the credentials check alone tells peers apart.
    pub(super) fn default_mode(&self) -> u32 {
        let me = nix::unistd::geteuid().as_raw();
        let other_users = self.allow_uids.iter().any(|&uid| uid != me && uid != 0);
        match (other_users, self.allow_gids.len()) {
            (false, 0) => 0o600,
            (false, 1) => 0o660,
            _ => 0o666,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::testing::{accepted, refused};

    #[test]
    fn allow_lists_take_ids_and_names_and_an_unknown_name_is_refused_at_it() {
        let text = "[pool.web]\ncommand = [\"./web\"]\nallow_uids = [\"root\", 0]\nallow_gids = [\"root\"]\n";
        let manifest = accepted(text);
        let web = &manifest.pools[0];
        assert_eq!(
            (web.allow_uids.as_slice(), web.allow_gids.as_slice()),
            (&[0][..], &[0][..])
        );
        assert_eq!(
            web.mode, 0o660,
            "one group and no other user: the group may use the file"
        );
        let given = accepted("[pool.web]\ncommand = [\"./web\"]\nallow_gids = [1, 2]\nmode = \"0600\"\n");
        assert_eq!(given.pools[0].mode, 0o600, "a mode given is kept");
        refused(
            "[pool.web]\ncommand = [\"./web\"]\nallow_uids = [\"no-such-user-here\"]\n",
            3,
            15,
            &["`allow_uids`: no user named `no-such-user-here`"],
        );
        refused(
            "[pool.web]\ncommand = [\"./web\"]\nallow_gids = [-1]\n",
            3,
            15,
            &["`allow_gids` must be at least 0"],
        );
    }

    #[test]
    fn the_default_mode_opens_the_file_only_as_far_as_the_lists_need() {
        let me = nix::unistd::geteuid().as_raw();
        let mut pool = Pool::new("p", vec!["true".into()]);
        assert_eq!(pool.default_mode(), 0o600);
        pool.allow_uids = vec![me, 0];
        assert_eq!(pool.default_mode(), 0o600);
        pool.allow_gids = vec![4000];
        assert_eq!(pool.default_mode(), 0o660);
        pool.allow_gids = vec![4000, 4001];
        assert_eq!(pool.default_mode(), 0o666);
        pool.allow_gids = Vec::new();
        pool.allow_uids = vec![me.wrapping_add(1).max(1)];
        assert_eq!(pool.default_mode(), 0o666);
        let access = pool.access();
        assert!(access.uids().contains(&me) && access.uids().contains(&me.wrapping_add(1).max(1)));
    }
}
