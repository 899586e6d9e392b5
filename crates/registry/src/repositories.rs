//! Whole repositories: what each holds, and deleting one.

use berth_storage::RepositoryUsage;

use crate::error::{RegistryError, Result};
use crate::registry::{Registry, parse_name};

/// A repository's usage, with the quota it counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryInfo {
    pub usage: RepositoryUsage,
    /// The quota's pattern, its limit, and what all it matches hold.
    pub quota: Option<QuotaUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUsage {
    pub pattern: String,
    pub limit: u64,
    pub used: u64,
}

impl Registry {
    /// Up to `limit` repositories after `after`, in name order.
    pub async fn repository_usage(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RepositoryInfo>> {
        let mut infos = Vec::new();
        for usage in self.metadata.repository_usage(after, limit).await? {
            let quota = match self.config.rules.quota(&usage.name) {
                Some(quota) => Some(QuotaUsage {
                    pattern: quota.repositories.as_str().to_owned(),
                    limit: quota.limit,
                    used: self.metadata.usage(&quota).await?,
                }),
                None => None,
            };
            infos.push(RepositoryInfo { usage, quota });
        }
        Ok(infos)
    }

    /// Deletes a repository whole: its tags, manifests, blob links and
    /// uploads. It leaves the catalog; collection reclaims its bytes.
    /// Refused while it has an immutable tag.
    pub async fn delete_repository(&self, repository: &str) -> Result<()> {
        self.check_delete()?;
        let name = parse_name(repository)?;
        let immutable = self.config.rules.immutable(name.as_str());
        let Some(uploads) = self.metadata.delete_repository(&name, immutable).await? else {
            return Err(RegistryError::NameUnknown(name.to_string()));
        };
        for id in uploads {
            if let Err(e) = self.blobs.delete_upload(&id).await {
                tracing::warn!(upload = %id, error = %e, "could not remove upload data");
            }
        }
        Ok(())
    }
}
