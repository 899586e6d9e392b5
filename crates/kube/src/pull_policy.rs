//! `imagePullPolicy` defaulting (`SetDefaults_Container` in
//! `pkg/apis/core/v1/defaults.go`).
//!
//! When a container omits the policy, the API server sets `Always` if the
//! kubelet's view of the tag (`parsers.ParseImageName`) is `latest` — which
//! includes "no tag and no digest" and `:latest@sha256:…` — and
//! `IfNotPresent` otherwise, including digest-only references and images that
//! do not parse. It happens once, at creation: later image edits keep the
//! stored policy.

use std::fmt;
use std::str::FromStr;

use crate::image_ref::{DEFAULT_TAG, ImageRef};

/// A container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy string is not one of the three the API accepts (case matters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported imagePullPolicy {0:?}: use Always, IfNotPresent or Never")]
pub struct PullPolicyError(pub String);

impl FromStr for PullPolicy {
    type Err = PullPolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            other => Err(PullPolicyError(other.to_owned())),
        }
    }
}

/// The policy the API server fills in for a container with image `image`
/// and no `imagePullPolicy`.
pub fn default_pull_policy(image: &str) -> PullPolicy {
    match ImageRef::parse(image) {
        Ok(r) if r.kubelet_tag() == Some(DEFAULT_TAG) => PullPolicy::Always,
        _ => PullPolicy::IfNotPresent,
    }
}

/// The policy in effect: the explicit one, else the default.
pub fn effective_pull_policy(image: &str, explicit: Option<PullPolicy>) -> PullPolicy {
    explicit.unwrap_or_else(|| default_pull_policy(image))
}

/// When rewriting `old` to `new` (e.g. pinning a digest) in a manifest that
/// omits `imagePullPolicy`, the defaulted policy of newly created objects
/// changes; returns `(old_default, new_default)` when it does.
pub fn defaulting_change(old: &str, new: &str) -> Option<(PullPolicy, PullPolicy)> {
    let (before, after) = (default_pull_policy(old), default_pull_policy(new));
    (before != after).then_some((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    #[test]
    fn defaults_like_the_api_server() {
        use PullPolicy::*;
        let cases = [
            ("nginx".to_owned(), Always),
            ("nginx:latest".to_owned(), Always),
            ("reg.io:5000/app".to_owned(), Always),
            ("reg.io:5000/app:latest".to_owned(), Always),
            ("nginx:1.27".to_owned(), IfNotPresent),
            ("nginx:Latest".to_owned(), IfNotPresent),
            (format!("nginx@{D}"), IfNotPresent),
            (format!("nginx:latest@{D}"), Always),
            (format!("nginx:1@{D}"), IfNotPresent),
            ("Not A Valid Image".to_owned(), IfNotPresent),
            (String::new(), IfNotPresent),
        ];
        for (image, want) in cases {
            assert_eq!(default_pull_policy(&image), want, "{image:?}");
        }
    }

    #[test]
    fn pinning_changes_the_default() {
        assert_eq!(
            defaulting_change("app", &format!("app@{D}")),
            Some((PullPolicy::Always, PullPolicy::IfNotPresent))
        );
        assert_eq!(defaulting_change("app:1", &format!("app:1@{D}")), None);
        assert_eq!(
            effective_pull_policy("app", Some(PullPolicy::Never)),
            PullPolicy::Never
        );
    }

    #[test]
    fn parses_policy_names() {
        assert_eq!(
            "IfNotPresent".parse::<PullPolicy>(),
            Ok(PullPolicy::IfNotPresent)
        );
        assert!("always".parse::<PullPolicy>().is_err());
        assert_eq!(PullPolicy::Always.to_string(), "Always");
    }
}
