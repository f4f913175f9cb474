//! Lifecycle events, as `procwire events` streams them: a worker spawned, ready, exited,
//! restarting after a delay, given up; a pool scaled; the manifest reloaded.
//!
//! `procwire events --json` prints one object a line, in this stable shape (keys are only
//! ever added; `docs/control.md` has every event):
//!
//! ```json
//! {"seq": 41, "time": "2026-12-01T20:46:42.123Z", "event": "exited", "pool": "web", "index": 1, "pid": 812, "exit": {"code": 1}}
//! {"seq": 42, "time": "2026-12-01T20:46:42.123Z", "event": "restarting", "pool": "web", "index": 1, "pid": 812, "delay_ms": 400}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::LastExit;

/// One lifecycle event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, procwire_macros::Schema)]
pub struct Event {
    /// Its number: one more than the event before, across the supervisor's life.
    pub seq: u64,
    /// When it happened, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The pool it is about, if any (not for `reloaded`).
    pub pool: Option<String>,
    /// The worker it is about, if one.
    pub index: Option<u32>,
    /// That worker's pid (its last one, for an exit), if it has had one.
    pub pid: Option<i32>,
    /// What happened.
    pub what: What,
}

/// What happened, with what is particular to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, procwire_macros::Schema)]
#[non_exhaustive]
pub enum What {
    /// The worker's process was started.
    Spawned,
    /// The worker is ready (it said `READY=1`, its probe passed, or it counts once spawned).
    Ready,
    /// The worker's process ended; `None` when someone else collected its status.
    Exited(Option<LastExit>),
    /// The worker will be started again after this many milliseconds (0: at once).
    Restarting(u64),
    /// The worker is given up: it stays down until started by hand (or the supervisor shuts
    /// down, as the pool's limit says). Why.
    GaveUp(String),
    /// The pool was scaled by hand from one number of workers to another.
    Scaled {
        /// Workers before.
        from: u32,
        /// Workers now.
        to: u32,
    },
    /// The manifest was read again and its difference applied: a line per change.
    Reloaded(Vec<String>),
}

impl What {
    /// The event's name: the `event` key of its JSON.
    pub fn name(&self) -> &'static str {
        match self {
            What::Spawned => "spawned",
            What::Ready => "ready",
            What::Exited(_) => "exited",
            What::Restarting(_) => "restarting",
            What::GaveUp(_) => "gave_up",
            What::Scaled { .. } => "scaled",
            What::Reloaded(_) => "reloaded",
        }
    }
}

impl Event {
    /// The event as `procwire events --json` prints it (one line each).
    pub fn to_json(&self) -> Value {
        let mut record = json!({
            "seq": self.seq,
            "time": self.time,
            "event": self.what.name(),
            "pool": self.pool,
            "index": self.index,
            "pid": self.pid,
        });
        match &self.what {
            What::Spawned | What::Ready => {}
            What::Exited(exit) => record["exit"] = serde_json::to_value(exit).unwrap_or(Value::Null),
            What::Restarting(ms) => record["delay_ms"] = (*ms).into(),
            What::GaveUp(reason) => record["reason"] = reason.as_str().into(),
            What::Scaled { from, to } => {
                record["from"] = (*from).into();
                record["to"] = (*to).into();
            }
            What::Reloaded(changes) => record["changes"] = changes.clone().into(),
        }
        record
    }

    /// The event as `procwire events` prints it: `TIME web.1 (pid 812) exited with code 1`.
    pub fn to_text(&self) -> String {
        let mut line = format!("{} ", self.time);
        match (&self.pool, self.index, self.pid) {
            (Some(pool), Some(index), Some(pid)) => line.push_str(&format!("{pool}.{index} (pid {pid}) ")),
            (Some(pool), Some(index), None) => line.push_str(&format!("{pool}.{index} ")),
            (Some(pool), None, _) => line.push_str(&format!("pool {pool} ")),
            (None, ..) => {}
        }
        match &self.what {
            What::Spawned => line.push_str("spawned"),
            What::Ready => line.push_str("ready"),
            What::Exited(Some(LastExit::Code(code))) => line.push_str(&format!("exited with code {code}")),
            What::Exited(Some(LastExit::Signal(signal))) => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned());
                line.push_str(&format!("exited, killed by {name}"));
            }
            What::Exited(None) => line.push_str("exited (status collected elsewhere)"),
            What::Restarting(ms) => line.push_str(&format!("restarting in {ms} ms")),
            What::GaveUp(reason) => line.push_str(&format!("gave up: {reason}")),
            What::Scaled { from, to } => line.push_str(&format!("scaled from {from} to {to} workers")),
            What::Reloaded(changes) => line.push_str(&format!("reloaded: {}", changes.join("; "))),
        }
        line
    }
}

/// The marker a follower prints where it missed `count` items (it read too slowly and the
/// supervisor dropped them rather than wait): a JSON object for `--json`.
pub fn missed_json(count: u64) -> Value {
    json!({ "missed": count })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(what: What) -> Event {
        Event {
            seq: 7,
            time: "2026-12-01T20:46:42.123Z".into(),
            pool: Some("web".into()),
            index: Some(1),
            pid: Some(812),
            what,
        }
    }

    #[test]
    fn each_event_has_the_documented_json_shape() {
        let base = |name: &str| json!({"seq": 7, "time": "2026-12-01T20:46:42.123Z", "event": name, "pool": "web", "index": 1, "pid": 812});
        let with = |name: &str, key: &str, value: Value| {
            let mut v = base(name);
            v[key] = value;
            v
        };
        assert_eq!(event(What::Spawned).to_json(), base("spawned"));
        assert_eq!(event(What::Ready).to_json(), base("ready"));
        assert_eq!(
            event(What::Exited(Some(LastExit::Code(3)))).to_json(),
            with("exited", "exit", json!({"code": 3}))
        );
        assert_eq!(
            event(What::Exited(Some(LastExit::Signal(9)))).to_json(),
            with("exited", "exit", json!({"signal": 9}))
        );
        assert_eq!(event(What::Exited(None)).to_json(), with("exited", "exit", Value::Null));
        assert_eq!(
            event(What::Restarting(400)).to_json(),
            with("restarting", "delay_ms", json!(400))
        );
        assert_eq!(
            event(What::GaveUp("too many".into())).to_json(),
            with("gave_up", "reason", json!("too many"))
        );
        let mut scaled = event(What::Scaled { from: 2, to: 4 });
        scaled.index = None;
        scaled.pid = None;
        let mut expected = base("scaled");
        expected["index"] = Value::Null;
        expected["pid"] = Value::Null;
        expected["from"] = json!(2);
        expected["to"] = json!(4);
        assert_eq!(scaled.to_json(), expected);
        let reloaded = Event {
            pool: None,
            index: None,
            pid: None,
            ..event(What::Reloaded(vec!["pool db was added".into()]))
        };
        assert_eq!(
            reloaded.to_json(),
            json!({"seq": 7, "time": "2026-12-01T20:46:42.123Z", "event": "reloaded", "pool": null,
                   "index": null, "pid": null, "changes": ["pool db was added"]})
        );
        assert_eq!(missed_json(12), json!({"missed": 12}));
    }

    #[test]
    fn the_text_form_names_the_worker_and_what_happened() {
        assert_eq!(
            event(What::Exited(Some(LastExit::Signal(9)))).to_text(),
            "2026-12-01T20:46:42.123Z web.1 (pid 812) exited, killed by SIGKILL"
        );
        assert_eq!(
            event(What::Restarting(0)).to_text(),
            "2026-12-01T20:46:42.123Z web.1 (pid 812) restarting in 0 ms"
        );
    }
}
