//! Wall-clock and CPU-clock readings shared by every part of the harness.
//!
//! Latency is measured between two processes (publisher and subscriber may be different worker
//! processes), so it uses the wall clock in Unix microseconds, which all processes on one machine
//! share. Pacing and timeouts use Tokio's monotonic [`tokio::time::Instant`] instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch.
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used so far.
pub(crate) fn own_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
