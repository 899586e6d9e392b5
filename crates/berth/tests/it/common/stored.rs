//! A server's stored bytes, looked at (and damaged) behind its back: files
//! under its data directory, or objects under its prefix of the test
//! Garage's bucket in the suite's second run.

use std::path::PathBuf;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::SharedStores;

pub enum StoredBytes {
    Disk(PathBuf),
    Bucket { s3: AmazonS3, prefix: String },
}

impl StoredBytes {
    pub(super) fn of(data_dir: &std::path::Path, stores: Option<&SharedStores>) -> Self {
        let Some(stores) = stores else {
            return StoredBytes::Disk(data_dir.to_owned());
        };
        super::install_crypto_provider();
        let s3 = AmazonS3Builder::new()
            .with_endpoint(berth_testkit::garage().endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("garage")
            .with_bucket_name(&stores.bucket)
            .with_access_key_id(berth_testkit::GARAGE_KEY_ID)
            .with_secret_access_key(berth_testkit::GARAGE_SECRET)
            .build()
            .expect("an S3 client for the test Garage");
        StoredBytes::Bucket {
            s3,
            prefix: stores.s3_prefix.clone(),
        }
    }

    /// The object holding the bytes of `digest` (`sha256:…`).
    fn blob_key(prefix: &str, digest: &str) -> Key {
        let hex = &digest["sha256:".len()..];
        Key::from(format!("{prefix}blobs/sha256/{hex}"))
    }

    /// Whether the store holds `digest`'s bytes.
    pub fn has_blob(&self, digest: &str) -> bool {
        match self {
            StoredBytes::Disk(dir) => Self::disk_blob(dir, digest).exists(),
            StoredBytes::Bucket { s3, prefix } => {
                let key = Self::blob_key(prefix, digest);
                match block_on(s3.head(&key)) {
                    Ok(_) => true,
                    Err(object_store::Error::NotFound { .. }) => false,
                    Err(e) => panic!("HEAD {key}: {e}"),
                }
            }
        }
    }

    /// Removes `digest`'s bytes, as a lost file or object would.
    pub fn remove_blob(&self, digest: &str) {
        match self {
            StoredBytes::Disk(dir) => std::fs::remove_file(Self::disk_blob(dir, digest)).unwrap(),
            StoredBytes::Bucket { s3, prefix } => {
                let key = Self::blob_key(prefix, digest);
                block_on(s3.delete(&key)).unwrap();
            }
        }
    }

    /// Flips a byte in the middle of `digest`'s bytes, as a bad disk would.
    pub fn corrupt_blob(&self, digest: &str) {
        let flip = |mut content: Vec<u8>| {
            let middle = content.len() / 2;
            content[middle] ^= 0xff;
            content
        };
        match self {
            StoredBytes::Disk(dir) => {
                let path = Self::disk_blob(dir, digest);
                std::fs::write(&path, flip(std::fs::read(&path).unwrap())).unwrap();
            }
            StoredBytes::Bucket { s3, prefix } => {
                let key = Self::blob_key(prefix, digest);
                let content = block_on(async { s3.get(&key).await?.bytes().await }).unwrap();
                let payload = PutPayload::from(flip(content.to_vec()));
                block_on(s3.put(&key, payload)).unwrap();
            }
        }
    }

    /// The bytes of every stored blob.
    pub fn blob_bytes(&self) -> u64 {
        self.sizes_under("blobs").iter().sum()
    }

    /// How many files (or objects) the store keeps under `place`:
    /// `uploads` for uploads in progress, `trash` for bytes a collection
    /// moved aside.
    pub fn count_under(&self, place: &str) -> usize {
        self.sizes_under(place).len()
    }

    /// Moves `digest`'s bytes aside under `key` as a collection does, as if
    /// it had stopped before settling them.
    pub fn stash_blob(&self, digest: &str, key: &str) {
        match self {
            StoredBytes::Disk(dir) => {
                std::fs::rename(Self::disk_blob(dir, digest), dir.join("trash").join(key)).unwrap()
            }
            StoredBytes::Bucket { s3, prefix } => {
                let from = Self::blob_key(prefix, digest);
                let to = Key::from(format!("{prefix}trash/{key}"));
                block_on(async {
                    s3.copy(&from, &to).await?;
                    s3.delete(&from).await
                })
                .unwrap();
            }
        }
    }

    fn sizes_under(&self, place: &str) -> Vec<u64> {
        match self {
            StoredBytes::Disk(dir) => super::file_sizes(&dir.join(place)),
            StoredBytes::Bucket { s3, prefix } => {
                let key = Key::from(format!("{prefix}{place}"));
                block_on(s3.list(Some(&key)).collect::<Vec<_>>())
                    .into_iter()
                    .map(|object| object.unwrap().size)
                    .collect()
            }
        }
    }

    fn disk_blob(dir: &std::path::Path, digest: &str) -> PathBuf {
        let hex = &digest["sha256:".len()..];
        dir.join("blobs/sha256").join(&hex[..2]).join(hex)
    }
}

/// Runs `future` to its end from sync or async test code alike: on a
/// thread of its own, since a runtime cannot block inside another.
fn block_on<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(future)
            })
            .join()
            .unwrap()
    })
}
