//! CPU and memory of worker processes, read from `/proc/PID/stat` and `/proc/PID/statm`.

use std::collections::HashMap;
use std::time::Instant;

/// What one process uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// Share of one CPU since the previous sample, in percent (`None` at the first sample).
    pub cpu_percent: Option<f64>,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
}

/// Samples processes; the CPU share is over the time between two samples of a pid.
#[derive(Debug, Default)]
pub struct Sampler {
    last: HashMap<i32, (u64, Instant)>,
}

impl Sampler {
    /// Samples `pid` now; `None` if it is gone (or `/proc` cannot be read).
    pub fn sample(&mut self, pid: i32) -> Option<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        let ticks = cpu_ticks(&stat)?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let now = Instant::now();
        let cpu_percent = self.last.get(&pid).and_then(|&(before, at)| {
            let wall = now.saturating_duration_since(at).as_secs_f64();
            (wall > 0.0).then(|| ticks.saturating_sub(before) as f64 / clock_ticks() / wall * 100.0)
        });
        self.last.insert(pid, (ticks, now));
        Some(Usage {
            cpu_percent,
            rss_bytes: pages * page_size(),
        })
    }

    /// Forgets the pids not in `alive`.
    pub fn retain(&mut self, alive: &[i32]) {
        self.last.retain(|pid, _| alive.contains(pid));
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, whose second field (the
/// command, in parentheses) may hold spaces and parentheses itself.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        _ => 4096,
    }
}

/// `512K`, `12.3M`, `1.1G`.
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let n = n as f64;
    if n < K * K {
        format!("{:.0}K", n / K)
    } else if n < K * K * K {
        format!("{:.1}M", n / K / K)
    } else {
        format!("{:.1}G", n / K / K / K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_with_spaces_and_parentheses() {
        let stat = "812 (a (weird) name) S 1 812 812 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 200";
        assert_eq!(cpu_ticks(stat), Some(10));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_memory_and_a_cpu_share_from_its_second_sample() {
        let mut sampler = Sampler::default();
        let pid = std::process::id() as i32;
        let first = sampler.sample(pid).expect("our own /proc entry");
        assert!(first.rss_bytes > 0);
        assert_eq!(first.cpu_percent, None);
        let second = sampler.sample(pid).expect("our own /proc entry");
        assert!(second.cpu_percent.is_some_and(|p| p >= 0.0), "{second:?}");
        assert_eq!(bytes(512 * 1024), "512K");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5M");
    }
}
