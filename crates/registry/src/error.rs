use berth_oci::{Digest, DigestError, ManifestError, NameError};
use berth_storage::{DatabaseErrorKind, Received, StorageError};

use crate::UploadStatus;

/// Why a registry operation failed, in the terms of the OCI Distribution spec.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    NameInvalid(NameError),
    #[error(transparent)]
    TagInvalid(NameError),
    #[error(transparent)]
    DigestInvalid(#[from] DigestError),
    #[error("content digest is {actual}, not the {expected} given")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("repository {0} is not known to this registry")]
    NameUnknown(String),
    #[error("blob {0} is not in this repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is not in this repository")]
    ManifestUnknown(String),
    #[error(transparent)]
    ManifestInvalid(#[from] ManifestError),
    #[error("the manifest references {0}, which is not in this repository: push it first")]
    ManifestBlobUnknown(Digest),
    #[error("the manifest is larger than the {limit}-byte limit")]
    ManifestTooLarge { limit: usize },
    #[error("upload {0} does not exist in this repository (finished, cancelled or expired)")]
    UploadUnknown(String),
    #[error(
        "the chunk starts at byte {start}, but the upload holds {} bytes: send the chunk \
         starting at {}",
        upload.size,
        upload.size
    )]
    UploadOutOfOrder { start: u64, upload: UploadStatus },
    #[error(
        "another request is writing to this upload (it holds {} bytes now): send one chunk \
         at a time, asking where the upload stands (GET) before the next",
        upload.size
    )]
    UploadBusy { upload: UploadStatus },
    #[error(
        "the chunk's Content-Range spans {expected} bytes but its body held {received}: \
         nothing of it was kept; send it again from byte {}",
        upload.size
    )]
    ChunkLength {
        expected: u64,
        received: Received,
        upload: UploadStatus,
    },
    #[error("{0}")]
    UploadInvalid(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("deleting is disabled on this registry")]
    DeleteDisabled,
    #[error(
        "quota exceeded: the repositories {pattern} hold {} of their {} limit and this \
         push needs {} more; delete images (berth gc then reclaims their space) or ask for a \
         larger quota",
        bytes(*.usage),
        bytes(*.limit),
        bytes(*.adding)
    )]
    QuotaExceeded {
        pattern: String,
        usage: u64,
        limit: u64,
        adding: u64,
    },
    #[error(
        "tag {tag} is immutable here (rule {pattern}): it can be neither moved nor deleted; push \
         under a new tag"
    )]
    TagImmutable { tag: String, pattern: String },
    #[error(
        "blob {blob} is used by manifest {manifest} in this repository: delete the manifest \
         first (an administrator may force this with ?force=true)"
    )]
    BlobInUse { blob: Digest, manifest: Digest },
    #[error(
        "the registry's storage is full ({0}); this upload was discarded: free space \
         (delete images, then berth gc) and push again"
    )]
    StorageFull(String),
    #[error("a garbage collection is already running; try again when it has finished")]
    GcBusy,
    /// The metadata records a blob whose bytes the blob store does not have:
    /// the store was damaged outside berth. A server fault, not the client's.
    #[error("blob {0} is recorded but its content is missing from the blob store")]
    BlobContentMissing(Digest),
    #[error("storage failed: {0}")]
    Storage(StorageError),
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            // Reads happen only after the metadata said the blob exists.
            StorageError::BlobNotFound(d) => RegistryError::BlobContentMissing(d),
            StorageError::UploadNotFound(id) => RegistryError::UploadUnknown(id),
            StorageError::DigestMismatch { expected, actual } => {
                RegistryError::DigestMismatch { expected, actual }
            }
            StorageError::MissingReferences(d) => RegistryError::ManifestBlobUnknown(d),
            StorageError::QuotaExceeded {
                pattern,
                usage,
                limit,
                adding,
            } => RegistryError::QuotaExceeded {
                pattern,
                usage,
                limit,
                adding,
            },
            StorageError::TagImmutable { tag, pattern } => {
                RegistryError::TagImmutable { tag, pattern }
            }
            StorageError::Full(why) => RegistryError::StorageFull(why),
            StorageError::Database(e) if e.kind == DatabaseErrorKind::Full => {
                RegistryError::StorageFull(e.to_string())
            }
            StorageError::BodyInterrupted(why) => {
                RegistryError::UploadInvalid(format!("the upload body was interrupted: {why}"))
            }
            other => RegistryError::Storage(other),
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A byte count as people read it.
fn bytes(count: u64) -> String {
    bytesize::ByteSize(count).display().iec().to_string()
}
