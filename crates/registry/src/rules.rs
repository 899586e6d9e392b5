//! What operators decide about storage, per repository pattern: quotas,
//! immutable tags and retention.

use std::time::Duration;

use berth_oci::{RepositoryPattern, TagPattern};
use berth_storage::{ImmutableTags, Quota, WriteRules};

/// Tags of matching repositories that may never be moved or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImmutableRule {
    pub repositories: RepositoryPattern,
    pub tags: Vec<TagPattern>,
}

/// What collection keeps of matching repositories beyond what tags reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRule {
    pub repositories: RepositoryPattern,
    /// The tags `keep_tags` counts and may delete; others are left alone.
    pub tags: Vec<TagPattern>,
    /// Keep this many of those tags, the most recently pushed; delete the rest.
    pub keep_tags: Option<usize>,
    /// Untagged manifests nothing reaches go once this old (instead of after
    /// the grace period).
    pub untagged_after: Option<Duration>,
    /// Nothing pulled within this long is deleted by the rules above.
    pub keep_pulled_within: Option<Duration>,
}

impl RetentionRule {
    /// Whether `keep_tags` counts (and may delete) `tag`.
    pub fn counts(&self, tag: &str) -> bool {
        self.tags.iter().any(|p| p.matches(tag))
    }
}

/// The repositories of a pull-through cache and how many bytes they may
/// hold together before collection evicts the least recently pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    pub repositories: Vec<RepositoryPattern>,
    pub limit: u64,
}

impl CacheRule {
    pub fn covers(&self, repository: &str) -> bool {
        self.repositories.iter().any(|p| p.matches(repository))
    }
}

/// Every storage rule; for each kind, the first rule whose pattern matches a
/// repository applies to it (immutability: every matching rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageRules {
    pub quotas: Vec<Quota>,
    pub immutable: Vec<ImmutableRule>,
    pub retention: Vec<RetentionRule>,
    pub cache: Option<CacheRule>,
}

impl StorageRules {
    /// The quota `repository` counts against: the first that matches, less
    /// the repositories the quotas before it cover (which count there).
    pub fn quota(&self, repository: &str) -> Option<Quota> {
        let at = self
            .quotas
            .iter()
            .position(|q| q.repositories.matches(repository))?;
        Some(Quota {
            excluded: self.quotas[..at]
                .iter()
                .map(|q| q.repositories.clone())
                .collect(),
            ..self.quotas[at].clone()
        })
    }

    pub fn immutable(&self, repository: &str) -> ImmutableTags {
        ImmutableTags(
            self.immutable
                .iter()
                .filter(|r| r.repositories.matches(repository))
                .flat_map(|r| r.tags.iter().cloned())
                .collect(),
        )
    }

    pub fn retention(&self, repository: &str) -> Option<&RetentionRule> {
        self.retention
            .iter()
            .find(|r| r.repositories.matches(repository))
    }

    pub(crate) fn write_rules(&self, repository: &str) -> WriteRules {
        WriteRules {
            quota: self.quota(repository),
            immutable: self.immutable(repository),
            references_follow: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> RepositoryPattern {
        RepositoryPattern::parse(text).unwrap()
    }

    #[test]
    fn the_first_matching_rule_applies() {
        let rules = StorageRules {
            quotas: vec![
                Quota {
                    repositories: pattern("team-a/big"),
                    limit: 100,
                    excluded: vec![],
                },
                Quota {
                    repositories: pattern("team-a/**"),
                    limit: 10,
                    excluded: vec![],
                },
            ],
            immutable: vec![
                ImmutableRule {
                    repositories: pattern("team-a/**"),
                    tags: vec![TagPattern::parse("v*").unwrap()],
                },
                ImmutableRule {
                    repositories: pattern("**"),
                    tags: vec![TagPattern::parse("release-*").unwrap()],
                },
            ],
            retention: vec![],
            cache: None,
        };
        assert_eq!(rules.quota("team-a/big").unwrap().limit, 100);
        let team = rules.quota("team-a/app").unwrap();
        assert_eq!(team.limit, 10);
        // team-a/big counts against its own quota, not the team's.
        assert!(team.counts("team-a/app") && !team.counts("team-a/big"));
        assert!(rules.quota("team-b/app").is_none());
        let immutable = rules.immutable("team-a/app");
        assert!(immutable.pattern_for("v1").is_some());
        assert!(immutable.pattern_for("release-2").is_some());
        assert!(rules.immutable("team-b/app").pattern_for("v1").is_none());
    }
}
