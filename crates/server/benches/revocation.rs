//! What revocation costs: the check every authenticated request makes (no revocation in force,
//! and 10,000 in force, a token not among them and one that is), and the scan that ends revoked
//! streams (100,000 subscribers with tokens of their own, none of them revoked: the pure cost of
//! looking).
//!
//! Run: `cargo bench -p quicksilver-server --bench revocation`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quicksilver_auth::Identity;
use quicksilver_fanout::{Access, Fanout, FanoutConfig, SubscriberSpec};
use quicksilver_protocol::{Selector, SelectorStore};
use quicksilver_server::policies::revocation::{
    unix_now, Revocation, RevocationIndex, RevocationSet,
};

const IN_FORCE: usize = 10_000;
const SUBSCRIBERS: usize = 100_000;

fn identity(i: usize) -> Identity {
    Identity {
        issuer: Some("https://app.example.com".into()),
        subject: Some(format!("user-{i}").into()),
        token_id: Some(format!("urn:uuid:00000000-0000-0000-0000-{i:012}").into()),
        issued_at: Some(SystemTime::now() - Duration::from_secs(60)),
        expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        quota: None,
    }
}

/// Half token ids, half subjects, of users `offset..offset + n`.
fn revocations(offset: usize, n: usize) -> BTreeMap<String, Revocation> {
    let now = unix_now();
    (offset..offset + n)
        .map(|i| {
            let id = identity(i);
            let revocation = Revocation {
                jti: (i % 2 == 0).then(|| id.token_id.as_deref().unwrap_or("").to_string()),
                sub: (i % 2 == 1).then(|| id.subject.as_deref().unwrap_or("").to_string()),
                iss: None,
                before: (i % 2 == 1).then_some(now + 1),
                exp: now + 3600,
                created: now,
                reason: None,
            };
            (revocation.key().unwrap_or_default(), revocation)
        })
        .collect()
}

fn check(c: &mut Criterion) {
    let mut g = c.benchmark_group("revocation_check");
    let token = identity(42);
    let empty = RevocationSet::default();
    g.bench_function("none_in_force", |b| {
        b.iter(|| black_box(empty.covers(black_box(&token))))
    });
    let set = RevocationSet::default();
    set.replace(revocations(1_000_000, IN_FORCE));
    g.bench_function("10k_in_force_not_revoked", |b| {
        b.iter(|| black_box(set.covers(black_box(&token))))
    });
    let set = RevocationSet::default();
    set.replace(revocations(0, IN_FORCE));
    let revoked = identity(43);
    assert!(set.covers(&revoked));
    g.bench_function("10k_in_force_revoked", |b| {
        b.iter(|| black_box(set.covers(black_box(&revoked))))
    });
    g.finish();
}

fn scan(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    };
    let store = Arc::new(SelectorStore::default());
    let (fanout, _subscribers) = rt.block_on(async {
        let fanout = Fanout::start(
            &FanoutConfig {
                shards: 2,
                ..FanoutConfig::default()
            },
            store.clone(),
        );
        let subscribers: Vec<_> = (0..SUBSCRIBERS)
            .map(|i| {
                let spec = SubscriberSpec {
                    selectors: vec![Selector::exact_topic("https://example.com/t")],
                    access: Access::None,
                };
                fanout.subscribe_as(spec, Some(Arc::new(identity(i))))
            })
            .collect();
        (fanout, subscribers)
    });
    // One new revocation naming nobody connected: every subscriber is looked at, none ended.
    let index = RevocationIndex::new(revocations(10_000_000, 1).values());
    let now = unix_now();
    let mut g = c.benchmark_group("revocation_scan");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.bench_function("100k_subscribers", |b| {
        b.iter(|| assert_eq!(fanout.revoke(|id| index.covers(id, now)), 0))
    });
    g.finish();
}

criterion_group!(benches, check, scan);
criterion_main!(benches);
