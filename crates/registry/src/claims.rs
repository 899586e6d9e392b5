//! One request at a time writes to an upload, whichever berth process it
//! reached: a claim in the metadata store, renewed while the request's body
//! streams in and released when the request ends. A claim of a process that
//! died lapses after [`CLAIM_TTL`], and a claimed upload never expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_storage::{MetadataStore, StorageResult};
use tokio::task::JoinHandle;

use crate::registry::now;

/// How long a claim holds unless renewed: how long an upload stays closed
/// to other requests after the process writing to it died.
const CLAIM_TTL: Duration = Duration::from_secs(30);

/// A request's claim on an upload; released when dropped, if not before.
pub(crate) struct UploadClaim(Option<Held>);

struct Held {
    metadata: Arc<dyn MetadataStore>,
    id: String,
    holder: String,
    renewal: JoinHandle<()>,
}

impl UploadClaim {
    /// Claims upload `id` for a request of process `instance`; `None` if
    /// another request (here or elsewhere) holds it, or the upload is gone.
    pub(crate) async fn take(
        metadata: &Arc<dyn MetadataStore>,
        instance: &str,
        id: &str,
    ) -> StorageResult<Option<Self>> {
        static REQUESTS: AtomicU64 = AtomicU64::new(0);
        let holder = format!("{instance}/{}", REQUESTS.fetch_add(1, Ordering::Relaxed));
        if !claim(metadata.as_ref(), id, &holder).await? {
            return Ok(None);
        }
        let renewal = tokio::spawn({
            let (metadata, id, holder) = (metadata.clone(), id.to_owned(), holder.clone());
            async move {
                let mut ticks = tokio::time::interval(CLAIM_TTL / 3);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    match claim(metadata.as_ref(), &id, &holder).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(upload = %id, "lost the claim on an upload (it expired or was taken over)");
                            return;
                        }
                        // Tried again at the next tick, well before it lapses.
                        Err(e) => {
                            tracing::warn!(upload = %id, error = %e, "cannot renew the claim on an upload")
                        }
                    }
                }
            }
        });
        Ok(Some(UploadClaim(Some(Held {
            metadata: metadata.clone(),
            id: id.to_owned(),
            holder,
            renewal,
        }))))
    }

    /// Ends the claim, so that the client's next request finds the upload
    /// free at once.
    pub(crate) async fn release(mut self) {
        if let Some(held) = self.0.take() {
            held.release().await;
        }
    }
}

/// A request given up midway (its client vanished) releases in the
/// background.
impl Drop for UploadClaim {
    fn drop(&mut self) {
        if let Some(held) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(held.release());
        }
    }
}

impl Held {
    async fn release(self) {
        self.renewal.abort();
        if let Err(e) = self
            .metadata
            .release_upload(&self.id, &self.holder, now())
            .await
        {
            // It lapses by itself.
            tracing::warn!(upload = %self.id, error = %e, "cannot release the claim on an upload");
        }
    }
}

async fn claim(metadata: &dyn MetadataStore, id: &str, holder: &str) -> StorageResult<bool> {
    let at = now();
    metadata
        .claim_upload(id, holder, at, at + CLAIM_TTL.as_millis() as i64)
        .await
}
