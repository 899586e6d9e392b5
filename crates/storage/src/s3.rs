//! Blobs in S3-compatible object storage, shared by every berth process on
//! the bucket.
//!
//! `object_store` (the Apache Arrow project's object storage crate) speaks
//! S3 to AWS and to self-hosted stores (Garage, MinIO, Ceph) alike, and
//! exposes S3's multipart calls one by one, which an upload resumable from
//! any process needs: no upload state lives in memory.
//!
//! Layout under the optional prefix:
//!
//! * `blobs/<algorithm>/<hex>`: a blob, only ever written with bytes whose
//!   digest was verified.
//! * `uploads/<id>/state`: an upload's progress as JSON ([`UploadState`]):
//!   its S3 multipart upload and parts, the small pieces after them, and the
//!   SHA-256 state of every byte so far, so that the next chunk, on any
//!   process, continues without reading anything again.
//! * `uploads/<id>/data`: the multipart upload's target; `uploads/<id>/piece-<offset>`:
//!   bytes not yet in a part (S3 parts are 5 MiB at least, clients send
//!   chunks of any size).
//! * `trash/<algorithm>-<hex>-<millis>-<unique>`: bytes a collection moved
//!   aside.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, Hasher};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{
    Certificate, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
    WriteMultipart,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use crate::blob::{BlobStore, ByteStream, Ending, RoomClaim, Stashed, StoredBlob, now_millis};
use crate::error::Received;
use crate::{StorageError, StorageResult};

/// The size of every multipart part but the last: above S3's 5 MiB minimum,
/// and what a chunk buffers in memory at most.
const PART_SIZE: usize = 8 << 20;

/// Parts of one upload sent to S3 at the same time, at most: enough to keep
/// receiving while S3 stores, and a bound on the memory a chunk holds.
const PARTS_IN_FLIGHT: usize = 3;

/// Chunks below this size are copied together before they join a part, so
/// that a body of tiny chunks does not become a part of millions of them.
const SMALL_CHUNK: usize = 4 << 10;

/// The bytes after an upload's recorded parts, kept as the chunks they
/// arrived in: a part goes to S3 as the list of its chunks, so no byte is
/// copied into a part-sized buffer on the way.
#[derive(Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    /// Small chunks being copied together.
    small: BytesMut,
    len: usize,
}

impl Pending {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        if chunk.len() < SMALL_CHUNK {
            self.small.extend_from_slice(&chunk);
            if self.small.len() >= SMALL_CHUNK {
                self.flush_small();
            }
        } else {
            self.flush_small();
            self.chunks.push_back(chunk);
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.chunks.push_back(self.small.split().freeze());
        }
    }

    /// `other`'s bytes after these.
    fn append(&mut self, mut other: Pending) {
        self.flush_small();
        self.chunks.append(&mut other.chunks);
        self.small = other.small;
        self.len += other.len;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `size` bytes (no more than there are).
    fn take(&mut self, size: usize) -> PutPayload {
        self.flush_small();
        let mut taken = Vec::new();
        let mut left = size;
        while left > 0 {
            let mut chunk = self.chunks.pop_front().expect("no more taken than pending");
            if chunk.len() > left {
                self.chunks.push_front(chunk.split_off(left));
            }
            left -= chunk.len();
            taken.push(chunk);
        }
        self.len -= size;
        taken.into_iter().collect()
    }

    fn take_all(&mut self) -> PutPayload {
        self.take(self.len)
    }
}

/// Parts on their way to S3, in order; aborted if dropped unfinished (a
/// failed chunk: the next one writes over their part numbers).
#[derive(Default)]
struct PartsInFlight(VecDeque<JoinHandle<object_store::Result<PartId>>>);

impl PartsInFlight {
    /// Waits for the oldest part and records it.
    async fn next_into(&mut self, state: &mut UploadState) -> StorageResult<()> {
        if let Some(sent) = self.0.pop_front() {
            let PartId { content_id } = sent
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
                .map_err(s3_error)?;
            state.parts.push(content_id);
        }
        Ok(())
    }

    /// Waits for every part and records them.
    async fn finish_into(&mut self, state: &mut UploadState) -> StorageResult<()> {
        while !self.0.is_empty() {
            self.next_into(state).await?;
        }
        Ok(())
    }
}

impl Drop for PartsInFlight {
    fn drop(&mut self) {
        for sending in &self.0 {
            sending.abort();
        }
    }
}

/// How to reach the bucket.
#[derive(Clone, Default)]
pub struct S3Options {
    /// `https://…` or `http://…`; empty for AWS itself.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Static credentials; without them, the AWS environment variables,
    /// web identity or instance metadata.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Key prefix inside the bucket, to share one bucket.
    pub prefix: String,
    /// `http://endpoint/bucket/key` rather than `http://bucket.endpoint/key`:
    /// what self-hosted stores need.
    pub path_style: bool,
    /// A CA certificate (PEM) to trust for the endpoint.
    pub ca_file: Option<PathBuf>,
    /// Whether requests sign a SHA-256 of their body, which costs a second
    /// hash of every byte pushed. Worth it over plain HTTP; over HTTPS, TLS
    /// already protects the body, so AWS's own SDKs send `UNSIGNED-PAYLOAD`.
    pub sign_payload: bool,
    /// Answer blob downloads with a redirect to a URL presigned for this
    /// long, so clients fetch the bytes from the store itself; `None` (the
    /// default) serves them through berth.
    pub presigned_redirect: Option<Duration>,
}

/// Leaves out the secret.
impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("sign_payload", &self.sign_payload)
            .field("presigned_redirect", &self.presigned_redirect)
            .finish_non_exhaustive()
    }
}

pub struct S3BlobStore {
    s3: Arc<AmazonS3>,
    prefix: String,
    presigned_redirect: Option<Duration>,
}

/// An upload's progress, kept beside its bytes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UploadState {
    /// The S3 multipart upload holding the full parts, once there is one.
    multipart: Option<String>,
    /// ETags of the parts, in order, each [`PART_SIZE`] bytes.
    parts: Vec<String>,
    /// Lengths of the pieces after the parts, in order.
    pieces: Vec<u64>,
    /// SHA-256 state of every byte so far (hex).
    sha256: String,
    /// Where the whole content is once committed (verified).
    committed: Option<String>,
}

impl UploadState {
    fn parted(&self) -> u64 {
        self.parts.len() as u64 * PART_SIZE as u64
    }

    fn size(&self) -> u64 {
        self.parted() + self.pieces.iter().sum::<u64>()
    }

    fn hasher(&self) -> StorageResult<Hasher> {
        if self.sha256.is_empty() {
            return Ok(Hasher::new(Algorithm::Sha256));
        }
        hex::decode(&self.sha256)
            .ok()
            .and_then(|state| Hasher::resume(Algorithm::Sha256, &state))
            .ok_or_else(|| corrupt("an upload's hash state cannot be read"))
    }
}

fn corrupt(message: &str) -> StorageError {
    StorageError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        message.to_owned(),
    ))
}

fn s3_error(e: object_store::Error) -> StorageError {
    StorageError::Io(std::io::Error::other(e))
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// Upload ids are berth's own (UUIDs); anything else is not an upload.
fn valid_upload_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl S3BlobStore {
    /// Connects to the bucket (checking it answers).
    pub async fn open(options: &S3Options) -> StorageResult<Self> {
        // The process's TLS provider (ring, as for everything berth
        // connects to), unless one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut client = ClientOptions::new();
        if let Some(ca) = &options.ca_file {
            let pem = tokio::fs::read(ca).await?;
            for certificate in Certificate::from_pem_bundle(&pem).map_err(s3_error)? {
                client = client.with_root_certificate(certificate);
            }
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&options.bucket)
            .with_virtual_hosted_style_request(!options.path_style)
            .with_unsigned_payload(!options.sign_payload)
            .with_client_options(client);
        if !options.region.is_empty() {
            builder = builder.with_region(&options.region);
        }
        if !options.endpoint.is_empty() {
            builder = builder
                .with_endpoint(&options.endpoint)
                .with_allow_http(options.endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&options.access_key_id, &options.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.trim_end_matches(['\r', '\n']));
        }
        let s3 = builder.build().map_err(s3_error)?;
        let prefix = options.prefix.trim_matches('/');
        let store = S3BlobStore {
            s3: Arc::new(s3),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            presigned_redirect: options.presigned_redirect,
        };
        // One listing request: wrong credentials, bucket or endpoint fail
        // the start, not the first push.
        store
            .s3
            .list_with_delimiter(Some(&store.key("blobs")))
            .await
            .map_err(s3_error)?;
        Ok(store)
    }

    fn key(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.prefix))
    }

    fn blob_key(&self, digest: &Digest) -> Path {
        self.key(&format!(
            "blobs/{}/{}",
            digest.algorithm().name(),
            digest.encoded()
        ))
    }

    fn upload_key(&self, id: &str, name: &str) -> StorageResult<Path> {
        if !valid_upload_id(id) {
            return Err(StorageError::UploadNotFound(id.to_owned()));
        }
        Ok(self.key(&format!("uploads/{id}/{name}")))
    }

    fn piece_key(&self, id: &str, offset: u64) -> StorageResult<Path> {
        self.upload_key(id, &format!("piece-{offset}"))
    }

    async fn load(&self, id: &str) -> StorageResult<UploadState> {
        let bytes = self
            .fetch(&self.upload_key(id, "state")?)
            .await?
            .ok_or_else(|| StorageError::UploadNotFound(id.to_owned()))?;
        serde_json::from_slice(&bytes).map_err(|_| corrupt("an upload's state cannot be read"))
    }

    async fn save(&self, id: &str, state: &UploadState) -> StorageResult<()> {
        let json = serde_json::to_vec(state).expect("upload state serializes");
        self.s3
            .put(&self.upload_key(id, "state")?, json.into())
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    /// An object's bytes, or `None` if there is no such object.
    async fn fetch(&self, key: &Path) -> StorageResult<Option<Bytes>> {
        match self.s3.get(key).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(s3_error)?)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(s3_error(e)),
        }
    }

    /// The pieces' bytes, in order.
    async fn read_pieces(&self, id: &str, state: &UploadState) -> StorageResult<Pending> {
        let mut bytes = Pending::default();
        let mut offset = state.parted();
        for len in &state.pieces {
            let piece = self
                .fetch(&self.piece_key(id, offset)?)
                .await?
                .ok_or_else(|| corrupt("a piece of an upload is missing"))?;
            bytes.push(piece);
            offset += len;
        }
        Ok(bytes)
    }

    async fn delete_quietly(&self, key: &Path) {
        if let Err(e) = self.s3.delete(key).await
            && !is_not_found(&e)
        {
            tracing::debug!(%key, error = %e, "cannot delete an object");
        }
    }

    /// Sends full parts out of `pending` (the bytes after the
    /// recorded parts) into the upload's multipart upload, each as a task of
    /// its own so the body keeps arriving meanwhile; waits only while
    /// [`PARTS_IN_FLIGHT`] are on their way.
    async fn send_parts(
        &self,
        id: &str,
        state: &mut UploadState,
        pending: &mut Pending,
        sending: &mut PartsInFlight,
    ) -> StorageResult<()> {
        while pending.len() >= PART_SIZE {
            let data = self.upload_key(id, "data")?;
            let multipart = match &state.multipart {
                Some(multipart) => multipart.clone(),
                None => {
                    let created = self.s3.create_multipart(&data).await.map_err(s3_error)?;
                    state.multipart = Some(created.clone());
                    created
                }
            };
            if sending.0.len() == PARTS_IN_FLIGHT {
                sending.next_into(state).await?;
            }
            let part = pending.take(PART_SIZE);
            let index = state.parts.len() + sending.0.len();
            let s3 = self.s3.clone();
            sending.0.push_back(tokio::spawn(async move {
                s3.put_part(&data, &multipart, index, part).await
            }));
        }
        Ok(())
    }

    /// The whole content of a verified upload, in one object; returns its key.
    async fn assemble(&self, id: &str, state: &UploadState) -> StorageResult<Path> {
        let mut rest = self.read_pieces(id, state).await?;
        let Some(multipart) = &state.multipart else {
            let whole = self.upload_key(id, "whole")?;
            self.s3
                .put(&whole, rest.take_all())
                .await
                .map_err(s3_error)?;
            return Ok(whole);
        };
        let data = self.upload_key(id, "data")?;
        let mut parts: Vec<PartId> = state
            .parts
            .iter()
            .map(|etag| PartId {
                content_id: etag.clone(),
            })
            .collect();
        if !rest.is_empty() {
            // The last part may be smaller than S3's minimum.
            parts.push(
                self.s3
                    .put_part(&data, multipart, parts.len(), rest.take_all())
                    .await
                    .map_err(s3_error)?,
            );
        }
        self.s3
            .complete_multipart(&data, multipart, parts)
            .await
            .map_err(s3_error)?;
        Ok(data)
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        match self.s3.head(&self.blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        match self.s3.get_opts(&self.blob_key(digest), options).await {
            Ok(found) => Ok(found.into_stream().map_err(std::io::Error::other).boxed()),
            Err(e) if is_not_found(&e) => Err(StorageError::BlobNotFound(digest.clone())),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn read_all(&self, digest: &Digest) -> StorageResult<Bytes> {
        self.fetch(&self.blob_key(digest))
            .await?
            .ok_or_else(|| StorageError::BlobNotFound(digest.clone()))
    }

    async fn write_all(&self, digest: &Digest, content: Bytes) -> StorageResult<()> {
        self.s3
            .put(&self.blob_key(digest), content.into())
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn create_upload(&self, id: &str) -> StorageResult<()> {
        self.save(id, &UploadState::default()).await
    }

    async fn upload_size(&self, id: &str) -> StorageResult<u64> {
        Ok(self.load(id).await?.size())
    }

    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        expected: Option<u64>,
        mut body: ByteStream,
    ) -> StorageResult<u64> {
        let mut state = self.load(id).await?;
        let size = state.size();
        if offset != size {
            return Err(StorageError::UploadOffset { size, offset });
        }
        let had_multipart = state.multipart.is_some();
        let mut hasher = state.hasher()?;
        let pieces = state.pieces.iter().sum::<u64>() as usize;
        // The bytes after the parts, once they fill a part: the pieces are
        // read back only then.
        let mut pending = Pending::default();
        let mut pieces_read = pieces == 0;
        let mut received = 0u64;
        let mut ending = Ending::Complete;
        let mut sending = PartsInFlight::default();
        while let Some(item) = body.next().await {
            let chunk = match item {
                Ok(chunk) => chunk,
                Err(e) => {
                    ending = Ending::Interrupted(e);
                    break;
                }
            };
            received += chunk.len() as u64;
            if expected.is_some_and(|expected| received > expected) {
                ending = Ending::Overflow;
                break;
            }
            hasher.update(&chunk);
            pending.push(chunk);
            if !pieces_read && pieces + pending.len() >= PART_SIZE {
                let mut all = self.read_pieces(id, &state).await?;
                all.append(pending);
                pending = all;
                state.pieces.clear();
                pieces_read = true;
            }
            if pieces_read {
                self.send_parts(id, &mut state, &mut pending, &mut sending)
                    .await?;
            }
        }
        sending.finish_into(&mut state).await?;
        let verdict = match ending {
            // A stream keeps what arrived (saved below), then reports it.
            Ending::Interrupted(e) => Err(StorageError::BodyInterrupted(e.to_string())),
            Ending::Overflow => Err(StorageError::ChunkLength {
                expected: expected.unwrap_or_default(),
                received: Received::MoreThan(expected.unwrap_or_default()),
            }),
            Ending::Complete => match expected {
                Some(expected) if expected != received => Err(StorageError::ChunkLength {
                    expected,
                    received: Received::Exactly(received),
                }),
                _ => Ok(()),
            },
        };
        if expected.is_some()
            && let Err(e) = verdict
        {
            // A declared chunk is kept whole or not at all: the state is not
            // saved, so parts sent meanwhile are written over by the next
            // chunk's, and a multipart upload begun for them is dropped.
            if !had_multipart && let Some(multipart) = &state.multipart {
                let _ = self
                    .s3
                    .abort_multipart(&self.upload_key(id, "data")?, multipart)
                    .await;
            }
            return Err(e);
        }
        if !pending.is_empty() {
            let at = state.size();
            state.pieces.push(pending.len() as u64);
            self.s3
                .put(&self.piece_key(id, at)?, pending.take_all())
                .await
                .map_err(s3_error)?;
        }
        state.sha256 = hex::encode(hasher.state());
        self.save(id, &state).await?;
        let size = state.size();
        verdict.map(|()| size)
    }

    async fn commit_upload(&self, id: &str, expected: &Digest) -> StorageResult<u64> {
        let mut state = self.load(id).await?;
        let size = state.size();
        let whole = match &state.committed {
            // Committed before (a retried request, or one a killed replica
            // answered no more): checked again, not assembled again.
            Some(whole) => Path::from(whole.as_str()),
            None => self.assemble(id, &state).await?,
        };
        let actual = if expected.algorithm() == Algorithm::Sha256 {
            state.hasher()?.finish()
        } else {
            // Only SHA-256 is hashed as the bytes arrive; others are read
            // again (rare: clients push SHA-256).
            let mut hasher = Hasher::new(expected.algorithm());
            let mut stream = self.s3.get(&whole).await.map_err(s3_error)?.into_stream();
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk.map_err(s3_error)?);
            }
            hasher.finish()
        };
        if actual != *expected {
            self.delete_upload(id).await?;
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        state.committed = Some(whole.to_string());
        self.save(id, &state).await?;
        Ok(size)
    }

    async fn settle_upload(&self, id: &str, digest: &Digest) -> StorageResult<()> {
        let state = self.load(id).await?;
        let Some(whole) = &state.committed else {
            return Err(StorageError::UploadNotFound(id.to_owned()));
        };
        // A server-side copy: the bytes do not pass through berth again.
        self.s3
            .copy(&Path::from(whole.as_str()), &self.blob_key(digest))
            .await
            .map_err(s3_error)?;
        self.delete_upload(id).await
    }

    async fn import(&self, digest: &Digest, file: &FsPath) -> StorageResult<()> {
        let mut source = tokio::fs::File::open(file).await?;
        let upload = self
            .s3
            .put_multipart(&self.blob_key(digest))
            .await
            .map_err(s3_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buffer = vec![0; 1 << 20];
        loop {
            let read = source.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.map_err(s3_error)?;
            writer.write(&buffer[..read]);
        }
        writer.finish().await.map_err(s3_error)?;
        tokio::fs::remove_file(file).await?;
        Ok(())
    }

    async fn claim_room(&self, _bytes: u64) -> StorageResult<RoomClaim> {
        // The bucket's capacity is the object store's to manage.
        Ok(RoomClaim::none())
    }

    async fn delete_upload(&self, id: &str) -> StorageResult<()> {
        if !valid_upload_id(id) {
            return Ok(());
        }
        if let Ok(state) = self.load(id).await
            && let Some(multipart) = &state.multipart
            && state.committed.is_none()
        {
            let _ = self
                .s3
                .abort_multipart(&self.upload_key(id, "data")?, multipart)
                .await;
        }
        let objects: Vec<_> = self
            .s3
            .list(Some(&self.key(&format!("uploads/{id}"))))
            .try_collect()
            .await
            .map_err(s3_error)?;
        for object in objects {
            self.delete_quietly(&object.location).await;
        }
        Ok(())
    }

    async fn stash(&self, digests: &[Digest]) -> StorageResult<Vec<Stashed>> {
        let at = now_millis();
        let mut stashed = Vec::new();
        for digest in digests {
            let entry = Stashed::new(digest, at, &uuid::Uuid::new_v4().simple().to_string());
            match self
                .s3
                .copy(
                    &self.blob_key(digest),
                    &self.key(&format!("trash/{}", entry.key)),
                )
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(s3_error(e)),
            }
            self.delete_quietly(&self.blob_key(digest)).await;
            stashed.push(entry);
        }
        Ok(stashed)
    }

    async fn restore(&self, stashed: Vec<Stashed>) -> StorageResult<()> {
        for entry in stashed {
            let trash = self.key(&format!("trash/{}", entry.key));
            match self.s3.copy(&trash, &self.blob_key(&entry.digest)).await {
                Ok(()) => self.delete_quietly(&trash).await,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(s3_error(e)),
            }
        }
        Ok(())
    }

    async fn purge(&self, stashed: Vec<Stashed>) -> StorageResult<()> {
        for entry in stashed {
            self.delete_quietly(&self.key(&format!("trash/{}", entry.key)))
                .await;
        }
        Ok(())
    }

    async fn stashed(&self) -> StorageResult<Vec<Stashed>> {
        let objects: Vec<_> = self
            .s3
            .list(Some(&self.key("trash")))
            .try_collect()
            .await
            .map_err(s3_error)?;
        Ok(objects
            .into_iter()
            .filter_map(|object| Stashed::parse(object.location.filename()?.to_owned()))
            .collect())
    }

    async fn download_url(&self, digest: &Digest) -> StorageResult<Option<String>> {
        let Some(lifetime) = self.presigned_redirect else {
            return Ok(None);
        };
        let url = self
            .s3
            .signed_url(Method::GET, &self.blob_key(digest), lifetime)
            .await
            .map_err(s3_error)?;
        Ok(Some(url.into()))
    }

    async fn list(&self, after: Option<&Digest>, limit: usize) -> StorageResult<Vec<StoredBlob>> {
        let blobs = self.key("blobs");
        let mut listing = match after {
            Some(after) => self
                .s3
                .list_with_offset(Some(&blobs), &self.blob_key(after)),
            None => self.s3.list(Some(&blobs)),
        };
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(object) = listing.next().await else {
                break;
            };
            let object = object.map_err(s3_error)?;
            let mut parts = object
                .location
                .parts()
                .collect::<Vec<_>>()
                .into_iter()
                .rev();
            let (Some(hex), Some(algorithm)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(digest) = Digest::parse(&format!("{}:{}", algorithm.as_ref(), hex.as_ref()))
            else {
                continue;
            };
            out.push(StoredBlob {
                digest,
                size: object.size,
                modified: object.last_modified.timestamp_millis(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! What only the S3 store does; what every store does is in
    //! `blob_suite`.

    use super::*;
    use crate::blob_suite::s3_options;
    use berth_testkit::noise;
    use futures_util::stream;

    fn body(content: Vec<u8>) -> ByteStream {
        stream::iter([Ok(Bytes::from(content))]).boxed()
    }

    /// Committed (over several parts), refused or discarded, an upload
    /// leaves no object behind.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_upload_leaves_nothing_behind() {
        let store = S3BlobStore::open(&s3_options()).await.unwrap();
        let content = noise(2 * PART_SIZE + 5, 1);
        let digest = Digest::sha256_of(&content);
        for (id, claimed) in [("a", digest.clone()), ("b", Digest::sha256_of(b"other"))] {
            store.create_upload(id).await.unwrap();
            store
                .append_upload(id, 0, None, body(content.clone()))
                .await
                .unwrap();
            if store.commit_upload(id, &claimed).await.is_ok() {
                store.settle_upload(id, &claimed).await.unwrap();
            }
        }
        store.create_upload("c").await.unwrap();
        store
            .append_upload("c", 0, None, body(content))
            .await
            .unwrap();
        store.delete_upload("c").await.unwrap();
        let left = store.s3.list(Some(&store.key("uploads"))).count().await;
        assert_eq!(left, 0, "the uploads' objects are gone");
    }

    /// Parts hold exactly the bytes in order, whatever the chunks; tiny
    /// chunks are copied together, large ones are not copied.
    #[test]
    fn pending_bytes_are_cut_into_parts_exactly() {
        let content = Bytes::from(noise(50 * SMALL_CHUNK + 7, 5));
        let sizes = [1, 100, SMALL_CHUNK - 1, SMALL_CHUNK, 3 * SMALL_CHUNK + 5];
        let (mut front, mut back) = (Pending::default(), Pending::default());
        let (mut at, mut i) = (0, 0);
        while at < content.len() {
            let end = (at + sizes[i % sizes.len()]).min(content.len());
            let half = if at < content.len() / 2 {
                &mut front
            } else {
                &mut back
            };
            half.push(content.slice(at..end));
            (at, i) = (end, i + 1);
        }
        front.append(back);
        assert_eq!(front.len(), content.len());
        let mut parts = Vec::new();
        for size in [10_000, 1, SMALL_CHUNK, 0] {
            parts.push(front.take(size));
        }
        parts.push(front.take_all());
        assert!(front.is_empty());
        let joined: Vec<u8> = parts
            .iter()
            .flat_map(|part| part.iter().flat_map(|chunk| chunk.to_vec()))
            .collect();
        assert_eq!(joined, content);
        assert_eq!(parts[1].content_length(), 1);

        let mut tiny = Pending::default();
        for byte in content.slice(..10 * SMALL_CHUNK) {
            tiny.push(Bytes::from(vec![byte]));
        }
        let part = tiny.take_all();
        assert_eq!(
            part.as_ref().len(),
            10,
            "copied together, a chunk per {SMALL_CHUNK} bytes"
        );
        let big = content.slice(..2 * SMALL_CHUNK);
        let mut one = Pending::default();
        one.push(big.clone());
        assert_eq!(
            one.take_all().as_ref()[0].as_ptr(),
            big.as_ptr(),
            "not copied"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_wrong_secret_or_bucket_fails_the_start() {
        let options = s3_options();
        let wrong = S3Options {
            secret_access_key: Some("0".repeat(64)),
            ..options.clone()
        };
        assert!(S3BlobStore::open(&wrong).await.is_err());
        let missing = S3Options {
            bucket: "no-such-bucket".into(),
            ..options
        };
        assert!(S3BlobStore::open(&missing).await.is_err());
    }
}
