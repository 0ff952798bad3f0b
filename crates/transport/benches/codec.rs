//! The Redis entry codec: MessagePack encoding of an update when it is published, and decoding of
//! a stream entry's payload into an [`Envelope`] (including its SSE frame) on every node's reader.
//!
//! Run: `cargo bench -p quicksilver-transport --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use quicksilver_protocol::{Position, Update};
use quicksilver_transport::redis::{decode_entry, encode_entry};

fn codec(c: &mut Criterion) {
    let update = Update {
        id: "urn:uuid:0b4ee42c-05a1-4d0c-9c1e-9ad3e0b4ad6e".into(),
        topics: vec!["https://example.com/books/1".into()],
        data: format!("{{\"seq\":17,\"pad\":\"{}\"}}", "x".repeat(180)),
        private: true,
        event_type: None,
        retry: None,
    };
    let accepted = 1_732_312_345_678_901;
    let mut g = c.benchmark_group("redis_entry");
    g.bench_function("encode_200B", |b| {
        b.iter(|| encode_entry(black_box(&update), accepted, None, 0))
    });
    let payload = encode_entry(&update, accepted, None, 0).expect("update encodes");
    let position = Position::new(0, 1_732_312_345_678, 3);
    g.bench_function("decode_200B+frame", |b| {
        b.iter(|| decode_entry(position, black_box(&payload)))
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
