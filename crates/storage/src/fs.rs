//! Blobs on a local file system.
//!
//! Layout under the root:
//! * `blobs/<algorithm>/<first two hex digits>/<hex>`: verified blobs;
//! * `uploads/<id>`: uploads in progress, on the same file system so that
//!   committing one is an atomic `rename`;
//! * `trash/<algorithm>-<hex>-<unique>`: bytes a collector moved aside
//!   ([`BlobStore::stash`]) before removing them for good.
//!
//! A blob path exists only once its bytes were verified against the digest and
//! synced to disk, so a crash at any moment leaves at worst an orphaned upload
//! file, never a partial blob.
//!
//! Blob data never takes the last `reserve` bytes of the file system: a push
//! that would is refused and its bytes dropped, so the metadata database
//! (which must write to delete anything) and collection keep working on a
//! full disk.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::blob::{BlobStore, ByteStream, Ending, RoomClaim, Stashed, StoredBlob, now_millis};
use crate::metadata::Timestamp;
use crate::{Received, StorageError, StorageResult};

/// Bytes per read when streaming a blob out, and per write when taking one in:
/// large enough that a 1 GiB transfer costs a few thousand system calls.
const IO_CHUNK: usize = 256 * 1024;

/// How many received body chunks may wait for the writer thread.
const PENDING_CHUNKS: usize = 64;

/// How much of a body is read and dropped after its write failed.
const DRAIN_AFTER_FAILURE: u64 = 1 << 30;

/// How many bytes an upload writes between checks of the free space.
const SPACE_CHECK_EVERY: u64 = 8 * 1024 * 1024;

/// An upload's hash state after its last byte, kept so a chunked upload is
/// hashed once while it arrives. Lost on restart; then rebuilt from the file.
struct UploadHash {
    size: u64,
    hasher: Hasher,
}

pub struct FsBlobStore {
    root: PathBuf,
    /// Free bytes blob data leaves on the file system, and what writers
    /// have claimed.
    space: SpaceCheck,
    hashes: Mutex<HashMap<String, UploadHash>>,
    /// Distinguishes concurrent writes of the same small content, and
    /// stashes of the same blob.
    serial: AtomicU64,
}

/// Suffix of the temporary files of [`BlobStore::write_all`]; upload ids never
/// contain a dot, so these cannot collide with uploads.
const PARTIAL: &str = ".partial";

impl FsBlobStore {
    /// Opens (creating if needed) a blob store rooted at `root`.
    ///
    /// Temporary files of small writes interrupted by a crash are removed; only
    /// `uploads/` is read for that, so opening costs nothing per blob.
    pub fn open(root: &Path, reserve: u64) -> io::Result<Self> {
        create_dir_durable(&root.join("blobs"))?;
        create_dir_durable(&root.join("trash"))?;
        let uploads = root.join("uploads");
        create_dir_durable(&uploads)?;
        for entry in fs::read_dir(&uploads)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(PARTIAL) {
                fs::remove_file(path)?;
            }
        }
        Ok(FsBlobStore {
            root: root.to_owned(),
            space: SpaceCheck {
                root: root.to_owned(),
                reserve,
                claimed: Arc::default(),
            },
            hashes: Mutex::default(),
            serial: AtomicU64::new(0),
        })
    }

    /// A name no other file in this store has or had.
    fn unique(&self) -> String {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}.{nanos}.{serial}", std::process::id())
    }

    fn space(&self) -> SpaceCheck {
        self.space.clone()
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.encoded();
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// Upload ids are chosen by the registry; anything but `[A-Za-z0-9-]` is
    /// refused here too, so no id can name a path outside `uploads/`.
    fn upload_path(&self, id: &str) -> StorageResult<PathBuf> {
        let safe = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !safe {
            return Err(StorageError::UploadNotFound(id.to_owned()));
        }
        Ok(self.root.join("uploads").join(id))
    }

    fn take_hash(&self, id: &str) -> Option<UploadHash> {
        self.hashes.lock().expect("hash map lock").remove(id)
    }

    /// Keeps an upload's hash state for its next chunk; returns its size.
    fn keep_hash(&self, id: &str, state: UploadHash) -> u64 {
        let size = state.size;
        self.hashes
            .lock()
            .expect("hash map lock")
            .insert(id.to_owned(), state);
        size
    }
}

fn upload_not_found(id: &str) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |e| match e.kind() {
        io::ErrorKind::NotFound => StorageError::UploadNotFound(id.to_owned()),
        _ => write_error(e),
    }
}

/// A failed write, with a full disk named as such.
fn write_error(e: io::Error) -> StorageError {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            StorageError::Full(e.to_string())
        }
        _ => StorageError::Io(e),
    }
}

/// Whether blob data may take more bytes without eating into the reserve.
/// Writers claim the room they are about to fill, so concurrent uploads
/// that each checked the free space cannot together write past it.
#[derive(Clone)]
struct SpaceCheck {
    root: PathBuf,
    reserve: u64,
    /// Bytes claimed by writers and not written yet.
    claimed: Arc<AtomicU64>,
}

/// Room claimed for writing; given back when dropped.
struct Claim {
    claimed: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claimed.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl SpaceCheck {
    /// Claims room for `bytes` more, or fails when the free space less what
    /// others claimed would not keep the reserve.
    fn claim(&self, bytes: u64) -> StorageResult<Claim> {
        let claimed = self.claimed.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let claim = Claim {
            claimed: self.claimed.clone(),
            bytes,
        };
        if self.reserve == 0 {
            return Ok(claim);
        }
        let stat = rustix::fs::statvfs(&self.root).map_err(io::Error::from)?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < self.reserve.saturating_add(claimed) {
            return Err(StorageError::Full(format!(
                "{free} bytes free, {} kept in reserve for the metadata",
                self.reserve
            )));
        }
        Ok(claim)
    }
}

/// Unix milliseconds of a file's last modification.
fn modified(meta: &fs::Metadata) -> Timestamp {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as Timestamp)
}

/// Hashes the first `size` bytes of `path`.
fn hash_file(path: &Path, algorithm: Algorithm, size: u64) -> io::Result<Hasher> {
    let mut hasher = Hasher::new(algorithm);
    let mut file = File::open(path)?.take(size);
    let mut buf = vec![0; IO_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher);
        }
        hasher.update(&buf[..n]);
    }
}

/// Makes a directory entry change durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Creates `dir` and whatever parents it lacks, syncing the parent of each
/// directory created: a blob recorded in the metadata must not vanish with
/// a directory entry lost to a power cut (the first blob of `sha512/` makes
/// two levels at once).
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        sync_dir(created.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Moves a synced file into its content-addressed place, creating the
/// fan-out directories durably on first use, and dates it now: a collector
/// takes unrecorded bytes only once they are older than its grace period.
/// If the blob is already there, the same digest means the same bytes, so
/// the new copy is simply dropped.
fn publish(from: &Path, to: &Path) -> io::Result<()> {
    if to.exists() {
        return fs::remove_file(from);
    }
    File::options()
        .write(true)
        .open(from)?
        .set_modified(SystemTime::now())?;
    let dir = to.parent().expect("blob path has a parent");
    create_dir_durable(dir)?;
    fs::rename(from, to)?;
    sync_dir(dir)
}

/// Appends what arrives on `chunks` to the upload at `path`, which must
/// hold `offset` bytes, hashing as it goes (from `known` when it matches);
/// checks the free space every few megabytes.
fn write_chunks(
    path: &Path,
    id: &str,
    offset: u64,
    known: Option<UploadHash>,
    space: &SpaceCheck,
    mut chunks: tokio::sync::mpsc::Receiver<Bytes>,
) -> StorageResult<UploadHash> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(upload_not_found(id))?;
    let size = file.metadata()?.len();
    if size != offset {
        return Err(StorageError::UploadOffset { size, offset });
    }
    let mut hasher = match known {
        Some(state) if state.size == size => state.hasher,
        _ => hash_file(path, Algorithm::Sha256, size)?,
    };
    file.seek(SeekFrom::End(0))?;
    let mut out = BufWriter::with_capacity(IO_CHUNK, file);
    let mut size = size;
    let mut unchecked = SPACE_CHECK_EVERY;
    let mut claim = None;
    while let Some(chunk) = chunks.blocking_recv() {
        if unchecked >= SPACE_CHECK_EVERY {
            // The previous slice is written: give its room back first.
            drop(claim.take());
            claim = Some(space.claim(SPACE_CHECK_EVERY)?);
            unchecked = 0;
        }
        out.write_all(&chunk).map_err(write_error)?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        unchecked += chunk.len() as u64;
    }
    out.flush().map_err(write_error)?;
    Ok(UploadHash { size, hasher })
}

/// The blobs under `blobs/<algorithm>/` after `after`, in order, at most
/// `limit`.
fn list_algorithm(
    dir: &Path,
    algorithm: &str,
    after: Option<&Digest>,
    limit: usize,
    out: &mut Vec<StoredBlob>,
) -> io::Result<()> {
    let sorted = |dir: &Path| -> io::Result<Vec<fs::DirEntry>> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(fs::DirEntry::file_name);
        Ok(entries)
    };
    let after = after.filter(|d| d.algorithm().name() == algorithm);
    let start = after.map(|d| &d.encoded()[..2]);
    for fan_out in sorted(dir)? {
        let fan_name = fan_out.file_name().to_string_lossy().into_owned();
        if start.is_some_and(|s| fan_name.as_str() < s) {
            continue;
        }
        for entry in sorted(&fan_out.path())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(digest) = Digest::parse(&format!("{algorithm}:{name}")) else {
                continue;
            };
            if after.is_some_and(|a| digest.encoded() <= a.encoded()) {
                continue;
            }
            let meta = entry.metadata()?;
            out.push(StoredBlob {
                digest,
                size: meta.len(),
                modified: modified(&meta),
            });
            if out.len() == limit {
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Io(io::Error::other(e)))?
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> StorageResult<ByteStream> {
        let mut file = tokio::fs::File::open(self.blob_path(digest))
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StorageError::BlobNotFound(digest.clone()),
                _ => e.into(),
            })?;
        let stream = match range {
            Some(range) => {
                file.seek(SeekFrom::Start(range.start)).await?;
                ReaderStream::with_capacity(file.take(range.end - range.start), IO_CHUNK).boxed()
            }
            None => ReaderStream::with_capacity(file, IO_CHUNK).boxed(),
        };
        Ok(stream)
    }

    async fn read_all(&self, digest: &Digest) -> StorageResult<Bytes> {
        match tokio::fs::read(self.blob_path(digest)).await {
            Ok(bytes) => Ok(bytes.into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StorageError::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn write_all(&self, digest: &Digest, content: Bytes) -> StorageResult<()> {
        let dest = self.blob_path(digest);
        let temp = self.root.join("uploads").join(format!(
            "{}.{}{PARTIAL}",
            digest.encoded(),
            self.unique()
        ));
        let space = self.space();
        blocking(move || {
            if dest.exists() {
                return Ok(());
            }
            let _claim = space.claim(content.len() as u64)?;
            let written = File::create(&temp).and_then(|mut file| {
                file.write_all(&content)?;
                file.sync_all()?;
                publish(&temp, &dest)
            });
            if written.is_err() {
                let _ = fs::remove_file(&temp);
            }
            written.map_err(write_error)
        })
        .await
    }

    async fn create_upload(&self, id: &str) -> StorageResult<()> {
        let path = self.upload_path(id)?;
        tokio::fs::File::create(path).await?;
        Ok(())
    }

    async fn upload_size(&self, id: &str) -> StorageResult<u64> {
        let path = self.upload_path(id)?;
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(upload_not_found(id))?;
        Ok(meta.len())
    }

    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        expected: Option<u64>,
        mut body: ByteStream,
    ) -> StorageResult<u64> {
        let path = self.upload_path(id)?;
        let known = self.take_hash(id);
        let owned_id = id.to_owned();
        let writer_path = path.clone();
        // Receiving runs here, hashing and writing on a blocking thread, so the
        // two overlap on separate cores.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(PENDING_CHUNKS);
        let space = self.space();
        let writer = tokio::task::spawn_blocking(move || {
            let written = write_chunks(&writer_path, &owned_id, offset, known, &space, rx);
            if let Err(StorageError::Full(_)) = &written {
                // The client cannot resume a blob the disk cannot hold:
                // release its space now, not when the upload expires.
                let _ = fs::remove_file(&writer_path);
            }
            written
        });

        let mut received = 0u64;
        let mut ending = Ending::Complete;
        let mut unwritten = 0u64;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    if expected.is_some_and(|expected| received > expected) {
                        ending = Ending::Overflow;
                        break;
                    }
                    // Once the writer failed (its error is reported below),
                    // the rest of the body is read and dropped, up to a
                    // bound: a client still sending would otherwise see a
                    // broken connection instead of the answer saying why.
                    let len = chunk.len() as u64;
                    if unwritten > 0 || tx.send(chunk).await.is_err() {
                        unwritten += len;
                        if unwritten > DRAIN_AFTER_FAILURE {
                            break;
                        }
                    }
                }
                Err(e) => {
                    ending = Ending::Interrupted(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))?;
        if let Err(StorageError::Full(_)) = &written {
            return written.map(|_| 0);
        }
        let Some(expected) = expected else {
            let size = self.keep_hash(id, written?);
            return match ending {
                Ending::Interrupted(e) => Err(StorageError::BodyInterrupted(e.to_string())),
                Ending::Complete | Ending::Overflow => Ok(size),
            };
        };
        // A declared chunk is kept whole or not at all.
        let verdict = written.and_then(|state| match ending {
            Ending::Interrupted(e) => Err(StorageError::BodyInterrupted(e.to_string())),
            Ending::Overflow => Err(StorageError::ChunkLength {
                expected,
                received: Received::MoreThan(expected),
            }),
            Ending::Complete if state.size - offset != expected => Err(StorageError::ChunkLength {
                expected,
                received: Received::Exactly(state.size - offset),
            }),
            Ending::Complete => Ok(state),
        });
        match verdict {
            Ok(state) => Ok(self.keep_hash(id, state)),
            Err(e) => {
                blocking(move || {
                    Ok(OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(offset)?)
                })
                .await?;
                Err(e)
            }
        }
    }

    async fn commit_upload(&self, id: &str, expected: &Digest) -> StorageResult<u64> {
        let path = self.upload_path(id)?;
        let known = self.take_hash(id);
        let expected = expected.clone();
        let owned_id = id.to_owned();
        blocking(move || {
            let file = File::open(&path).map_err(upload_not_found(&owned_id))?;
            let size = file.metadata()?.len();
            let hasher = match known {
                Some(state) if state.size == size && expected.algorithm() == Algorithm::Sha256 => {
                    state.hasher
                }
                _ => hash_file(&path, expected.algorithm(), size)?,
            };
            let actual = hasher.finish();
            if actual != expected {
                fs::remove_file(&path)?;
                return Err(StorageError::DigestMismatch { expected, actual });
            }
            file.sync_all().map_err(write_error)?;
            Ok(size)
        })
        .await
    }

    async fn settle_upload(&self, id: &str, digest: &Digest) -> StorageResult<()> {
        let path = self.upload_path(id)?;
        let dest = self.blob_path(digest);
        let owned_id = id.to_owned();
        blocking(move || {
            publish(&path, &dest).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound if !path.exists() => StorageError::UploadNotFound(owned_id),
                _ => write_error(e),
            })
        })
        .await
    }

    async fn import(&self, digest: &Digest, file: &Path) -> StorageResult<()> {
        let dest = self.blob_path(digest);
        let from = file.to_owned();
        let staging = self
            .root
            .join("uploads")
            .join(format!("import.{}{PARTIAL}", self.unique()));
        blocking(move || {
            File::open(&from)?.sync_all().map_err(write_error)?;
            match publish(&from, &dest) {
                // Kept on another file system: copied into this one first.
                Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                    let copied = fs::copy(&from, &staging)
                        .and_then(|_| File::open(&staging)?.sync_all())
                        .and_then(|()| publish(&staging, &dest));
                    if copied.is_err() {
                        let _ = fs::remove_file(&staging);
                    }
                    copied.map_err(write_error)?;
                    fs::remove_file(&from)?;
                    Ok(())
                }
                other => other.map_err(write_error),
            }
        })
        .await
    }

    async fn claim_room(&self, bytes: u64) -> StorageResult<RoomClaim> {
        let space = self.space();
        blocking(move || space.claim(bytes).map(RoomClaim::held)).await
    }

    async fn delete_upload(&self, id: &str) -> StorageResult<()> {
        let path = self.upload_path(id)?;
        self.take_hash(id);
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn stash(&self, digests: &[Digest]) -> StorageResult<Vec<Stashed>> {
        let at = now_millis();
        let moves: Vec<(PathBuf, Stashed)> = digests
            .iter()
            .map(|digest| {
                let stashed = Stashed::new(digest, at, &self.unique());
                (self.blob_path(digest), stashed)
            })
            .collect();
        let trash = self.root.join("trash");
        blocking(move || {
            let mut stashed = Vec::new();
            for (from, entry) in moves {
                match fs::rename(&from, trash.join(&entry.key)) {
                    Ok(()) => stashed.push(entry),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(stashed)
        })
        .await
    }

    async fn restore(&self, stashed: Vec<Stashed>) -> StorageResult<()> {
        let moves: Vec<(PathBuf, PathBuf)> = stashed
            .iter()
            .map(|s| {
                (
                    self.root.join("trash").join(&s.key),
                    self.blob_path(&s.digest),
                )
            })
            .collect();
        blocking(move || {
            for (from, to) in moves {
                match publish(&from, &to) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound && !from.exists() => {}
                    other => other?,
                }
            }
            Ok(())
        })
        .await
    }

    async fn purge(&self, stashed: Vec<Stashed>) -> StorageResult<()> {
        let trash = self.root.join("trash");
        blocking(move || {
            for entry in stashed {
                match fs::remove_file(trash.join(&entry.key)) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    other => other?,
                }
            }
            Ok(())
        })
        .await
    }

    async fn stashed(&self) -> StorageResult<Vec<Stashed>> {
        let trash = self.root.join("trash");
        blocking(move || {
            let mut stashed = Vec::new();
            for entry in fs::read_dir(trash)? {
                let key = entry?.file_name().to_string_lossy().into_owned();
                stashed.extend(Stashed::parse(key));
            }
            Ok(stashed)
        })
        .await
    }

    async fn download_url(&self, _digest: &Digest) -> StorageResult<Option<String>> {
        Ok(None)
    }

    async fn list(&self, after: Option<&Digest>, limit: usize) -> StorageResult<Vec<StoredBlob>> {
        let blobs = self.root.join("blobs");
        let after = after.cloned();
        blocking(move || {
            let mut out = Vec::new();
            let mut algorithms: Vec<String> = fs::read_dir(&blobs)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()?;
            algorithms.sort();
            for algorithm in algorithms {
                if after
                    .as_ref()
                    .is_some_and(|a| algorithm.as_str() < a.algorithm().name())
                {
                    continue;
                }
                list_algorithm(
                    &blobs.join(&algorithm),
                    &algorithm,
                    after.as_ref(),
                    limit,
                    &mut out,
                )?;
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! What only the disk store does; what every store does is in
    //! `blob_suite`.

    use super::*;
    use futures_util::stream;

    fn body(part: &'static [u8]) -> ByteStream {
        stream::iter([Ok(Bytes::from_static(part))]).boxed()
    }

    fn files_in(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    /// Committed, refused or discarded, an upload leaves no file behind.
    #[tokio::test]
    async fn an_upload_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path(), 0).unwrap();
        let digest = Digest::sha256_of(b"layer");
        for (id, claimed) in [("a", digest.clone()), ("b", Digest::sha256_of(b"other"))] {
            store.create_upload(id).await.unwrap();
            store
                .append_upload(id, 0, None, body(b"layer"))
                .await
                .unwrap();
            if store.commit_upload(id, &claimed).await.is_ok() {
                store.settle_upload(id, &claimed).await.unwrap();
            }
        }
        store.create_upload("c").await.unwrap();
        store.delete_upload("c").await.unwrap();
        let stashed = store.stash(std::slice::from_ref(&digest)).await.unwrap();
        store.purge(stashed).await.unwrap();
        assert_eq!(files_in(&dir.path().join("uploads")), 0);
    }

    #[tokio::test]
    async fn the_reserve_is_never_written_into() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path(), u64::MAX / 2).unwrap();
        store.create_upload("u").await.unwrap();
        assert!(matches!(
            store.append_upload("u", 0, None, body(b"abc")).await,
            Err(StorageError::Full(_))
        ));
        // What it had written is gone at once.
        assert!(matches!(
            store.upload_size("u").await,
            Err(StorageError::UploadNotFound(_))
        ));
        let content = Bytes::from_static(b"{}");
        assert!(matches!(
            store.write_all(&Digest::sha256_of(&content), content).await,
            Err(StorageError::Full(_))
        ));
        assert!(matches!(
            store.claim_room(1).await,
            Err(StorageError::Full(_))
        ));
        assert_eq!(files_in(&dir.path().join("uploads")), 0);
        let roomy = FsBlobStore::open(dir.path(), 0).unwrap();
        drop(roomy.claim_room(1 << 20).await.unwrap());
    }
}
