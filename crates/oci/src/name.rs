//! Repository names, tags and manifest references, with the spec's grammars.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted. The spec asks that host + "/" + name stay
/// within 255 characters; the name alone can never be longer than that.
pub const MAX_NAME_LEN: usize = 255;

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("name grammar")
});

static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("tag grammar"));

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "{0:?} is not a valid repository name: use lowercase letters, digits and \
         separators (., _, __, -) in path components joined by /"
    )]
    InvalidName(String),
    #[error("repository name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    NameTooLong(usize),
    #[error(
        "{0:?} is not a valid tag: up to 128 characters of letters, digits, _, . and -, \
         not starting with . or -"
    )]
    InvalidTag(String),
    #[error(transparent)]
    InvalidDigest(#[from] DigestError),
}

/// A validated repository name, e.g. `team-a/api`. Its grammar admits no `.`/`..`
/// components and no leading `/`, so it can never name a path outside a store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if text.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong(text.len()));
        }
        if !NAME.is_match(text) {
            return Err(NameError::InvalidName(text.to_owned()));
        }
        Ok(RepositoryName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated tag, e.g. `v1.2.3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if !TAG.is_match(text) {
            return Err(NameError::InvalidTag(text.to_owned()));
        }
        Ok(Tag(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of `/v2/<name>/manifests/<reference>`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` can only be a digest (tags have no colon).
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if text.contains(':') {
            Ok(Reference::Digest(Digest::parse(text)?))
        } else {
            Ok(Reference::Tag(Tag::parse(text)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for ok in [
            "a",
            "library/ubuntu",
            "team-a/api",
            "a.b_c__d---e/f0",
            "x/y/z/w",
            "blobs/uploads",
            "0",
        ] {
            assert!(RepositoryName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "", "A", "/a", "a/", "a//b", "../a", "a/../b", "a/./b", ".a", "a.", "a___b", "a_-b",
            "a..b", "a b", "a/b:c", "-a",
        ] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad:?}");
        }
        let long = "a".repeat(256);
        assert_eq!(
            RepositoryName::parse(&long),
            Err(NameError::NameTooLong(256))
        );
        assert!(RepositoryName::parse(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b.c_D", &"t".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "-a", "a/b", "a:b", "a b", &"t".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("v1"), Ok(Reference::Tag(_))));
        let d = Digest::sha256_of(b"x");
        assert_eq!(Reference::parse(d.as_str()), Ok(Reference::Digest(d)));
        assert!(matches!(
            Reference::parse("sha256:nothex"),
            Err(NameError::InvalidDigest(_))
        ));
    }
}
