//! The compound values of a `[pool.NAME]` table: `listen`, `ready`, `backoff`, `limit`,
//! `forward`, `env`, `rlimits`, `umask`, `stdout`/`stderr` and `log_rotate`.

use std::collections::BTreeMap;

use super::defaults::{default_backoff, default_limit};
use super::grammar::{parse_ready, signal_name};
use super::walk::{in_file_order, quote, Checked, Checker, Value};
use super::{Backoff, Endpoint, Limit, LimitAction, LogRotate, Output, Ready, Signal};
use procwire_rpc::EndpointError;

const BACKOFF_KEYS: &[&str] = &["initial", "max", "factor", "jitter", "reset_after"];
const LIMIT_KEYS: &[&str] = &["restarts", "within", "start_attempts", "then"];
const LOG_ROTATE_KEYS: &[&str] = &["size", "keep"];
const RLIMIT_NAMES: &[&str] = &["nofile", "nproc", "core", "memlock", "stack", "as", "cpu", "fsize"];
const LIMIT_ACTIONS: &[(&str, LimitAction)] = &[("stop", LimitAction::Stop), ("shutdown", LimitAction::Shutdown)];

impl Checker<'_> {
    pub(super) fn endpoint(&self, value: &Value<'_>) -> Checked<Endpoint> {
        let string = self.non_empty_string("listen", value)?;
        match string.parse::<Endpoint>() {
            Ok(Endpoint::Unix(path)) => Ok(Endpoint::Unix(self.resolve(&path.to_string_lossy()))),
            Ok(Endpoint::Shm(path)) => Ok(Endpoint::Shm(self.resolve(&path.to_string_lossy()))),
            Ok(Endpoint::Mq(path)) => Ok(Endpoint::Mq(self.resolve(&path.to_string_lossy()))),
            Ok(endpoint) => Ok(endpoint),
            Err(EndpointError::UnknownKind { .. }) => Err(self.error(
                value.span(),
                format!(
                    "`listen` entries are \"unix:PATH\", \"tcp:HOST:PORT\" (authenticated; needs `key_file`), \"tcp+plain:HOST:PORT\", \"shm:PATH\" or \"mq:PATH\", not {string:?}"
                ),
            )),
            Err(why) => Err(self.error(value.span(), format!("`listen`: {why}"))),
        }
    }

    pub(super) fn ready(&self, value: &Value<'_>) -> Checked<Ready> {
        let string = self.string("ready", value)?;
        parse_ready(string).map_err(|why| self.error(value.span(), format!("`ready`: {why}")))
    }

    pub(super) fn backoff(&self, value: &Value<'_>) -> Checked<Backoff> {
        let table = self.table("backoff", value)?;
        let mut backoff = default_backoff();
        let (mut initial_span, mut max_span) = (None, None);
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "initial" => {
                    backoff.initial = self.duration("backoff.initial", value)?;
                    initial_span = Some(value.span());
                }
                "max" => {
                    backoff.max = self.duration("backoff.max", value)?;
                    max_span = Some(value.span());
                }
                "factor" => {
                    backoff.factor = self.float("backoff.factor", value)?;
                    if backoff.factor < 1.0 {
                        return Err(self.error(
                            value.span(),
                            format!("`backoff.factor` must be at least 1.0, not {}", backoff.factor),
                        ));
                    }
                }
                "jitter" => {
                    backoff.jitter = self.float("backoff.jitter", value)?;
                    if !(0.0..1.0).contains(&backoff.jitter) {
                        return Err(self.error(
                            value.span(),
                            format!(
                                "`backoff.jitter` must be at least 0 and less than 1 (a fraction of the delay), not {}",
                                backoff.jitter
                            ),
                        ));
                    }
                }
                "reset_after" => backoff.reset_after = self.duration("backoff.reset_after", value)?,
                _ => return Err(self.unknown_key(key, "`backoff`", BACKOFF_KEYS)),
            }
        }
        if backoff.max < backoff.initial {
            let span = max_span.or(initial_span).unwrap_or_else(|| value.span());
            return Err(self.error(
                span,
                format!(
                    "`backoff.max` ({:?}) is less than `backoff.initial` ({:?})",
                    backoff.max, backoff.initial
                ),
            ));
        }
        Ok(backoff)
    }

    pub(super) fn limit(&self, value: &Value<'_>) -> Checked<Limit> {
        let table = self.table("limit", value)?;
        let mut limit = default_limit();
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "restarts" => limit.restarts = self.integer_in("limit.restarts", value, 0, i128::from(u32::MAX))?,
                "within" => limit.within = self.positive_duration("limit.within", value)?,
                "start_attempts" => {
                    limit.start_attempts = self.integer_in("limit.start_attempts", value, 0, i128::from(u32::MAX))?
                }
                "then" => limit.then = self.choice("limit.then", value, LIMIT_ACTIONS)?,
                _ => return Err(self.unknown_key(key, "`limit`", LIMIT_KEYS)),
            }
        }
        Ok(limit)
    }

    pub(super) fn forward(&self, value: &Value<'_>) -> Checked<Vec<Signal>> {
        let array = self.array("forward", value)?;
        let mut signals = Vec::new();
        for item in array.iter() {
            let signal = self.signal("forward", item)?;
            if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
                return Err(self.error(
                    item.span(),
                    format!(
                        "`forward`: {} cannot be caught, so it cannot be forwarded",
                        signal_name(signal)
                    ),
                ));
            }
            if matches!(signal, Signal::SIGTERM | Signal::SIGINT | Signal::SIGCHLD) {
                return Err(self.error(
                    item.span(),
                    format!(
                        "`forward`: {} is the supervisor's own (it stops the supervisor, or reports children); use `stop_signal` to choose what workers get",
                        signal_name(signal)
                    ),
                ));
            }
            if signals.contains(&signal) {
                return Err(self.error(item.span(), format!("`forward` lists {} twice", signal_name(signal))));
            }
            signals.push(signal);
        }
        Ok(signals)
    }

    pub(super) fn env(&self, value: &Value<'_>) -> Checked<BTreeMap<String, String>> {
        let table = self.table("env", value)?;
        let mut env = BTreeMap::new();
        for (key, value) in in_file_order(table) {
            let name: &str = key.get_ref().as_ref();
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(self.error(
                    key.span(),
                    format!(
                        "bad environment variable name {}: it must be non-empty, without `=`",
                        quote(name)
                    ),
                ));
            }
            let label = format!("env.{name}");
            let string = self.string(&label, value)?;
            if string.contains('\0') {
                return Err(self.error(value.span(), format!("`{label}` contains a NUL character")));
            }
            env.insert(name.to_owned(), string.to_owned());
        }
        Ok(env)
    }

    pub(super) fn rlimits(&self, value: &Value<'_>) -> Checked<BTreeMap<String, u64>> {
        let table = self.table("rlimits", value)?;
        let mut rlimits = BTreeMap::new();
        for (key, value) in in_file_order(table) {
            let name: &str = key.get_ref().as_ref();
            if !RLIMIT_NAMES.contains(&name) {
                return Err(self.error(
                    key.span(),
                    format!(
                        "unknown resource limit {}; known: {}",
                        quote(name),
                        RLIMIT_NAMES.join(", ")
                    ),
                ));
            }
            let limit = self.integer_in(&format!("rlimits.{name}"), value, 0, i128::from(u64::MAX))?;
            rlimits.insert(name.to_owned(), limit);
        }
        Ok(rlimits)
    }

    /// Octal digits only (`"0027"`, `"027"`), at most 0777.
    pub(super) fn umask(&self, value: &Value<'_>) -> Checked<u32> {
        let text = self.non_empty_string("umask", value)?;
        Some(text)
            .filter(|t| t.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .and_then(|t| u32::from_str_radix(t, 8).ok())
            .filter(|mask| *mask <= 0o777)
            .ok_or_else(|| {
                self.error(
                    value.span(),
                    format!("`umask` must be octal digits up to 0777, like \"0027\", not {text:?}"),
                )
            })
    }

    pub(super) fn output(&self, name: &str, value: &Value<'_>) -> Checked<Output> {
        let string = self.string(name, value)?;
        match string {
            "inherit" => Ok(Output::Inherit),
            "discard" => Ok(Output::Discard),
            _ => match string.strip_prefix("file:") {
                Some("") => Err(self.error(
                    value.span(),
                    format!("`{name}`: \"file:\" needs a path, like \"file:web.log\""),
                )),
                Some(path) if path.contains('\0') => {
                    Err(self.error(value.span(), format!("`{name}`: the path contains a NUL character")))
                }
                Some(path) => Ok(Output::File(self.resolve(path))),
                None => Err(self.error(
                    value.span(),
                    format!("`{name}` must be one of \"inherit\", \"discard\", \"file:PATH\", not {string:?}"),
                )),
            },
        }
    }

    pub(super) fn log_rotate(&self, value: &Value<'_>) -> Checked<LogRotate> {
        let table = self.table("log_rotate", value)?;
        let (mut size, mut keep) = (None, None);
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "size" => {
                    let bytes = self.size("log_rotate.size", value)?;
                    if bytes == 0 {
                        return Err(self.error(value.span(), "`log_rotate.size` must be more than 0 bytes"));
                    }
                    size = Some(bytes);
                }
                "keep" => keep = Some(self.integer_in("log_rotate.keep", value, 0, i128::from(u32::MAX))?),
                _ => return Err(self.unknown_key(key, "`log_rotate`", LOG_ROTATE_KEYS)),
            }
        }
        match (size, keep) {
            (Some(size), Some(keep)) => Ok(LogRotate { size, keep }),
            (None, _) => Err(self.error(value.span(), "`log_rotate` needs `size` (like \"10MiB\")")),
            (_, None) => Err(self.error(
                value.span(),
                "`log_rotate` needs `keep` (how many rotated files to keep)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::manifest::defaults::{default_backoff, default_limit};
    use crate::manifest::testing::{accepted, refused, web};
    use crate::manifest::{Backoff, Limit, LimitAction, Manifest, Output};

    #[test]
    fn backoff_and_limit_tables_fill_in_the_keys_they_omit() {
        let manifest = accepted(&web("backoff = { max = \"5s\" }\nlimit = { then = \"shutdown\" }"));
        let pool = &manifest.pools[0];
        assert_eq!(
            pool.backoff,
            Backoff {
                max: Duration::from_secs(5),
                ..default_backoff()
            }
        );
        assert_eq!(
            pool.limit,
            Limit {
                then: LimitAction::Shutdown,
                ..default_limit()
            }
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_manifest_directory() {
        let manifest = accepted(&web(
            "cwd = \"work\"\nstdout = \"file:logs/web.log\"\nstderr = \"file:/var/log/web.err\"",
        ));
        let pool = &manifest.pools[0];
        assert_eq!(pool.cwd.as_deref(), Some(Path::new("/srv/app/work")));
        assert_eq!(pool.stdout, Output::File(PathBuf::from("/srv/app/logs/web.log")));
        assert_eq!(pool.stderr, Output::File(PathBuf::from("/var/log/web.err")));
        let manifest = Manifest::parse(&web("cwd = \"work\""), "demo.toml").unwrap();
        assert_eq!(manifest.pools[0].cwd.as_deref(), Some(Path::new("work")));
    }

    #[test]
    fn discard_output_and_user_with_group_are_accepted_without_root() {
        let manifest = accepted(&web("stdout = \"discard\"\nuser = \"nobody\"\ngroup = \"nogroup\""));
        let pool = &manifest.pools[0];
        assert_eq!(pool.stdout, Output::Discard);
        assert_eq!(pool.user.as_deref(), Some("nobody"));
        assert_eq!(pool.group.as_deref(), Some("nogroup"));
    }

    #[test]
    fn no_new_privs_and_umask_are_read_and_default_to_off_and_inherited() {
        let pool = &accepted(&web("no_new_privs = true\numask = \"0027\"")).pools[0];
        assert_eq!((pool.no_new_privs, pool.umask), (true, Some(0o027)));
        let pool = &accepted(&web("no_new_privs = false\numask = \"077\"")).pools[0];
        assert_eq!((pool.no_new_privs, pool.umask), (false, Some(0o077)));
        assert_eq!(accepted(&web("umask = \"0\"")).pools[0].umask, Some(0));
        assert_eq!(accepted(&web("umask = \"0777\"")).pools[0].umask, Some(0o777));
        let pool = &accepted(&web("")).pools[0];
        assert_eq!((pool.no_new_privs, pool.umask), (false, None));
    }

    #[test]
    fn a_umask_that_is_not_octal_digits_up_to_0777_is_refused() {
        for bad in ["\"1000\"", "\"0o027\"", "\"0028\"", "\"+27\"", "\"-27\"", "\"u=rwx\""] {
            refused(
                &web(&format!("umask = {bad}")),
                3,
                9,
                &["`umask` must be octal digits up to 0777, like \"0027\", not"],
            );
        }
        refused(
            &web("umaks = \"0027\""),
            3,
            1,
            &["did you mean `umask`?", "group, no_new_privs, umask, rlimits"],
        );
        refused(&web("umask = \"\""), 3, 9, &["`umask` must not be empty"]);
        refused(&web("umask = 27"), 3, 9, &["`umask` must be a string, not an integer"]);
        refused(
            &web("no_new_privs = \"yes\""),
            3,
            16,
            &["`no_new_privs` must be a boolean, not a string"],
        );
    }

    #[test]
    fn log_rotate_without_size_or_keep_is_refused() {
        refused(&web("log_rotate = { keep = 3 }"), 3, 14, &["`log_rotate` needs `size`"]);
        refused(
            &web("log_rotate = { size = \"1MiB\" }"),
            3,
            14,
            &["`log_rotate` needs `keep`"],
        );
    }

    #[test]
    fn forwarding_an_uncatchable_or_repeated_signal_is_refused() {
        refused(
            &web("forward = [\"USR1\", \"KILL\"]"),
            3,
            20,
            &["KILL cannot be caught"],
        );
        refused(&web("forward = [\"USR1\", \"SIGUSR1\"]"), 3, 20, &["lists USR1 twice"]);
    }

    #[test]
    fn forwarding_the_supervisors_own_signals_is_refused() {
        refused(&web("forward = [\"TERM\"]"), 3, 12, &["TERM is the supervisor's own"]);
        refused(
            &web("forward = [\"USR2\", \"CHLD\"]"),
            3,
            20,
            &["CHLD is the supervisor's own"],
        );
    }

    #[test]
    fn unknown_rlimit_names_are_refused() {
        refused(
            &web("rlimits = { nofile = 1024, files = 10 }"),
            3,
            28,
            &[
                "unknown resource limit `files`",
                "nofile, nproc, core, memlock, stack, as, cpu, fsize",
            ],
        );
        refused(
            &web("rlimits = { core = -1 }"),
            3,
            20,
            &["`rlimits.core` must be at least 0"],
        );
    }

    #[test]
    fn env_values_must_be_strings() {
        refused(
            &web("env = { PORT = 8080 }"),
            3,
            16,
            &["`env.PORT` must be a string, not an integer"],
        );
        refused(
            &web("env = { \"A=B\" = \"x\" }"),
            3,
            9,
            &["bad environment variable name `A=B`"],
        );
    }

    #[test]
    fn a_backoff_factor_below_one_is_refused() {
        refused(
            &web("backoff = { factor = 0.5 }"),
            3,
            22,
            &["`backoff.factor` must be at least 1.0, not 0.5"],
        );
        assert_eq!(accepted(&web("backoff = { factor = 1 }")).pools[0].backoff.factor, 1.0);
        refused(
            &web("backoff = { factor = nan }"),
            3,
            22,
            &["`backoff.factor` must be a finite number"],
        );
    }

    #[test]
    fn jitter_outside_zero_to_one_is_refused() {
        refused(
            &web("backoff = { jitter = 1.0 }"),
            3,
            22,
            &["`backoff.jitter` must be at least 0 and less than 1"],
        );
        refused(&web("backoff = { jitter = -0.1 }"), 3, 22, &["`backoff.jitter`"]);
        assert_eq!(
            accepted(&web("backoff = { jitter = 0.0 }")).pools[0].backoff.jitter,
            0.0
        );
        assert_eq!(
            accepted(&web("backoff = { jitter = 0.99 }")).pools[0].backoff.jitter,
            0.99
        );
    }

    #[test]
    fn a_backoff_max_below_initial_is_refused() {
        refused(
            &web("backoff = { initial = \"10s\", max = \"1s\" }"),
            3,
            36,
            &["`backoff.max` (1s) is less than `backoff.initial` (10s)"],
        );
        refused(
            &web("backoff = { initial = \"1m\" }"),
            3,
            23,
            &["`backoff.max` (30s) is less than"],
        );
    }
}
