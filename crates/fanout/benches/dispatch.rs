//! Fan-out dispatch: one update offered to 10,000 subscribers of one shard, through the public
//! [`Fanout`] API (shard channel → registry lookup → one `try_send` per subscriber queue), then
//! taken from every subscriber queue, as their streams would.
//!
//! The figure therefore includes the subscribers' side (10,000 `try_recv`), which a real node pays
//! too; divide by 10,000 for the cost per delivery. Subscribers select the topic exactly, through a
//! shared URI template (matched once per update, not once per subscriber), or with `*`.
//!
//! Run: `cargo bench -p quicksilver-fanout --bench dispatch`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use quicksilver_fanout::{Access, Fanout, FanoutConfig, Subscriber, SubscriberSpec};
use quicksilver_protocol::{Envelope, Position, Selector, SelectorStore, Update};

const SUBSCRIBERS: usize = 10_000;
const TOPIC: &str = "https://example.com/books/1";

fn envelope(seq: u64) -> Arc<Envelope> {
    Arc::new(Envelope::new(
        Position::new(0, 0, seq),
        Update {
            id: format!("urn:uuid:{seq}"),
            topics: vec![TOPIC.into()],
            data: "x".repeat(200),
            private: false,
            event_type: None,
            retry: None,
        },
        0,
    ))
}

fn dispatch(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    };
    let mut g = c.benchmark_group("fanout_10k");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    for (name, raw) in [
        ("exact", TOPIC),
        ("template", "https://example.com/books/{id}"),
        ("wildcard", "*"),
    ] {
        let store = Arc::new(SelectorStore::default());
        let selector = Selector::compile(raw).expect("selector compiles");
        let (fanout, mut subs): (Fanout, Vec<Subscriber>) = rt.block_on(async {
            let config = FanoutConfig {
                shards: 1,
                ..FanoutConfig::default()
            };
            let fanout = Fanout::start(&config, store.clone());
            let subs = (0..SUBSCRIBERS)
                .map(|_| {
                    fanout.subscribe(SubscriberSpec {
                        selectors: vec![selector.clone()],
                        access: Access::None,
                    })
                })
                .collect();
            (fanout, subs)
        });
        let mut seq = 0;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    seq += 1;
                    envelope(seq)
                },
                |update| {
                    rt.block_on(async {
                        fanout.dispatch(update).await;
                        // The shard offers to subscribers in registration order under one lock:
                        // once the last one has the update, all have.
                        let last = subs.len() - 1;
                        let got = subs[last].recv().await;
                        assert!(got.is_some());
                        for sub in &mut subs[..last] {
                            assert!(sub.try_recv().is_some());
                        }
                    })
                },
                BatchSize::SmallInput,
            )
        });
        drop(subs);
    }
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
