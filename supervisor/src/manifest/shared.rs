//! `[shared.NAME]` tables (shared memory regions) and the pools' `shared = [...]` lists that
//! name them.

use toml::de::{DeTable, DeValue};

use super::walk::{quote, Checked, Checker, Key, Value};
use super::{Manifest, Pool, SharedRegion, ValidationError};

const SHARED_KEYS: &[&str] = &["size"];

/// The largest region a manifest may ask for: 1 TiB (the memory is only used as touched,
/// but a typo should not reserve the address space of the machine).
pub const MAX_SHARED_SIZE: u64 = 1 << 40;

impl Checker<'_> {
    /// The `[shared.NAME]` tables, in file order.
    pub(super) fn shared_regions(&self, shared_key: &Key<'_>, value: &Value<'_>) -> Checked<Vec<SharedRegion>> {
        self.named_tables("shared", shared_key, value)?
            .into_iter()
            .map(|(key, value)| self.shared_region(key, value))
            .collect()
    }

    fn shared_region(&self, key: &Key<'_>, value: &Value<'_>) -> Checked<SharedRegion> {
        let (name, entries) = self.named_table("shared", "shared region", key, value)?;
        let place = format!("[shared.{name}]");
        let mut size = None;
        for (key, value) in entries {
            match key.get_ref().as_ref() {
                "size" => {
                    let bytes = self.size("size", value)?;
                    if bytes == 0 || bytes > MAX_SHARED_SIZE {
                        return Err(self.error(
                            value.span(),
                            format!("`size` of {place} must be between 1 byte and 1TiB"),
                        ));
                    }
                    size = Some(bytes);
                }
                _ => return Err(self.unknown_key(key, &place, SHARED_KEYS)),
            }
        }
        let Some(size) = size else {
            return Err(self.error(key.span(), format!("{place} has no `size` (like size = \"64MiB\")")));
        };
        Ok(SharedRegion {
            name: name.to_owned(),
            size,
        })
    }

    /// A pool's `shared` or `queues` list: names, each once.
    pub(super) fn listed_names(&self, key: &str, value: &Value<'_>) -> Checked<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for item in self.array(key, value)?.iter() {
            let name = self.non_empty_string(key, item)?;
            if names.iter().any(|n| n == name) {
                return Err(self.error(item.span(), format!("`{key}` names {} twice", quote(name))));
            }
            names.push(name.to_owned());
        }
        Ok(names)
    }

    /// Every name in each pool's `listed.key` list is a `[listed.table.NAME]` table; else
    /// the first that is not, pointed at in the file.
    pub(super) fn check_listed_names(
        &self,
        root: &DeTable<'_>,
        pools: &[Pool],
        listed: &Listed,
        known: &[&str],
    ) -> Checked<()> {
        for pool in pools {
            let Some(unknown) = (listed.names)(pool).iter().find(|name| !known.contains(&name.as_str())) else {
                continue;
            };
            let at = pool_list_item(root, &pool.name, listed.key, unknown).unwrap_or(0);
            let tables = if known.is_empty() {
                format!("there are no [{}.NAME] tables", listed.table)
            } else {
                format!("{}: {}", listed.plural, known.join(", "))
            };
            return Err(self.error_at(
                at,
                format!(
                    "[pool.{}] lists unknown {} {}; {tables}",
                    pool.name,
                    listed.what,
                    quote(unknown)
                ),
            ));
        }
        Ok(())
    }
}

/// What a pool's list of names refers to: `shared = [...]` regions or `queues = [...]`.
pub(super) struct Listed {
    /// The pool's key.
    pub key: &'static str,
    /// The top-level table of the things named.
    pub table: &'static str,
    /// One of them, for messages.
    pub what: &'static str,
    /// Several.
    pub plural: &'static str,
    /// The pool's list.
    pub names: fn(&Pool) -> &[String],
}

/// A pool's `shared` list.
pub(super) const SHARED: Listed = Listed {
    key: "shared",
    table: "shared",
    what: "shared region",
    plural: "shared regions",
    names: |pool| &pool.shared,
};

/// Where `name` is in `[pool.POOL] KEY = [...]`.
fn pool_list_item(root: &DeTable<'_>, pool: &str, key: &str, name: &str) -> Option<usize> {
    let DeValue::Table(pools) = root.get("pool")?.get_ref() else {
        return None;
    };
    let DeValue::Table(table) = pools.get(pool)?.get_ref() else {
        return None;
    };
    let DeValue::Array(items) = table.get(key)?.get_ref() else {
        return None;
    };
    items
        .iter()
        .find(|item| matches!(item.get_ref(), DeValue::String(s) if s.as_ref() == name))
        .map(|item| item.span().start)
}

/// The first pool whose `listed.key` list names something not in `known`, as the error of
/// a manifest built in code.
pub(super) fn unknown_listed(manifest: &Manifest, listed: &Listed, known: &[&str]) -> Result<(), ValidationError> {
    for pool in &manifest.pools {
        if let Some(unknown) = (listed.names)(pool).iter().find(|name| !known.contains(&name.as_str())) {
            return Err(ValidationError::Value {
                pool: pool.name.clone(),
                key: listed.key.to_owned(),
                why: format!("names unknown {} {}", listed.what, quote(unknown)),
            });
        }
    }
    Ok(())
}

/// The shared regions of a manifest, from a file or built in code: valid, unique names,
/// sizes in range, and every pool's `shared` naming one of them.
pub(super) fn validate(manifest: &Manifest) -> Result<(), ValidationError> {
    let regions = &manifest.shared;
    for (i, region) in regions.iter().enumerate() {
        let why = if procwire_rpc::shm::env_var(&region.name).is_err() {
            Some("is not a valid name: use letters, digits, `-` and `_`".to_owned())
        } else if regions[..i].iter().any(|other| other.name == region.name) {
            Some("is defined twice".to_owned())
        } else if region.size == 0 || region.size > MAX_SHARED_SIZE {
            Some(format!("has size {}; it must be from 1 byte to 1TiB", region.size))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ValidationError::Shared {
                name: region.name.clone(),
                why,
            });
        }
    }
    let known: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
    unknown_listed(manifest, &SHARED, &known)
}

#[cfg(test)]
mod tests {
    use crate::manifest::testing::{accepted, refused, web};
    use crate::manifest::*;

    #[test]
    fn a_shared_region_and_a_pool_that_lists_it_are_read() {
        let manifest = accepted(&format!(
            "{}\n[shared.counters]\nsize = \"64MiB\"\n[shared.tiny]\nsize = 16\n",
            web("shared = [\"counters\", \"tiny\"]")
        ));
        assert_eq!(
            manifest.shared,
            [
                SharedRegion {
                    name: "counters".into(),
                    size: 64 << 20
                },
                SharedRegion {
                    name: "tiny".into(),
                    size: 16
                },
            ]
        );
        assert_eq!(manifest.pools[0].shared, ["counters", "tiny"]);
        assert!(accepted(&web("")).pools[0].shared.is_empty());
    }

    #[test]
    fn a_pool_listing_an_unknown_region_is_refused_at_the_name() {
        let text = format!(
            "{}\n[shared.counters]\nsize = \"1MiB\"\n",
            web("shared = [\"countrs\"]")
        );
        refused(
            &text,
            3,
            11,
            &[
                "[pool.web] lists unknown shared region `countrs`",
                "shared regions: counters",
            ],
        );
        refused(&web("shared = [\"x\"]"), 3, 11, &["there are no [shared.NAME] tables"]);
        refused(&web("shared = [\"x\", \"x\"]"), 3, 16, &["`shared` names `x` twice"]);
    }

    #[test]
    fn a_shared_region_needs_a_size_in_range_and_no_other_key() {
        let with = |table: &str| format!("{}\n[shared.r]\n{table}\n", web(""));
        refused(&with(""), 5, 9, &["[shared.r] has no `size`"]);
        refused(&with("size = 0"), 6, 8, &["between 1 byte and 1TiB"]);
        refused(&with("size = \"2TiB\""), 6, 8, &["between 1 byte and 1TiB"]);
        refused(&with("sise = 4096"), 6, 1, &["sise", "size"]);
        refused(
            &format!("{}\n[shared.\"a b\"]\nsize = 1\n", web("")),
            5,
            9,
            &["bad shared region name `a b`"],
        );
    }

    #[test]
    fn a_manifest_built_in_code_is_checked_for_its_regions() {
        let pool = |shared: &[&str]| {
            let mut pool = Pool::new("web", vec!["/bin/true".into()]);
            pool.shared = shared.iter().map(|s| s.to_string()).collect();
            pool
        };
        let ok = Manifest::new("t").shared_region("r", 4096).pool(pool(&["r"]));
        ok.validate_for(Host::Command).unwrap();
        let err = Manifest::new("t")
            .pool(pool(&["r"]))
            .validate_for(Host::Command)
            .unwrap_err();
        assert_eq!(err.to_string(), "pool web: `shared` names unknown shared region `r`");
        let twice = Manifest::new("t")
            .shared_region("r", 1)
            .shared_region("r", 2)
            .pool(pool(&[]));
        assert_eq!(
            twice.validate_for(Host::Command).unwrap_err().to_string(),
            "shared region \"r\" is defined twice"
        );
        let empty = Manifest::new("t").shared_region("r", 0).pool(pool(&[]));
        assert!(empty
            .validate_for(Host::Command)
            .unwrap_err()
            .to_string()
            .contains("has size 0"));
    }
}
