//! An in-memory cache of manifest lookups for the metadata store.
//!
//! Pulls resolve `<repository>:<tag>` on every request, so a cache of those
//! answers takes the database off the hot path. It is correct only while
//! every write reaches its invalidation: this process's writes directly, and
//! on a database other processes write, theirs through the database's
//! notifications; while those cannot arrive (the listening connection is
//! down), the cache is suspended and answers nothing.
//!
//! Coherence: readers note the write epoch before querying the database and
//! insert their answer only if no write completed meanwhile; writers bump the
//! epoch and invalidate under the same lock after committing. Either the
//! reader's insert comes first and the writer removes it, or the reader sees
//! the new epoch and inserts nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use quick_cache::sync::Cache;

use crate::metadata::ManifestRecord;

/// A manifest lookup: by tag or by digest, within a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupKey {
    pub repository: String,
    pub reference: String,
}

pub struct LookupCache {
    entries: Cache<LookupKey, ManifestRecord>,
    epoch: Mutex<u64>,
    /// Whether every write reaches the cache; changed under the epoch lock.
    live: AtomicBool,
}

/// The epoch a reader saw before it queried the database.
#[derive(Clone, Copy)]
pub struct Epoch(u64);

impl LookupCache {
    /// A cache answering from the start (`live`), or only once resumed.
    pub fn new(capacity: usize, live: bool) -> Self {
        LookupCache {
            entries: Cache::new(capacity),
            epoch: Mutex::new(0),
            live: AtomicBool::new(live),
        }
    }

    pub fn get(&self, key: &LookupKey) -> Option<ManifestRecord> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.entries.get(key)
    }

    /// Writes may now go unseen: forget everything, answer nothing.
    pub fn suspend(&self) {
        let mut epoch = self.epoch.lock().expect("epoch lock");
        *epoch += 1;
        self.live.store(false, Ordering::Release);
        self.entries.clear();
    }

    /// Every write is seen again: start from nothing.
    pub fn resume(&self) {
        let mut epoch = self.epoch.lock().expect("epoch lock");
        *epoch += 1;
        self.entries.clear();
        self.live.store(true, Ordering::Release);
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(*self.epoch.lock().expect("epoch lock"))
    }

    /// Caches a database answer obtained after `seen`, unless a write has
    /// completed since.
    pub fn insert(&self, seen: Epoch, key: LookupKey, record: ManifestRecord) {
        let epoch = self.epoch.lock().expect("epoch lock");
        if *epoch == seen.0 && self.live.load(Ordering::Acquire) {
            self.entries.insert(key, record);
        }
    }

    /// After a committed write: forgets `keys`.
    pub fn invalidate(&self, keys: impl IntoIterator<Item = LookupKey>) {
        let mut epoch = self.epoch.lock().expect("epoch lock");
        *epoch += 1;
        for key in keys {
            self.entries.remove(&key);
        }
    }

    /// After a committed write: forgets every lookup in `repository`.
    pub fn invalidate_repository(&self, repository: &str) {
        let mut epoch = self.epoch.lock().expect("epoch lock");
        *epoch += 1;
        self.entries.retain(|key, _| key.repository != repository);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::Digest;

    fn key(r: &str) -> LookupKey {
        LookupKey {
            repository: "repo".into(),
            reference: r.into(),
        }
    }

    fn record() -> ManifestRecord {
        ManifestRecord {
            digest: Digest::sha256_of(b"m"),
            media_type: "x".into(),
            size: 1,
        }
    }

    #[test]
    fn a_read_racing_a_write_is_not_cached() {
        let cache = LookupCache::new(10, true);
        let seen = cache.epoch();
        cache.invalidate([key("v1")]); // a write committed after the read began
        cache.insert(seen, key("v1"), record());
        assert_eq!(cache.get(&key("v1")), None);
        let seen = cache.epoch();
        cache.insert(seen, key("v1"), record());
        assert_eq!(cache.get(&key("v1")), Some(record()));
        cache.invalidate_repository("repo");
        assert_eq!(cache.get(&key("v1")), None);
    }

    #[test]
    fn a_suspended_cache_answers_and_keeps_nothing() {
        let cache = LookupCache::new(10, false);
        let seen = cache.epoch();
        cache.insert(seen, key("v1"), record());
        assert_eq!(cache.get(&key("v1")), None);
        cache.resume();
        let seen = cache.epoch();
        cache.insert(seen, key("v1"), record());
        assert_eq!(cache.get(&key("v1")), Some(record()));
        // A read begun before the suspension does not fill it afterwards.
        let seen = cache.epoch();
        cache.suspend();
        assert_eq!(cache.get(&key("v1")), None);
        cache.resume();
        cache.insert(seen, key("v1"), record());
        assert_eq!(cache.get(&key("v1")), None);
    }
}
