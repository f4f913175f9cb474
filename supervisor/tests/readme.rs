//! The README's operator walkthrough is true: its manifest is run with the real `procwire
//! up`, and each of its commands is run in order with the real binary; what each prints must
//! be what the README shows, pids, times and paths aside.

mod support;

use std::path::Path;
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::control::*;
use support::*;

/// The walkthrough's manifest and its console session, from the README.
fn walkthrough() -> (String, String) {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("read the README");
    let block = |marker: &str, fence: &str| -> String {
        let after = &readme[readme.find(marker).unwrap_or_else(|| panic!("{marker} in the README"))..];
        let start = after.find(fence).expect("the block's fence") + fence.len();
        let body = &after[start..];
        body[..body.find("\n```").expect("the block's end")]
            .trim_start_matches('\n')
            .to_owned()
    };
    (
        block("<!-- walkthrough: procwire.toml", "```toml"),
        block("<!-- walkthrough: commands -->", "```console"),
    )
}

/// A line with what varies from run to run written the same: numbers as `N`, durations
/// (`1.5s`, `8ms`) as `T`, absolute paths as `PATH`, spaces collapsed.
fn normal(line: &str) -> String {
    line.split_whitespace()
        .map(|token| {
            if token.starts_with('/') {
                return "PATH".to_owned();
            }
            let mut shape = String::new();
            for c in token.chars() {
                if c.is_ascii_digit() {
                    if !shape.ends_with('N') {
                        shape.push('N');
                    }
                } else {
                    shape.push(c);
                }
            }
            let (core, comma) = match shape.strip_suffix(',') {
                Some(core) => (core, ","),
                None => (shape.as_str(), ""),
            };
            match core {
                "N.Ns" | "Nms" | "Ns" | "NmNs" | "NhNm" => format!("T{comma}"),
                _ => shape,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The session as (command, the lines it prints, whether it is interrupted with ^C).
fn steps(console: &str) -> Vec<(String, Vec<String>, bool)> {
    let mut steps: Vec<(String, Vec<String>, bool)> = Vec::new();
    for line in console.lines() {
        match (line.strip_prefix("$ "), steps.last_mut()) {
            (Some(command), _) => steps.push((command.to_owned(), Vec::new(), false)),
            (None, Some(step)) if line == "^C" => step.2 = true,
            (None, Some(step)) => step.1.push(line.to_owned()),
            (None, None) => panic!("output before any command: {line}"),
        }
    }
    steps
}

#[test]
fn the_readmes_operator_walkthrough_prints_what_it_shows() {
    let (manifest, console) = walkthrough();
    let dir = temp_dir();
    std::fs::write(dir.path().join("procwire.toml"), &manifest).unwrap();
    let steps = steps(&console);
    let names: Vec<&str> = steps.iter().map(|(c, ..)| c.as_str()).collect();
    for verb in ["up", "status", "logs", "scale", "restart", "down"] {
        assert!(
            names.iter().any(|c| c.split_whitespace().nth(1) == Some(verb)),
            "the walkthrough uses {verb}: {names:?}"
        );
    }
    let mut sup: Option<Supervisor> = None;
    for (command, shown, interrupted) in &steps {
        let words: Vec<&str> = command.trim_end_matches(" &").split_whitespace().collect();
        assert_eq!(words[0], "procwire", "{command}");
        let args = &words[1..];
        if args == ["up"] {
            let up = Supervisor::spawn(&["up", "procwire.toml"], Some(dir.path()));
            // Ready once spawned: each worker says so.
            up.wait_for("web.0 | worker 0 up as pid");
            up.wait_for("web.1 | worker 1 up as pid");
            sup = Some(up);
            continue;
        }
        let up = sup.as_ref().expect("`procwire up` comes first");
        if *interrupted {
            // A follower: it prints the lines shown, then ^C ends it.
            let mut follower = client(dir.path(), args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start procwire");
            let lines = Arc::new(Shared::default());
            read_lines(follower.stdout.take().unwrap(), Stream::Out, Arc::clone(&lines));
            read_lines(follower.stderr.take().unwrap(), Stream::Err, Arc::clone(&lines));
            let mut follower = Supervisor {
                child: follower,
                shared: lines,
                status: None,
            };
            for line in shown {
                let want = normal(line);
                follower.wait_until(&format!("{command}: {line}"), |seen| {
                    seen.lines
                        .iter()
                        .any(|l| l.stream == Stream::Out && normal(&l.text) == want)
                        .then_some(())
                });
            }
            kill(Pid::from_raw(follower.child.id() as i32), Signal::SIGINT).unwrap();
            let status = follower.finish();
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(Signal::SIGINT as i32),
                "{command}: ^C ends it: {status}"
            );
            continue;
        }
        let output = ok(dir.path(), args);
        let got: Vec<String> = output.lines().map(normal).collect();
        let want: Vec<String> = shown.iter().map(|l| normal(l)).collect();
        assert_eq!(got, want, "`{command}` printed:\n{output}");
        if args.contains(&"--rolling") {
            // It returns once begun: the next command sees it done.
            up.wait_for_containing("pool web restarted, one worker at a time");
        }
        if args.first() == Some(&"scale") {
            up.wait_for("web.2 | worker 2 up as pid");
        }
    }
    sup.expect("the supervisor").expect_exit(0);
}
