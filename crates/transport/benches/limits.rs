//! The in-process limiter (memory transport): one rate check on a key seen before, one on a new
//! key while the table is full (sweep and eviction), and one connection admitted and given back.
//! The Redis limiter's cost is a round trip, measured with the load tester (see the README).
//!
//! Run: `cargo bench -p quicksilver-transport --bench limits`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use quicksilver_transport::{Admission, ConnectionCap, Limiter, MemoryLimiter, Rate};

fn limits(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let rate = Rate {
        interval: Duration::from_micros(1),
        burst: 1_000_000,
    };
    let mut g = c.benchmark_group("memory_limiter");

    let limiter = MemoryLimiter::new(100_000);
    let key = "publishers:1x1000000:5f0c3a1b2d4e6f708192a3b4c5d6e7f8";
    g.bench_function("check_rate_known_key", |b| {
        b.iter(|| runtime.block_on(limiter.check_rate(black_box(key), rate)))
    });

    // A full table of keys that are not idle: every new key sweeps and evicts.
    let full = MemoryLimiter::new(100_000);
    let slow = Rate {
        interval: Duration::from_secs(60),
        burst: 1,
    };
    for i in 0..100_000 {
        let _ = runtime.block_on(full.check_rate(&format!("k:{i:032x}"), slow));
    }
    let mut next = 100_000u64;
    g.bench_function("check_rate_new_key_full_table", |b| {
        b.iter(|| {
            next += 1;
            let key = format!("k:{next:032x}");
            runtime.block_on(full.check_rate(black_box(&key), slow))
        })
    });

    let cap = ConnectionCap {
        max_connections: Some(1_000),
        max_matchers: Some(10_000),
    };
    g.bench_function("admit_and_release_connection", |b| {
        b.iter(|| {
            let admission = runtime.block_on(limiter.acquire(black_box("s:alice"), 3, cap));
            assert!(matches!(admission, Ok(Admission::Admitted(_))));
        })
    });
    g.finish();
}

criterion_group!(benches, limits);
criterion_main!(benches);
