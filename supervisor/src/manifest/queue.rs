//! `[queue.NAME]` tables (POSIX message queues the supervisor owns) and the pools' `queues =
//! [...]` lists that name them.

use super::shared::{unknown_listed, Listed};
use super::walk::{Checked, Checker, Key, Value};
use super::{Manifest, QueueDecl, ValidationError};

const QUEUE_KEYS: &[&str] = &["messages", "message_size"];

/// The most messages a `[queue.NAME]` may ask for: the kernel's hard limit (a process without
/// `CAP_SYS_RESOURCE` is held to `fs.mqueue.msg_max`, 10 by default, when the queue is made).
pub const MAX_QUEUE_MESSAGES: usize = 65_536;
/// The largest message a `[queue.NAME]` may ask for: the kernel's hard limit, 16 MiB
/// (`fs.mqueue.msgsize_max`, 8 KiB by default, binds unprivileged processes).
pub const MAX_QUEUE_MESSAGE_SIZE: u64 = 16 << 20;
/// A queue's messages when its table does not say (the kernel's `msg_default`).
pub const DEFAULT_QUEUE_MESSAGES: usize = 10;
/// A queue's message size when its table does not say (the kernel's `msgsize_default`).
pub const DEFAULT_QUEUE_MESSAGE_SIZE: u64 = 8192;

/// A pool's `queues` list.
pub(super) const QUEUES: Listed = Listed {
    key: "queues",
    table: "queue",
    what: "queue",
    plural: "queues",
    names: |pool| &pool.queues,
};

fn bad_name(name: &str) -> bool {
    procwire_rpc::shm::env_var(name).is_err()
}

impl Checker<'_> {
    /// The `[queue.NAME]` tables, in file order.
    pub(super) fn queues(&self, queue_key: &Key<'_>, value: &Value<'_>) -> Checked<Vec<QueueDecl>> {
        self.named_tables("queue", queue_key, value)?
            .into_iter()
            .map(|(key, value)| self.queue(key, value))
            .collect()
    }

    fn queue(&self, key: &Key<'_>, value: &Value<'_>) -> Checked<QueueDecl> {
        let (name, entries) = self.named_table("queue", "queue", key, value)?;
        let place = format!("[queue.{name}]");
        let mut queue = QueueDecl::new(name);
        for (key, value) in entries {
            match key.get_ref().as_ref() {
                "messages" => {
                    queue.messages = self.integer_in("messages", value, 1, MAX_QUEUE_MESSAGES as i128)?;
                }
                "message_size" => {
                    let bytes = self.size("message_size", value)?;
                    if bytes == 0 || bytes > MAX_QUEUE_MESSAGE_SIZE {
                        return Err(self.error(
                            value.span(),
                            format!("`message_size` of {place} must be between 1 byte and 16MiB"),
                        ));
                    }
                    queue.message_size = bytes;
                }
                _ => return Err(self.unknown_key(key, &place, QUEUE_KEYS)),
            }
        }
        Ok(queue)
    }
}

/// The queues of a manifest, from a file or built in code: valid, unique names, sizes in
/// range, and every pool's `queues` naming one of them.
pub(super) fn validate(manifest: &Manifest) -> Result<(), ValidationError> {
    let queues = &manifest.queues;
    for (i, queue) in queues.iter().enumerate() {
        let why = if bad_name(&queue.name) {
            Some("is not a valid name: use letters, digits, `-` and `_`".to_owned())
        } else if queues[..i].iter().any(|other| other.name == queue.name) {
            Some("is defined twice".to_owned())
        } else if queue.messages == 0 || queue.messages > MAX_QUEUE_MESSAGES {
            Some(format!(
                "holds {} messages; it must hold from 1 to {MAX_QUEUE_MESSAGES}",
                queue.messages
            ))
        } else if queue.message_size == 0 || queue.message_size > MAX_QUEUE_MESSAGE_SIZE {
            Some(format!(
                "has messages of {} bytes; they must be from 1 byte to 16MiB",
                queue.message_size
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ValidationError::Queue {
                name: queue.name.clone(),
                why,
            });
        }
    }
    let known: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    unknown_listed(manifest, &QUEUES, &known)
}

#[cfg(test)]
mod tests {
    use crate::manifest::testing::{accepted, refused, web};
    use crate::manifest::*;

    #[test]
    fn a_queue_and_a_pool_that_lists_it_are_read_with_defaults_for_what_is_not_said() {
        let manifest = accepted(&format!(
            "{}\n[queue.jobs]\nmessages = 4\nmessage_size = \"1KiB\"\n[queue.events]\n",
            web("queues = [\"jobs\", \"events\"]")
        ));
        let mut jobs = QueueDecl::new("jobs");
        jobs.messages = 4;
        jobs.message_size = 1024;
        assert_eq!(manifest.queues, [jobs, QueueDecl::new("events")]);
        assert_eq!(manifest.queues[1].messages, 10);
        assert_eq!(manifest.queues[1].message_size, 8192);
        assert_eq!(manifest.pools[0].queues, ["jobs", "events"]);
    }

    #[test]
    fn a_pool_listing_an_unknown_queue_or_a_bad_queue_table_is_refused_where_it_is() {
        let text = format!("{}\n[queue.jobs]\n", web("queues = [\"jbos\"]"));
        refused(&text, 3, 11, &["[pool.web] lists unknown queue `jbos`", "queues: jobs"]);
        refused(&web("queues = [\"x\"]"), 3, 11, &["there are no [queue.NAME] tables"]);
        let with = |table: &str| format!("{}\n[queue.q]\n{table}\n", web(""));
        refused(&with("messages = 0"), 6, 12, &["`messages` must be at least 1"]);
        refused(&with("message_size = \"32MiB\""), 6, 16, &["between 1 byte and 16MiB"]);
        refused(&with("size = 4"), 6, 1, &["size", "message_size"]);
    }

    #[test]
    fn a_manifest_built_in_code_is_checked_for_its_queues() {
        let mut pool = Pool::new("web", vec!["/bin/true".into()]);
        pool.queues = vec!["q".into()];
        let err = Manifest::new("t")
            .pool(pool.clone())
            .validate_for(Host::Command)
            .unwrap_err();
        assert_eq!(err.to_string(), "pool web: `queues` names unknown queue `q`");
        Manifest::new("t")
            .queue(QueueDecl::new("q"))
            .pool(pool.clone())
            .validate_for(Host::Command)
            .unwrap();
        let twice = Manifest::new("t").queue(QueueDecl::new("q")).queue(QueueDecl::new("q"));
        assert_eq!(
            twice.pool(pool).validate_for(Host::Command).unwrap_err().to_string(),
            "queue \"q\" is defined twice"
        );
    }
}
