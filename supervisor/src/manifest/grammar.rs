//! The strings with a grammar of their own: durations (`"1m30s"`), sizes (`"10MiB"`),
//! signal names (`"TERM"`) and readiness (`"tcp:HOST:PORT"`, `"exec:..."`). Each parser
//! returns the reason as a string; the caller adds the key and the location.

use std::str::FromStr;
use std::time::Duration;

use super::{Endpoint, Ready, Signal};

pub(super) const DURATION_HINT: &str =
    "write a number and a unit (ns, us, ms, s, m, h, d), like \"100ms\", \"30s\" or \"1.5h\"";
pub(super) const SIZE_HINT: &str =
    "write a number of bytes, optionally with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), \
                         like \"10MiB\"";

/// `"spawned"`, `"notify"`, `"tcp:HOST:PORT"` or `"exec:COMMAND ARGS..."` (split on whitespace).
/// A `tcp:` probe only connects (and hangs up), so it is the same for an authenticated
/// listener and a plain one: `"tcp+plain:HOST:PORT"` (and `"tcp+noise:"`), written as the
/// pool's `listen` is, are the same probe.
pub(super) fn parse_ready(string: &str) -> Result<Ready, String> {
    const VALID: &str = "\"spawned\", \"notify\", \"tcp:HOST:PORT\" or \"exec:COMMAND ARGS...\"";
    if string == "spawned" {
        return Ok(Ready::Spawned);
    }
    if string == "notify" {
        return Ok(Ready::Notify);
    }
    if string.starts_with("tcp:") || string.starts_with("tcp+") {
        return match string.parse::<Endpoint>() {
            Ok(Endpoint::TcpNoise { host, port } | Endpoint::TcpPlain { host, port }) => Ok(Ready::Tcp { host, port }),
            Ok(other) => Err(format!("{other} is not a TCP address")),
            Err(procwire_rpc::EndpointError::UnknownKind { .. }) => {
                Err(format!("must be one of {VALID}, not {string:?}"))
            }
            Err(why) => Err(why.to_string()),
        };
    }
    if let Some(command) = string.strip_prefix("exec:") {
        let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if argv.is_empty() {
            return Err("\"exec:\" needs a command to run, like \"exec:./probe --quiet\"".to_owned());
        }
        return Ok(Ready::Exec(argv));
    }
    Err(format!("must be one of {VALID}, not {string:?}"))
}

/// A signal by name, with or without `SIG`, in any case: `"TERM"`, `"SIGTERM"`, `"term"`.
pub(super) fn parse_signal(string: &str) -> Result<Signal, String> {
    let upper = string.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_alphanumeric()) {
        if let Ok(signal) = Signal::from_str(&format!("SIG{bare}")) {
            return Ok(signal);
        }
    }
    Err(format!("unknown signal {string:?}; use a name like \"TERM\", \"INT\", \"HUP\", \"QUIT\", \"USR1\" or \"USR2\" (SIG prefix optional)"))
}

/// A signal's name without `SIG`.
pub(super) fn signal_name(signal: Signal) -> &'static str {
    let name = signal.as_str();
    name.strip_prefix("SIG").unwrap_or(name)
}

/// A duration: one or more `NUMBER UNIT` parts (`"30s"`, `"1.5h"`, `"1m30s"`), units `ns`,
/// `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`.
pub(super) fn parse_duration(string: &str) -> Result<Duration, String> {
    let text = string.trim();
    if text.is_empty() {
        return Err(format!("it is empty; {DURATION_HINT}"));
    }
    if text.starts_with('-') {
        return Err("a duration cannot be negative".to_owned());
    }
    let mut rest = text;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        if number.is_empty() {
            return Err(format!("expected a number at {rest:?}; {DURATION_HINT}"));
        }
        let after = after.trim_start();
        let unit_len = after.find(|c: char| !c.is_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "" => return Err(format!("{number:?} has no unit; {DURATION_HINT}")),
            other => return Err(format!("unknown unit {other:?}; {DURATION_HINT}")),
        };
        let (value, _) = scale_decimal(number, per_unit)?;
        nanos = nanos.checked_add(value).ok_or("it is too long")?;
        rest = after.trim_start();
    }
    let seconds = u64::try_from(nanos / 1_000_000_000).map_err(|_| "it is too long".to_owned())?;
    Ok(Duration::new(seconds, (nanos % 1_000_000_000) as u32))
}

/// A size in bytes: a number, optionally followed by `B`, `KB`, `MB`, `GB`, `TB` (powers of
/// 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), in any case.
pub(super) fn parse_size(string: &str) -> Result<u64, String> {
    let text = string.trim();
    if text.is_empty() {
        return Err(format!("it is empty; {SIZE_HINT}"));
    }
    if text.starts_with('-') {
        return Err("a size cannot be negative".to_owned());
    }
    let (number, unit) = split_number(text);
    if number.is_empty() {
        return Err(format!("expected a number at {text:?}; {SIZE_HINT}"));
    }
    let per_unit: u128 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("unknown unit {:?}; {SIZE_HINT}", unit.trim_start())),
    };
    let (bytes, exact) = scale_decimal(number, per_unit)?;
    if !exact {
        return Err("it is not a whole number of bytes".to_owned());
    }
    u64::try_from(bytes).map_err(|_| "it is too large".to_owned())
}

/// Splits a leading decimal number (digits and dots) off `text`.
fn split_number(text: &str) -> (&str, &str) {
    let len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(len)
}

/// `number` (like `"1.5"`) times `unit`, truncated to an integer, and whether that was exact.
fn scale_decimal(number: &str, unit: u128) -> Result<(u128, bool), String> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("{number:?} is not a number"));
    }
    if fraction.len() > 18 {
        return Err(format!("{number:?} has too many decimals"));
    }
    let too_large = || format!("{number:?} is too large");
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let fraction_digits: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| too_large())?
    };
    let denominator = 10u128.pow(fraction.len() as u32);
    let scaled_fraction = fraction_digits * unit;
    let value = whole
        .checked_mul(unit)
        .and_then(|value| value.checked_add(scaled_fraction / denominator))
        .ok_or_else(too_large)?;
    Ok((value, scaled_fraction % denominator == 0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::manifest::testing::{accepted, refused, web};
    use crate::manifest::LogRotate;

    #[test]
    fn durations_accept_every_documented_form() {
        for (text, expected) in [
            ("100ms", Duration::from_millis(100)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            ("2d", Duration::from_secs(2 * 86_400)),
            ("1m30s", Duration::from_secs(90)),
            ("1h 30m", Duration::from_secs(5400)),
            ("0s", Duration::ZERO),
            (".5s", Duration::from_millis(500)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_refused_at_the_value() {
        for (value, needle) in [
            ("\"\"", "it is empty"),
            ("\"10\"", "has no unit"),
            ("\"-1s\"", "cannot be negative"),
            ("\"10 parsecs\"", "unknown unit \"parsecs\""),
            ("\"1.2.3s\"", "is not a number"),
            ("\"s\"", "expected a number"),
            ("\"99999999999999999999999h\"", "too long"),
            ("10", "not a bare number"),
            ("true", "not a boolean"),
        ] {
            let message = refused(
                &web(&format!("ready_timeout = {value}")),
                3,
                17,
                &["`ready_timeout`", needle],
            );
            if value.starts_with('"') {
                assert!(message.contains("bad duration"), "{message}");
            }
        }
    }

    #[test]
    fn a_bad_duration_inside_backoff_is_refused_at_its_value() {
        refused(
            &web("backoff = { initial = \"fast\" }"),
            3,
            23,
            &["`backoff.initial`", "bad duration"],
        );
    }

    #[test]
    fn a_bad_shutdown_timeout_is_refused() {
        refused(
            "[supervisor]\nshutdown_timeout = \"30\"\n[pool.a]\ncommand = [\"a\"]\n",
            2,
            20,
            &["`shutdown_timeout`", "has no unit"],
        );
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units_and_plain_bytes() {
        for (text, expected) in [
            ("10MiB", 10 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("100", 100),
            ("100B", 100),
            ("10MB", 10_000_000),
            ("1.5KiB", 1536),
            ("2tib", 2 << 40),
        ] {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
        let manifest = accepted(&web("log_rotate = { size = 4096, keep = 1 }"));
        assert_eq!(manifest.pools[0].log_rotate, Some(LogRotate { size: 4096, keep: 1 }));
    }

    #[test]
    fn bad_sizes_are_refused_at_the_value() {
        for (value, needle) in [
            ("\"10 parsecs\"", "unknown unit"),
            ("\"\"", "it is empty"),
            ("\"-1MiB\"", "cannot be negative"),
            ("\"1.5B\"", "not a whole number of bytes"),
            ("\"MiB\"", "expected a number"),
            ("\"99999999TiB\"", "too large"),
            ("-5", "must be at least 0"),
            ("1.5", "must be a size, not a float"),
        ] {
            refused(
                &web(&format!("log_rotate = {{ size = {value}, keep = 1 }}")),
                3,
                23,
                &["`log_rotate.size`", needle],
            );
        }
        refused(
            &web("log_rotate = { size = \"0KiB\", keep = 1 }"),
            3,
            23,
            &["more than 0 bytes"],
        );
    }

    #[test]
    fn ready_accepts_tcp_and_exec_probes() {
        assert_eq!(
            parse_ready("tcp:127.0.0.1:8080"),
            Ok(Ready::Tcp {
                host: "127.0.0.1".into(),
                port: 8080
            })
        );
        assert_eq!(
            parse_ready("tcp:localhost:1"),
            Ok(Ready::Tcp {
                host: "localhost".into(),
                port: 1
            })
        );
        assert_eq!(
            parse_ready("tcp:[::1]:65535"),
            Ok(Ready::Tcp {
                host: "::1".into(),
                port: 65535
            })
        );
        for same in ["tcp+plain:[::1]:65535", "tcp+noise:[::1]:65535"] {
            assert_eq!(parse_ready(same), parse_ready("tcp:[::1]:65535"), "{same}");
        }
        assert_eq!(
            parse_ready("exec:./probe  --quiet"),
            Ok(Ready::Exec(vec!["./probe".into(), "--quiet".into()]))
        );
        assert_eq!(parse_ready("spawned"), Ok(Ready::Spawned));
    }

    #[test]
    fn bad_tcp_addresses_are_refused() {
        for (value, needle) in [
            ("tcp:8080", "has no host"),
            ("tcp:localhost", "has no port"),
            ("tcp::8080", "has no valid host"),
            ("tcp:localhost:", "port must be a number from 1 to 65535"),
            ("tcp:localhost:http", "port must be a number"),
            ("tcp:localhost:0", "port must be a number"),
            ("tcp:localhost:65536", "port must be a number"),
            ("tcp:::1:80", "in brackets"),
            ("tcp:[::1:80", "closing `]`"),
            ("tcp+plain:localhost", "has no port"),
            ("tcp+tls:localhost:80", "must be one of \"spawned\""),
        ] {
            refused(&web(&format!("ready = \"{value}\"")), 3, 9, &["`ready`", needle]);
        }
    }

    #[test]
    fn an_empty_exec_probe_is_refused() {
        refused(&web("ready = \"exec:\""), 3, 9, &["\"exec:\" needs a command"]);
        refused(&web("ready = \"exec:   \""), 3, 9, &["needs a command"]);
    }

    #[test]
    fn signals_are_accepted_with_or_without_sig() {
        let manifest = accepted(&web(
            "stop_signal = \"SIGINT\"\nreload_signal = \"USR2\"\nforward = [\"SIGUSR1\", \"winch\"]",
        ));
        let pool = &manifest.pools[0];
        assert_eq!(pool.stop_signal, Signal::SIGINT);
        assert_eq!(pool.reload_signal, Signal::SIGUSR2);
        assert_eq!(pool.forward, [Signal::SIGUSR1, Signal::SIGWINCH]);
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGTERM"), Ok(Signal::SIGTERM));
    }

    #[test]
    fn bad_signal_names_are_refused() {
        refused(
            &web("stop_signal = \"TERMINATE\""),
            3,
            15,
            &["`stop_signal`: unknown signal \"TERMINATE\"", "\"TERM\""],
        );
        refused(&web("reload_signal = \"\""), 3, 17, &["unknown signal \"\""]);
        refused(&web("stop_signal = \"SIG\""), 3, 15, &["unknown signal"]);
        refused(&web("stop_signal = 15"), 3, 15, &["`stop_signal` must be a string"]);
        refused(
            &web("forward = [\"USR1\", \"BOGUS\"]"),
            3,
            20,
            &["`forward`: unknown signal \"BOGUS\""],
        );
    }
}
