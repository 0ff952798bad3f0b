//! The body on Tokio's paused clock: heartbeats, the maximum life, cut-offs and closes, without
//! sleeping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use parking_lot::Mutex;
use quicksilver_fanout::{Access, Fanout, FanoutConfig, SubscriberSpec};
use quicksilver_protocol::{Position, Selector, SelectorStore, Update};

use super::*;

/// Counts its wakeups.
#[derive(Default)]
struct Wakeups(AtomicUsize);

impl Wake for Wakeups {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn fanout(queue: usize) -> Fanout {
    Fanout::start(
        &FanoutConfig {
            shards: 1,
            subscriber_queue: queue,
            alarm_tick: Duration::from_millis(100),
            ..FanoutConfig::default()
        },
        Arc::new(SelectorStore::default()),
    )
}

fn update(seq: u64) -> Arc<Envelope> {
    Arc::new(Envelope::new(
        Position::new(0, 0, seq),
        Update {
            id: format!("id-{seq}"),
            topics: vec!["t".into()],
            data: format!("d{seq}"),
            private: false,
            event_type: None,
            retry: None,
        },
        0,
    ))
}

/// A stream of topic `t` on `fanout`, and where its end reason lands.
fn stream(
    fanout: &Fanout,
    resume: Option<Resume>,
    heartbeat: Option<Duration>,
    max_life: Option<Duration>,
) -> (SubscriberStream, Arc<Mutex<Option<EndReason>>>) {
    let subscriber = fanout.subscribe(SubscriberSpec {
        selectors: vec![Selector::exact_topic("t")],
        access: Access::None,
    });
    let ended = Arc::new(Mutex::new(None));
    let on_end = ended.clone();
    let stream = SubscriberStream::new(subscriber, resume, heartbeat, max_life, move |r| {
        *on_end.lock() = Some(r)
    });
    (stream, ended)
}

/// Polls once: `Some(Some(bytes))` a frame, `Some(None)` the end, `None` pending.
fn poll(stream: &mut SubscriberStream, waker: &Waker) -> Option<Option<Bytes>> {
    match Pin::new(stream).poll_frame(&mut Context::from_waker(waker)) {
        Poll::Ready(Some(Ok(frame))) => Some(frame.into_data().ok()),
        Poll::Ready(None) => Some(None),
        Poll::Pending => None,
        Poll::Ready(Some(Err(e))) => match e {},
    }
}

/// Polls until pending, collecting the frames' text.
fn drain(stream: &mut SubscriberStream, waker: &Waker) -> String {
    let mut out = String::new();
    while let Some(Some(frame)) = poll(stream, waker) {
        out.push_str(std::str::from_utf8(&frame).unwrap_or("<not utf-8>"));
    }
    out
}

/// Lets the shard tasks run (their alarm tick) at the current paused time.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_stream_is_woken_for_its_heartbeat_and_sends_it_on_time() {
    let fanout = fanout(8);
    let (mut stream, _) = stream(&fanout, None, Some(Duration::from_secs(10)), None);
    let woken = Arc::new(Wakeups::default());
    let waker = Waker::from(woken.clone());
    assert_eq!(drain(&mut stream, &waker), ":\n");
    tokio::time::advance(Duration::from_millis(9_800)).await;
    settle().await;
    assert_eq!(woken.0.load(Ordering::SeqCst), 0, "woken before its time");
    assert_eq!(drain(&mut stream, &waker), "");
    // The shard's next tick after the 10 s mark wakes it, and the heartbeat goes out.
    tokio::time::advance(Duration::from_millis(300)).await;
    settle().await;
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    assert_eq!(drain(&mut stream, &waker), ":\n");
    // Traffic postpones the next heartbeat.
    tokio::time::advance(Duration::from_secs(5)).await;
    fanout.dispatch(update(1)).await;
    settle().await;
    assert!(drain(&mut stream, &waker).contains("id: id-1"));
    tokio::time::advance(Duration::from_secs(6)).await;
    settle().await;
    assert_eq!(drain(&mut stream, &waker), "");
    tokio::time::advance(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(drain(&mut stream, &waker), ":\n");
}

#[tokio::test(start_paused = true)]
async fn a_stream_ends_at_its_maximum_life_even_when_idle() {
    let fanout = fanout(8);
    let (mut stream, ended) = stream(&fanout, None, None, Some(Duration::from_secs(60)));
    let woken = Arc::new(Wakeups::default());
    let waker = Waker::from(woken.clone());
    assert_eq!(drain(&mut stream, &waker), ":\n");
    tokio::time::advance(Duration::from_secs(59)).await;
    settle().await;
    assert_eq!(poll(&mut stream, &waker), None);
    tokio::time::advance(Duration::from_millis(1_200)).await;
    settle().await;
    assert!(woken.0.load(Ordering::SeqCst) >= 1);
    assert_eq!(poll(&mut stream, &waker), Some(None));
    assert_eq!(*ended.lock(), Some(EndReason::WriteTimeout));
}

#[tokio::test(start_paused = true)]
async fn history_then_live_without_the_overlap() {
    let fanout = fanout(8);
    let history: Vec<_> = (1..=3).map(update).collect();
    let resume = Resume::new(history, &[], |_| true);
    let (mut stream, _) = stream(&fanout, Some(resume), None, None);
    // Registered before the history read: 2 and 3 also arrive live, then 4.
    for seq in 2..=4 {
        fanout.dispatch(update(seq)).await;
    }
    settle().await;
    let text = drain(&mut stream, Waker::noop());
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["id-1", "id-2", "id-3", "id-4"]);
}

#[tokio::test(start_paused = true)]
async fn a_cut_off_stream_sends_what_it_holds_then_ends_too_slow() {
    let fanout = fanout(2);
    let (mut stream, ended) = stream(&fanout, None, None, None);
    assert_eq!(drain(&mut stream, Waker::noop()), ":\n");
    for seq in 1..=3 {
        fanout.dispatch(update(seq)).await;
    }
    settle().await;
    let text = drain(&mut stream, Waker::noop());
    assert!(text.contains("id: id-1") && text.contains("id: id-2"));
    assert!(!text.contains("id: id-3"));
    assert_eq!(poll(&mut stream, Waker::noop()), Some(None));
    assert_eq!(*ended.lock(), Some(EndReason::TooSlow));
}

#[tokio::test(start_paused = true)]
async fn a_stream_the_hub_closes_is_told_when_to_come_back() {
    let fanout = fanout(8);
    let (stream, ended) = stream(&fanout, None, None, None);
    let mut stream = stream.with_closing_retry(Duration::from_millis(1500));
    assert_eq!(drain(&mut stream, Waker::noop()), ":\n");
    fanout.close_all();
    assert_eq!(drain(&mut stream, Waker::noop()), "retry: 1500\n\n");
    assert_eq!(poll(&mut stream, Waker::noop()), Some(None));
    assert_eq!(*ended.lock(), Some(EndReason::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_stream_reports_that_its_client_left() {
    let fanout = fanout(8);
    let (mut stream, ended) = stream(&fanout, None, None, None);
    assert_eq!(drain(&mut stream, Waker::noop()), ":\n");
    drop(stream);
    assert_eq!(*ended.lock(), Some(EndReason::ClientGone));
    assert_eq!(fanout.subscriber_count(), 0);
}
