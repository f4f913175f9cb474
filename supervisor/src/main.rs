//! The `procwire` command.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!("procwire {}", procwire_supervisor::VERSION);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "procwire {}: the supervisor commands (up, check, ...) are not built yet; \
                 only --version is available",
                procwire_supervisor::VERSION
            );
            ExitCode::from(2)
        }
    }
}
