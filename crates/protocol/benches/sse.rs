//! SSE frame encoding: the one encoding every update gets (its frame is then shared by all
//! subscribers), for a typical small JSON update and a multi-line one.
//!
//! Run: `cargo bench -p quicksilver-protocol --bench sse`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quicksilver_protocol::{sse, Update};

fn update(data: String) -> Update {
    Update {
        id: "urn:uuid:0b4ee42c-05a1-4d0c-9c1e-9ad3e0b4ad6e".into(),
        topics: vec!["https://example.com/books/1".into()],
        data,
        private: false,
        event_type: Some("message".into()),
        retry: None,
    }
}

fn encoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse_encode");
    let small = update(format!("{{\"seq\":17,\"pad\":\"{}\"}}", "x".repeat(180)));
    g.throughput(Throughput::Bytes(small.data.len() as u64));
    g.bench_function("200B_one_line", |b| {
        b.iter(|| sse::encode_update(black_box(&small)))
    });
    let lines = update("{\"k\":\"a line of JSON text\"}\n".repeat(64));
    g.throughput(Throughput::Bytes(lines.data.len() as u64));
    g.bench_function("2KiB_64_lines", |b| {
        b.iter(|| sse::encode_update(black_box(&lines)))
    });
    g.finish();
}

criterion_group!(benches, encoding);
criterion_main!(benches);
