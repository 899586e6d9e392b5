//! Striped locks serialising work on the same digest or upload.
//!
//! Publishing a blob and deleting it touch both the blob store and the metadata
//! store; doing either under the digest's lock means a delete can never remove
//! bytes that a concurrent upload of the same content has just linked. The
//! stripes bound memory whatever the number of digests; two keys sharing a stripe
//! only wait for each other.

use std::hash::{BuildHasher, RandomState};

use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;

pub struct StripedLocks {
    stripes: Vec<Mutex<()>>,
    hasher: RandomState,
}

impl StripedLocks {
    pub fn new() -> Self {
        StripedLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    pub async fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let index = self.hasher.hash_one(key) as usize % STRIPES;
        self.stripes[index].lock().await
    }
}
