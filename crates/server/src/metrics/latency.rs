//! The delivery latency histogram: observed once per delivered update, on every core, so it is kept
//! in atomics rather than behind the lock `prometheus-client`'s histogram takes per observation.
//!
//! Both ways out observe it (the shard's direct writes and the stream writer), so at a few hundred
//! thousand deliveries per second a shared lock is taken as often as a socket is written, from
//! every core. Here an observation is three relaxed atomic additions (bucket, count, sum) and the
//! bucket is found with integer arithmetic. The exposition is the same as before: a classic
//! Prometheus histogram in seconds with the buckets 100 µs, 200 µs, … 6.5536 s and `+Inf`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// The smallest bucket's upper bound, in microseconds.
const FIRST_BOUND_MICROS: u64 = 100;

/// Buckets with a finite bound (each bound doubles the one before); one more counts the rest.
const FINITE_BUCKETS: usize = 17;

/// A latency histogram in microseconds, shared by clones.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; FINITE_BUCKETS + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn observe_micros(&self, micros: u64) {
        let inner = &*self.0;
        inner.buckets[bucket(micros)].fetch_add(1, Ordering::Relaxed);
        inner.count.fetch_add(1, Ordering::Relaxed);
        inner.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

/// The bucket of `micros`: the first whose bound (100 µs × 2^k) is at least it.
fn bucket(micros: u64) -> usize {
    let hundreds = micros.div_ceil(FIRST_BOUND_MICROS).max(1);
    // The smallest k with 2^k ≥ hundreds.
    let k = (64 - (hundreds - 1).leading_zeros()) as usize;
    k.min(FINITE_BUCKETS)
}

fn bound_seconds(k: usize) -> f64 {
    (FIRST_BOUND_MICROS << k) as f64 / 1e6
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.0;
        let buckets: Vec<(f64, u64)> = inner
            .buckets
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let bound = if k == FINITE_BUCKETS {
                    f64::INFINITY
                } else {
                    bound_seconds(k)
                };
                (bound, n.load(Ordering::Relaxed))
            })
            .collect();
        // Read after the buckets: a scrape racing observations may show a count a little above
        // the buckets' total, never below.
        let count = inner.count.load(Ordering::Relaxed);
        let sum = inner.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_are_the_doubling_bounds_from_100_microseconds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(100), 0);
        assert_eq!(bucket(101), 1);
        assert_eq!(bucket(200), 1);
        assert_eq!(bucket(201), 2);
        assert_eq!(bucket(400), 2);
        assert_eq!(bucket(401), 3);
        assert_eq!(bucket(100 << 16), 16);
        assert_eq!(bucket((100 << 16) + 1), FINITE_BUCKETS);
        assert_eq!(bucket(u64::MAX), FINITE_BUCKETS);
        for k in 0..FINITE_BUCKETS {
            let bound = FIRST_BOUND_MICROS << k;
            assert_eq!(bucket(bound), k, "{bound} µs is in bucket {k}");
            assert_eq!(bucket(bound + 1), k + 1);
        }
    }

    #[test]
    fn exposed_as_a_classic_histogram_in_seconds() {
        let h = LatencyHistogram::default();
        h.observe_micros(50);
        h.observe_micros(150);
        h.observe_micros(10_000_000);
        let mut registry = Registry::with_prefix("quicksilver");
        registry.register("delivery_latency_seconds", "help", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE quicksilver_delivery_latency_seconds histogram"));
        assert!(text.contains("quicksilver_delivery_latency_seconds_count 3"));
        assert!(text.contains("quicksilver_delivery_latency_seconds_sum 10.0002"));
        assert!(text.contains("quicksilver_delivery_latency_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("quicksilver_delivery_latency_seconds_bucket{le=\"0.0002\"} 2"));
        assert!(text.contains("quicksilver_delivery_latency_seconds_bucket{le=\"6.5536\"} 2"));
        assert!(text.contains("quicksilver_delivery_latency_seconds_bucket{le=\"+Inf\"} 3"));
        assert_eq!(h.count(), 3);
    }
}
