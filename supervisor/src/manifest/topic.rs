//! `[topic.NAME]` tables (publish/subscribe topics whose socket the supervisor owns) and the
//! pools' `publishes = [...]` and `subscribes = [...]` lists that name them.

use procwire_rpc::topic::named::Transport;
use procwire_rpc::topic::Overflow;
use toml::de::DeTable;

use super::shared::{unknown_listed, Listed};
use super::walk::{Checked, Checker, Key, Value};
use super::{Manifest, Pool, TopicDecl, ValidationError};

const TOPIC_KEYS: &[&str] = &[
    "transport",
    "capacity",
    "overflow",
    "last_value",
    "message_size",
    "mode",
    "path",
];
const TRANSPORTS: &[(&str, Transport)] = &[("unix", Transport::Unix), ("shm", Transport::Shm)];

/// The most messages a topic may queue per subscriber (over shm: slots in its ring).
pub const MAX_TOPIC_CAPACITY: usize = 1 << 20;
/// The largest message a shared-memory topic may carry: 16 MiB (each of its `capacity`
/// slots is this big).
pub const MAX_TOPIC_MESSAGE_SIZE: u64 = 16 << 20;

/// A pool's `publishes` list.
pub(super) const PUBLISHES: Listed = Listed {
    key: "publishes",
    table: "topic",
    what: "topic",
    plural: "topics",
    names: |pool| &pool.publishes,
};

/// A pool's `subscribes` list.
pub(super) const SUBSCRIBES: Listed = Listed {
    key: "subscribes",
    table: "topic",
    what: "topic",
    plural: "topics",
    names: |pool| &pool.subscribes,
};

impl Checker<'_> {
    /// The `[topic.NAME]` tables, in file order.
    pub(super) fn topics(&self, topic_key: &Key<'_>, value: &Value<'_>) -> Checked<Vec<TopicDecl>> {
        self.named_tables("topic", topic_key, value)?
            .into_iter()
            .map(|(key, value)| self.topic(key, value))
            .collect()
    }

    fn topic(&self, key: &Key<'_>, value: &Value<'_>) -> Checked<TopicDecl> {
        let (name, entries) = self.named_table("topic", "topic", key, value)?;
        let place = format!("[topic.{name}]");
        let mut topic = TopicDecl::new(name);
        let mut overflow_at = None;
        for (key, value) in entries {
            match key.get_ref().as_ref() {
                "transport" => topic.transport = self.choice("transport", value, TRANSPORTS)?,
                "capacity" => topic.capacity = self.integer_in("capacity", value, 1, MAX_TOPIC_CAPACITY as i128)?,
                "overflow" => {
                    topic.overflow = self.choice("overflow", value, Overflow::NAMES)?;
                    overflow_at = Some(value.span());
                }
                "last_value" => topic.last_value = self.boolean("last_value", value)?,
                "message_size" => {
                    let bytes = self.size("message_size", value)?;
                    if bytes == 0 || bytes > MAX_TOPIC_MESSAGE_SIZE {
                        return Err(self.error(
                            value.span(),
                            format!("`message_size` of {place} must be between 1 byte and 16MiB"),
                        ));
                    }
                    topic.message_size = bytes;
                }
                "mode" => topic.mode = self.mode(value)?,
                "path" => topic.path = Some(self.resolve(self.non_empty_string("path", value)?)),
                _ => return Err(self.unknown_key(key, &place, TOPIC_KEYS)),
            }
        }
        if let (Some(why), Some(at)) = (shm_refuses(&topic), overflow_at) {
            return Err(self.error(at, format!("{place}: {why}")));
        }
        Ok(topic)
    }

    /// Every pool's `publishes` and `subscribes` name a topic, and each topic has exactly one
    /// publishing pool of one worker; else the error points at the name in the file.
    pub(super) fn check_topics(&self, root: &DeTable<'_>, pools: &[Pool], topics: &[TopicDecl]) -> Checked<()> {
        let known: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        self.check_listed_names(root, pools, &PUBLISHES, &known)?;
        self.check_listed_names(root, pools, &SUBSCRIBES, &known)?;
        Ok(())
    }
}

/// The size of a shared-memory topic's ring: at least its slots (each a message and a
/// 16-byte header), which every subscriber maps too.
fn shm_ring_size(topic: &TopicDecl) -> Option<u64> {
    (topic.transport == Transport::Shm)
        .then(|| (topic.capacity as u64).saturating_mul(topic.message_size.div_ceil(8) * 8 + 16))
}

/// Why a shared-memory topic cannot have its overflow policy, if it cannot.
fn shm_refuses(topic: &TopicDecl) -> Option<&'static str> {
    (topic.transport == Transport::Shm && topic.overflow == Overflow::DropNewest).then_some(
        "overflow \"drop-newest\" is not possible over shm: one ring is every subscriber's queue, \
         so the writer cannot drop a message for one of them only; use drop-oldest, block or disconnect",
    )
}

/// What is wrong with a topic's `path`, if anything: too long for a Unix socket, or in a
/// directory that is missing or that others can write to (where they could swap the file).
fn bad_path(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let length = path.as_os_str().len();
    if length > super::UNIX_PATH_MAX {
        return Some(format!(
            "has a path of {length} bytes; a Unix socket's is at most {}",
            super::UNIX_PATH_MAX
        ));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Err(e) => Some(format!(
            "has its socket in {}, which cannot be used: {e}",
            dir.display()
        )),
        Ok(meta) if meta.permissions().mode() & 0o002 != 0 => Some(format!(
            "has its socket in {}, which everyone can write to; put it in a private directory",
            dir.display()
        )),
        Ok(_) => None,
    }
}

/// The topics of a manifest, from a file or built in code: valid, unique names, settings in
/// range, every pool's lists naming one of them, and one publisher each.
pub(super) fn validate(manifest: &Manifest) -> Result<(), ValidationError> {
    let topics = &manifest.topics;
    for (i, topic) in topics.iter().enumerate() {
        let publishers: Vec<&Pool> = manifest
            .pools
            .iter()
            .filter(|pool| pool.publishes.contains(&topic.name))
            .collect();
        let why = if procwire_rpc::shm::env_var(&topic.name).is_err() {
            Some("is not a valid name: use letters, digits, `-` and `_`".to_owned())
        } else if topics[..i].iter().any(|other| other.name == topic.name) {
            Some("is defined twice".to_owned())
        } else if topic.capacity == 0 || topic.capacity > MAX_TOPIC_CAPACITY {
            Some(format!(
                "has a capacity of {}; it must be from 1 to {MAX_TOPIC_CAPACITY}",
                topic.capacity
            ))
        } else if topic.message_size == 0 || topic.message_size > MAX_TOPIC_MESSAGE_SIZE {
            Some(format!(
                "has messages of {} bytes; they must be from 1 byte to 16MiB",
                topic.message_size
            ))
        } else if let Some(size) = shm_ring_size(topic).filter(|&size| size > super::shared::MAX_SHARED_SIZE) {
            Some(format!(
                "needs a ring of {size} bytes ({} slots of {} bytes); a shared region is at most {} bytes: \
                 lower `capacity` or `message_size`",
                topic.capacity,
                topic.message_size,
                super::shared::MAX_SHARED_SIZE
            ))
        } else if topic.mode > 0o777 {
            Some(format!("has mode {:o}, which is not permissions", topic.mode))
        } else if let Some(why) = shm_refuses(topic) {
            Some(why.to_owned())
        } else if let Some(why) = topic.path.as_deref().and_then(bad_path) {
            Some(why)
        } else if publishers.is_empty() {
            Some(format!(
                "has no publisher: add publishes = [\"{}\"] to the pool that publishes it",
                topic.name
            ))
        } else if publishers.len() > 1 {
            Some(format!(
                "is published by pools {} and {}: a topic has one publisher",
                publishers[0].name, publishers[1].name
            ))
        } else if publishers[0].workers != 1 {
            Some(format!(
                "is published by pool {}, which has {} workers: a topic's publisher is one process \
                 (each would accept a share of the subscribers)",
                publishers[0].name, publishers[0].workers
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ValidationError::Topic {
                name: topic.name.clone(),
                why,
            });
        }
    }
    let known: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    unknown_listed(manifest, &PUBLISHES, &known)?;
    unknown_listed(manifest, &SUBSCRIBES, &known)?;
    for pool in &manifest.pools {
        for topic in topics.iter().filter(|t| pool.subscribes.contains(&t.name)) {
            if let Some(why) = unreachable_by(pool, topic) {
                return Err(ValidationError::Value {
                    pool: pool.name.clone(),
                    key: "subscribes".to_owned(),
                    why,
                });
            }
        }
    }
    Ok(())
}

/// Why the workers of `pool` could not connect to `topic`'s socket, if they could not: it
/// belongs to the supervisor's user and group, so a subscriber running as another user (not
/// root) may connect only if the topic's `mode` lets everyone write the socket, or its group
/// when the pool's group or one of its user's groups is the supervisor's. The publisher does
/// not check its peers' credentials, so the socket's mode is the whole of the access rule:
/// refused here rather than failing with EACCES in a crash loop.
fn unreachable_by(pool: &Pool, topic: &TopicDecl) -> Option<String> {
    use nix::unistd::{getegid, geteuid, Group, User};
    let user = User::from_name(pool.user.as_deref()?).ok().flatten()?;
    let (me, my_group) = (geteuid(), getegid());
    let gid = match &pool.group {
        Some(name) => Group::from_name(name).ok().flatten().map_or(user.gid, |g| g.gid),
        None => user.gid,
    };
    let in_my_group = gid == my_group
        || std::ffi::CString::new(user.name.as_bytes())
            .ok()
            .and_then(|name| nix::unistd::getgrouplist(&name, gid).ok())
            .is_some_and(|groups| groups.contains(&my_group));
    if user.uid == me || user.uid.is_root() || topic.mode & 0o002 != 0 || (in_my_group && topic.mode & 0o020 != 0) {
        return None;
    }
    Some(format!(
        "lists topic `{}`, but the pool runs as {} (uid {}), who cannot connect to the topic's socket \
         (mode {:04o}, owned by uid {me} and gid {my_group}): run the pool as uid {me}, or give [topic.{}] \
         mode = \"0666\" (then any local user may subscribe)",
        topic.name, user.name, user.uid, topic.mode, topic.name
    ))
}

#[cfg(test)]
mod tests {
    use crate::manifest::testing::{accepted, refused, web};
    use crate::manifest::*;
    use procwire_rpc::topic::named::Transport;
    use procwire_rpc::topic::Overflow;

    #[test]
    fn a_topic_and_the_pools_that_publish_and_subscribe_are_read_with_defaults() {
        let text = format!(
            "{}\n[pool.view]\ncommand = [\"/bin/true\"]\nsubscribes = [\"prices\", \"news\"]\n\
             [topic.prices]\ncapacity = 8\noverflow = \"block\"\nlast_value = false\n\
             [topic.news]\ntransport = \"shm\"\nmessage_size = \"1KiB\"\nmode = \"0660\"\npath = \"run/news.sock\"\n",
            web("publishes = [\"prices\", \"news\"]")
        );
        let manifest = accepted(&text);
        let prices = &manifest.topics[0];
        assert_eq!(
            (prices.capacity, prices.overflow, prices.last_value, prices.transport),
            (8, Overflow::Block, false, Transport::Unix)
        );
        let news = &manifest.topics[1];
        assert_eq!(
            (
                news.capacity,
                news.overflow,
                news.last_value,
                news.transport,
                news.message_size,
                news.mode
            ),
            (64, Overflow::DropOldest, true, Transport::Shm, 1024, 0o660)
        );
        assert_eq!(
            news.path.as_deref(),
            Some(std::path::Path::new("/srv/app/run/news.sock"))
        );
        assert_eq!(prices.path, None);
        assert_eq!(manifest.pools[0].publishes, ["prices", "news"]);
        assert_eq!(manifest.pools[1].subscribes, ["prices", "news"]);
    }

    #[test]
    fn a_pool_naming_an_unknown_topic_or_a_bad_topic_table_is_refused_where_it_is() {
        let text = format!("{}\n[topic.ticks]\n", web("subscribes = [\"tick\"]"));
        refused(
            &text,
            3,
            15,
            &["[pool.web] lists unknown topic `tick`", "topics: ticks"],
        );
        refused(
            &web("publishes = [\"x\"]"),
            3,
            14,
            &["there are no [topic.NAME] tables"],
        );
        let with = |table: &str| format!("{}\n[topic.t]\n{table}\n", web("publishes = [\"t\"]"));
        refused(&with("capacity = 0"), 6, 12, &["`capacity` must be at least 1"]);
        refused(
            &with("overflow = \"lose\""),
            6,
            12,
            &["block", "drop-oldest", "drop-newest", "disconnect"],
        );
        refused(
            &with("transport = \"shm\"\noverflow = \"drop-newest\""),
            7,
            12,
            &["not possible over shm"],
        );
        refused(&with("message_size = \"32MiB\""), 6, 16, &["between 1 byte and 16MiB"]);
        refused(&with("size = 4"), 6, 1, &["size", "capacity"]);
    }

    #[test]
    fn a_topic_has_exactly_one_publisher_of_one_worker() {
        let pool = |name: &str, publishes: &[&str], workers: u32| {
            let mut pool = Pool::new(name, vec!["/bin/true".into()]);
            pool.publishes = publishes.iter().map(|s| s.to_string()).collect();
            pool.workers = workers;
            pool
        };
        let check = |pools: Vec<Pool>| {
            pools
                .into_iter()
                .fold(Manifest::new("t").topic(TopicDecl::new("t")), Manifest::pool)
                .validate_for(Host::Command)
                .map_err(|e| e.to_string())
        };
        check(vec![pool("a", &["t"], 1)]).unwrap();
        assert!(check(vec![pool("a", &[], 1)]).unwrap_err().contains("has no publisher"));
        assert!(check(vec![pool("a", &["t"], 1), pool("b", &["t"], 1)])
            .unwrap_err()
            .contains("published by pools a and b"));
        assert!(check(vec![pool("a", &["t"], 2)])
            .unwrap_err()
            .contains("which has 2 workers"));
        assert_eq!(
            check(vec![pool("a", &["u"], 1)]).unwrap_err(),
            "topic \"t\" has no publisher: add publishes = [\"t\"] to the pool that publishes it"
        );
        let mut public = TopicDecl::new("t");
        public.path = Some("/tmp/t.sock".into());
        let err = Manifest::new("t")
            .topic(public)
            .pool(pool("a", &["t"], 1))
            .validate_for(Host::Command)
            .unwrap_err();
        assert!(err.to_string().contains("which everyone can write to"), "{err}");
        let mut zero = TopicDecl::new("z");
        zero.capacity = 0;
        let err = Manifest::new("t")
            .topic(zero)
            .pool(pool("a", &["z"], 1))
            .validate_for(Host::Command)
            .unwrap_err();
        assert!(err.to_string().contains("capacity of 0"), "{err}");
        // Over shm, every slot is in one region: 2^20 slots of 16 MiB would be 16 TiB.
        let mut huge = TopicDecl::new("h");
        huge.transport = Transport::Shm;
        huge.capacity = MAX_TOPIC_CAPACITY;
        huge.message_size = MAX_TOPIC_MESSAGE_SIZE;
        let check_huge = |topic: TopicDecl| {
            Manifest::new("t")
                .topic(topic)
                .pool(pool("a", &["h"], 1))
                .validate_for(Host::Command)
        };
        let err = check_huge(huge.clone()).unwrap_err();
        assert!(err.to_string().contains("a shared region is at most"), "{err}");
        huge.transport = Transport::Unix;
        check_huge(huge).unwrap();
    }

    #[test]
    fn a_subscriber_pool_running_as_another_user_is_refused_unless_the_topics_mode_lets_it_connect() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipping: only root can run a pool as another user");
            return;
        }
        let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
            println!("skipping: no user named nobody");
            return;
        };
        let check = |mode: u32| {
            let mut publisher = Pool::new("a", vec!["/bin/true".into()]);
            publisher.publishes = vec!["t".into()];
            let mut subscriber = Pool::new("b", vec!["/bin/true".into()]);
            subscriber.subscribes = vec!["t".into()];
            subscriber.user = Some("nobody".into());
            let mut topic = TopicDecl::new("t");
            topic.mode = mode;
            Manifest::new("t")
                .topic(topic)
                .pool(publisher)
                .pool(subscriber)
                .validate_for(Host::Command)
                .map_err(|e| e.to_string())
        };
        let err = check(0o600).unwrap_err();
        assert_eq!(
            err,
            format!(
                "pool b: `subscribes` lists topic `t`, but the pool runs as nobody (uid {}), who cannot connect \
                 to the topic's socket (mode 0600, owned by uid 0 and gid 0): run the pool as uid 0, or give \
                 [topic.t] mode = \"0666\" (then any local user may subscribe)",
                nobody.uid
            )
        );
        check(0o666).unwrap();
        // Group access reaches nobody only if nobody is in the supervisor's group.
        let in_group = nobody.gid.as_raw() == 0;
        assert_eq!(check(0o660).is_ok(), in_group);
    }

    #[test]
    fn a_topic_without_one_publisher_is_refused_at_its_table_in_the_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("app.toml");
        std::fs::write(
            &path,
            "[pool.a]\ncommand = [\"sh\"]\nsubscribes = [\"t\"]\n\n[topic.t]\ncapacity = 4\n",
        )
        .unwrap();
        let error = Manifest::load_validated(&path, Host::Command).unwrap_err();
        assert_eq!(error.location(), Some((5, 8)), "{error}");
        assert!(error.to_string().contains("topic \"t\" has no publisher"), "{error}");
    }
}
