//! Drawing `procwire top`: the workers' table, the selected worker's last lines, the keys.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::usage::bytes;
use super::App;
use crate::control::client;

const HEADER: [&str; 9] = [
    "WORKER",
    "STATE",
    "PID",
    "UPTIME",
    "RESTARTS",
    "CPU%",
    "MEM",
    "LAST EXIT",
    "STATUS",
];

pub(super) fn draw(frame: &mut Frame<'_>, app: &App) {
    let [table_area, logs_area, keys_area] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Min(4), Constraint::Length(1)]).areas(frame.area());

    let mut rows = Vec::new();
    let mut selected = None;
    let title = match &app.status {
        Some(status) => {
            for pool in &status.pools {
                rows.push(
                    Row::new(vec![
                        format!("{} ({})", pool.name, pool.workers.len()),
                        pool.state.as_str().to_owned(),
                    ])
                    .style(Style::new().add_modifier(Modifier::BOLD)),
                );
                for w in &pool.workers {
                    let name = format!("{}.{}", pool.name, w.index);
                    if app.selected.as_ref().is_some_and(|s| s.to_string() == name) {
                        selected = Some(rows.len());
                    }
                    let usage = w.pid.and_then(|pid| app.usage.get(&pid));
                    rows.push(Row::new(vec![
                        format!("  {name}"),
                        w.state.as_str().to_owned(),
                        w.pid.map_or("-".into(), |p| p.to_string()),
                        w.uptime_ms.map_or("-".into(), client::duration),
                        w.restarts.to_string(),
                        usage
                            .and_then(|u| u.cpu_percent)
                            .map_or("-".into(), |p| format!("{p:.1}")),
                        usage.map_or("-".into(), |u| bytes(u.rss_bytes)),
                        client::last_exit(w.last_exit),
                        w.status.clone().unwrap_or_default(),
                    ]));
                }
            }
            format!(
                " procwire top: {} (pid {}), up {} ",
                status.supervisor.name,
                status.supervisor.pid,
                client::duration(status.supervisor.uptime_ms)
            )
        }
        None => " procwire top ".to_owned(),
    };
    let widths = [
        Constraint::Length(16),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Min(10),
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(HEADER).style(Style::new().add_modifier(Modifier::UNDERLINED)))
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, table_area, &mut state);

    let shown = logs_area.height.saturating_sub(2) as usize;
    let lines: Vec<Line<'_>> = app
        .logs
        .iter()
        .skip(app.logs.len().saturating_sub(shown))
        .map(|l| Line::raw(l.as_str()))
        .collect();
    let name = app.selected.as_ref().map_or(String::new(), ToString::to_string);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(" last lines of {name} "))),
        logs_area,
    );

    let keys = "↑↓ select  r restart  s stop  a start  + - scale the pool  q quit";
    let footer = if app.message.is_empty() {
        keys.to_owned()
    } else {
        format!("{keys}  |  {}", app.message)
    };
    frame.render_widget(Paragraph::new(footer), keys_area);
}
