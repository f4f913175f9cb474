//! The `procwire` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use procwire_supervisor::control::{client, Batch, ControlClient, ControlError, Target};
use procwire_supervisor::manifest::{Condition, Host, Manifest, Pool, Ready};

/// procwire's supervisor: runs the pools of workers a manifest describes, and steers a
/// running one.
#[derive(Debug, Parser)]
#[command(
    name = "procwire",
    version = procwire_supervisor::VERSION,
    after_help = "\
Exit codes of the verbs that talk to a running supervisor (status, stop, start, restart,
signal, logs, events, scale, reload, top, down):
  0  done
  1  the supervisor refused or failed the command (no such pool, shutting down, ...)
  2  bad usage, or a manifest that does not load
  3  no supervisor is running there
  4  this user may not control that supervisor (it serves only its own user and root)
`up` exits 0 once every pool finished cleanly or after a clean shutdown, 1 when a pool
failed, 2 when the manifest is refused or the supervisor cannot start.

Which supervisor a verb talks to: --control PATH (or PROCWIRE_CONTROL); else the one that
--file MANIFEST (default ./procwire.toml, if there is one) names; else the only one running
for this user. Control sockets live in $XDG_RUNTIME_DIR/procwire/NAME.sock (else
/tmp/procwire-UID/NAME.sock)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which running supervisor a verb talks to.
#[derive(Debug, clap::Args)]
struct Connect {
    /// The control socket (default: from the manifest's `[supervisor] name`).
    #[arg(long, env = procwire_supervisor::control::CONTROL_ENV, value_name = "PATH")]
    control: Option<PathBuf>,
    /// The manifest of the supervisor meant (default: ./procwire.toml if there is one,
    /// else the only supervisor running for this user).
    #[arg(long, value_name = "MANIFEST")]
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the manifest's pools until they are done or the supervisor is told to stop
    /// (TERM, INT or `procwire down`: graceful; a second INT: kill at once). Serves the
    /// control socket the other verbs talk to.
    Up {
        /// The manifest (TOML).
        #[arg(default_value = "procwire.toml")]
        file: PathBuf,
        /// How output is written: `text` (worker lines as `pool.index | line`, the
        /// supervisor's own as `TIME procwire[NAME]: pool.index (pid N) message`) or `json`
        /// (one object a line, the supervisor's own lines too).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Also report orphans reaped and other details (spawns, readiness, exits and
        /// restarts are always reported).
        #[arg(short, long)]
        verbose: bool,
        /// Serve the control socket here (default: $XDG_RUNTIME_DIR/procwire/NAME.sock, else
        /// /tmp/procwire-UID/NAME.sock).
        #[arg(long, env = procwire_supervisor::control::CONTROL_ENV, value_name = "PATH")]
        control: Option<PathBuf>,
    },
    /// Check a manifest as `up` would before starting anything (its text, and that its programs,
    /// directories and users exist here) and print its start plan; exits 2 if it is refused.
    Check {
        /// The manifest (TOML).
        file: PathBuf,
    },
    /// Show every pool (or one) and its workers: state, pid, uptime, restarts, last exit,
    /// STATUS= text, the next restart's delay.
    Status {
        /// Only this pool.
        pool: Option<String>,
        /// Print the documented JSON object instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Stop a pool or one worker; it stays stopped (no restarts) until started.
    Stop {
        /// `POOL` or `POOL.INDEX`.
        target: Target,
        #[command(flatten)]
        connect: Connect,
    },
    /// Start what of a pool or worker is not running; revives a pool that gave up.
    Start {
        /// `POOL` or `POOL.INDEX`.
        target: Target,
        #[command(flatten)]
        connect: Connect,
    },
    /// Restart a pool's workers (or one): each is stopped and started again at once.
    Restart {
        /// `POOL` or `POOL.INDEX`.
        target: Target,
        /// One worker at a time, each once the one before is ready again, so that the pool
        /// keeps serving (a whole pool only). Returns once it has begun.
        #[arg(long)]
        rolling: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Send a signal to a pool's running workers (or one), to each one's process group.
    Signal {
        /// `POOL` or `POOL.INDEX`.
        target: Target,
        /// A signal name (`HUP`, `SIGUSR1`, any case) or number.
        signal: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Print the recent output lines of every worker, of a pool or of one worker (the
    /// supervisor keeps the last 500 of each in memory, across restarts).
    Logs {
        /// `POOL` or `POOL.INDEX`.
        target: Option<Target>,
        /// How many lines per worker.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Then print new lines as they come, until interrupted or the supervisor ends. A
        /// follower that reads too slowly is not waited for: where it missed lines, it
        /// prints `[procwire: N lines missed]`.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Print lifecycle events as they happen (spawned, ready, exited, restarting, gave up,
    /// scaled, reloaded), until interrupted or the supervisor ends.
    Events {
        /// One JSON object a line, in the documented shape (docs/control.md).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Grow or shrink one pool to N workers: new workers start, the last ones stop; the
    /// others keep running (same pids). Kept across a reload that does not change `workers`.
    /// A pool with a socket per worker (`{index}` in listen) gets the new workers' sockets,
    /// and the removed ones' go.
    Scale {
        /// The pool.
        pool: String,
        /// How many workers it is to have (1 to 1024).
        workers: u32,
        #[command(flatten)]
        connect: Connect,
    },
    /// Read the manifest again and apply the difference (as HUP does), printing what changes:
    /// added pools start, removed ones stop, changed ones restart (one worker at a time when
    /// their workers and sockets stay the same).
    Reload {
        /// Only print what would change (supervisorctl's reread).
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// A live view of the pools and workers (state, pid, uptime, restarts, CPU, memory, last
    /// exit) and the selected worker's last lines. Keys: up/down (or k/j) select a worker,
    /// r restart it, s stop it, a start it, + and - scale its pool by one, q quit.
    Top {
        #[command(flatten)]
        connect: Connect,
    },
    /// Print a shell completion script: `procwire completions bash > /etc/bash_completion.d/procwire`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Shut the supervisor down gracefully, as TERM does, and wait until it has ended.
    Down {
        #[command(flatten)]
        connect: Connect,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { file } => check(&file),
        Command::Up {
            file,
            log_format,
            verbose,
            control,
        } => up(&file, log_format, verbose, control),
        Command::Status { pool, json, connect } => verb(&connect, |client| {
            let status = client.status(pool.clone())?;
            if json {
                let text = serde_json::to_string_pretty(&status).map_err(|e| VerbError::Other(e.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", client::render(&status));
            }
            Ok(())
        }),
        Command::Stop { target, connect } => verb(&connect, |c| lines(c.stop_target(target.clone())?)),
        Command::Start { target, connect } => verb(&connect, |c| lines(c.start_target(target.clone())?)),
        Command::Restart {
            target,
            rolling: true,
            connect,
        } => match target.index {
            Some(_) => {
                eprintln!("procwire: --rolling restarts a whole pool; name the pool, not {target}");
                ExitCode::from(client::EXIT_USAGE)
            }
            None => verb(&connect, |c| lines(c.rolling_restart(target.pool.clone())?)),
        },
        Command::Restart {
            target,
            rolling: false,
            connect,
        } => verb(&connect, |c| lines(c.restart_target(target.clone())?)),
        Command::Signal {
            target,
            signal,
            connect,
        } => match parse_signal(&signal) {
            Ok(number) => verb(&connect, |c| lines(c.signal_target(target.clone(), number)?)),
            Err(e) => {
                eprintln!("procwire: {e}");
                ExitCode::from(client::EXIT_USAGE)
            }
        },
        Command::Logs {
            target,
            lines: n,
            follow: false,
            connect,
        } => verb(&connect, |c| lines(c.logs(target.clone(), n)?)),
        Command::Logs {
            target,
            lines: n,
            follow: true,
            connect,
        } => verb(&connect, |c| follow_logs(c, target.clone(), n)),
        Command::Events { json, connect } => verb(&connect, |c| follow_events(c, json)),
        Command::Scale { pool, workers, connect } => verb(&connect, |c| lines(c.scale(pool.clone(), workers)?)),
        Command::Reload { dry_run, connect } => verb(&connect, |c| lines(c.reload(dry_run)?)),
        Command::Top { connect } => verb(&connect, |c| {
            procwire_supervisor::top::run(c).map_err(|e| match e {
                procwire_supervisor::top::TopError::Call(e) => e.into(),
                e => VerbError::Other(e.to_string()),
            })
        }),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "procwire", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Down { connect } => verb(&connect, |c| {
            let code = c.with_timeout(std::time::Duration::from_secs(24 * 3600)).down()?;
            println!("the supervisor has ended (exit code {code})");
            Ok(())
        }),
    }
}

/// Why a verb failed, beyond reaching the supervisor.
#[derive(Debug, thiserror::Error)]
enum VerbError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("{0}")]
    Refused(ControlError),
    #[error("{0}")]
    Other(String),
}

impl From<procwire_rpc::CallError<ControlError>> for VerbError {
    fn from(e: procwire_rpc::CallError<ControlError>) -> Self {
        match e {
            procwire_rpc::CallError::Application(e) => VerbError::Refused(e),
            procwire_rpc::CallError::Rpc(e) => VerbError::Client(e.into()),
        }
    }
}

/// Runs one verb against the located supervisor; its outcome as an exit code.
fn verb(connect: &Connect, run: impl FnOnce(&ControlClient) -> Result<(), VerbError>) -> ExitCode {
    let outcome = client::locate(connect.control.as_deref(), connect.file.as_deref())
        .and_then(|path| client::connect(&path))
        .map_err(VerbError::from)
        .and_then(|c| run(&c));
    match outcome {
        Ok(()) => ExitCode::from(client::EXIT_OK),
        Err(e) => {
            eprintln!("procwire: {e}");
            ExitCode::from(match e {
                VerbError::Client(e) => e.exit_code(),
                VerbError::Refused(_) | VerbError::Other(_) => client::EXIT_FAILED,
            })
        }
    }
}

fn lines(lines: Vec<String>) -> Result<(), VerbError> {
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// How long one long-poll of a follower waits at most for the supervisor's answer.
fn follow_timeout() -> std::time::Duration {
    procwire_supervisor::control::feed::WAIT_MAX + procwire_supervisor::control::REPLY_TIMEOUT
}

/// The wait a follower asks the supervisor for, in milliseconds.
fn follow_wait_ms() -> u32 {
    procwire_supervisor::control::feed::WAIT_MAX.as_millis() as u32
}

/// Prints to stdout; false once stdout is gone (`| head` closed it), to stop quietly.
fn print_line(line: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// The next batch of a follower; `None` once the supervisor has ended (said on stderr).
fn next_batch<T>(
    call: impl FnOnce() -> Result<Batch<T>, procwire_rpc::CallError<ControlError>>,
) -> Result<Option<Batch<T>>, VerbError> {
    match call() {
        Ok(batch) => Ok(Some(batch)),
        // Between two calls: the stream has ended, as when the last call says so.
        Err(e) if client::stopped(&e) => {
            eprintln!("procwire: the supervisor has ended");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// `procwire logs -f`: the recent lines, then the new ones as they come.
fn follow_logs(client: &ControlClient, target: Option<Target>, n: u32) -> Result<(), VerbError> {
    let client = client.with_timeout(follow_timeout());
    let mut cursor = None;
    loop {
        let Some(batch) = next_batch(|| client.follow_logs(target.clone(), cursor, n, follow_wait_ms()))? else {
            return Ok(());
        };
        if batch.missed > 0 && !print_line(&format!("[procwire: {} lines missed]", batch.missed)) {
            return Ok(());
        }
        for line in &batch.items {
            if !print_line(line) {
                return Ok(());
            }
        }
        if cursor.is_none() {
            eprintln!("procwire: following new lines (interrupt to stop)");
        }
        if batch.ended {
            eprintln!("procwire: the supervisor has ended");
            return Ok(());
        }
        cursor = Some(batch.next);
    }
}

/// `procwire events [--json]`: lifecycle events from now on, as they happen.
fn follow_events(client: &ControlClient, json: bool) -> Result<(), VerbError> {
    use procwire_supervisor::control::events::missed_json;
    let client = client.with_timeout(follow_timeout());
    // The first call, answered at once, fixes where the stream starts.
    let mut cursor = client.next_events(None, 0)?.next;
    eprintln!("procwire: following events (interrupt to stop)");
    loop {
        let Some(batch) = next_batch(|| client.next_events(Some(cursor), follow_wait_ms()))? else {
            return Ok(());
        };
        if batch.missed > 0 {
            let marker = if json {
                missed_json(batch.missed).to_string()
            } else {
                format!("[procwire: {} events missed]", batch.missed)
            };
            if !print_line(&marker) {
                return Ok(());
            }
        }
        for event in &batch.items {
            let line = if json {
                event.to_json().to_string()
            } else {
                event.to_text()
            };
            if !print_line(&line) {
                return Ok(());
            }
        }
        if batch.ended {
            eprintln!("procwire: the supervisor has ended");
            return Ok(());
        }
        cursor = batch.next;
    }
}

/// `HUP`, `SIGHUP`, `hup` or `1`.
fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(number) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(number)
            .map(|s| s as i32)
            .map_err(|_| format!("{number} is not a signal number"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>().map(|s| s as i32).map_err(|_| {
        format!("unknown signal {text:?}; use a name like HUP, TERM, USR1 (SIG prefix optional) or a number")
    })
}

fn up(file: &std::path::Path, log_format: LogFormat, verbose: bool, control: Option<PathBuf>) -> ExitCode {
    let manifest = match Manifest::load_validated(file, Host::Command) {
        Ok(manifest) => manifest,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let control = match control.map_or_else(
        || procwire_supervisor::control::socket_path(&manifest.supervisor.name),
        Ok,
    ) {
        Ok(path) => path,
        Err(error) => {
            eprintln!("procwire: {error}");
            return ExitCode::from(2);
        }
    };
    let options = procwire_supervisor::run::Options {
        log_format: match log_format {
            LogFormat::Text => procwire_supervisor::run::logs::Format::Text,
            LogFormat::Json => procwire_supervisor::run::logs::Format::Json,
        },
        verbose,
        roles: false,
        reaping: procwire_supervisor::run::Reaping::All,
        started: None,
        control: Some(control),
    };
    match procwire_supervisor::run::run(manifest, options) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("procwire: {error}");
            ExitCode::from(2)
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    let manifest = match Manifest::load_validated(file, Host::Command) {
        Ok(manifest) => manifest,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let plan = manifest.plan();
    println!(
        "{}: ok: supervisor {:?}, {} in {}",
        file.display(),
        manifest.supervisor.name,
        count(manifest.pools.len(), "pool"),
        count(plan.len(), "wave"),
    );
    for (number, wave) in plan.iter().enumerate() {
        println!("wave {}:", number + 1);
        for pool in wave {
            println!("  {}", describe(pool));
        }
    }
    ExitCode::SUCCESS
}

/// `web: 4 workers, ready: notify, after: db ready`.
fn describe(pool: &Pool) -> String {
    let mut line = format!("{}: {}", pool.name, count(pool.workers as usize, "worker"));
    match &pool.ready {
        Ready::Spawned => {}
        Ready::Notify => line.push_str(", ready: notify"),
        Ready::Tcp { host, port } if host.contains(':') => line.push_str(&format!(", ready: tcp [{host}]:{port}")),
        Ready::Tcp { host, port } => line.push_str(&format!(", ready: tcp {host}:{port}")),
        Ready::Exec(argv) => line.push_str(&format!(", ready: exec {}", argv.join(" "))),
    }
    if !pool.after.is_empty() {
        let after: Vec<String> = pool
            .after
            .iter()
            .map(|(dependency, condition)| {
                let condition = match condition {
                    Condition::Started => "started",
                    Condition::Ready => "ready",
                    Condition::Completed => "completed",
                };
                format!("{dependency} {condition}")
            })
            .collect();
        line.push_str(&format!(", after: {}", after.join(", ")));
    }
    line
}

/// `1 pool`, `2 pools`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
