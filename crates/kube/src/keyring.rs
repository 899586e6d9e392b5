//! The kubelet's credential keyring (`pkg/credentialprovider/keyring.go`):
//! which pull credentials it offers for an image, in which order, and why a
//! key does not match.
//!
//! Rules mirrored exactly:
//! - A key is normalized by prefixing `https://` when it has no `http(s)://`,
//!   parsing it as a Go URL, dropping the scheme, query and fragment, and
//!   turning a path starting with `/v1/` or `/v2/` into the rest of the path;
//!   a remaining path of `/` or nothing leaves the bare host
//!   (`https://index.docker.io/v1/` → `index.docker.io`). Unparsable keys are
//!   skipped.
//! - Keys are kept in reverse byte order and **every** matching key
//!   contributes its credentials, in that order; the kubelet tries them all.
//! - A key matches an image (`URLsMatch`) when the ports are string-equal,
//!   the hosts have the same number of dot-separated labels, the key's path is
//!   a plain string prefix of the image's path, and each host label matches as
//!   a `filepath.Match` glob.
//! - Only when nothing matched, an `index.docker.io` key serves images that
//!   live on Docker Hub.
//! - Several keyrings (pod pull secrets, then node config, then credential
//!   plugins) are concatenated in order.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::docker_config::{ConfigFormat, Credentials, DockerConfigError, DockerConfigFile};
use crate::go::glob;
use crate::go::url::{self as gourl, UrlError};
use crate::image_ref::ImageRef;

/// The key `docker login` writes for Docker Hub, after normalization.
pub const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// Where a credential came from, for explanations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// An `imagePullSecrets` entry of the pod (or copied from its ServiceAccount).
    PullSecret { namespace: String, name: String },
    /// The node's `config.json` / `.dockercfg`.
    NodeConfig { path: String },
    /// A kubelet credential provider plugin.
    Plugin { name: String },
    /// Anything else, described by the caller.
    Other(String),
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::PullSecret { namespace, name } => {
                write!(f, "secret {namespace}/{name}")
            }
            CredentialSource::NodeConfig { path } => write!(f, "node config {path}"),
            CredentialSource::Plugin { name } => write!(f, "credential provider {name}"),
            CredentialSource::Other(s) => f.write_str(s),
        }
    }
}

/// A credential stored under a normalized key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringEntry {
    /// The normalized key, e.g. `index.docker.io`, `reg:5000/team`.
    pub key: String,
    /// The server string as written in the config.
    pub server: String,
    pub credentials: Credentials,
    pub source: CredentialSource,
}

/// How a credential was selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchVia {
    /// The key matched the image by `URLsMatch`.
    Key,
    /// No key matched; the `index.docker.io` credentials serve a Docker Hub image.
    DockerHubFallback,
}

/// One credential the kubelet would try, in the order it would try it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedCredential {
    pub entry: KeyringEntry,
    pub via: MatchVia,
}

/// A config entry the kubelet skips because its key is not a parsable URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredEntry {
    pub server: String,
    pub source: CredentialSource,
    pub error: UrlError,
}

/// Errors building a keyring; like the kubelet, one broken secret fails
/// the whole lookup (the pull then fails for the pod).
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "{source_name}: {error}; the kubelet fails every image pull of the pod until it is fixed"
    )]
    Config {
        source_name: CredentialSource,
        #[source]
        error: DockerConfigError,
    },
}

/// A normalized keyring key and what normalization removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedKey {
    pub key: String,
    /// `host[:port]` as Go's URL parser leaves it.
    pub host: String,
    /// The path kept in the key (empty for a bare host).
    pub path: String,
    /// The scheme written in the server string, if any (it never matters).
    pub scheme: Option<String>,
    /// A `/v1` or `/v2` path prefix was dropped.
    pub dropped_api_version: bool,
    /// User info, query or fragment was dropped.
    pub dropped_other: bool,
}

/// Normalizes a config key like `BasicDockerKeyring.Add`.
pub fn normalize_key(server: &str) -> Result<NormalizedKey, UrlError> {
    let has_scheme = server.starts_with("https://") || server.starts_with("http://");
    let value = if has_scheme {
        server.to_owned()
    } else {
        format!("https://{server}")
    };
    let parsed = gourl::parse(&value)?;
    let mut path = parsed.path.as_str();
    let dropped_api_version = path.starts_with("/v2/") || path.starts_with("/v1/");
    if dropped_api_version {
        path = &path[3..];
    }
    let path = if path.is_empty() || path == "/" {
        ""
    } else {
        path
    };
    Ok(NormalizedKey {
        key: format!("{}{path}", parsed.host),
        host: parsed.host.clone(),
        path: path.to_owned(),
        scheme: has_scheme.then(|| parsed.scheme.clone()),
        dropped_api_version,
        dropped_other: parsed.has_userinfo || parsed.has_query || parsed.has_fragment,
    })
}

/// The kubelet's `isDefaultRegistryMatch`: whether `repo` lives on Docker Hub.
pub fn is_default_registry_match(repo: &str) -> bool {
    let mut parts = repo.splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    if first.is_empty() {
        return false;
    }
    if parts.next().is_none() {
        return true;
    }
    if first == "docker.io" || first == DEFAULT_REGISTRY_HOST {
        return true;
    }
    !first.contains(['.', ':'])
}

/// Why a key (glob) does not match an image repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// One side is not a URL Go can parse; the kubelet treats it as no match.
    Unparsable {
        side: Side,
        text: String,
        error: UrlError,
    },
    /// Ports are compared as strings; no port and `443` differ.
    PortDiffers {
        key_port: String,
        image_port: String,
    },
    /// A `*` stands for exactly one label, so the label counts must agree.
    LabelCountDiffers {
        key_labels: usize,
        image_labels: usize,
    },
    /// The key's path must be a string prefix of the image's path.
    PathNotPrefix {
        key_path: String,
        image_path: String,
    },
    /// Host label `index` (0-based) does not match the key's glob.
    LabelDiffers {
        index: usize,
        pattern: String,
        label: String,
    },
    /// A host label of the key is a malformed glob; it never matches.
    BadPattern { pattern: String },
}

/// Which string a [`Mismatch::Unparsable`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Key,
    Image,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Unparsable { side, text, error } => {
                let which = if *side == Side::Key { "key" } else { "image" };
                write!(
                    f,
                    "the {which} {text:?} is not a URL the kubelet can parse ({error})"
                )
            }
            Mismatch::PortDiffers {
                key_port,
                image_port,
            } => match (key_port.is_empty(), image_port.is_empty()) {
                (true, false) => write!(
                    f,
                    "the image uses port {image_port} but the key has no port; \
                     the kubelet compares ports literally, so add :{image_port} to the key"
                ),
                (false, true) => write!(
                    f,
                    "the key has port {key_port} but the image names no port \
                     (a default port is not assumed); drop :{key_port} from the key \
                     or use it in the image"
                ),
                _ => write!(
                    f,
                    "the key's port {key_port} differs from the image's port {image_port}"
                ),
            },
            Mismatch::LabelCountDiffers {
                key_labels,
                image_labels,
            } => write!(
                f,
                "the key's host has {key_labels} dot-separated labels but the image's has \
                 {image_labels}; a `*` stands for exactly one label (`*.example.com` matches \
                 `a.example.com`, not `example.com` or `a.b.example.com`)"
            ),
            Mismatch::PathNotPrefix {
                key_path,
                image_path,
            } => write!(
                f,
                "the key's path {key_path:?} is not a prefix of the image's path {image_path:?}; \
                 globs do not apply to paths"
            ),
            Mismatch::LabelDiffers {
                index,
                pattern,
                label,
            } => write!(
                f,
                "host label {} {label:?} does not match {pattern:?}",
                index + 1
            ),
            Mismatch::BadPattern { pattern } => write!(
                f,
                "the key's host label {pattern:?} is a malformed glob, which never matches"
            ),
        }
    }
}

/// Every reason `key` does not match `repo` under `URLsMatch`; empty when it
/// matches. Unlike the kubelet, which stops at the first failed check, all
/// checks are reported so a near miss can be fixed in one go.
pub fn explain_match(key: &str, repo: &str) -> Vec<Mismatch> {
    let glob_url = match parse_schemeless(key) {
        Ok(u) => u,
        Err(error) => {
            return vec![Mismatch::Unparsable {
                side: Side::Key,
                text: key.to_owned(),
                error,
            }];
        }
    };
    let target_url = match parse_schemeless(repo) {
        Ok(u) => u,
        Err(error) => {
            return vec![Mismatch::Unparsable {
                side: Side::Image,
                text: repo.to_owned(),
                error,
            }];
        }
    };
    let (glob_labels, glob_port) = split_url(&glob_url.host);
    let (target_labels, target_port) = split_url(&target_url.host);
    let mut out = Vec::new();
    if glob_port != target_port {
        out.push(Mismatch::PortDiffers {
            key_port: glob_port,
            image_port: target_port,
        });
    }
    if glob_labels.len() != target_labels.len() {
        out.push(Mismatch::LabelCountDiffers {
            key_labels: glob_labels.len(),
            image_labels: target_labels.len(),
        });
    }
    if !target_url.path.starts_with(&glob_url.path) {
        out.push(Mismatch::PathNotPrefix {
            key_path: glob_url.path.clone(),
            image_path: target_url.path.clone(),
        });
    }
    if glob_labels.len() == target_labels.len() {
        for (index, (pattern, label)) in glob_labels.iter().zip(&target_labels).enumerate() {
            match glob::matches(pattern, label) {
                Ok(true) => {}
                Ok(false) => out.push(Mismatch::LabelDiffers {
                    index,
                    pattern: pattern.clone(),
                    label: label.clone(),
                }),
                Err(_) => {
                    out.push(Mismatch::BadPattern {
                        pattern: pattern.clone(),
                    });
                    // Go returns on the first malformed label.
                    break;
                }
            }
        }
    }
    out
}

/// Explains a server string exactly as written in a docker config (scheme,
/// `/v1/` and all) against `image`: it is normalized first, as the kubelet
/// does when loading it, so a scheme or `/v2/` suffix never causes a
/// mismatch; the returned [`NormalizedKey`] shows what was dropped.
pub fn explain_server_match(
    server: &str,
    image: &ImageRef,
) -> Result<(NormalizedKey, Vec<Mismatch>), UrlError> {
    let key = normalize_key(server)?;
    let reasons = explain_match(&key.key, &image.name());
    Ok((key, reasons))
}

/// The kubelet's `URLsMatchStr(glob, target)`, errors counting as no match.
pub fn urls_match(glob: &str, target: &str) -> bool {
    explain_match(glob, target).is_empty()
}

/// `ParseSchemelessURL`: `url.Parse("https://" + s)`.
fn parse_schemeless(s: &str) -> Result<gourl::GoUrl, UrlError> {
    gourl::parse(&format!("https://{s}"))
}

/// `SplitURL`: host labels split on `.` and the port (empty when absent or
/// when Go's `SplitHostPort` rejects the host).
fn split_url(host: &str) -> (Vec<String>, String) {
    let (h, port, _) = gourl::split_host_port(host);
    (h.split('.').map(str::to_owned).collect(), port)
}

/// One `BasicDockerKeyring`: the credentials of one layer (all pod pull
/// secrets together, or the node config, or the plugins).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    /// Unique keys, reverse byte order.
    index: Vec<String>,
    creds: HashMap<String, Vec<KeyringEntry>>,
    ignored: Vec<IgnoredEntry>,
}

/// How a key relates to an image, for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key matches; its credentials are offered.
    Matches,
    /// Offered only because no key matched and the image is on Docker Hub.
    DockerHubFallback,
    /// Would serve as the Docker Hub fallback, but another key matched first.
    FallbackNotNeeded,
    /// The key does not match, for these reasons.
    NoMatch(Vec<Mismatch>),
}

/// A key of the keyring and its verdict for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExplanation<'a> {
    pub key: &'a str,
    pub entries: &'a [KeyringEntry],
    pub verdict: Verdict,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds one keyring from docker configs in the kubelet's order.
    pub fn from_configs<'a>(
        configs: impl IntoIterator<Item = (CredentialSource, &'a DockerConfigFile)>,
    ) -> Result<Self, KeyringError> {
        let mut k = Keyring::new();
        for (source, config) in configs {
            k.add(source, config)?;
        }
        Ok(k)
    }

    /// Adds every entry of `config` (`BasicDockerKeyring.Add`). Credentials
    /// are decoded first, so an undecodable `auth` fails like the kubelet's
    /// JSON decoding does, and nothing from that config is added.
    ///
    /// Entries are added in document order. The kubelet iterates a Go map, so
    /// when two servers of one config normalize to the same key (say
    /// `https://reg.io/v2/` and `reg.io`), their relative order is random there.
    pub fn add(
        &mut self,
        source: CredentialSource,
        config: &DockerConfigFile,
    ) -> Result<(), KeyringError> {
        let creds = config
            .kubelet_credentials()
            .map_err(|error| KeyringError::Config {
                source_name: source.clone(),
                error,
            })?;
        for (server, credentials) in creds {
            self.add_credentials(source.clone(), &server, credentials);
        }
        Ok(())
    }

    /// Adds one credential under `server`'s normalized key; an unparsable
    /// server is recorded in [`ignored`](Self::ignored) as the kubelet logs and skips it.
    pub fn add_credentials(
        &mut self,
        source: CredentialSource,
        server: &str,
        credentials: Credentials,
    ) {
        match normalize_key(server) {
            Ok(n) => {
                let entry = KeyringEntry {
                    key: n.key.clone(),
                    server: server.to_owned(),
                    credentials,
                    source,
                };
                let slot = self.creds.entry(n.key.clone()).or_default();
                if slot.is_empty() {
                    // Keep the index unique and reverse-sorted.
                    let pos = self.index.partition_point(|k| k.as_str() > n.key.as_str());
                    self.index.insert(pos, n.key);
                }
                slot.push(entry);
            }
            Err(error) => self.ignored.push(IgnoredEntry {
                server: server.to_owned(),
                source,
                error,
            }),
        }
    }

    /// Normalized keys in the order the kubelet checks them.
    pub fn keys(&self) -> &[String] {
        &self.index
    }

    /// Credentials stored under a normalized key.
    pub fn entries(&self, key: &str) -> &[KeyringEntry] {
        self.creds.get(key).map_or(&[], Vec::as_slice)
    }

    /// Entries the kubelet skips because their key does not parse.
    pub fn ignored(&self) -> &[IgnoredEntry] {
        &self.ignored
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The credentials offered for `image`, in the kubelet's order.
    pub fn lookup(&self, image: &ImageRef) -> Vec<MatchedCredential> {
        self.lookup_repo(&image.name())
    }

    /// Like [`lookup`](Self::lookup) for a repository string as the kubelet
    /// passes it (`docker.io/library/nginx`, no tag or digest).
    pub fn lookup_repo(&self, repo: &str) -> Vec<MatchedCredential> {
        let matched: Vec<MatchedCredential> = self
            .index
            .iter()
            .filter(|k| urls_match(k, repo))
            .flat_map(|k| self.entries(k))
            .map(|entry| MatchedCredential {
                entry: entry.clone(),
                via: MatchVia::Key,
            })
            .collect();
        if !matched.is_empty() {
            return matched;
        }
        if is_default_registry_match(repo) {
            return self
                .entries(DEFAULT_REGISTRY_HOST)
                .iter()
                .map(|entry| MatchedCredential {
                    entry: entry.clone(),
                    via: MatchVia::DockerHubFallback,
                })
                .collect();
        }
        Vec::new()
    }

    /// Every key with its verdict for `image`, in index order.
    pub fn explain(&self, image: &ImageRef) -> Vec<KeyExplanation<'_>> {
        self.explain_repo(&image.name())
    }

    /// [`explain`](Self::explain) for a repository string.
    pub fn explain_repo(&self, repo: &str) -> Vec<KeyExplanation<'_>> {
        let mismatches: Vec<Vec<Mismatch>> =
            self.index.iter().map(|k| explain_match(k, repo)).collect();
        let any_direct = mismatches.iter().any(Vec::is_empty);
        self.index
            .iter()
            .zip(mismatches)
            .map(|(key, reasons)| {
                let verdict = if reasons.is_empty() {
                    Verdict::Matches
                } else if key == DEFAULT_REGISTRY_HOST && is_default_registry_match(repo) {
                    if any_direct {
                        Verdict::FallbackNotNeeded
                    } else {
                        Verdict::DockerHubFallback
                    }
                } else {
                    Verdict::NoMatch(reasons)
                };
                KeyExplanation {
                    key,
                    entries: self.entries(key),
                    verdict,
                }
            })
            .collect()
    }
}

/// Layers looked up one after another, results concatenated
/// (`UnionDockerKeyring`). The kubelet's order is: pod pull secrets, node
/// config, credential provider plugins.
#[derive(Debug, Clone, Default)]
pub struct UnionKeyring {
    pub layers: Vec<Keyring>,
}

impl UnionKeyring {
    pub fn new(layers: Vec<Keyring>) -> Self {
        UnionKeyring { layers }
    }

    pub fn lookup(&self, image: &ImageRef) -> Vec<MatchedCredential> {
        let repo = image.name();
        self.layers
            .iter()
            .flat_map(|k| k.lookup_repo(&repo))
            .collect()
    }
}

/// A Secret as the kubelet sees it when reading `imagePullSecrets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSecret {
    pub namespace: String,
    pub name: String,
    /// The Secret's `type`, e.g. `kubernetes.io/dockerconfigjson`.
    pub secret_type: String,
    /// Decoded `data`.
    pub data: BTreeMap<String, Vec<u8>>,
}

/// Why the kubelet silently ignores a pull secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Only `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` are read,
    /// even when an `Opaque` secret has the right key.
    UnsupportedType(String),
    /// The type's key (`.dockerconfigjson` / `.dockercfg`) is missing or empty.
    MissingKey(&'static str),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::UnsupportedType(t) => write!(
                f,
                "type {t:?} is ignored; the kubelet only reads kubernetes.io/dockerconfigjson \
                 and kubernetes.io/dockercfg secrets"
            ),
            SkipReason::MissingKey(k) => write!(f, "data key {k:?} is missing or empty"),
        }
    }
}

/// The pod-secrets keyring and the secrets it silently skipped.
#[derive(Debug, Clone, Default)]
pub struct SecretsKeyring {
    pub keyring: Keyring,
    pub skipped: Vec<(PullSecret, SkipReason)>,
}

/// `MakeDockerKeyring` for the pod's pull secrets, in `imagePullSecrets` order.
pub fn keyring_from_pull_secrets(secrets: &[PullSecret]) -> Result<SecretsKeyring, KeyringError> {
    let mut out = SecretsKeyring::default();
    for secret in secrets {
        let (key, format) = match secret.secret_type.as_str() {
            "kubernetes.io/dockerconfigjson" => (".dockerconfigjson", ConfigFormat::ConfigJson),
            "kubernetes.io/dockercfg" => (".dockercfg", ConfigFormat::Dockercfg),
            other => {
                out.skipped.push((
                    secret.clone(),
                    SkipReason::UnsupportedType(other.to_owned()),
                ));
                continue;
            }
        };
        let source = CredentialSource::PullSecret {
            namespace: secret.namespace.clone(),
            name: secret.name.clone(),
        };
        let Some(bytes) = secret.data.get(key).filter(|b| !b.is_empty()) else {
            out.skipped
                .push((secret.clone(), SkipReason::MissingKey(key)));
            continue;
        };
        let config =
            DockerConfigFile::parse(&String::from_utf8_lossy(bytes), format).map_err(|error| {
                KeyringError::Config {
                    source_name: source.clone(),
                    error,
                }
            })?;
        out.keyring.add(source, &config)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str) -> Credentials {
        Credentials {
            username: user.to_owned(),
            password: "p".to_owned(),
            email: String::new(),
        }
    }

    fn ring(servers: &[(&str, &str)]) -> Keyring {
        let mut k = Keyring::new();
        for (server, user) in servers {
            k.add_credentials(CredentialSource::Other("test".into()), server, creds(user));
        }
        k
    }

    fn users(k: &Keyring, image: &str) -> Vec<String> {
        k.lookup(&ImageRef::parse(image).unwrap())
            .into_iter()
            .map(|m| m.entry.credentials.username)
            .collect()
    }

    #[test]
    fn normalizes_keys() {
        let key = |s: &str| normalize_key(s).unwrap().key;
        assert_eq!(key("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(key("index.docker.io/v1/"), "index.docker.io");
        assert_eq!(key("http://reg:5000/"), "reg:5000");
        assert_eq!(key("reg.example.com/team"), "reg.example.com/team");
        assert_eq!(key("https://reg/v2/team/app"), "reg/team/app");
        assert_eq!(key("https://reg/v1"), "reg/v1");
        assert_eq!(key("https://reg/v3/"), "reg/v3/");
        assert_eq!(key("https://user:pw@reg/x?y#z"), "reg/x");
        // The scheme check is case-sensitive, so this becomes host "HTTPS:".
        assert_eq!(key("HTTPS://reg"), "HTTPS://reg");
        assert_eq!(key("docker.io"), "docker.io");
        let n = normalize_key("http://reg/v1/?q").unwrap();
        assert_eq!(n.scheme.as_deref(), Some("http"));
        assert!(n.dropped_api_version && n.dropped_other);
        assert!(normalize_key("reg:abc").is_err());
        assert!(normalize_key("a b").is_err());
    }

    #[test]
    fn every_match_in_reverse_order() {
        let k = ring(&[
            ("quay.io", "host"),
            ("quay.io/coreos", "ns"),
            ("quay.io/coreos/etcd", "repo"),
            ("quay.io/other", "other"),
        ]);
        assert_eq!(
            k.keys(),
            [
                "quay.io/other",
                "quay.io/coreos/etcd",
                "quay.io/coreos",
                "quay.io"
            ]
        );
        assert_eq!(users(&k, "quay.io/coreos/etcd:v3"), ["repo", "ns", "host"]);
        // Path prefix is a plain string prefix, not segment-aware.
        assert_eq!(
            users(&k, "quay.io/coreos/etcd-operator"),
            ["repo", "ns", "host"]
        );
        assert_eq!(users(&k, "quay.io/coreosx/a"), ["ns", "host"]);
    }

    #[test]
    fn globs_follow_label_rules() {
        let k = ring(&[
            ("*.example.com", "wild"),
            ("registry.example.com", "exact"),
            ("*.*.example.com", "two"),
        ]);
        // '*' sorts before letters, so the exact key comes first.
        assert_eq!(users(&k, "registry.example.com/a"), ["exact", "wild"]);
        assert_eq!(users(&k, "a.b.example.com/a"), ["two"]);
        assert!(users(&k, "example.com/a").is_empty());
        let k = ring(&[
            ("*my-registry.io", "g"),
            ("reg[0-9].io", "c"),
            ("r?g.io", "q"),
        ]);
        assert_eq!(users(&k, "my-registry.io/x"), ["g"]);
        assert_eq!(users(&k, "xmy-registry.io/x"), ["g"]);
        assert!(users(&k, "sub.my-registry.io/x").is_empty());
        assert_eq!(users(&k, "reg7.io/x"), ["c"]);
        // In a key, '?' starts the URL query: "r?g.io" is stored as host "r".
        assert!(k.keys().contains(&"r".to_owned()));
        assert!(users(&k, "rxg.io/x").is_empty());
        assert!(explain_match("r?g.io", "r/x").is_empty());
    }

    #[test]
    fn ports_are_compared_literally() {
        let k = ring(&[
            ("reg.io:5000", "port"),
            ("reg.io", "noport"),
            ("reg.io:443", "443"),
        ]);
        assert_eq!(users(&k, "reg.io:5000/a"), ["port"]);
        assert_eq!(users(&k, "reg.io/a"), ["noport"]);
        assert_eq!(users(&k, "reg.io:443/a"), ["443"]);
        // A bracketed glob makes Go's SplitHostPort fail, so the port is lost.
        let k = ring(&[("reg[0-9].io:5000", "g")]);
        assert!(users(&k, "reg1.io:5000/a").is_empty());
    }

    #[test]
    fn docker_hub_fallback_only_when_nothing_matched() {
        let k = ring(&[("https://index.docker.io/v1/", "hub")]);
        assert_eq!(users(&k, "nginx"), ["hub"]);
        assert_eq!(users(&k, "user/app"), ["hub"]);
        assert_eq!(users(&k, "docker.io/user/app"), ["hub"]);
        assert!(users(&k, "quay.io/a").is_empty());
        assert!(users(&k, "registry-1.docker.io/library/a").is_empty());
        let m = k.lookup(&ImageRef::parse("nginx").unwrap());
        assert_eq!(m[0].via, MatchVia::DockerHubFallback);
        assert_eq!(m[0].entry.key, "index.docker.io");

        let k = ring(&[
            ("https://index.docker.io/v1/", "hub"),
            ("docker.io", "direct"),
        ]);
        assert_eq!(users(&k, "nginx"), ["direct"]);
        let k = ring(&[("registry-1.docker.io", "r1"), ("*.docker.io", "w")]);
        assert!(users(&k, "nginx").is_empty());
        // A key for part of Docker Hub blocks the fallback for those images only.
        let k = ring(&[("index.docker.io", "hub"), ("docker.io/team", "team")]);
        assert_eq!(users(&k, "team/app"), ["team"]);
        assert_eq!(users(&k, "other/app"), ["hub"]);
    }

    #[test]
    fn default_registry_match() {
        assert!(is_default_registry_match("ubuntu"));
        assert!(is_default_registry_match("library/ubuntu"));
        assert!(is_default_registry_match("docker.io/library/ubuntu"));
        assert!(is_default_registry_match("index.docker.io/library/ubuntu"));
        assert!(!is_default_registry_match("reg.io/ubuntu"));
        assert!(!is_default_registry_match("reg:5000/ubuntu"));
        assert!(!is_default_registry_match(""));
        assert!(!is_default_registry_match("/x"));
    }

    #[test]
    fn duplicates_keep_add_order() {
        let mut k = Keyring::new();
        let cfg = |u: &str| {
            let mut d = DockerConfigFile::new(ConfigFormat::ConfigJson);
            d.set_credentials("https://reg.io/v2/", u, "p");
            d
        };
        let a = cfg("a");
        let b = cfg("b");
        k.add(
            CredentialSource::PullSecret {
                namespace: "ns".into(),
                name: "one".into(),
            },
            &a,
        )
        .unwrap();
        k.add(
            CredentialSource::PullSecret {
                namespace: "ns".into(),
                name: "two".into(),
            },
            &b,
        )
        .unwrap();
        assert_eq!(k.keys(), ["reg.io"]);
        let m = k.lookup(&ImageRef::parse("reg.io/x").unwrap());
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].entry.source.to_string(), "secret ns/two");
        assert_eq!(m[1].entry.server, "https://reg.io/v2/");
    }

    #[test]
    fn bad_entries_are_skipped_or_fatal() {
        let mut doc = DockerConfigFile::new(ConfigFormat::ConfigJson);
        doc.set_credentials("reg:abc", "u", "p");
        doc.set_credentials("good.io", "g", "p");
        let k = Keyring::from_configs([(CredentialSource::Other("x".into()), &doc)]).unwrap();
        assert_eq!(k.keys(), ["good.io"]);
        assert_eq!(
            k.ignored()[0].error.to_string(),
            "invalid port \":abc\" after host"
        );
        let bad = DockerConfigFile::parse_config_json(r#"{"auths":{"good.io":{"auth":"eA=="}}}"#)
            .unwrap();
        let err =
            Keyring::from_configs([(CredentialSource::Other("secret".into()), &bad)]).unwrap_err();
        assert!(err.to_string().contains("fails every image pull"), "{err}");
    }

    #[test]
    fn explains_near_misses() {
        let reasons = explain_match("reg.example.com", "reg.example.com:5000/app");
        assert_eq!(
            reasons,
            [Mismatch::PortDiffers {
                key_port: "".into(),
                image_port: "5000".into()
            }]
        );
        assert!(reasons[0].to_string().contains("add :5000"));
        let reasons = explain_match("*.example.com", "example.com/app");
        assert_eq!(
            reasons,
            [Mismatch::LabelCountDiffers {
                key_labels: 3,
                image_labels: 2
            }]
        );
        let reasons = explain_match("reg.io/team-a", "reg.io/team-b/app");
        assert!(matches!(&reasons[..], [Mismatch::PathNotPrefix { .. }]));
        let reasons = explain_match("harbor.example.com/*", "harbor.example.com/proj/app");
        assert!(matches!(&reasons[..], [Mismatch::PathNotPrefix { .. }]));
        let reasons = explain_match("a.example.org:443/x", "b.example.com/y");
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        let reasons = explain_match("re[g.io", "reg.io/a");
        assert_eq!(
            reasons,
            [Mismatch::BadPattern {
                pattern: "re[g".into()
            }]
        );
        assert!(explain_match("reg.io", "reg.io/a").is_empty());
        let (key, reasons) = explain_server_match(
            "http://reg.io:5000/v2/",
            &ImageRef::parse("reg.io:5000/a").unwrap(),
        )
        .unwrap();
        assert!(reasons.is_empty());
        assert_eq!(
            (
                key.key.as_str(),
                key.scheme.as_deref(),
                key.dropped_api_version
            ),
            ("reg.io:5000", Some("http"), true)
        );
        assert!(matches!(
            &explain_match("reg io", "reg.io/a")[..],
            [Mismatch::Unparsable {
                side: Side::Key,
                ..
            }]
        ));
    }

    #[test]
    fn explain_marks_fallback() {
        let k = ring(&[("index.docker.io", "hub"), ("quay.io", "q")]);
        let ex = k.explain(&ImageRef::parse("nginx").unwrap());
        assert_eq!(ex[0].key, "quay.io");
        assert!(matches!(ex[0].verdict, Verdict::NoMatch(_)));
        assert_eq!(ex[1].verdict, Verdict::DockerHubFallback);
        let k = ring(&[("index.docker.io", "hub"), ("docker.io", "d")]);
        let ex = k.explain(&ImageRef::parse("nginx").unwrap());
        assert_eq!(ex[0].verdict, Verdict::FallbackNotNeeded);
        assert_eq!(ex[1].verdict, Verdict::Matches);
    }

    #[test]
    fn pull_secrets_in_kubelet_order() {
        let json = |server: &str, user: &str| {
            let mut d = DockerConfigFile::new(ConfigFormat::ConfigJson);
            d.set_credentials(server, user, "p");
            d.to_json_compact().into_bytes()
        };
        let secret = |name: &str, t: &str, key: &str, data: Vec<u8>| PullSecret {
            namespace: "app".into(),
            name: name.into(),
            secret_type: t.into(),
            data: BTreeMap::from([(key.to_owned(), data)]),
        };
        let secrets = [
            secret(
                "opaque",
                "Opaque",
                ".dockerconfigjson",
                json("reg.io", "ignored"),
            ),
            secret(
                "a",
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                json("reg.io", "a"),
            ),
            secret(
                "legacy",
                "kubernetes.io/dockercfg",
                ".dockercfg",
                br#"{"reg.io/team":{"auth":"bDpw"}}"#.to_vec(),
            ),
            secret(
                "empty",
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                Vec::new(),
            ),
        ];
        let out = keyring_from_pull_secrets(&secrets).unwrap();
        assert_eq!(out.skipped.len(), 2);
        assert!(out.skipped[0].1.to_string().contains("only reads"));
        assert_eq!(users(&out.keyring, "reg.io/team/app"), ["l", "a"]);

        let node = ring(&[("reg.io", "node")]);
        let union = UnionKeyring::new(vec![out.keyring, node]);
        let got: Vec<_> = union
            .lookup(&ImageRef::parse("reg.io/team/app").unwrap())
            .into_iter()
            .map(|m| m.entry.credentials.username)
            .collect();
        assert_eq!(got, ["l", "a", "node"]);

        let broken = [secret(
            "bad",
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            b"{".to_vec(),
        )];
        assert!(
            keyring_from_pull_secrets(&broken)
                .unwrap_err()
                .to_string()
                .contains("secret app/bad")
        );
    }
}
