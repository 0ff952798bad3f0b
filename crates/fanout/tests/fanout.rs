//! Behaviour of the fan-out through its public API: who receives what, once, in order, and what
//! happens to a subscriber that does not keep up.

use std::sync::Arc;
use std::time::Duration;

use quicksilver_fanout::{Access, Fanout, FanoutConfig, Subscriber, SubscriberSpec};
use quicksilver_protocol::{Envelope, Position, SelectorStore, Update};

fn fanout(shards: usize, queue: usize) -> (Fanout, Arc<SelectorStore>) {
    fanout_with(shards, queue, None)
}

fn fanout_with(
    shards: usize,
    queue: usize,
    dispatch_timeout: Option<Duration>,
) -> (Fanout, Arc<SelectorStore>) {
    let store = Arc::new(SelectorStore::default());
    let f = Fanout::start(
        &FanoutConfig {
            shards,
            shard_channel: 16,
            subscriber_queue: queue,
            dispatch_timeout,
            ..FanoutConfig::default()
        },
        store.clone(),
    );
    (f, store)
}

fn spec(store: &SelectorStore, selectors: &[&str], access: Access) -> SubscriberSpec {
    SubscriberSpec {
        selectors: selectors
            .iter()
            .map(|s| store.compile(s).unwrap())
            .collect(),
        access,
    }
}

fn envelope(seq: u64, topics: &[&str], private: bool) -> Arc<Envelope> {
    Arc::new(Envelope::new(
        Position::new(0, 0, seq),
        Update {
            id: format!("id-{seq}"),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            data: format!("data-{seq}"),
            private,
            event_type: None,
            retry: None,
        },
        0,
    ))
}

async fn next(sub: &mut Subscriber) -> Option<u64> {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .ok()
        .flatten()
        .map(|e| e.position.seq)
}

async fn nothing_more(sub: &mut Subscriber) -> bool {
    tokio::time::timeout(Duration::from_millis(100), sub.recv())
        .await
        .is_err()
}

#[tokio::test]
async fn exact_wildcard_and_template_subscribers_get_matching_updates_once() {
    let (f, store) = fanout(2, 16);
    let mut exact = f.subscribe(spec(&store, &["https://ex.com/books/1"], Access::None));
    let mut all = f.subscribe(spec(&store, &["*"], Access::None));
    let mut tpl = f.subscribe(spec(&store, &["https://ex.com/books/{id}"], Access::None));
    // Matches through two selectors and two topics: still delivered once.
    let mut both = f.subscribe(spec(
        &store,
        &["https://ex.com/books/1", "https://ex.com/alt"],
        Access::None,
    ));

    f.dispatch(envelope(
        1,
        &["https://ex.com/books/1", "https://ex.com/alt"],
        false,
    ))
    .await;
    f.dispatch(envelope(2, &["https://ex.com/other"], false))
        .await;

    assert_eq!(next(&mut exact).await, Some(1));
    assert_eq!(next(&mut all).await, Some(1));
    assert_eq!(next(&mut all).await, Some(2));
    assert_eq!(next(&mut both).await, Some(1));
    assert!(nothing_more(&mut exact).await);
    assert!(nothing_more(&mut both).await);
    assert_eq!(next(&mut tpl).await, Some(1));
    assert!(nothing_more(&mut tpl).await);
}

#[tokio::test]
async fn private_updates_need_a_matching_grant() {
    let (f, store) = fanout(1, 16);
    let mut anonymous = f.subscribe(spec(&store, &["a"], Access::None));
    let mut granted = f.subscribe(spec(
        &store,
        &["a"],
        Access::from_selectors(vec![store.compile("b").unwrap()]),
    ));
    let mut other_grant = f.subscribe(spec(
        &store,
        &["a"],
        Access::from_selectors(vec![store.compile("c").unwrap()]),
    ));
    let mut everything = f.subscribe(spec(&store, &["a"], Access::All));

    // Private with topics a (canonical) and b (alternate): the grant on b is enough.
    f.dispatch(envelope(1, &["a", "b"], true)).await;
    f.dispatch(envelope(2, &["a"], false)).await;

    assert_eq!(next(&mut anonymous).await, Some(2));
    assert_eq!(next(&mut granted).await, Some(1));
    assert_eq!(next(&mut other_grant).await, Some(2));
    assert_eq!(next(&mut everything).await, Some(1));
}

#[tokio::test]
async fn order_is_kept_across_shards() {
    let (f, store) = fanout(4, 1024);
    let mut subs: Vec<_> = (0..8)
        .map(|_| f.subscribe(spec(&store, &["t"], Access::None)))
        .collect();
    for seq in 1..=200 {
        f.dispatch(envelope(seq, &["t"], false)).await;
    }
    for sub in &mut subs {
        for seq in 1..=200 {
            assert_eq!(next(sub).await, Some(seq));
        }
    }
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_and_others_keep_receiving() {
    let (f, store) = fanout(1, 4);
    let mut slow = f.subscribe(spec(&store, &["t"], Access::None));
    let mut fast = f.subscribe(spec(&store, &["t"], Access::None));
    for seq in 1..=20 {
        f.dispatch(envelope(seq, &["t"], false)).await;
        assert_eq!(next(&mut fast).await, Some(seq));
    }
    // The slow one got what fit in its queue, then its stream ends.
    for seq in 1..=4 {
        assert_eq!(next(&mut slow).await, Some(seq));
    }
    assert_eq!(next(&mut slow).await, None);
    assert!(slow.was_cut_off());
    assert!(!fast.was_cut_off());
    assert_eq!(
        f.stats()
            .lagged_disconnects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(f.subscriber_count(), 1);
}

#[tokio::test]
async fn dropping_a_subscription_unregisters_it() {
    let (f, store) = fanout(2, 4);
    let a = f.subscribe(spec(&store, &["t", "*"], Access::None));
    let _b = f.subscribe(spec(&store, &["t"], Access::None));
    assert_eq!(f.subscriber_count(), 2);
    drop(a);
    assert_eq!(f.subscriber_count(), 1);
    let stats = f.stats();
    assert_eq!(
        stats
            .matchers_wildcard
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        stats
            .matchers_exact
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn close_all_ends_every_stream() {
    let (f, store) = fanout(2, 4);
    let mut a = f.subscribe(spec(&store, &["t"], Access::None));
    f.dispatch(envelope(1, &["t"], false)).await;
    // Let the shard deliver before closing.
    assert_eq!(next(&mut a).await, Some(1));
    f.close_all();
    assert_eq!(next(&mut a).await, None);
    assert!(!a.was_cut_off());
}

#[tokio::test]
async fn close_some_closes_gradually_across_shards() {
    let (f, store) = fanout(3, 4);
    let mut subs: Vec<_> = (0..10)
        .map(|_| f.subscribe(spec(&store, &["t"], Access::None)))
        .collect();
    assert_eq!(f.close_some(4), 4);
    assert_eq!(f.subscriber_count(), 6);
    assert_eq!(f.close_some(100), 6);
    assert_eq!(f.subscriber_count(), 0);
    for s in &mut subs {
        assert_eq!(next(s).await, None);
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_whose_updates_wait_past_the_dispatch_timeout_is_cut_off() {
    let (f, store) = fanout_with(1, 100, Some(Duration::from_millis(50)));
    let mut stalled = f.subscribe(spec(&store, &["t"], Access::None));
    let mut reading = f.subscribe(spec(&store, &["t"], Access::None));
    f.dispatch(envelope(1, &["t"], false)).await;
    assert_eq!(next(&mut reading).await, Some(1));
    // The stalled one never reads; well past the timeout, the next update finds its first one
    // still waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.dispatch(envelope(2, &["t"], false)).await;
    assert_eq!(next(&mut reading).await, Some(2));
    // An idle but reading subscriber is never cut: its queue was empty.
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.dispatch(envelope(3, &["t"], false)).await;
    assert_eq!(next(&mut reading).await, Some(3));
    assert!(!reading.was_cut_off());
    assert_eq!(next(&mut stalled).await, Some(1));
    assert_eq!(next(&mut stalled).await, None);
    assert!(stalled.was_cut_off());
}

/// Counts the wakeups of the waker it makes.
#[derive(Default)]
struct Wakeups(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Wakeups {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Wakeups {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn an_alarm_wakes_a_waiting_subscription_once_without_an_update() {
    let store = Arc::new(SelectorStore::default());
    let f = Fanout::start(
        &FanoutConfig {
            shards: 2,
            alarm_tick: Duration::from_millis(10),
            ..FanoutConfig::default()
        },
        store.clone(),
    );
    let mut with_alarm = f.subscribe(spec(&store, &["t"], Access::None));
    let mut without = f.subscribe(spec(&store, &["t"], Access::None));
    let (rang, silent) = (Arc::new(Wakeups::default()), Arc::new(Wakeups::default()));
    for (sub, counter) in [(&mut with_alarm, &rang), (&mut without, &silent)] {
        let waker = std::task::Waker::from(counter.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(sub.poll_recv(&mut cx).is_pending());
    }
    with_alarm.set_alarm(quicksilver_fanout::now_ms() + 50);
    // Not before its time (the shards tick every 10 ms meanwhile)...
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(rang.count(), 0);
    // ...and within a tick after it.
    tokio::time::sleep(Duration::from_millis(25)).await;
    assert_eq!(rang.count(), 1);
    // Rung once and cleared; the subscription without an alarm was never woken.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rang.count(), 1);
    assert_eq!(silent.count(), 0);
    // An alarm set to 0 is cancelled.
    let waker = std::task::Waker::from(rang.clone());
    assert!(with_alarm
        .poll_recv(&mut std::task::Context::from_waker(&waker))
        .is_pending());
    with_alarm.set_alarm(quicksilver_fanout::now_ms() + 20);
    with_alarm.set_alarm(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rang.count(), 1);
}

#[tokio::test]
async fn a_cut_off_wakes_and_tells_the_writer_of_its_stream_only() {
    let (f, store) = fanout(1, 2);
    let slow = f.subscribe(spec(&store, &["t"], Access::None));
    let mut other = f.subscribe(spec(&store, &["t"], Access::None));
    let (slow_cut, other_cut) = (slow.cut_off(), other.cut_off());
    // Both writers are blocked on their sockets and watch their cut-off.
    let woken = Arc::new(Wakeups::default());
    let waker = std::task::Waker::from(woken.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(slow_cut.poll_cut_off(&mut cx, 0).is_pending());
    for seq in 1..=3 {
        f.dispatch(envelope(seq, &["t"], false)).await;
        assert_eq!(next(&mut other).await, Some(seq));
    }
    // The third update found the slow queue full: cut off, and its watcher woken.
    assert!(woken.count() >= 1);
    assert!(slow_cut.poll_cut_off(&mut cx, 0).is_ready());
    assert!(slow_cut.is_cut_off());
    assert!(!other_cut.is_cut_off());
    assert!(other_cut.poll_cut_off(&mut cx, 0).is_pending());
    drop(slow);
}

#[tokio::test]
async fn an_interruption_ends_the_streams_registered_before_it_and_not_those_after() {
    // One shard on this single-threaded runtime: it runs only when the test awaits.
    let (f, store) = fanout(1, 16);
    let mut before = f.subscribe(spec(&store, &["t"], Access::None));
    f.dispatch(envelope(1, &["t"], false)).await;
    f.interrupt_all().await;
    // Registered after the loss was found, while the interruption still waits in the shard's
    // inbox: its history is read after the loss, so the loss is no hole for it.
    let mut after = f.subscribe(spec(&store, &["t"], Access::None));
    f.dispatch(envelope(2, &["t"], false)).await;
    assert_eq!(next(&mut before).await, Some(1));
    assert_eq!(next(&mut before).await, None);
    assert!(before.was_interrupted());
    // (It also gets update 1, which the shard had not offered yet when it registered: the
    // server's replay-then-live filter drops what its history covered.)
    assert_eq!(next(&mut after).await, Some(1));
    assert_eq!(next(&mut after).await, Some(2));
    assert!(!after.was_interrupted());
}

#[tokio::test]
async fn revoking_ends_only_the_streams_of_the_revoked_identities() {
    use quicksilver_auth::Identity;
    let (f, store) = fanout(2, 16);
    let identity = |sub: &str, jti: &str| {
        Some(Arc::new(Identity {
            subject: Some(sub.into()),
            token_id: Some(jti.into()),
            ..Identity::default()
        }))
    };
    let mut alice = f.subscribe_as(spec(&store, &["t"], Access::None), identity("alice", "t1"));
    let alice_token = identity("alice", "t1");
    // Another stream of the same token, and one of another token of the same subject.
    let mut alice_again = f.subscribe_as(spec(&store, &["t"], Access::None), alice_token);
    let mut alice_other =
        f.subscribe_as(spec(&store, &["t"], Access::None), identity("alice", "t2"));
    let mut bob = f.subscribe_as(spec(&store, &["t"], Access::None), identity("bob", "t3"));
    let mut anonymous = f.subscribe(spec(&store, &["t"], Access::None));
    f.dispatch(envelope(1, &["t"], false)).await;
    for stream in [
        &mut alice,
        &mut alice_again,
        &mut alice_other,
        &mut bob,
        &mut anonymous,
    ] {
        assert_eq!(next(stream).await, Some(1));
    }
    // Unlike an interruption, a revocation is not ordered with the updates: it acts at once.
    assert_eq!(
        f.revoke(|id| id.token_id.as_deref() == Some("t1")),
        2,
        "both streams of the revoked token"
    );
    assert_eq!(
        f.stats()
            .revoked_disconnects
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    f.dispatch(envelope(2, &["t"], false)).await;
    for revoked in [&mut alice, &mut alice_again] {
        assert_eq!(next(revoked).await, None);
        assert!(revoked.was_revoked());
        assert!(!revoked.was_interrupted());
    }
    for kept in [&mut alice_other, &mut bob, &mut anonymous] {
        assert_eq!(next(kept).await, Some(2));
        assert!(!kept.was_revoked());
    }
    assert_eq!(f.subscriber_count(), 3);
}
