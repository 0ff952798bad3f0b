//! Topic matching: how long one selector takes to decide one topic, by selector kind, through the
//! node-wide [`SelectorStore`] (cached compilation and match results, as the fan-out uses it) and
//! without it (every call compiles or matches from scratch).
//!
//! Run: `cargo bench -p quicksilver-protocol --bench matching`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use quicksilver_protocol::{Selector, SelectorStore};

const TOPIC: &str = "https://example.com/books/1234/chapters/5";
const TEMPLATE: &str = "https://example.com/books/{book}/chapters/{chapter}";
const URL_PATTERN: &str = "https://example.com/books/:book/chapters/:chapter";

fn matching(c: &mut Criterion) {
    let store = SelectorStore::default();
    let mut g = c.benchmark_group("match");
    let exact = Selector::exact_topic(TOPIC);
    let wildcard = Selector::compile("*").expect("wildcard compiles");
    let template = Selector::compile(TEMPLATE).expect("template compiles");
    let pattern = Selector::url_pattern(URL_PATTERN, None).expect("URL pattern compiles");
    for (name, selector) in [
        ("exact", &exact),
        ("wildcard", &wildcard),
        ("template", &template),
        ("url_pattern", &pattern),
    ] {
        g.bench_function(format!("{name}/uncached"), |b| {
            b.iter(|| black_box(selector).matches(black_box(TOPIC)))
        });
        g.bench_function(format!("{name}/cached"), |b| {
            b.iter(|| store.matches(black_box(selector), black_box(TOPIC)))
        });
    }
    g.finish();
}

fn compilation(c: &mut Criterion) {
    let store = SelectorStore::default();
    let mut g = c.benchmark_group("compile");
    g.bench_function("template/uncached", |b| {
        b.iter(|| Selector::compile(black_box(TEMPLATE)))
    });
    g.bench_function("template/cached", |b| {
        b.iter(|| store.compile(black_box(TEMPLATE)))
    });
    g.bench_function("url_pattern/uncached", |b| {
        b.iter(|| Selector::url_pattern(black_box(URL_PATTERN), None))
    });
    g.bench_function("url_pattern/cached", |b| {
        b.iter(|| store.compile_url_pattern(black_box(URL_PATTERN), None))
    });
    g.finish();
}

criterion_group!(benches, matching, compilation);
criterion_main!(benches);
