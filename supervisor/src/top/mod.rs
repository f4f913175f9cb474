//! `procwire top`: a live terminal view of a running supervisor's pools and workers (state,
//! pid, uptime, restarts, CPU and memory, last exit, `STATUS=` text) and the last output
//! lines of the selected worker, with keys to restart, stop and start it and to scale its
//! pool. It is a client of the control socket like the other verbs: each refresh is a
//! `status` and a `logs` call, each key a command.
//!
//! Keys: `↑`/`↓` (or `k`/`j`) select a worker, `r` restarts it, `s` stops it, `a` starts
//! it, `+`/`-` scale its pool by one, `q` (or Ctrl-C) quits.

mod usage;
mod view;

use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::control::{ControlClient, ControlError, Status, Target};
pub use usage::{Sampler, Usage};

/// How often the view is refreshed while no key is pressed.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How many output lines of the selected worker are shown (at most; the pane may be smaller).
const LOG_LINES: u32 = 50;

/// Why `procwire top` ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopError {
    /// The terminal could not be set up, read or drawn on.
    #[error("the terminal: {0}")]
    Terminal(#[source] std::io::Error),
    /// A call to the supervisor failed.
    #[error(transparent)]
    Call(#[from] procwire_rpc::CallError<ControlError>),
}

/// What the view shows.
#[derive(Debug, Default)]
struct App {
    status: Option<Status>,
    /// CPU and memory by pid.
    usage: std::collections::HashMap<i32, Usage>,
    /// The selected worker, kept by name across refreshes.
    selected: Option<Target>,
    /// Its last output lines.
    logs: Vec<String>,
    /// What the last key did, or why it failed.
    message: String,
}

impl App {
    /// Every worker, in the order shown.
    fn workers(&self) -> Vec<Target> {
        self.status
            .iter()
            .flat_map(|s| &s.pools)
            .flat_map(|p| {
                p.workers.iter().map(|w| Target {
                    pool: p.name.clone(),
                    index: Some(w.index),
                })
            })
            .collect()
    }

    /// Moves the selection `by` workers (wrapping), or to the first if none is selected.
    fn select(&mut self, by: isize) {
        let workers = self.workers();
        if workers.is_empty() {
            self.selected = None;
            return;
        }
        let n = workers.len() as isize;
        let at = self.selected.as_ref().and_then(|s| workers.iter().position(|w| w == s));
        let next = match at {
            Some(at) => (at as isize + by).rem_euclid(n),
            None => 0,
        };
        self.selected = Some(workers[next as usize].clone());
    }
}

/// Runs the view on this terminal until the user quits or the supervisor ends (which it
/// says on stderr, once the terminal is back as it was).
pub fn run(client: &ControlClient) -> Result<(), TopError> {
    let mut app = App::default();
    let mut sampler = Sampler::default();
    refresh(client, &mut app, &mut sampler)?;
    app.select(0);
    let shown = show(client, &mut app, &mut sampler, &mut Screen::enter()?);
    match shown {
        Err(TopError::Call(e)) if crate::control::client::stopped(&e) => {
            eprintln!("procwire: the supervisor has ended");
            Ok(())
        }
        other => other,
    }
}

fn show(client: &ControlClient, app: &mut App, sampler: &mut Sampler, terminal: &mut Screen) -> Result<(), TopError> {
    loop {
        terminal.draw(app)?;
        if event::poll(REFRESH).map_err(TopError::Terminal)? {
            if let Event::Key(key) = event::read().map_err(TopError::Terminal)? {
                if key.kind == KeyEventKind::Press && !on_key(client, app, key) {
                    return Ok(());
                }
            }
        }
        refresh(client, app, sampler)?;
    }
}

/// Carries out `key`; false to quit.
fn on_key(client: &ControlClient, app: &mut App, key: KeyEvent) -> bool {
    let selected = app.selected.clone();
    let outcome = match (key.code, selected) {
        // Not Esc: an arrow key's escape sequence read in two parts would begin with one.
        (KeyCode::Char('q'), _) => return false,
        (KeyCode::Char('c'), _) if key.modifiers.contains(KeyModifiers::CONTROL) => return false,
        (KeyCode::Down | KeyCode::Char('j'), _) => {
            app.select(1);
            return true;
        }
        (KeyCode::Up | KeyCode::Char('k'), _) => {
            app.select(-1);
            return true;
        }
        (KeyCode::Char('r'), Some(t)) => client.restart_target(t),
        (KeyCode::Char('s'), Some(t)) => client.stop_target(t),
        (KeyCode::Char('a'), Some(t)) => client.start_target(t),
        (KeyCode::Char(c @ ('+' | '-')), Some(t)) => {
            let workers = app
                .status
                .iter()
                .flat_map(|s| &s.pools)
                .find(|p| p.name == t.pool)
                .map_or(0, |p| p.workers.len() as u32);
            let target = if c == '+' {
                workers + 1
            } else {
                workers.saturating_sub(1)
            };
            client.scale(t.pool.clone(), target)
        }
        _ => return true,
    };
    app.message = match outcome {
        Ok(lines) => lines.join("; "),
        Err(procwire_rpc::CallError::Application(e)) => format!("refused: {e}"),
        Err(e) => format!("failed: {e}"),
    };
    true
}

/// Reads the status, the usage of each worker and the selected worker's last lines.
fn refresh(client: &ControlClient, app: &mut App, sampler: &mut Sampler) -> Result<(), TopError> {
    let status = client.status(None)?;
    let pids: Vec<i32> = status
        .pools
        .iter()
        .flat_map(|p| &p.workers)
        .filter_map(|w| w.pid)
        .collect();
    sampler.retain(&pids);
    app.usage = pids
        .iter()
        .filter_map(|&pid| Some((pid, sampler.sample(pid)?)))
        .collect();
    app.status = Some(status);
    if app.selected.as_ref().is_none_or(|s| !app.workers().contains(s)) {
        app.select(0);
    }
    app.logs = match &app.selected {
        Some(target) => client.logs(Some(target.clone()), LOG_LINES)?,
        None => Vec::new(),
    };
    Ok(())
}

/// The terminal in raw mode on the alternate screen, given back as it was when dropped
/// (also when a panic unwinds through it).
struct Screen(ratatui::DefaultTerminal);

impl Screen {
    fn enter() -> Result<Screen, TopError> {
        ratatui::try_init().map(Screen).map_err(TopError::Terminal)
    }

    fn draw(&mut self, app: &App) -> Result<(), TopError> {
        self.0
            .draw(|frame| view::draw(frame, app))
            .map(|_| ())
            .map_err(TopError::Terminal)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{PoolState, PoolStatus, SupervisorStatus, WorkerState, WorkerStatus};

    fn worker(index: u32) -> WorkerStatus {
        WorkerStatus {
            index,
            pid: Some(100 + index as i32),
            state: WorkerState::Ready,
            restarts: 0,
            uptime_ms: Some(1000),
            last_exit: None,
            status: None,
            next_restart_ms: None,
        }
    }

    #[test]
    fn the_selection_moves_over_every_pools_workers_and_wraps() {
        let pool = |name: &str, n: u32| PoolStatus {
            name: name.into(),
            state: PoolState::Ready,
            workers: (0..n).map(worker).collect(),
        };
        let mut app = App {
            status: Some(Status {
                supervisor: SupervisorStatus {
                    name: "s".into(),
                    pid: 1,
                    manifest: "m".into(),
                    uptime_ms: 0,
                },
                pools: vec![pool("web", 2), pool("db", 1)],
            }),
            ..App::default()
        };
        app.select(0);
        let at = |app: &App| app.selected.as_ref().map(ToString::to_string);
        assert_eq!(at(&app).as_deref(), Some("web.0"));
        app.select(1);
        app.select(1);
        assert_eq!(at(&app).as_deref(), Some("db.0"));
        app.select(1);
        assert_eq!(at(&app).as_deref(), Some("web.0"), "wraps");
        app.select(-1);
        assert_eq!(at(&app).as_deref(), Some("db.0"));
    }
}
