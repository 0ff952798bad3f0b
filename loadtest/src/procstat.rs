//! Readings of a hub process from `/proc`: CPU time and memory.
//!
//! `/proc/PID/stat` gives user and system time in clock ticks; `/proc/PID/status` gives `VmRSS`
//! (now) and `VmHWM` (the peak over the process's life, so it includes anything before the run).
//! The harness samples RSS every second during the run to also report the peak within it.

use serde::Serialize;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct ProcessSample {
    /// User + system CPU seconds since the process started.
    pub(crate) cpu_seconds: f64,
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcError {
    #[error("cannot read /proc/{0}: {1}")]
    Read(u32, std::io::Error),
    #[error("unexpected format of /proc/{0}/stat")]
    Format(u32),
}

/// Reads process `pid`.
pub(crate) fn sample(pid: u32) -> Result<ProcessSample, ProcError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| ProcError::Read(pid, e))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| ProcError::Read(pid, e))?;
    let ticks = parse_cpu_ticks(&stat).ok_or(ProcError::Format(pid))?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Ok(ProcessSample {
        cpu_seconds: ticks as f64 / hz as f64,
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the command name may contain
/// spaces and parentheses, so fields are counted after its last `)`).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name, field 3 (state) comes first: utime is the 12th, stime the 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` value from `/proc/PID/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (quick silver) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        let status = "Name:\tx\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
    }

    #[test]
    fn reads_itself() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
