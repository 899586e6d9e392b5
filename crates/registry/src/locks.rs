//! Locks serialising work on the same upload in this process.
//!
//! An upload's lock is held while its body streams in, so each key has a
//! lock of its own: unrelated uploads never wait for each other, however
//! long a client takes. A lock exists only while someone holds or awaits it.
//! Nothing about stored content depends on these locks: blobs, manifests
//! and collection stay consistent through the metadata store alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyedLocks {
    locks: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// A held lock; released, and forgotten when nobody else wants it, on drop.
pub struct KeyedGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    fn entry(&self, key: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .expect("lock table")
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Waits for `key`'s lock.
    pub async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let guard = self.entry(key).lock_owned().await;
        KeyedGuard {
            owner: self,
            key: key.to_owned(),
            guard: Some(guard),
        }
    }

    /// `key`'s lock if nobody holds it now.
    pub fn try_lock(&self, key: &str) -> Option<KeyedGuard<'_>> {
        let attempt = self.entry(key).try_lock_owned();
        let guard = KeyedGuard {
            owner: self,
            key: key.to_owned(),
            guard: attempt.ok(),
        };
        guard.guard.is_some().then_some(guard)
    }

    /// Forgets the lock of `key` if nobody holds or awaits it.
    fn forget_unused(&self, key: &str) {
        let mut locks = self.locks.lock().expect("lock table");
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }

    /// Forgets every lock nobody holds or awaits (left by a waiter that gave
    /// up, e.g. a request dropped while it waited).
    pub fn sweep(&self) {
        self.locks
            .lock()
            .expect("lock table")
            .retain(|_, l| Arc::strong_count(l) > 1);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().expect("lock table").len()
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.owner.forget_unused(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_nothing_left_behind() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        assert!(locks.try_lock("a").is_none(), "a is held");
        let b = locks.try_lock("b").expect("another key is free");
        drop(a);
        let again = locks.try_lock("a").expect("released");
        drop((again, b));
        assert_eq!(locks.len(), 0, "unused locks are forgotten");

        // Nor does a waiter that gives up.
        let held = locks.lock("c").await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(10), locks.lock("c"));
        assert!(waiting.await.is_err());
        drop(held);
        assert_eq!(locks.len(), 0);
        locks.sweep();
    }
}
