//! An in-memory cache of manifest lookups for the embedded metadata store.
//!
//! Pulls resolve `<repository>:<tag>` on every request, so a cache of those
//! answers takes the database off the hot path. It is only correct because the
//! embedded store has a single process writing it (berth locks its data
//! directory), and every write goes through this cache's invalidation.
//!
//! Coherence: readers note the write epoch before querying the database and
//! insert their answer only if no write completed meanwhile; writers bump the
//! epoch and invalidate under the same lock after committing. Either the
//! reader's insert comes first and the writer removes it, or the reader sees
//! the new epoch and inserts nothing.

use std::sync::Mutex;

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
}

/// The epoch a reader saw before it queried the database.
#[derive(Clone, Copy)]
pub struct Epoch(u64);

impl LookupCache {
    pub fn new(capacity: usize) -> Self {
        LookupCache {
            entries: Cache::new(capacity),
            epoch: Mutex::new(0),
        }
    }

    pub fn get(&self, key: &LookupKey) -> Option<ManifestRecord> {
        self.entries.get(key)
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(*self.epoch.lock().expect("epoch lock"))
    }

    /// Caches a database answer obtained after `seen`, unless a write has
    /// completed since.
    pub fn insert(&self, seen: Epoch, key: LookupKey, record: ManifestRecord) {
        let epoch = self.epoch.lock().expect("epoch lock");
        if *epoch == seen.0 {
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
        let cache = LookupCache::new(10);
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
}
