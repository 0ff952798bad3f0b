//! Latency histograms: recording, shipping between processes, and summarising.
//!
//! Values are microseconds in an HDR histogram bounded to one hour (larger values are clamped, so
//! recording never fails). Worker processes ship histograms to the parent as the list of recorded
//! (value, count) pairs, which is small and needs no codec; the parent merges them.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest value a histogram holds: one hour in microseconds.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub(crate) struct LatencyHistogram(Histogram<u64>);

impl LatencyHistogram {
    /// A histogram keeping `significant_digits` (1 to 5) digits of precision.
    pub(crate) fn new(significant_digits: u8) -> Self {
        Self(
            Histogram::new_with_bounds(1, MAX_MICROS, significant_digits)
                .expect("constant histogram bounds are valid"),
        )
    }

    /// Records one value (clamped into the histogram's range).
    pub(crate) fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Number of recorded values.
    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }

    /// The value at `quantile` (0.0 to 1.0), 0 when empty.
    pub(crate) fn quantile(&self, quantile: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(quantile)
        }
    }

    /// Adds every value of `wire` to this histogram.
    pub(crate) fn merge(&mut self, wire: &HistogramWire) {
        for &(value, count) in &wire.0 {
            if let Err(e) = self.0.record_n(value.clamp(1, MAX_MICROS), count) {
                warn_once(&e);
            }
        }
    }

    /// The histogram as (value, count) pairs.
    pub(crate) fn to_wire(&self) -> HistogramWire {
        HistogramWire(
            self.0
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Summary in milliseconds.
    pub(crate) fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: self.len(),
            min_ms: if self.0.is_empty() {
                0.0
            } else {
                ms(self.0.min())
            },
            mean_ms: if self.0.is_empty() {
                0.0
            } else {
                self.0.mean() / 1000.0
            },
            p50_ms: ms(self.quantile(0.50)),
            p90_ms: ms(self.quantile(0.90)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: if self.0.is_empty() {
                0.0
            } else {
                ms(self.0.max())
            },
        }
    }
}

/// Recording into a histogram with sane bounds cannot fail except by a bug; say so once on
/// stderr rather than abort a long run.
fn warn_once(e: &dyn std::fmt::Display) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| eprintln!("warning: histogram merge: {e}"));
}

/// A histogram as recorded (value, count) pairs, for shipping between processes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct HistogramWire(pub(crate) Vec<(u64, u64)>);

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct LatencySummary {
    pub(crate) count: u64,
    pub(crate) min_ms: f64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_keeps_percentiles() {
        let mut h = LatencyHistogram::new(3);
        (1..=1000).for_each(|v| h.record(v * 10));
        let mut back = LatencyHistogram::new(3);
        back.merge(&h.to_wire());
        assert_eq!(back.len(), 1000);
        assert_eq!(back.quantile(0.5), h.quantile(0.5));
        assert_eq!(back.quantile(0.99), h.quantile(0.99));
        let s = back.summary();
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn clamps_out_of_range() {
        let mut h = LatencyHistogram::new(2);
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.len(), 2);
    }
}
