//! The fan-out's millisecond clock: cheap shared timestamps for stream alarms, dispatch timeouts
//! and deadlines.
//!
//! It reads Tokio's clock, so tests that pause and advance time (`tokio::time::pause`) move
//! heartbeats, maximum connection lives and timeouts without sleeping. Stamps are `u64`
//! milliseconds (one atomic word in a subscriber's shared state, where an `Instant` would take
//! two) counted from a base taken far enough in the past that a paused test clock, which starts
//! when its runtime was built, never reads before it.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Milliseconds on the process-wide fan-out clock (never 0, so 0 can mean "unset").
pub fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let now = Instant::now();
        // A day back when the monotonic clock allows it (it counts from boot), else less: any
        // margin keeps runtimes built a little before the first reading on the same scale.
        [86_400, 3_600, 60, 1]
            .into_iter()
            .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
            .unwrap_or(now)
    });
    Instant::now().saturating_duration_since(*base).as_millis() as u64 + 1
}

/// Converts a duration to clock milliseconds, at least 1 (a zero interval would never move).
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_a_paused_clock() {
        let before = now_ms();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(now_ms() - before, 5_000);
    }
}
