//! Image references as the kubelet reads them (github.com/distribution/reference
//! `ParseNormalizedNamed` / `ParseDockerRef`, and the kubelet's
//! `parsers.ParseImageName`).
//!
//! `nginx` becomes `docker.io/library/nginx`; a first path component is a
//! registry only if it is `localhost`, contains `.` or `:`, or has an
//! uppercase letter; `index.docker.io` is rewritten to `docker.io`. The
//! fully-qualified name without tag or digest is what the kubelet hands to
//! its credential keyring and to credential provider plugins, so every
//! other module keys off [`ImageRef::name`].

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// Docker Hub's canonical domain in references.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's legacy domain, rewritten to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Namespace of Docker Hub's official images.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Tag assumed when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository path (the domain is not counted since reference v0.6.0).
pub const REPOSITORY_NAME_MAX: usize = 255;

/// Why a reference does not parse. `Display` is the text distribution/reference
/// produces, which is what users see in kubelet events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexIdentifier(String),
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    RemoteNotLowercase(String),
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("repository name must be lowercase")]
    ContainsUppercase,
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    #[error("invalid checksum digest format")]
    DigestFormat,
    #[error("invalid checksum digest length")]
    DigestLength,
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
}

/// The kubelet's wrapping of a parse failure (`InvalidImageName` waiting reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("couldn't parse image name {image:?}: {source}")]
pub struct KubeletImageError {
    pub image: String,
    #[source]
    pub source: ImageRefError,
}

// The grammar from distribution/reference regexp.go. `\w` is spelled out
// because Go's is ASCII-only and the regex crate's is Unicode.
const ALPHANUMERIC: &str = "[a-z0-9]+";
const SEPARATOR: &str = "(?:[._]|__|[-]+)";
const DOMAIN_NAME_COMPONENT: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const OPTIONAL_PORT: &str = "(?::[0-9]+)?";
const TAG: &str = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
const DIGEST: &str = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}";
const IPV6: &str = r"\[(?:[a-fA-F0-9:]+)\]";

fn domain_and_port() -> String {
    let domain_name = format!("{DOMAIN_NAME_COMPONENT}(?:\\.{DOMAIN_NAME_COMPONENT})*");
    format!("(?:{domain_name}|{IPV6}){OPTIONAL_PORT}")
}

fn remote_name() -> String {
    let component = format!("{ALPHANUMERIC}(?:{SEPARATOR}{ALPHANUMERIC})*");
    format!("{component}(?:/{component})*")
}

static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let name = format!("(?:{}/)?{}", domain_and_port(), remote_name());
    Regex::new(&format!("^({name})(?::({TAG}))?(?:@({DIGEST}))?$")).expect("reference grammar")
});

static ANCHORED_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        "^(?:({})/)?({})$",
        domain_and_port(),
        remote_name()
    ))
    .expect("name grammar")
});

static IDENTIFIER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-f0-9]{64}$").expect("identifier grammar"));

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// `ParseNormalizedNamed`: normalizes familiar names and keeps tag and
    /// digest as written (both may be present).
    pub fn parse(s: &str) -> Result<Self, ImageRefError> {
        if IDENTIFIER.is_match(s) {
            return Err(ImageRefError::HexIdentifier(s.to_owned()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.to_lowercase() != remote {
            return Err(ImageRefError::RemoteNotLowercase(remote.to_owned()));
        }
        parse_reference(&format!("{domain}/{remainder}"))
    }

    /// `ParseDockerRef`: like [`parse`](Self::parse), then a reference with
    /// both tag and digest keeps only the digest, and a bare name gets `:latest`.
    pub fn parse_docker_ref(s: &str) -> Result<Self, ImageRefError> {
        Ok(Self::parse(s)?.docker_ref())
    }

    /// The `ParseDockerRef` form of this reference.
    pub fn docker_ref(&self) -> Self {
        let mut r = self.clone();
        if r.digest.is_some() {
            r.tag = None;
        } else if r.tag.is_none() {
            r.tag = Some(DEFAULT_TAG.to_owned());
        }
        r
    }

    /// The registry host with optional port, e.g. `docker.io`, `reg:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path, e.g. `library/nginx`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`: the kubelet's `repoToPull`, the string matched against
    /// keyring keys and `matchImages`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest text, e.g. `sha256:…`.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The short form docker shows: `docker.io/` dropped, and `library/`
    /// dropped for single-component official images.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// [`familiar_name`](Self::familiar_name) with tag and digest.
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        self.push_suffix(&mut s);
        s
    }

    /// The tag the kubelet sees (`parsers.ParseImageName`): the written tag,
    /// else `latest` when there is no digest either, else none.
    pub fn kubelet_tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        }
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
    }
}

impl fmt::Display for ImageRef {
    /// The fully-qualified form, e.g. `docker.io/library/nginx:1.27`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// The kubelet's `parsers.ParseImageName`: `(repoToPull, tag, digest)` with
/// the tag defaulted to `latest` when neither tag nor digest is given.
pub fn parse_image_name(
    image: &str,
) -> Result<(String, Option<String>, Option<String>), KubeletImageError> {
    let r = ImageRef::parse(image).map_err(|source| KubeletImageError {
        image: image.to_owned(),
        source,
    })?;
    Ok((
        r.name(),
        r.kubelet_tag().map(str::to_owned),
        r.digest.clone(),
    ))
}

/// distribution/reference `splitDockerDomain`.
fn split_docker_domain(name: &str) -> (String, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        // A single component is always a Docker Hub official image, even
        // `localhost` or `example.com` (an acknowledged upstream quirk).
        return (
            DEFAULT_DOMAIN.to_owned(),
            format!("{OFFICIAL_REPO_PREFIX}{name}"),
        );
    };
    let (domain, mut remote) = if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN.to_owned(), maybe_remote.to_owned())
    } else if maybe_domain == "localhost"
        || maybe_domain.contains(['.', ':'])
        || maybe_domain.to_lowercase() != maybe_domain
    {
        (maybe_domain.to_owned(), maybe_remote.to_owned())
    } else {
        (DEFAULT_DOMAIN.to_owned(), name.to_owned())
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        remote = format!("{OFFICIAL_REPO_PREFIX}{remote}");
    }
    (domain, remote)
}

/// distribution/reference `Parse`, for input that always has a domain.
fn parse_reference(s: &str) -> Result<ImageRef, ImageRefError> {
    if s.is_empty() {
        return Err(ImageRefError::NameEmpty);
    }
    let Some(caps) = REFERENCE.captures(s) else {
        let lower = s.to_lowercase();
        if lower != s && REFERENCE.is_match(&lower) {
            return Err(ImageRefError::ContainsUppercase);
        }
        return Err(ImageRefError::InvalidFormat);
    };
    let name = caps.get(1).map_or("", |m| m.as_str());
    let (domain, path) = match ANCHORED_NAME.captures(name) {
        Some(n) => (
            n.get(1).map_or("", |m| m.as_str()).to_owned(),
            n.get(2).map_or("", |m| m.as_str()).to_owned(),
        ),
        None => (String::new(), name.to_owned()),
    };
    if path.len() > REPOSITORY_NAME_MAX {
        return Err(ImageRefError::NameTooLong);
    }
    let tag = caps
        .get(2)
        .map(|m| m.as_str().to_owned())
        .filter(|t| !t.is_empty());
    let digest = match caps.get(3) {
        Some(m) => Some(validate_digest(m.as_str())?),
        None => None,
    };
    Ok(ImageRef {
        domain,
        path,
        tag,
        digest,
    })
}

/// go-digest's `Parse`, with the algorithms a kubelet binary links in.
fn validate_digest(d: &str) -> Result<String, ImageRefError> {
    let (algorithm, encoded) = d.split_once(':').ok_or(ImageRefError::DigestFormat)?;
    if algorithm.is_empty() || encoded.is_empty() {
        return Err(ImageRefError::DigestFormat);
    }
    let size = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            // go-digest's general grammar decides between "unsupported" and "malformed".
            static GENERAL: LazyLock<Regex> = LazyLock::new(|| {
                Regex::new("^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
                    .expect("digest grammar")
            });
            return Err(if GENERAL.is_match(d) {
                ImageRefError::DigestUnsupported
            } else {
                ImageRefError::DigestFormat
            });
        }
    };
    if encoded.len() != size {
        return Err(ImageRefError::DigestLength);
    }
    if !encoded
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(ImageRefError::DigestFormat);
    }
    Ok(d.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn full(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalizes_like_distribution_reference() {
        let cases = [
            ("nginx", "docker.io/library/nginx"),
            ("nginx:1.27", "docker.io/library/nginx:1.27"),
            ("library/nginx", "docker.io/library/nginx"),
            ("docker.io/nginx", "docker.io/library/nginx"),
            ("index.docker.io/nginx", "docker.io/library/nginx"),
            ("index.docker.io/user/app", "docker.io/user/app"),
            ("user/app", "docker.io/user/app"),
            ("user/app/sub", "docker.io/user/app/sub"),
            (
                "registry-1.docker.io/library/x",
                "registry-1.docker.io/library/x",
            ),
            ("localhost/app", "localhost/app"),
            ("localhost:5000/app:v1", "localhost:5000/app:v1"),
            ("localhost", "docker.io/library/localhost"),
            ("example.com", "docker.io/library/example.com"),
            ("example.com/app", "example.com/app"),
            ("reg:5000/a/b", "reg:5000/a/b"),
            ("127.0.0.1:5000/a", "127.0.0.1:5000/a"),
            ("[::1]:5000/a", "[::1]:5000/a"),
            ("[2001:db8::1]/a:t", "[2001:db8::1]/a:t"),
            ("Foo/bar", "Foo/bar"),
            ("REG.IO/app", "REG.IO/app"),
            ("a__b/c--d/e.f", "docker.io/a__b/c--d/e.f"),
            ("nginx:latest@", ""),
        ];
        for (input, want) in cases {
            if want.is_empty() {
                assert!(ImageRef::parse(input).is_err(), "{input}");
            } else {
                assert_eq!(full(input), want, "{input}");
            }
        }
    }

    #[test]
    fn tags_and_digests() {
        let r = ImageRef::parse(&format!("nginx:1.2@{D}")).unwrap();
        assert_eq!(r.tag(), Some("1.2"));
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/nginx:1.2@{D}"));
        assert_eq!(
            r.docker_ref().to_string(),
            format!("docker.io/library/nginx@{D}")
        );
        assert_eq!(
            ImageRef::parse_docker_ref("nginx").unwrap().to_string(),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            ImageRef::parse_docker_ref("a/b:t").unwrap().to_string(),
            "docker.io/a/b:t"
        );
        let t128 = "t".repeat(128);
        assert!(ImageRef::parse(&format!("a:{t128}")).is_ok());
        assert_eq!(
            ImageRef::parse(&format!("a:{t128}x")),
            Err(ImageRefError::InvalidFormat)
        );
        assert_eq!(ImageRef::parse("a:.x"), Err(ImageRefError::InvalidFormat));
        assert_eq!(
            ImageRef::parse("a:Tag_1.x-y").unwrap().tag(),
            Some("Tag_1.x-y")
        );
        // Unicode word characters are not tag characters.
        assert_eq!(ImageRef::parse("a:tä"), Err(ImageRefError::InvalidFormat));
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert!(ImageRef::parse(&format!("a@{sha512}")).is_ok());
        let sha384 = format!("sha384:{}", "a".repeat(96));
        assert!(ImageRef::parse(&format!("a@{sha384}")).is_ok());
    }

    #[test]
    fn digest_errors() {
        assert_eq!(
            ImageRef::parse(&format!("a@sha256:{}", "f".repeat(63))),
            Err(ImageRefError::DigestLength)
        );
        assert_eq!(
            ImageRef::parse(&format!("a@sha256:{}", "F".repeat(64))),
            Err(ImageRefError::DigestFormat)
        );
        assert_eq!(
            ImageRef::parse(&format!("a@md5:{}", "f".repeat(32))),
            Err(ImageRefError::DigestUnsupported)
        );
        assert_eq!(
            ImageRef::parse(&format!("a@sha256:{}", "f".repeat(31))),
            Err(ImageRefError::InvalidFormat)
        );
        // Uppercase algorithm: caught by the lowercase check when there is no tag…
        assert_eq!(
            ImageRef::parse(&format!("a@SHA256:{}", "f".repeat(64))),
            Err(ImageRefError::RemoteNotLowercase("library/a@SHA256".into()))
        );
        // …and by go-digest when a tag hides it.
        assert_eq!(
            ImageRef::parse(&format!("a:t@SHA256:{}", "f".repeat(64))),
            Err(ImageRefError::DigestFormat)
        );
    }

    #[test]
    fn errors_match_upstream_text() {
        let hex = "f".repeat(64);
        assert_eq!(
            ImageRef::parse(&hex).unwrap_err().to_string(),
            format!("invalid repository name ({hex}), cannot specify 64-byte hexadecimal strings")
        );
        assert_eq!(
            ImageRef::parse("Nginx").unwrap_err().to_string(),
            "invalid reference format: repository name (library/Nginx) must be lowercase"
        );
        assert_eq!(
            ImageRef::parse("reg.io/App").unwrap_err().to_string(),
            "invalid reference format: repository name (App) must be lowercase"
        );
        assert_eq!(
            ImageRef::parse("user/App:v1").unwrap_err(),
            ImageRefError::RemoteNotLowercase("user/App".into())
        );
        // The tag may be uppercase, and the digest check sees the tag only after ':'.
        assert!(ImageRef::parse("user/app:V1").is_ok());
        assert_eq!(
            ImageRef::parse("").unwrap_err(),
            ImageRefError::InvalidFormat
        );
        assert_eq!(
            ImageRef::parse("a b").unwrap_err(),
            ImageRefError::InvalidFormat
        );
        assert_eq!(
            ImageRef::parse("reg.io/a//b").unwrap_err(),
            ImageRefError::InvalidFormat
        );
        assert_eq!(
            ImageRef::parse("reg.io/a/").unwrap_err(),
            ImageRefError::InvalidFormat
        );
        assert_eq!(
            ImageRef::parse("-reg.io/a").unwrap_err(),
            ImageRefError::InvalidFormat
        );
        assert_eq!(
            ImageRef::parse("ko://github.com/x").unwrap_err(),
            ImageRefError::InvalidFormat
        );
        assert_eq!(
            ImageRef::parse("reg.io:abc/a").unwrap_err(),
            ImageRefError::InvalidFormat
        );
        assert_eq!(
            ImageRef::parse("reg.io:5000/a:t@sha256:x").unwrap_err(),
            ImageRefError::InvalidFormat
        );
        assert_eq!(
            ImageRef::parse(&format!("reg.io/{}", "a".repeat(256))).unwrap_err(),
            ImageRefError::NameTooLong
        );
        // Since reference v0.6.0 only the path counts toward 255.
        let long_domain = format!("{}.io", "d".repeat(60));
        assert!(ImageRef::parse(&format!("{long_domain}/{}", "a".repeat(255))).is_ok());
        let e = parse_image_name("bad name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "couldn't parse image name \"bad name\": invalid reference format"
        );
        let e = parse_image_name("Bad Name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "couldn't parse image name \"Bad Name\": invalid reference format: repository name (library/Bad Name) must be lowercase"
        );
    }

    #[test]
    fn contains_uppercase_variant() {
        // Parse's retry with lowercase: an uppercase path behind a domain that
        // passes the remote check only through the ':' cut.
        assert_eq!(
            ImageRef::parse("reg.io:5000/A"),
            Err(ImageRefError::RemoteNotLowercase("A".into()))
        );
        assert_eq!(
            parse_reference("reg.io/A"),
            Err(ImageRefError::ContainsUppercase)
        );
    }

    #[test]
    fn familiar_forms() {
        let f = |s: &str| ImageRef::parse(s).unwrap().familiar_string();
        assert_eq!(f("docker.io/library/nginx:1"), "nginx:1");
        assert_eq!(f("docker.io/library/a/b"), "library/a/b");
        assert_eq!(f("docker.io/user/app"), "user/app");
        assert_eq!(f("quay.io/library/app"), "quay.io/library/app");
        assert_eq!(f(&format!("nginx@{D}")), format!("nginx@{D}"));
    }

    #[test]
    fn kubelet_parse_image_name() {
        assert_eq!(
            parse_image_name("nginx").unwrap(),
            (
                "docker.io/library/nginx".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(
            parse_image_name(&format!("nginx@{D}")).unwrap(),
            ("docker.io/library/nginx".into(), None, Some(D.into()))
        );
        assert_eq!(
            parse_image_name(&format!("r.io/a:latest@{D}")).unwrap(),
            ("r.io/a".into(), Some("latest".into()), Some(D.into()))
        );
    }
}
