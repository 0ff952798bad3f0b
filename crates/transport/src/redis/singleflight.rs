//! Merging identical concurrent work into one: the first caller for a key starts the work, callers
//! arriving while it runs wait for the same result.
//!
//! This is what keeps a resume storm cheap when history must come from Redis: thousands of
//! subscribers reconnecting with the same last event id cost one scan. The work runs in its own task,
//! so a caller that gives up (its client went away) does not cancel it for the others; the key is
//! released when the work ends, panics included, so a later caller starts afresh.
//!
//! A caller that joined a flight learns so ([`Joined`]): the work started before it called, so
//! whatever the work read may predate what the caller did just before (a subscriber registering,
//! for history); the caller decides whether that result serves it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

type Flights<T> = Arc<Mutex<HashMap<String, watch::Receiver<Option<T>>>>>;

/// Work in flight, by key (see the module docs).
pub(crate) struct SingleFlight<T> {
    // A blocking mutex: held only to look up or insert a key, never across an await.
    flights: Flights<T>,
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    pub(crate) fn new() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The result of the work for `key`: joins the flight in progress, or starts `work()` as a new
    /// one. `None` when the work panicked.
    #[cfg(test)]
    pub(crate) async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> Option<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.run_or_join(key, work).await.0
    }

    /// [`SingleFlight::run`], saying whether the caller joined a flight started before it called.
    pub(crate) async fn run_or_join<F>(
        &self,
        key: &str,
        work: impl FnOnce() -> F,
    ) -> (Option<T>, Joined)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (mut rx, joined) = {
            let mut flights = self.flights.lock();
            match flights.get(key) {
                Some(rx) => (rx.clone(), Joined(true)),
                None => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(key.to_string(), rx.clone());
                    let release = Release {
                        flights: self.flights.clone(),
                        key: key.to_string(),
                    };
                    let fut = work();
                    tokio::spawn(async move {
                        let value = fut.await;
                        // Release before publishing: a caller arriving after this starts a new
                        // flight and so sees writes made after this one read.
                        drop(release);
                        let _ = tx.send(Some(value));
                    });
                    (rx, Joined(false))
                }
            }
        };
        let value = match rx.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        };
        (value, joined)
    }

    /// Number of flights in progress.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

/// Whether a caller joined a flight already in progress (rather than starting it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Joined(pub(crate) bool);

/// Removes a flight's key when dropped (when the work ends or its task unwinds).
struct Release<T> {
    flights: Flights<T>,
    key: String,
}

impl<T> Drop for Release<T> {
    fn drop(&mut self) {
        self.flights.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(SingleFlight::<usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let flights = flights.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 41
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), Some(41));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
        // A later call runs again.
        assert_eq!(flights.run("k", || async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn a_panicking_flight_releases_its_key() {
        let flights = SingleFlight::<u8>::new();
        let out = flights
            .run("k", || async {
                if true {
                    panic!("boom");
                }
                1
            })
            .await;
        assert_eq!(out, None);
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(flights.run("k", || async { 2 }).await, Some(2));
    }
}
