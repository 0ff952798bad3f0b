//! The delivery latency histogram is observed once per delivered update from every core: the cost
//! of one observation, `prometheus-client`'s locked histogram against the hub's atomic one, on one
//! thread and with two threads observing at once (the shard's direct writes and the stream writers
//! run on every worker thread).
//!
//! `cargo bench -p quicksilver-server --bench latency`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use quicksilver_server::metrics::LatencyHistogram;

fn run(threads: u64, iters: u64, observe: impl Fn(u64) + Sync) -> Duration {
    let per_thread = iters.div_ceil(threads);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let observe = &observe;
            s.spawn(move || {
                for i in 0..per_thread {
                    observe(std::hint::black_box(150 + (i + t) % 5_000));
                }
            });
        }
    });
    started.elapsed()
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("delivery_latency_observe");
    for threads in [1u64, 2] {
        let locked = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        group.bench_function(format!("locked/{threads}"), |b| {
            b.iter_custom(|iters| run(threads, iters, |m| locked.observe(m as f64 / 1e6)))
        });
        let atomic = LatencyHistogram::default();
        group.bench_function(format!("atomic/{threads}"), |b| {
            b.iter_custom(|iters| run(threads, iters, |m| atomic.observe_micros(m)))
        });
    }
    group.finish();
}

criterion_group!(benches, latency);
criterion_main!(benches);
