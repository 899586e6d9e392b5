use std::fmt;

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
    /// A chunk declared `expected` bytes and its body held another number;
    /// nothing of it was kept.
    #[error("the chunk declared {expected} bytes but its body held {received}")]
    ChunkLength { expected: u64, received: Received },
    #[error("uploaded content has digest {actual}, not the {expected} it was declared as")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the request body ended early: {0}")]
    BodyInterrupted(String),
    #[error("a referenced blob or manifest is missing: {0}")]
    MissingReferences(Digest),
    /// The write would take the repositories `pattern` matches past their
    /// quota: they hold `usage` bytes of `limit`, and it adds `adding`.
    #[error("quota of {pattern} exceeded: {usage} of {limit} bytes used, {adding} more needed")]
    QuotaExceeded {
        pattern: String,
        usage: u64,
        limit: u64,
        adding: u64,
    },
    #[error("tag {tag} is immutable (rule {pattern})")]
    TagImmutable { tag: String, pattern: String },
    /// A blob a manifest of the repository still references.
    #[error("blob is used by manifest {manifest}")]
    BlobInUse { manifest: Digest },
    /// The disk is full, or would be past the space kept in reserve for the
    /// metadata; what the write had stored was released.
    #[error("no space left for blob data: {0}")]
    Full(String),
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata database failed: {0}")]
    Database(#[from] DatabaseError),
}

/// How many bytes a chunk's body held, as far as they were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Exactly(u64),
    /// More than declared; the rest was not read.
    MoreThan(u64),
}

impl fmt::Display for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Received::Exactly(n) => write!(f, "{n}"),
            Received::MoreThan(n) => write!(f, "more than {n}"),
        }
    }
}

/// What kind of database failure happened, so that callers (and operators
/// reading the log) can tell a full disk from a busy database or corruption
/// whatever the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseErrorKind {
    /// Busy, locked, or no connection available in time: retrying may work.
    Unavailable,
    /// Aborted because a concurrent transaction conflicted with it: running
    /// it again may work.
    Conflict,
    /// The disk (or the database's quota) is full.
    Full,
    /// The database file is damaged or is not a database.
    Corrupt,
    /// The stored data or schema is not what this berth understands.
    Schema,
    Other,
}

impl fmt::Display for DatabaseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatabaseErrorKind::Unavailable => "unavailable",
            DatabaseErrorKind::Conflict => "conflicting with a concurrent transaction",
            DatabaseErrorKind::Full => "out of space",
            DatabaseErrorKind::Corrupt => "corrupt",
            DatabaseErrorKind::Schema => "unexpected schema or data",
            DatabaseErrorKind::Other => "error",
        })
    }
}

/// A database failure with its kind and the engine's own error as source.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {source}")]
pub struct DatabaseError {
    pub kind: DatabaseErrorKind,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl DatabaseError {
    pub fn new(
        kind: DatabaseErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        DatabaseError {
            kind,
            source: source.into(),
        }
    }
}

impl StorageError {
    /// A database failure of `kind`.
    pub fn database(
        kind: DatabaseErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StorageError::Database(DatabaseError::new(kind, source))
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

impl From<r2d2_sqlite::rusqlite::Error> for StorageError {
    fn from(e: r2d2_sqlite::rusqlite::Error) -> Self {
        use r2d2_sqlite::rusqlite::ErrorCode;
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                DatabaseErrorKind::Unavailable
            }
            Some(ErrorCode::DiskFull) => DatabaseErrorKind::Full,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                DatabaseErrorKind::Corrupt
            }
            _ => DatabaseErrorKind::Other,
        };
        StorageError::database(kind, e)
    }
}

impl From<r2d2::Error> for StorageError {
    /// The pool gives up when no connection could be had in time.
    fn from(e: r2d2::Error) -> Self {
        StorageError::database(DatabaseErrorKind::Unavailable, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2d2_sqlite::rusqlite::{Connection, ffi};

    #[test]
    fn sqlite_failures_keep_their_kind() {
        let full = r2d2_sqlite::rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        match StorageError::from(full) {
            StorageError::Database(e) => {
                assert_eq!(e.kind, DatabaseErrorKind::Full);
                assert!(e.to_string().contains("disk is full"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-db");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let conn = Connection::open(&path).unwrap();
        let error = conn
            .query_row("SELECT 1 FROM x", [], |_| Ok(()))
            .unwrap_err();
        match StorageError::from(error) {
            StorageError::Database(e) => assert_eq!(e.kind, DatabaseErrorKind::Corrupt),
            other => panic!("{other:?}"),
        }
    }
}
