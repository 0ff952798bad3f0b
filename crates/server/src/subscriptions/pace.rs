//! The rate of subscription events a node publishes: a token bucket that new subscriptions wait
//! on, so a storm of connections (or an attacker opening many) cannot flood the events stream.
//!
//! Every subscription costs two events, its `active: true` now and its `active: false` later,
//! both charged when it is made. A subscription that would have to wait longer than the bucket's
//! patience is refused instead (the server answers `503` with `Retry-After`); ends of
//! subscriptions and a dead node's subscriptions are owed, so they are charged ([`EventPace::owe`])
//! but never refused or delayed. With a rate of 0 nothing is paced.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Why a subscription was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("subscription events are over their rate; retry in {retry_after:?}")]
pub struct Refused {
    /// When the events would fit.
    pub retry_after: Duration,
}

/// The bucket (see the module docs).
#[derive(Debug)]
pub struct EventPace {
    /// Events per second (0: unlimited).
    rate: f64,
    /// Events that may go at once after a quiet spell.
    burst: f64,
    /// The longest a subscription waits before it is refused.
    patience: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Events that may go now; negative when charged ahead (the debt later ones wait for).
    tokens: f64,
    refilled: Instant,
}

impl EventPace {
    /// A bucket of `rate` events per second with a burst of one second's worth, refusing waits
    /// longer than `patience`.
    pub fn new(rate: u32, patience: Duration) -> Self {
        let rate = f64::from(rate);
        Self {
            rate,
            burst: rate,
            patience,
            state: Mutex::new(State {
                tokens: rate,
                refilled: Instant::now(),
            }),
        }
    }

    fn refill(&self, state: &mut State, now: Instant) {
        let earned = now.saturating_duration_since(state.refilled).as_secs_f64() * self.rate;
        state.tokens = (state.tokens + earned).min(self.burst);
        state.refilled = now;
    }

    /// Waits until `events` fit, or refuses them if that would take longer than the patience.
    pub async fn admit(&self, events: usize) -> Result<(), Refused> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let wait = {
            let mut state = self.state.lock();
            let now = Instant::now();
            self.refill(&mut state, now);
            let after = state.tokens - events as f64;
            let wait = Duration::from_secs_f64((-after).max(0.0) / self.rate);
            if wait > self.patience {
                return Err(Refused {
                    retry_after: wait - self.patience,
                });
            }
            state.tokens = after;
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Charges `events` that must go whatever the rate (later admissions wait for them).
    pub fn owe(&self, events: usize) {
        if self.rate == 0.0 {
            return;
        }
        let mut state = self.state.lock();
        self.refill(&mut state, Instant::now());
        state.tokens -= events as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_go_at_once_then_wait_then_are_refused() {
        let pace = EventPace::new(100, Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(pace.admit(100).await, Ok(()));
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Half a second's worth more: waits half a second.
        assert_eq!(pace.admit(50).await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        // 150 more would need 1.5 s: over the patience.
        let refused = pace.admit(150).await;
        assert_eq!(
            refused,
            Err(Refused {
                retry_after: Duration::from_millis(500)
            })
        );
        // A refusal charges nothing: 100 fit within the patience.
        assert_eq!(pace.admit(100).await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn owed_events_are_never_refused_but_delay_the_next() {
        let pace = EventPace::new(10, Duration::from_secs(6));
        pace.owe(60);
        let start = Instant::now();
        // 50 owed beyond the burst: the next admission waits 5 s for them, and 0.2 s for itself.
        assert_eq!(pace.admit(2).await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_millis(5_200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_of_zero_paces_nothing() {
        let pace = EventPace::new(0, Duration::ZERO);
        pace.owe(1_000_000);
        assert_eq!(pace.admit(1_000_000).await, Ok(()));
    }
}
