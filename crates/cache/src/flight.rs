//! Single flight: concurrent requests for the same thing share one run.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

/// Runs keyed work at most once at a time per key; whoever asks while a run
/// is under way gets its result. A run is a task of its own, so it finishes
/// (and fills the cache) even if everyone who asked has gone.
pub(crate) struct Flights<K, V: Clone> {
    inflight: Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>,
}

impl<K, V> Flights<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Flights {
            inflight: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) async fn run<F>(self: &Arc<Self>, key: K, work: F) -> V
    where
        F: Future<Output = V> + Send + 'static,
    {
        let shared = {
            let mut inflight = self.inflight.lock().expect("not poisoned");
            match inflight.get(&key) {
                Some(running) => running.clone(),
                None => {
                    let flights = Arc::clone(self);
                    let done = key.clone();
                    // Spawned under the lock: the task's removal of its key
                    // waits until the key is in.
                    let task = tokio::spawn(async move {
                        let value = work.await;
                        flights.inflight.lock().expect("not poisoned").remove(&done);
                        value
                    });
                    let running = async move { task.await.expect("a cache fetch panicked") }
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
        let flights = Flights::<&str, usize>::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let work = |runs: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            runs.fetch_add(1, Ordering::SeqCst) + 1
        };
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (flights, runs) = (flights.clone(), runs.clone());
                tokio::spawn(async move { flights.run("k", work(runs)).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), 1);
        }
        assert_eq!(flights.run("k", work(runs.clone())).await, 2);
    }

    #[tokio::test]
    async fn a_run_finishes_when_its_caller_goes_away() {
        let flights = Flights::<&str, ()>::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let caller = tokio::spawn({
            let flights = flights.clone();
            async move {
                flights
                    .run("k", async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = tx.send(());
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        caller.abort();
        rx.await.expect("the run went on");
    }
}
