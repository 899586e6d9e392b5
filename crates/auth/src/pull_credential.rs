//! Pull credentials: a user or robot (say, a node's long-lived credential)
//! exchanges its password for a short-lived one that may only pull.
//!
//! The credential is a username and password as every client and the kubelet
//! understand them: the username is the holder's own name and the password is
//! an ES256 JWT signed with the registry's token key. Nothing is stored, so
//! issuing is free and nothing needs cleaning up; what makes it safe:
//!
//! * its audience (`SERVICE#pull-credential`) differs from access tokens' and
//!   refresh tokens', so it is never accepted as either, nor they as it;
//! * it carries `exp`, checked at every login (and on cached logins);
//! * it names repository patterns, each within what the holder may pull when
//!   it is issued, and only `pull`;
//! * when used, rights are those patterns intersected with what the holder
//!   may pull *now*: a deleted user or revoked robot, or a narrowed policy,
//!   takes effect on credentials already issued;
//! * it cannot be exchanged for another one or for a refresh token, so its
//!   life cannot be extended.

use crate::Subject;
use crate::policy::RepositoryPattern;

/// The `type` of the access entries a pull credential carries: patterns,
/// not the exact repository names of access tokens.
pub const PATTERN_ACCESS_TYPE: &str = "repository-pattern";

/// What a login with a pull credential may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullGrant {
    /// The user or robot the credential was issued to, as it stands now.
    pub holder: Box<Subject>,
    pub repositories: Vec<RepositoryPattern>,
    /// Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullCredentialError {
    #[error("log in with a user or robot account to get a pull credential")]
    Anonymous,
    #[error(
        "a pull credential cannot be exchanged for another one: use the long-lived user or \
         robot credential it was issued for"
    )]
    NotExchangeable,
    #[error("{0} may not pull from any repository: ask an administrator for pull access")]
    NoPullRights(String),
    #[error("{0}")]
    BadPattern(String),
    #[error(
        "{subject} may not pull everything {pattern:?} matches (it may pull: {}); ask for \
         repositories within those patterns",
        allowed.join(", ")
    )]
    Wider {
        subject: String,
        pattern: String,
        allowed: Vec<String>,
    },
    #[error("the requested lifetime must be at least one second")]
    ZeroLifetime,
}

/// The patterns to put in a credential for someone who may pull `allowed`:
/// all of `allowed` when nothing is requested, else the requested ones, each
/// of which must lie within one allowed pattern.
pub fn choose_patterns(
    subject: &str,
    allowed: &[RepositoryPattern],
    requested: &[String],
) -> Result<Vec<RepositoryPattern>, PullCredentialError> {
    if allowed.is_empty() {
        return Err(PullCredentialError::NoPullRights(subject.to_owned()));
    }
    if requested.is_empty() {
        return Ok(allowed.to_vec());
    }
    let mut chosen: Vec<RepositoryPattern> = Vec::new();
    for text in requested {
        let pattern = RepositoryPattern::parse(text).map_err(PullCredentialError::BadPattern)?;
        if !allowed.iter().any(|a| a.covers(&pattern)) {
            return Err(PullCredentialError::Wider {
                subject: subject.to_owned(),
                pattern: text.clone(),
                allowed: allowed.iter().map(|a| a.as_str().to_owned()).collect(),
            });
        }
        if !chosen.contains(&pattern) {
            chosen.push(pattern);
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(texts: &[&str]) -> Vec<RepositoryPattern> {
        texts
            .iter()
            .map(|t| RepositoryPattern::parse(t).unwrap())
            .collect()
    }

    fn texts(patterns: &[RepositoryPattern]) -> Vec<&str> {
        patterns.iter().map(RepositoryPattern::as_str).collect()
    }

    #[test]
    fn nothing_requested_means_everything_allowed() {
        let allowed = patterns(&["team/*", "public/**"]);
        let chosen = choose_patterns("alice", &allowed, &[]).unwrap();
        assert_eq!(texts(&chosen), ["team/*", "public/**"]);
    }

    #[test]
    fn requests_within_the_allowed_patterns() {
        let allowed = patterns(&["team/*", "public/**"]);
        let ok = |r: &[&str]| {
            let r: Vec<String> = r.iter().map(|s| s.to_string()).collect();
            choose_patterns("alice", &allowed, &r)
        };
        assert_eq!(
            texts(&ok(&["team/app", "team/app", "public/x/*"]).unwrap()),
            ["team/app", "public/x/*"]
        );
        assert!(ok(&["team/*"]).is_ok());
        assert!(ok(&["public/**"]).is_ok());
        for wider in ["team/**", "**", "*", "team/app/x", "other/app", "team*/app"] {
            assert!(
                matches!(ok(&[wider]), Err(PullCredentialError::Wider { .. })),
                "{wider}"
            );
        }
        assert!(matches!(ok(&[""]), Err(PullCredentialError::BadPattern(_))));
        assert_eq!(
            choose_patterns("bob", &[], &[]),
            Err(PullCredentialError::NoPullRights("bob".into()))
        );
    }

    #[test]
    fn coverage_is_sound() {
        let covers = |a: &str, b: &str| {
            RepositoryPattern::parse(a)
                .unwrap()
                .covers(&RepositoryPattern::parse(b).unwrap())
        };
        assert!(covers("**", "anything/**"));
        assert!(covers("team/**", "team/*"));
        assert!(covers("team/**", "team/a/b"));
        assert!(covers("team/*", "team/a*"));
        assert!(covers("team/*", "team/*"));
        assert!(covers("t*/app", "team/app"));
        assert!(!covers("team/*", "team/**"));
        assert!(!covers("*/*", "**"));
        assert!(!covers("team/a*", "team/*"));
        assert!(!covers("team/app", "team/*"));
        assert!(!covers("team/*", "team/a/b"));
        assert!(!covers("a.b", "axb"));
    }
}
