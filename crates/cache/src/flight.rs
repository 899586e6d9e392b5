//! Single flight: concurrent requests for the same manifest share one
//! upstream request.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use crate::error::{CacheError, Result};

/// Runs keyed work at most once at a time per key; whoever asks while a run
/// is under way gets its result. A run is a task of its own, so it finishes
/// (and fills the cache) even if everyone who asked has gone.
pub(crate) struct Flights<K> {
    inflight: Mutex<HashMap<K, Shared<BoxFuture<'static, Result<()>>>>>,
}

/// Takes a run's key out when the run ends, however it ends (a panic
/// included), so the next request starts afresh.
struct Landing<K: Hash + Eq> {
    flights: Arc<Flights<K>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Landing<K> {
    fn drop(&mut self) {
        if let Ok(mut inflight) = self.flights.inflight.lock() {
            inflight.remove(&self.key);
        }
    }
}

impl<K> Flights<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Flights {
            inflight: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) async fn run<F>(self: &Arc<Self>, key: K, work: F) -> Result<()>
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let shared = {
            let mut inflight = self.inflight.lock().expect("not poisoned");
            match inflight.get(&key) {
                Some(running) => running.clone(),
                None => {
                    let landing = Landing {
                        flights: Arc::clone(self),
                        key: key.clone(),
                    };
                    // Spawned under the lock: the landing's removal of the
                    // key waits until the key is in.
                    let task = tokio::spawn(async move {
                        let _landing = landing;
                        work.await
                    });
                    let running = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(CacheError::Internal(format!(
                                "a manifest fetch failed: {e}"
                            )))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, running.clone());
                    running
                }
            }
        };
        shared.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_later_ones_start_another() {
        let flights = Flights::<&str>::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let work = |runs: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (flights, runs) = (flights.clone(), runs.clone());
                tokio::spawn(async move { flights.run("k", work(runs)).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        flights.run("k", work(runs.clone())).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_run_finishes_when_its_caller_goes_away() {
        let flights = Flights::<&str>::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let caller = tokio::spawn({
            let flights = flights.clone();
            async move {
                flights
                    .run("k", async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = tx.send(());
                        Ok(())
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        caller.abort();
        rx.await.expect("the run went on");
    }

    #[tokio::test]
    async fn a_panicking_run_fails_its_callers_and_the_next_one_starts_afresh() {
        let flights = Flights::<&str>::new();
        let failed = flights
            .run("k", async { panic!("a bug") })
            .await
            .unwrap_err();
        assert!(matches!(failed, CacheError::Internal(_)), "{failed}");
        flights.run("k", async { Ok(()) }).await.unwrap();
    }
}
