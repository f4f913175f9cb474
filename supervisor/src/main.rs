//! The `procwire` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use procwire_supervisor::manifest::{Condition, Host, Manifest, Pool, Ready};

/// procwire's supervisor: runs the pools of workers a manifest describes.
#[derive(Debug, Parser)]
#[command(name = "procwire", version = procwire_supervisor::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the manifest's pools until they are done or the supervisor is told to stop
    /// (TERM or INT: graceful; a second INT: kill at once).
    Up {
        /// The manifest (TOML).
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
    },
    /// Check a manifest as `up` would before starting anything (its text, and that its programs,
    /// directories and users exist here) and print its start plan; exits 2 if it is refused.
    Check {
        /// The manifest (TOML).
        file: PathBuf,
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
        } => up(&file, log_format, verbose),
    }
}

fn up(file: &std::path::Path, log_format: LogFormat, verbose: bool) -> ExitCode {
    let manifest = match Manifest::load_validated(file, Host::Command) {
        Ok(manifest) => manifest,
        Err(error) => {
            eprintln!("{error}");
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
