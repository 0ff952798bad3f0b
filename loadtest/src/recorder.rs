//! Where a worker's subscribers record deliveries: the overall latency histogram and a
//! per-second timeline, both for updates published after the warm-up.
//!
//! One recorder per worker process, behind a `std::sync::Mutex`: a worker runs on one thread, so
//! the lock is never contended, and subscribers take it once per received chunk, not per update.
//! The timeline is bounded to [`MAX_SECONDS`] buckets with two significant digits each (~40 KiB).

use serde::{Deserialize, Serialize};

use crate::latency::{HistogramWire, LatencyHistogram};

/// Timeline buckets kept (one per second since publishing started).
const MAX_SECONDS: usize = 24 * 3600;

/// Deliveries and latencies recorded by one worker.
#[derive(Debug)]
pub(crate) struct DeliveryRecorder {
    /// Unix micros when publishing started (0 until then: nothing goes into the timeline).
    start_us: u64,
    /// Updates published before this (Unix micros) are warm-up: counted, not measured.
    measure_from_us: u64,
    /// Every update received.
    pub(crate) deliveries: u64,
    /// Updates received that were published after the warm-up.
    pub(crate) measured: u64,
    latency: LatencyHistogram,
    timeline: Vec<SecondBucket>,
}

#[derive(Debug)]
struct SecondBucket {
    deliveries: u64,
    latency: LatencyHistogram,
}

/// One second of a timeline, as shipped to the parent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SecondWire {
    /// Seconds since publishing started.
    pub(crate) second: u32,
    /// Updates received in that second (warm-up ones included).
    pub(crate) deliveries: u64,
    /// Latencies of measured updates received in that second.
    pub(crate) latency: HistogramWire,
}

impl Default for DeliveryRecorder {
    fn default() -> Self {
        Self {
            start_us: 0,
            measure_from_us: u64::MAX,
            deliveries: 0,
            measured: 0,
            latency: LatencyHistogram::new(3),
            timeline: Vec::new(),
        }
    }
}

impl DeliveryRecorder {
    /// Publishing starts at `start_us`; updates published from `measure_from_us` on are measured.
    pub(crate) fn start(&mut self, start_us: u64, measure_from_us: u64) {
        self.start_us = start_us;
        self.measure_from_us = measure_from_us;
    }

    /// Records one update published at `published_us`, received at `now_us`.
    pub(crate) fn record(&mut self, published_us: u64, now_us: u64) {
        self.deliveries += 1;
        let measured = published_us >= self.measure_from_us;
        let latency = now_us.saturating_sub(published_us);
        if measured {
            self.measured += 1;
            self.latency.record(latency);
        }
        if self.start_us == 0 || now_us < self.start_us {
            return;
        }
        let second = ((now_us - self.start_us) / 1_000_000) as usize;
        if second >= MAX_SECONDS {
            return;
        }
        if self.timeline.len() <= second {
            self.timeline.resize_with(second + 1, || SecondBucket {
                deliveries: 0,
                latency: LatencyHistogram::new(2),
            });
        }
        let bucket = &mut self.timeline[second];
        bucket.deliveries += 1;
        if measured {
            bucket.latency.record(latency);
        }
    }

    /// p99 latency (ms) of the last complete second, for the progress line.
    pub(crate) fn last_second_p99_ms(&self, now_us: u64) -> Option<f64> {
        if self.start_us == 0 || now_us < self.start_us + 1_000_000 {
            return None;
        }
        let second = ((now_us - self.start_us) / 1_000_000) as usize - 1;
        let bucket = self.timeline.get(second)?;
        (bucket.latency.len() > 0).then(|| bucket.latency.quantile(0.99) as f64 / 1000.0)
    }

    /// The overall latency histogram.
    pub(crate) fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// The timeline for shipping.
    pub(crate) fn timeline_wire(&self) -> Vec<SecondWire> {
        self.timeline
            .iter()
            .enumerate()
            .filter(|(_, b)| b.deliveries > 0)
            .map(|(i, b)| SecondWire {
                second: i as u32,
                deliveries: b.deliveries,
                latency: b.latency.to_wire(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_counted_not_measured() {
        let mut r = DeliveryRecorder::default();
        r.start(10_000_000, 12_000_000);
        r.record(10_500_000, 10_501_000); // warm-up
        r.record(12_500_000, 12_502_000);
        assert_eq!((r.deliveries, r.measured), (2, 1));
        let t = r.timeline_wire();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].second, t[0].deliveries), (0, 1));
        assert_eq!((t[1].second, t[1].deliveries), (2, 1));
        assert!(t[0].latency.0.is_empty());
        assert_eq!(r.latency().quantile(0.5), 2000);
    }
}
