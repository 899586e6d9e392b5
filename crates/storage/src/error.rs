use berth_oci::Digest;

/// Failures of the storage layer. The registry layer turns these into its own
/// errors; nothing above it sees a file path or an SQL message except in logs.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob {0} is not stored")]
    BlobNotFound(Digest),
    #[error("upload {0} does not exist")]
    UploadNotFound(String),
    #[error("upload is at offset {size}, a write at offset {offset} cannot continue it")]
    UploadOffset { size: u64, offset: u64 },
    #[error("uploaded content has digest {actual}, not the {expected} it was declared as")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the request body ended early: {0}")]
    BodyInterrupted(String),
    #[error("a referenced blob or manifest is missing: {0}")]
    MissingReferences(Digest),
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata database failed: {0}")]
    Database(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

impl From<r2d2_sqlite::rusqlite::Error> for StorageError {
    fn from(e: r2d2_sqlite::rusqlite::Error) -> Self {
        StorageError::Database(e.to_string())
    }
}

impl From<r2d2::Error> for StorageError {
    fn from(e: r2d2::Error) -> Self {
        StorageError::Database(e.to_string())
    }
}
