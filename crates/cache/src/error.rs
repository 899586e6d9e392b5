use std::sync::Arc;

use berth_client::upstream::UpstreamError;
use berth_oci::Digest;
use berth_registry::RegistryError;

use crate::route::UnknownNamespace;

/// Why the cache could not serve a request. Clonable, since one upstream
/// fetch answers every request waiting for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// Not cached, and the upstream could not be asked (or refused).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream sent other bytes than the digest names: nothing was kept.
    #[error("{url} sent content whose digest is {actual}, not {expected}; nothing of it was kept")]
    Corrupt {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    UnknownNamespace(#[from] UnknownNamespace),
    /// The upstream served a manifest berth cannot keep (a format it does
    /// not take, a quota or an immutable tag of the cached repository).
    #[error("{url} served a manifest berth cannot keep: {reason}")]
    Unstorable { url: String, reason: String },
    /// Something failed inside berth (the spool file a download goes
    /// through, a fetch that panicked).
    #[error("the cache failed inside berth: {0}")]
    Internal(String),
    /// What the registry says (an unknown manifest or blob, a storage failure).
    #[error(transparent)]
    Registry(Arc<RegistryError>),
}

impl CacheError {
    /// Whether the upstream failed (rather than answered, or berth failed):
    /// cached content is then served instead, and the upstream left alone
    /// for a while.
    pub fn is_upstream_failure(&self) -> bool {
        match self {
            CacheError::Upstream(e) => e.is_failure(),
            CacheError::Corrupt { .. } | CacheError::Unstorable { .. } => true,
            _ => false,
        }
    }
}

impl From<RegistryError> for CacheError {
    fn from(error: RegistryError) -> Self {
        CacheError::Registry(Arc::new(error))
    }
}

pub type Result<T, E = CacheError> = std::result::Result<T, E>;
