//! Property: the fan-out delivers an update to a subscriber exactly when a plain reference model
//! says so — one of the update's topics matches one of the subscriber's selectors, and, for a
//! private update, one of its topics also matches one of the subscriber's grants. In particular a
//! private update never reaches a subscriber without a matching grant.
//!
//! Topics, selectors (exact, `*`, one- and two-variable templates, reserved expansion, selectors of
//! another origin) and grants are generated over a small alphabet so matches and near misses are
//! frequent. The model matches structured values; the fan-out compiles the selectors' strings and
//! runs its sharded dispatch, as in the hub.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use quicksilver_fanout::{Access, Fanout, FanoutConfig, SubscriberSpec};
use quicksilver_protocol::{Envelope, Position, SelectorStore, Update};

/// Path segments topics are made of.
const SEGMENTS: [&str; 3] = ["a", "b", "c"];

/// A topic: `https://ex.com/<first>/<second>`.
#[derive(Clone, Copy, Debug)]
struct Topic(usize, usize);

impl Topic {
    fn url(self) -> String {
        format!("https://ex.com/{}/{}", SEGMENTS[self.0], SEGMENTS[self.1])
    }
}

/// A topic selector (or grant), as the model sees it.
#[derive(Clone, Copy, Debug)]
enum Sel {
    Exact(Topic),
    Any,
    /// `https://ex.com/{x}/<second>`
    AnyFirst(usize),
    /// `https://ex.com/<first>/{x}`
    AnySecond(usize),
    /// `https://ex.com/{x}/{y}`
    AnyBoth,
    /// `https://ex.com/{+rest}`: anything below the origin.
    Below,
    /// An exact topic on another origin, matching nothing generated.
    Elsewhere(Topic),
}

impl Sel {
    fn raw(self) -> String {
        match self {
            Sel::Exact(t) => t.url(),
            Sel::Any => "*".into(),
            Sel::AnyFirst(s) => format!("https://ex.com/{{x}}/{}", SEGMENTS[s]),
            Sel::AnySecond(f) => format!("https://ex.com/{}/{{x}}", SEGMENTS[f]),
            Sel::AnyBoth => "https://ex.com/{x}/{y}".into(),
            Sel::Below => "https://ex.com/{+rest}".into(),
            Sel::Elsewhere(t) => t.url().replace("ex.com", "ex.org"),
        }
    }

    /// The reference: which topics this selector matches.
    fn matches(self, t: Topic) -> bool {
        match self {
            Sel::Exact(e) => e.0 == t.0 && e.1 == t.1,
            Sel::Any | Sel::AnyBoth | Sel::Below => true,
            Sel::AnyFirst(s) => t.1 == s,
            Sel::AnySecond(f) => t.0 == f,
            Sel::Elsewhere(_) => false,
        }
    }
}

#[derive(Clone, Debug)]
struct Sub {
    selectors: Vec<Sel>,
    /// `None`: anonymous (no token).
    grants: Option<Vec<Sel>>,
}

#[derive(Clone, Debug)]
struct Upd {
    topics: Vec<Topic>,
    private: bool,
}

/// The reference model of the delivery decision.
fn delivered(sub: &Sub, update: &Upd) -> bool {
    let any = |sels: &[Sel]| {
        update
            .topics
            .iter()
            .any(|t| sels.iter().any(|s| s.matches(*t)))
    };
    any(&sub.selectors) && (!update.private || sub.grants.as_deref().is_some_and(any))
}

fn topic() -> impl Strategy<Value = Topic> {
    (0..SEGMENTS.len(), 0..SEGMENTS.len()).prop_map(|(a, b)| Topic(a, b))
}

fn sel() -> impl Strategy<Value = Sel> {
    prop_oneof![
        6 => topic().prop_map(Sel::Exact),
        1 => Just(Sel::Any),
        2 => (0..SEGMENTS.len()).prop_map(Sel::AnyFirst),
        2 => (0..SEGMENTS.len()).prop_map(Sel::AnySecond),
        1 => Just(Sel::AnyBoth),
        1 => Just(Sel::Below),
        1 => topic().prop_map(Sel::Elsewhere),
    ]
}

fn sub() -> impl Strategy<Value = Sub> {
    (
        prop::collection::vec(sel(), 1..4),
        prop::option::weighted(0.8, prop::collection::vec(sel(), 0..4)),
    )
        .prop_map(|(selectors, grants)| Sub { selectors, grants })
}

fn upd() -> impl Strategy<Value = Upd> {
    (
        prop::collection::vec(topic(), 1..4),
        prop::bool::weighted(0.7),
    )
        .prop_map(|(topics, private)| Upd { topics, private })
}

/// The topic of the public update sent last to every subscriber, so each knows when it has
/// everything.
const SENTINEL: &str = "urn:sentinel";

/// What the fan-out delivers: for each subscriber, the indexes of the updates it received.
fn fanout_deliveries(subs: &[Sub], updates: &[Upd]) -> Vec<Vec<usize>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = Arc::new(SelectorStore::default());
        let fanout = Fanout::start(
            &FanoutConfig {
                shards: 3,
                shard_channel: 16,
                subscriber_queue: 64,
                dispatch_timeout: None,
                ..FanoutConfig::default()
            },
            store.clone(),
        );
        let compile = |sels: &[Sel]| {
            sels.iter()
                .map(|s| {
                    store
                        .compile(&s.raw())
                        .expect("generated selectors compile")
                })
                .collect::<Vec<_>>()
        };
        let mut subscriptions = Vec::new();
        for sub in subs {
            let mut selectors = compile(&sub.selectors);
            selectors.push(store.compile(SENTINEL).expect("sentinel"));
            // As the server does: a `*` grant is every private update; no grant, none.
            let access = match &sub.grants {
                None => Access::None,
                Some(grants) => Access::from_selectors(compile(grants)),
            };
            subscriptions.push(fanout.subscribe(SubscriberSpec { selectors, access }));
        }
        let envelope = |seq: usize, topics: Vec<String>, private: bool| {
            Arc::new(Envelope::new(
                Position::new(0, 0, seq as u64),
                Update {
                    id: format!("u{seq}"),
                    topics,
                    data: String::new(),
                    private,
                    event_type: None,
                    retry: None,
                },
                0,
            ))
        };
        for (i, u) in updates.iter().enumerate() {
            let topics = u.topics.iter().map(|t| t.url()).collect();
            fanout.dispatch(envelope(i, topics, u.private)).await;
        }
        fanout
            .dispatch(envelope(usize::MAX >> 1, vec![SENTINEL.into()], false))
            .await;
        let mut received = Vec::new();
        for subscription in &mut subscriptions {
            let mut got = Vec::new();
            loop {
                let envelope = tokio::time::timeout(Duration::from_secs(5), subscription.recv())
                    .await
                    .expect("the sentinel arrives")
                    .expect("subscription open");
                if envelope.update.topics[0] == SENTINEL {
                    break;
                }
                got.push(envelope.position.seq as usize);
            }
            received.push(got);
        }
        received
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deliveries_match_the_reference_model(
        subs in prop::collection::vec(sub(), 1..6),
        updates in prop::collection::vec(upd(), 1..10),
    ) {
        let actual = fanout_deliveries(&subs, &updates);
        for (i, sub) in subs.iter().enumerate() {
            let expected: Vec<usize> = updates
                .iter()
                .enumerate()
                .filter(|(_, u)| delivered(sub, u))
                .map(|(j, _)| j)
                .collect();
            prop_assert_eq!(&actual[i], &expected, "subscriber {:?}", sub);
            for j in &actual[i] {
                let u = &updates[*j];
                // Spelled out: a private update is only ever delivered through a matching grant.
                prop_assert!(
                    !u.private
                        || sub.grants.as_ref().is_some_and(|g| u
                            .topics
                            .iter()
                            .any(|t| g.iter().any(|s| s.matches(*t)))),
                    "private update {:?} reached {:?}", u, sub
                );
            }
        }
    }
}
