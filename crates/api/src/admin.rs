//! Administering the registry: garbage collection and repositories.
//!
//! * `POST /berth/v1/gc` with a [`GcRequest`] body runs a collection; the
//!   answer is newline-delimited JSON, one [`GcEvent`] per line, as it goes.
//! * `GET /berth/v1/repositories?n=&last=` lists repositories with what they
//!   hold ([`RepositoryList`]; a `Link` header names the next page).
//! * `DELETE /berth/v1/repositories/<name>` deletes one whole.
//!
//! Each takes Basic credentials of an administrator.

use serde::{Deserialize, Serialize};

pub const GC_PATH: &str = "/berth/v1/gc";
pub const REPOSITORIES_PATH: &str = "/berth/v1/repositories";

/// What collection to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Only find out what would go.
    #[serde(default)]
    pub dry_run: bool,
    /// Nothing younger is collected; the registry's configured grace period
    /// when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
}

/// One line of a collection's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GcEvent {
    /// `done` of `total` in `phase` (`tags`, `manifests`, `links`, `blobs`,
    /// `orphans`).
    Progress {
        phase: String,
        done: u64,
        total: u64,
    },
    /// The last line of a run that finished.
    Report(GcReport),
    /// The last line of a run that failed.
    Error { message: String },
}

/// What a collection deleted, or would have (`dry_run`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// `repository:tag`, dropped by retention rules.
    pub tags: Vec<String>,
    pub manifests: Vec<ManifestGone>,
    /// Links of repositories to blobs nothing there references.
    pub links: u64,
    /// Blobs whose bytes went.
    pub blobs: Vec<BlobGone>,
    /// Bytes no metadata recorded.
    pub orphans: Vec<BlobGone>,
    /// Bytes freed on the blob store.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestGone {
    pub repository: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobGone {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryList {
    pub repositories: Vec<Repository>,
}

/// A repository and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub name: String,
    /// Its blobs and manifests; content shared with another repository
    /// counts in each.
    pub bytes: u64,
    pub manifests: u64,
    pub tags: u64,
    /// The quota it counts against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// The repositories it covers, together.
    pub pattern: String,
    pub limit: u64,
    /// What they hold now.
    pub used: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_json_object_a_line() {
        let progress = GcEvent::Progress {
            phase: "blobs".into(),
            done: 3,
            total: 10,
        };
        let line = serde_json::to_string(&progress).unwrap();
        assert_eq!(
            line,
            r#"{"progress":{"phase":"blobs","done":3,"total":10}}"#
        );
        assert_eq!(serde_json::from_str::<GcEvent>(&line).unwrap(), progress);
        let request: GcRequest = serde_json::from_str(r#"{"dry_run":true}"#).unwrap();
        assert!(request.dry_run && request.grace_seconds.is_none());
        assert!(serde_json::from_str::<GcRequest>(r#"{"dryrun":true}"#).is_err());
    }
}
