//! `procwire top` in a real terminal: tmux runs it against a `procwire up` of real `sh`
//! workers, keys are typed with `send-keys` and the screen read with `capture-pane`. Skipped,
//! with the reason printed, where tmux is not installed.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::control::*;
use support::*;

/// A tmux server of this test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    /// Starts `command` in a detached 140x40 terminal, in a shell that says how it ended.
    fn start(name: &str, command: &[&str]) -> Tmux {
        let tmux = Tmux {
            socket: format!("procwire-{name}-{}", std::process::id()),
        };
        let shell = r#""$@"; echo "[exited $?]"; exec sleep 1000"#;
        let mut args = vec![
            "new-session",
            "-d",
            "-x",
            "140",
            "-y",
            "40",
            "-s",
            "top",
            "--",
            "sh",
            "-c",
            shell,
            "sh",
        ];
        args.extend_from_slice(command);
        let output = tmux.run(&args);
        assert!(output.status.success(), "tmux new-session: {output:?}");
        tmux
    }

    fn keys(&self, keys: &str) {
        let output = self.run(&["send-keys", "-t", "top", keys]);
        assert!(output.status.success(), "tmux send-keys {keys}: {output:?}");
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// Reads the screen until `check` finds what it wants in it; panics with the screen after
    /// a generous deadline.
    fn wait_for<T>(&self, what: &str, check: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if let Some(found) = check(&screen) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not on the screen in time:\n{screen}"
            );
        }
    }

    /// The screen's line showing worker `name` (`web.1`), once `check` accepts it.
    fn wait_row(&self, name: &str, check: impl Fn(&str) -> bool) -> String {
        self.wait_for(&format!("the row of {name}"), |screen| {
            row(screen, name).filter(|l| check(l)).map(str::to_owned)
        })
    }

    /// The command ended: its exit status, as the shell around it says. (tmux may drop a
    /// dead pane's last output, and learn its status late: the shell stays.)
    fn wait_exit(&self) -> i32 {
        self.wait_for("the command to end", |screen| {
            let line = screen.lines().find(|l| l.starts_with("[exited "))?;
            line["[exited ".len()..].trim_end_matches(']').parse().ok()
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// `procwire top` of the supervisor `name` whose manifest and runtime directory are `dir`.
fn top_in_tmux(dir: &std::path::Path, name: &str) -> Tmux {
    let manifest = dir.join(format!("{name}.toml"));
    let runtime = format!("XDG_RUNTIME_DIR={}", dir.display());
    Tmux::start(
        name,
        &[
            "env",
            "-u",
            "PROCWIRE_CONTROL",
            &runtime,
            env!("CARGO_BIN_EXE_procwire"),
            "top",
            "--file",
            manifest.to_str().expect("a UTF-8 path"),
        ],
    )
}

/// The table's row of worker `name` on `screen`, if it has one.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    let cell = format!("{name} ");
    screen
        .lines()
        .find(|l| l.trim_start_matches(['│', '>', ' ']).starts_with(&cell))
}

/// `0.0`, `12.5`: one decimal.
fn is_cpu_share(cell: &str) -> bool {
    cell.split_once('.').is_some_and(|(whole, tenth)| {
        !whole.is_empty()
            && whole.chars().all(|c| c.is_ascii_digit())
            && tenth.len() == 1
            && tenth.chars().all(|c| c.is_ascii_digit())
    })
}

fn has_memory_figure(row: &str) -> bool {
    row.split_whitespace().any(|cell| {
        cell.len() > 1
            && cell.ends_with(['K', 'M', 'G'])
            && cell[..cell.len() - 1].chars().all(|c| c.is_ascii_digit() || c == '.')
    })
}

#[test]
fn top_shows_the_workers_with_their_usage_and_lines_and_its_keys_restart_stop_start_and_scale() {
    if !Tmux::available() {
        println!("skipped: needs tmux, to run `procwire top` in a real terminal");
        return;
    }
    let dir = temp_dir();
    let sup = Supervisor::start(
        dir.path(),
        "topview",
        r#"
[pool.web]
workers = 2
command = ["sh", "-c", 'echo "hello from web.$PROCWIRE_INDEX"; echo "pid $$"; exec sleep 1000']

[pool.db]
command = ["sh", "-c", 'echo "pid $$"; exec sleep 1000']
"#,
    );
    let web0 = printed_pid(&sup, "web.0", 1);
    let web1 = printed_pid(&sup, "web.1", 1);
    printed_pid(&sup, "db.0", 1);
    let tmux = top_in_tmux(dir.path(), "topview");

    // Every worker with its pid, state and memory; the first one selected, its lines below.
    let web0_row = tmux.wait_row("web.0", |r| r.contains(&web0.to_string()) && r.contains("ready"));
    assert!(has_memory_figure(&web0_row), "a memory figure in {web0_row:?}");
    tmux.wait_row("db.0", |r| r.contains("ready"));
    // From the second sample on, a CPU share (`0.0` for a sleeping worker) beside the memory.
    let cpu = tmux.wait_row("web.0", |r| r.split_whitespace().any(is_cpu_share));
    assert!(has_memory_figure(&cpu), "{cpu}");
    let screen = tmux.wait_for("web.0's lines", |s| {
        s.contains("web.0 | hello from web.0").then(|| s.to_owned())
    });
    for column in ["PID", "UPTIME", "RESTARTS", "CPU%", "MEM", "LAST EXIT"] {
        assert!(screen.contains(column), "{column} in\n{screen}");
    }
    assert!(screen.contains("last lines of web.0"), "{screen}");

    // `j` (as Down) selects web.1: its lines are shown; `r` restarts it. (`j` rather than the
    // arrow: tmux may hand an arrow's escape sequence over in pieces.)
    tmux.keys("j");
    tmux.wait_for("web.1's lines", |s| {
        s.contains("web.1 | hello from web.1").then_some(())
    });
    tmux.keys("r");
    let new1 = printed_pid(&sup, "web.1", 2);
    assert_ne!(new1, web1);
    tmux.wait_row("web.1", |r| r.contains(&new1.to_string()) && r.contains("SIGTERM"));
    assert_eq!(
        worker(&status_json(dir.path()), "web", 0)["pid"],
        web0,
        "web.0 untouched"
    );

    // `s` stops it (and it stays stopped), `a` starts it again.
    tmux.keys("s");
    tmux.wait_row("web.1", |r| r.contains("stopped"));
    assert_eq!(worker(&status_json(dir.path()), "web", 1)["state"], "stopped");
    tmux.keys("a");
    let again = printed_pid(&sup, "web.1", 3);
    tmux.wait_row("web.1", |r| r.contains(&again.to_string()) && r.contains("ready"));

    // `+` grows its pool by one, `-` shrinks it back.
    tmux.keys("+");
    let web2 = printed_pid(&sup, "web.2", 1);
    tmux.wait_row("web.2", |r| r.contains(&web2.to_string()));
    tmux.wait_for("web with 3 workers", |s| s.contains("web (3)").then_some(()));
    tmux.keys("-");
    wait_ended(&sup, "web.2");
    tmux.wait_for("web with 2 workers", |s| {
        (s.contains("web (2)") && row(s, "web.2").is_none()).then_some(())
    });
    let status = status_json(dir.path());
    assert_eq!(status["pools"][0]["workers"].as_array().unwrap().len(), 2, "{status:#}");

    tmux.keys("q");
    assert_eq!(tmux.wait_exit(), 0, "top quits cleanly on q:\n{}", tmux.screen());
}

#[test]
fn top_ends_cleanly_when_the_supervisor_does() {
    if !Tmux::available() {
        println!("skipped: needs tmux, to run `procwire top` in a real terminal");
        return;
    }
    let dir = temp_dir();
    let mut sup = Supervisor::start(
        dir.path(),
        "topdown",
        "[pool.web]\ncommand = [\"sh\", \"-c\", 'echo \"pid $$\"; exec sleep 1000']\n",
    );
    let pid = printed_pid(&sup, "web.0", 1);
    let tmux = top_in_tmux(dir.path(), "topdown");
    tmux.wait_row("web.0", |r| r.contains(&pid.to_string()));
    ok(dir.path(), &["down"]);
    sup.expect_exit(0);
    assert_eq!(tmux.wait_exit(), 0, "top ends with its supervisor:\n{}", tmux.screen());
    let screen = tmux.screen();
    assert!(screen.contains("procwire: the supervisor has ended"), "{screen}");
}
