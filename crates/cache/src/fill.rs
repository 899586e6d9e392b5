//! Blob fills: one download from the upstream per cached repository and
//! blob, however many clients ask at once, each served as the bytes arrive.
//!
//! A fill writes the upstream's bytes to a spool file and hashes them as
//! they come; every client (the first included) reads the spool file behind
//! the writer. The blob's last byte is held back until its digest is
//! verified, so no client ever receives a whole wrong blob: a corrupt or
//! truncated download ends every response with an error. Only a verified
//! download becomes the blob (recorded, then the spool file moved into the
//! blob store, as an upload is), so no partial or wrong content is ever
//! cached, and nothing is written twice. The fill is a task of its own: a
//! client going away does not stop it.
//!
//! Fills are per process. Replicas each download a blob at most once at a
//! time; the stored blob is shared through the blob store.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_client::upstream::{Upstream, UpstreamError};
use berth_oci::{Digest, Hasher};
use berth_registry::{ByteStream, Registry};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::watch;

use crate::error::{CacheError, Result};

/// Bytes written to the spool (and handed to readers) at a time.
const WRITE_BATCH: usize = 256 * 1024;
/// Room is claimed in the blob store this many bytes at a time.
const ROOM_SLICE: u64 = 8 * 1024 * 1024;
/// Bytes a reader takes from the spool at a time.
const READ_CHUNK: u64 = 256 * 1024;

/// Where a fill stands, as its readers see it.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The blob's size, once the upstream answered.
    size: Option<u64>,
    /// Bytes in the spool file.
    written: u64,
    /// `Some(Ok)` once the digest is verified.
    end: Option<Result<()>>,
}

/// One blob being downloaded.
pub(crate) struct Fill {
    spool: Arc<std::fs::File>,
    progress: watch::Receiver<Progress>,
    /// The upstream blob's URL, for messages.
    url: String,
}

/// What a fill needs to know.
pub(crate) struct FillRequest {
    pub upstream: Arc<Upstream>,
    pub remote: String,
    pub local: String,
    pub digest: Digest,
    /// How long the upstream may take to start answering.
    pub timeout: Duration,
    /// Counts the bytes received from upstreams.
    pub received: Arc<AtomicU64>,
}

/// The fills under way in this process.
pub(crate) struct Fills {
    spool_dir: PathBuf,
    inflight: Mutex<HashMap<(String, Digest), Arc<Fill>>>,
}

impl Fills {
    /// Fills spooling in `spool_dir`, which is emptied of what an earlier
    /// process left.
    pub(crate) fn new(spool_dir: PathBuf) -> io::Result<Arc<Self>> {
        match std::fs::remove_dir_all(&spool_dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&spool_dir)?;
        Ok(Arc::new(Fills {
            spool_dir,
            inflight: Mutex::new(HashMap::new()),
        }))
    }

    /// The fill of `request`'s blob, started if none is under way; returns
    /// it with the blob's size once the upstream answered.
    pub(crate) async fn fill(
        self: &Arc<Self>,
        registry: &Arc<Registry>,
        request: FillRequest,
    ) -> Result<(Arc<Fill>, u64)> {
        let fill = self.join_or_start(registry, request)?;
        Self::answered(fill).await
    }

    /// The fill of `digest` for `local` if one is under way (until its blob
    /// is stored, so no reader meets the blob recorded and not yet there).
    pub(crate) async fn joined(
        &self,
        local: &str,
        digest: &Digest,
    ) -> Option<Result<(Arc<Fill>, u64)>> {
        let key = (local.to_owned(), digest.clone());
        let fill = self
            .inflight
            .lock()
            .expect("not poisoned")
            .get(&key)
            .cloned()?;
        Some(Self::answered(fill).await)
    }

    /// The fill with the blob's size, once the upstream answered.
    async fn answered(fill: Arc<Fill>) -> Result<(Arc<Fill>, u64)> {
        let mut progress = fill.progress.clone();
        let state = progress
            .wait_for(|p| p.size.is_some() || p.end.is_some())
            .await
            .map_err(|_| stopped(&fill.url))?
            .clone();
        match (state.size, state.end) {
            (Some(size), _) => Ok((fill, size)),
            (None, Some(Err(e))) => Err(e),
            (None, _) => Err(stopped(&fill.url)),
        }
    }

    fn join_or_start(
        self: &Arc<Self>,
        registry: &Arc<Registry>,
        request: FillRequest,
    ) -> Result<Arc<Fill>> {
        let key = (request.local.clone(), request.digest.clone());
        let mut inflight = self.inflight.lock().expect("not poisoned");
        if let Some(fill) = inflight.get(&key) {
            return Ok(fill.clone());
        }
        let path = self.spool_dir.join(uuid::Uuid::new_v4().to_string());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| CacheError::Internal(format!("{}: {e}", path.display())))?;
        let spool = Arc::new(file);
        let url = format!(
            "{}/v2/{}/blobs/{}",
            request.upstream.url(),
            request.remote,
            request.digest
        );
        let (sender, progress) = watch::channel(Progress::default());
        let fill = Arc::new(Fill {
            spool: spool.clone(),
            progress,
            url: url.clone(),
        });
        inflight.insert(key.clone(), fill.clone());
        let landing = Landing {
            fills: self.clone(),
            key,
            path: path.clone(),
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _landing = landing;
            let downloaded = download(&registry, &request, &url, &spool, &sender).await;
            if let Err(e) = &downloaded {
                tracing::warn!(
                    repository = %request.local, digest = %request.digest, error = %e,
                    "a blob download from the upstream failed; nothing of it was cached"
                );
            }
            let size = downloaded.as_ref().ok().copied();
            sender.send_modify(|p| p.end = Some(downloaded.map(drop)));
            if let Some(size) = size {
                // Readers keep the file open: it can become the blob.
                let stored = match sync(&spool).await {
                    Ok(()) => registry
                        .store_verified_blob(&request.local, &request.digest, size, &path)
                        .await
                        .map(drop)
                        .map_err(CacheError::from),
                    Err(e) => Err(e),
                };
                if let Err(e) = stored {
                    tracing::warn!(
                        repository = %request.local, digest = %request.digest, error = %e,
                        "a downloaded blob could not be cached; the next pull downloads it again"
                    );
                }
            }
        });
        Ok(fill)
    }
}

fn stopped(url: &str) -> CacheError {
    CacheError::Upstream(UpstreamError::Unavailable {
        url: url.to_owned(),
        detail: "the download stopped".into(),
    })
}

/// A fill's end, however it comes (a panic included): out of the fills
/// under way, its spool file's name gone (readers keep the file open).
struct Landing {
    fills: Arc<Fills>,
    key: (String, Digest),
    path: PathBuf,
}

impl Drop for Landing {
    fn drop(&mut self) {
        if let Ok(mut inflight) = self.fills.inflight.lock() {
            inflight.remove(&self.key);
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a spool file");
            }
            _ => {}
        }
    }
}

/// Where a download stands in its spool file.
#[derive(Clone)]
struct SpoolWriter {
    spool: Arc<std::fs::File>,
    hasher: Hasher,
    written: u64,
}

impl SpoolWriter {
    fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        for chunk in chunks {
            self.hasher.update(chunk);
            self.spool.write_all_at(chunk, self.written)?;
            self.written += chunk.len() as u64;
        }
        Ok(())
    }
}

/// Waits for a batch's write and tells the readers.
async fn finish_write(
    write: tokio::task::JoinHandle<io::Result<SpoolWriter>>,
    progress: &watch::Sender<Progress>,
) -> Result<SpoolWriter> {
    let writer = write
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(|e| CacheError::Internal(format!("writing a download: {e}")))?;
    progress.send_modify(|p| p.written = writer.written);
    Ok(writer)
}

/// Downloads the blob into the spool file, hashing it; succeeds (with the
/// blob's size) only with exactly the announced bytes of exactly the
/// digest.
async fn download(
    registry: &Registry,
    request: &FillRequest,
    url: &str,
    spool: &Arc<std::fs::File>,
    progress: &watch::Sender<Progress>,
) -> Result<u64> {
    let get = request
        .upstream
        .get_blob(&request.remote, request.digest.as_str());
    let mut download = crate::within(request.timeout, url, get).await?;
    let url = url.to_owned();
    let invalid = |detail: String| -> CacheError {
        UpstreamError::Invalid {
            url: url.clone(),
            detail,
        }
        .into()
    };
    let size = download
        .size
        .ok_or_else(|| invalid("the blob's answer has no Content-Length".into()))?;
    // Refused at once if it cannot fit; then room is claimed slice by
    // slice as the spool grows, as uploads do, so concurrent downloads and
    // uploads together never eat into the store's reserve.
    drop(registry.claim_room(size).await?);
    let mut room = registry.claim_room(ROOM_SLICE.min(size)).await?;
    let mut unclaimed = ROOM_SLICE;
    progress.send_modify(|p| p.size = Some(size));
    // Batches are hashed and written on a blocking thread while the next
    // one arrives; readers learn of each once it is in the file.
    let mut writer = SpoolWriter {
        spool: spool.clone(),
        hasher: Hasher::new(request.digest.algorithm()),
        written: 0,
    };
    let mut pending: Option<tokio::task::JoinHandle<io::Result<SpoolWriter>>> = None;
    let mut batch: Vec<Bytes> = Vec::new();
    let (mut batched, mut received) = (0usize, 0u64);
    loop {
        let chunk = download.body.next().await;
        let last = chunk.is_none();
        if let Some(chunk) = chunk {
            let chunk = chunk.map_err(|e| UpstreamError::Unavailable {
                url: url.clone(),
                detail: format!("the download broke off after {received} of {size} bytes: {e}"),
            })?;
            received += chunk.len() as u64;
            request
                .received
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if received > size {
                return Err(invalid(format!(
                    "the upstream sent more than the {size} bytes it announced"
                )));
            }
            batched += chunk.len();
            unclaimed = unclaimed.saturating_sub(chunk.len() as u64);
            batch.push(chunk);
            if unclaimed == 0 {
                // The slice is (being) written: its room is given back first.
                drop(room);
                room = registry.claim_room(ROOM_SLICE).await?;
                unclaimed = ROOM_SLICE;
            }
        }
        if batched >= WRITE_BATCH || (last && batched > 0) {
            if let Some(previous) = pending.take() {
                writer = finish_write(previous, progress).await?;
            }
            let chunks = std::mem::take(&mut batch);
            batched = 0;
            let mut next = writer.clone();
            pending = Some(tokio::task::spawn_blocking(move || {
                next.write(&chunks)?;
                Ok(next)
            }));
        }
        if last {
            break;
        }
    }
    if let Some(previous) = pending.take() {
        writer = finish_write(previous, progress).await?;
    }
    let (written, hasher) = (writer.written, writer.hasher);
    if written < size {
        return Err(UpstreamError::Unavailable {
            url,
            detail: format!("the download ended after {written} of {size} bytes"),
        }
        .into());
    }
    let actual = hasher.finish();
    if actual != request.digest {
        return Err(CacheError::Corrupt {
            url,
            expected: request.digest.clone(),
            actual,
        });
    }
    Ok(size)
}

/// Makes the spool file durable (after its readers got their last byte),
/// so that moving it into the blob store, once recorded, is quick.
async fn sync(spool: &Arc<std::fs::File>) -> Result<()> {
    let file = spool.clone();
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(|e| CacheError::Internal(format!("making a download durable: {e}")))
}

impl Fill {
    /// The bytes `range` of the blob, as they arrive.
    pub(crate) fn read(self: Arc<Self>, range: Range<u64>, size: u64) -> ByteStream {
        let reader = Reader {
            progress: self.progress.clone(),
            fill: self,
            at: range.start,
            end: range.end,
            size,
            failed: false,
        };
        futures_util::stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await?;
            Some((next, reader))
        })
        .boxed()
    }
}

struct Reader {
    fill: Arc<Fill>,
    progress: watch::Receiver<Progress>,
    at: u64,
    end: u64,
    size: u64,
    failed: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.failed {
            return None;
        }
        loop {
            let progress = self.progress.borrow_and_update().clone();
            if let Some(Err(e)) = progress.end {
                self.failed = true;
                return Some(Err(io::Error::other(e.to_string())));
            }
            // Nothing unverified is served whole: a reader of the blob's end
            // gets all but its last byte as it arrives, and that byte once
            // the digest is verified; a range short of the end waits for
            // the verification.
            let available = match progress.end {
                Some(Ok(())) => self.end,
                _ if self.end < self.size => self.at,
                _ => progress.written.min(self.size.saturating_sub(1)),
            };
            if self.at < available {
                let length = (available - self.at).min(READ_CHUNK);
                let (spool, at) = (self.fill.spool.clone(), self.at);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buffer = vec![0; length as usize];
                    spool.read_exact_at(&mut buffer, at).map(|()| buffer)
                })
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
                return match read {
                    Ok(buffer) => {
                        self.at += length;
                        Some(Ok(Bytes::from(buffer)))
                    }
                    Err(e) => {
                        self.failed = true;
                        Some(Err(e))
                    }
                };
            }
            if self.at >= self.end {
                return None;
            }
            if self.progress.changed().await.is_err() {
                self.failed = true;
                return Some(Err(io::Error::other("the download stopped")));
            }
        }
    }
}
