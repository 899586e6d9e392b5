//! What every [`BlobStore`] owes the registry, run against each store: the
//! local disk, and S3 on a real Garage.
//!
//! Each test gets two handles on one store: a second process on the same
//! bucket, or the same directory opened again after a restart. What one
//! started the other must be able to continue.

use berth_oci::{Algorithm, Digest, Hasher};
use berth_testkit::{GARAGE_KEY_ID, GARAGE_SECRET, garage, noise};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::{BlobStore, ByteStream, Received, S3Options, StorageError};

/// Larger than the S3 store's multipart parts, so that chunks of a few
/// bytes, chunks under a part and chunks over one all meet.
const BIG: usize = 8 << 20;

macro_rules! on_every_blob_store {
    ($($test:ident),* $(,)?) => {
        mod fs {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let open = || crate::FsBlobStore::open(dir.path(), 0).unwrap();
                    super::$test(&open(), &open()).await
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    let signed = super::s3_options();
                    // The other process sends its bodies unsigned (as over HTTPS).
                    let unsigned = crate::S3Options { sign_payload: false, ..signed.clone() };
                    let a = crate::S3BlobStore::open(&signed).await.unwrap();
                    let b = crate::S3BlobStore::open(&unsigned).await.unwrap();
                    super::$test(&a, &b).await
                }
            )*
        }
    };
}

on_every_blob_store!(
    an_upload_continues_elsewhere_in_chunks_of_any_size,
    a_wrong_digest_publishes_nothing_and_offsets_are_checked,
    sha512_uploads_verify,
    chunks_are_whole_or_nothing_and_streams_keep_what_arrived,
    hostile_upload_ids_are_refused,
    small_content_round_trips,
    an_upload_becomes_the_blob_only_when_settled,
    blobs_are_listed_in_digest_order_from_any_point,
    an_imported_file_becomes_the_blob,
);

/// A fresh bucket of the test Garage.
pub(crate) fn s3_options() -> S3Options {
    S3Options {
        endpoint: garage().endpoint(),
        region: "garage".into(),
        bucket: garage().bucket(),
        access_key_id: Some(GARAGE_KEY_ID.into()),
        secret_access_key: Some(GARAGE_SECRET.into()),
        prefix: "registry".into(),
        path_style: true,
        sign_payload: true,
        ca_file: None,
        presigned_redirect: None,
    }
}

fn body(chunks: Vec<Vec<u8>>) -> ByteStream {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))).boxed()
}

/// `bytes`, then a broken connection.
fn broken(bytes: Vec<u8>) -> ByteStream {
    stream::iter(vec![
        Ok(Bytes::from(bytes)),
        Err(std::io::Error::other("connection reset")),
    ])
    .boxed()
}

async fn collect(stream: ByteStream) -> Vec<u8> {
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    chunks.concat()
}

async fn upload(store: &dyn BlobStore, id: &str, content: &[u8]) {
    store.create_upload(id).await.unwrap();
    store
        .append_upload(id, 0, None, body(vec![content.to_vec()]))
        .await
        .unwrap();
}

fn assert_upload_gone(result: Result<u64, StorageError>) {
    assert!(
        matches!(result, Err(StorageError::UploadNotFound(_))),
        "{result:?}"
    );
}

/// Chunks of every size alternate between the two handles; the blob is
/// exactly the bytes; a commit retried elsewhere (its process vanished
/// before the metadata recorded the blob) succeeds again.
async fn an_upload_continues_elsewhere_in_chunks_of_any_size(a: &dyn BlobStore, b: &dyn BlobStore) {
    let content = noise(3 * BIG + 12345, 1);
    let digest = Digest::sha256_of(&content);
    a.create_upload("u-1").await.unwrap();
    let cuts = [
        0,
        10,
        1000,
        3 << 20,
        (3 << 20) + 1,
        2 * BIG + 7,
        content.len(),
    ];
    for (i, window) in cuts.windows(2).enumerate() {
        let (this, other) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let chunk = &content[window[0]..window[1]];
        // A big chunk arrives as a stream of small reads.
        let reads = chunk.chunks(64 << 10).map(<[u8]>::to_vec).collect();
        let declared = (i % 3 != 0).then_some(chunk.len() as u64);
        let size = this
            .append_upload("u-1", window[0] as u64, declared, body(reads))
            .await
            .unwrap();
        assert_eq!(size, window[1] as u64);
        assert_eq!(other.upload_size("u-1").await.unwrap(), size);
    }
    assert_eq!(b.stat(&digest).await.unwrap(), None);
    let size = content.len() as u64;
    assert_eq!(a.commit_upload("u-1", &digest).await.unwrap(), size);
    assert_eq!(b.commit_upload("u-1", &digest).await.unwrap(), size);
    // Committed is not the blob yet: the metadata records it first.
    assert_eq!(b.stat(&digest).await.unwrap(), None);
    b.settle_upload("u-1", &digest).await.unwrap();
    assert_eq!(a.stat(&digest).await.unwrap(), Some(size));
    assert_eq!(collect(a.read(&digest, None).await.unwrap()).await, content);
    let range = BIG as u64 - 5..BIG as u64 + 5;
    assert_eq!(
        collect(b.read(&digest, Some(range.clone())).await.unwrap()).await,
        content[range.start as usize..range.end as usize]
    );
    assert_upload_gone(a.upload_size("u-1").await);
}

async fn a_wrong_digest_publishes_nothing_and_offsets_are_checked(
    a: &dyn BlobStore,
    b: &dyn BlobStore,
) {
    upload(a, "u-2", b"some bytes").await;
    assert!(matches!(
        b.append_upload("u-2", 3, None, body(vec![b"x".to_vec()]))
            .await,
        Err(StorageError::UploadOffset {
            size: 10,
            offset: 3
        })
    ));
    let claimed = Digest::sha256_of(b"other bytes");
    assert!(matches!(
        b.commit_upload("u-2", &claimed).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(a.stat(&claimed).await.unwrap(), None);
    assert_eq!(
        a.stat(&Digest::sha256_of(b"some bytes")).await.unwrap(),
        None
    );
    assert_upload_gone(a.upload_size("u-2").await);
}

async fn sha512_uploads_verify(a: &dyn BlobStore, b: &dyn BlobStore) {
    upload(a, "u-3", b"abc").await;
    b.append_upload("u-3", 3, None, body(vec![b"def".to_vec()]))
        .await
        .unwrap();
    let mut hasher = Hasher::new(Algorithm::Sha512);
    hasher.update(b"abcdef");
    let digest = hasher.finish();
    assert_eq!(a.commit_upload("u-3", &digest).await.unwrap(), 6);
    a.settle_upload("u-3", &digest).await.unwrap();
    assert_eq!(b.read_all(&digest).await.unwrap(), &b"abcdef"[..]);
}

/// A declared chunk is kept whole or not at all, even across a multipart
/// part; a stream keeps what arrived before it broke.
async fn chunks_are_whole_or_nothing_and_streams_keep_what_arrived(
    a: &dyn BlobStore,
    b: &dyn BlobStore,
) {
    a.create_upload("u-4").await.unwrap();
    let head = noise(1000, 2);
    a.append_upload("u-4", 0, Some(1000), body(vec![head.clone()]))
        .await
        .unwrap();
    let big = noise(BIG + 10, 3);
    let result = a
        .append_upload("u-4", 1000, Some(2 * BIG as u64), broken(big.clone()))
        .await;
    assert!(
        matches!(result, Err(StorageError::BodyInterrupted(_))),
        "{result:?}"
    );
    assert_eq!(b.upload_size("u-4").await.unwrap(), 1000);
    // Longer or shorter than declared, at either handle.
    let wrong_lengths = [
        (a, vec![b"123456".to_vec()], Received::MoreThan(5)),
        (b, vec![b"12".to_vec(), b"3".to_vec()], Received::Exactly(3)),
    ];
    for (store, chunk, received) in wrong_lengths {
        let result = store.append_upload("u-4", 1000, Some(5), body(chunk)).await;
        assert!(
            matches!(
                &result,
                Err(StorageError::ChunkLength { expected: 5, received: r }) if *r == received
            ),
            "{result:?}"
        );
        assert_eq!(a.upload_size("u-4").await.unwrap(), 1000);
    }
    assert!(matches!(
        b.append_upload("u-4", 1000, None, broken(big.clone()))
            .await,
        Err(StorageError::BodyInterrupted(_))
    ));
    let size = a.upload_size("u-4").await.unwrap();
    assert_eq!(size, 1000 + big.len() as u64);
    let content = [head, big].concat();
    let digest = Digest::sha256_of(&content);
    a.commit_upload("u-4", &digest).await.unwrap();
    a.settle_upload("u-4", &digest).await.unwrap();
    assert_eq!(b.read_all(&digest).await.unwrap(), content);
}

async fn hostile_upload_ids_are_refused(a: &dyn BlobStore, _: &dyn BlobStore) {
    for id in ["../x", "", "a/b", ".", ".."] {
        assert!(
            matches!(
                a.create_upload(id).await,
                Err(StorageError::UploadNotFound(_))
            ),
            "{id:?}"
        );
        assert_upload_gone(a.upload_size(id).await);
    }
}

/// Manifests: written whole, twice without harm, stashed and purged.
async fn small_content_round_trips(a: &dyn BlobStore, b: &dyn BlobStore) {
    let content = Bytes::from_static(b"{}");
    let digest = Digest::sha256_of(&content);
    a.write_all(&digest, content.clone()).await.unwrap();
    b.write_all(&digest, content.clone()).await.unwrap();
    assert_eq!(b.read_all(&digest).await.unwrap(), content);
    let stashed = a.stash(std::slice::from_ref(&digest)).await.unwrap();
    assert_eq!(stashed.len(), 1);
    assert!(
        b.stash(std::slice::from_ref(&digest))
            .await
            .unwrap()
            .is_empty(),
        "nothing left to stash"
    );
    assert!(matches!(
        b.read_all(&digest).await,
        Err(StorageError::BlobNotFound(_))
    ));
    assert_eq!(b.stashed().await.unwrap(), stashed);
    b.purge(stashed).await.unwrap();
    assert!(a.stashed().await.unwrap().is_empty());
    assert_eq!(a.stat(&digest).await.unwrap(), None);
}

/// An upload becomes the blob only when settled (after the metadata
/// recorded it); a collector's stash taken meanwhile is restored over it
/// or dropped, never lost.
async fn an_upload_becomes_the_blob_only_when_settled(a: &dyn BlobStore, b: &dyn BlobStore) {
    let digest = Digest::sha256_of(b"layer");
    upload(a, "a", b"layer").await;
    assert_eq!(a.commit_upload("a", &digest).await.unwrap(), 5);
    assert_eq!(a.stat(&digest).await.unwrap(), None);
    a.settle_upload("a", &digest).await.unwrap();
    assert_eq!(b.read_all(&digest).await.unwrap(), &b"layer"[..]);

    // A second upload of the same bytes while a collector elsewhere stashes them.
    upload(a, "b", b"layer").await;
    a.commit_upload("b", &digest).await.unwrap();
    let stashed = b.stash(std::slice::from_ref(&digest)).await.unwrap();
    a.settle_upload("b", &digest).await.unwrap();
    assert_eq!(a.read_all(&digest).await.unwrap(), &b"layer"[..]);
    // The collector saw the blob recorded again: restoring finds it back.
    b.restore(stashed.clone()).await.unwrap();
    assert_eq!(a.read_all(&digest).await.unwrap(), &b"layer"[..]);
    // Settling a stash twice (two collectors) is no error.
    a.restore(stashed.clone()).await.unwrap();
    a.purge(stashed).await.unwrap();
    assert!(b.stashed().await.unwrap().is_empty());

    // Settled while the blob is stored: the upload goes, the blob stays.
    upload(a, "c", b"layer").await;
    a.commit_upload("c", &digest).await.unwrap();
    a.settle_upload("c", &digest).await.unwrap();
    assert_upload_gone(b.upload_size("c").await);
    // A stash, listed with its time, and restored.
    let stashed = a.stash(std::slice::from_ref(&digest)).await.unwrap();
    assert_eq!(b.stashed().await.unwrap(), stashed);
    assert!(stashed[0].at > 0);
    b.restore(stashed).await.unwrap();
    assert_eq!(a.stat(&digest).await.unwrap(), Some(5));
    // Deleting an upload, or one that is not there, is no error.
    a.create_upload("d").await.unwrap();
    b.delete_upload("d").await.unwrap();
    b.delete_upload("d").await.unwrap();
    assert_upload_gone(a.upload_size("d").await);
}

async fn blobs_are_listed_in_digest_order_from_any_point(a: &dyn BlobStore, b: &dyn BlobStore) {
    let mut digests = Vec::new();
    for i in 0..40u8 {
        let content = Bytes::from(vec![i; 3 + i as usize]);
        let digest = Digest::sha256_of(&content);
        a.write_all(&digest, content).await.unwrap();
        digests.push(digest);
    }
    digests.sort();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = b.list(after.as_ref(), 7).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        listed.extend(page);
    }
    assert_eq!(
        listed.iter().map(|blob| &blob.digest).collect::<Vec<_>>(),
        digests.iter().collect::<Vec<_>>()
    );
    assert!(listed.iter().all(|blob| blob.modified > 0));
    let i = listed.iter().position(|blob| blob.size == 42).unwrap();
    assert_eq!(listed[i].digest, Digest::sha256_of(&[39; 42]));
}

/// A pull-through cache's download becomes the blob, and the file goes;
/// the second time the blob is stored already and the file just goes.
async fn an_imported_file_becomes_the_blob(a: &dyn BlobStore, b: &dyn BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let content = noise(BIG + 3, 4);
    let digest = Digest::sha256_of(&content);
    for store in [a, b] {
        let file = dir.path().join("download");
        std::fs::write(&file, &content).unwrap();
        let kept_open = std::fs::File::open(&file).unwrap();
        store.import(&digest, &file).await.unwrap();
        assert!(!file.exists());
        assert_eq!(kept_open.metadata().unwrap().len(), content.len() as u64);
    }
    assert_eq!(a.read_all(&digest).await.unwrap(), content);
}
