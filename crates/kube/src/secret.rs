//! Pull-secret and ServiceAccount manifests, byte-for-byte as kubectl prints
//! them.
//!
//! [`DockerRegistrySecret`] renders exactly what
//! `kubectl create secret docker-registry NAME --docker-server=S
//! --docker-username=U --docker-password=P [--docker-email=E] [-n NS]
//! [--append-hash] --dry-run=client -o yaml|json` prints: the payload is Go's
//! compact `json.Marshal` of `{"auths":{S:{"username","password","email"
//! (omitted when empty),"auth"}}}` (with Go's `\u003c`-style escaping), the
//! server key is used verbatim, and `--append-hash` appends kubectl's
//! `hash.SecretHash`. The legacy `kubernetes.io/dockercfg` type holds the
//! bare `{S:{…}}` map under `.dockercfg`; kubectl has no generator for it, so
//! its envelope is what `kubectl create secret generic --type=…` prints.
//!
//! Unlike kubectl, rendering first refuses input that would produce a secret
//! the kubelet cannot use.

use std::fmt::Write as _;
use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;
use sha2::{Digest as _, Sha256};

use crate::docker_config::{AuthEntry, ConfigFormat, DockerConfigFile};
use crate::go::json as gojson;
use crate::go::url::{UrlError, split_host_port};
use crate::go::yaml::scalar;
use crate::keyring::normalize_key;

/// kubectl's default `--docker-server`: the key `docker login` writes for Docker Hub.
pub const DEFAULT_DOCKER_SERVER: &str = "https://index.docker.io/v1/";

/// Longest Kubernetes object name (DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest namespace name (DNS-1123 label).
pub const MAX_NAMESPACE_LEN: usize = 63;

/// The two Secret types the kubelet reads pull credentials from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretType {
    /// `kubernetes.io/dockerconfigjson`, data key `.dockerconfigjson`.
    DockerConfigJson,
    /// Legacy `kubernetes.io/dockercfg`, data key `.dockercfg`.
    Dockercfg,
}

impl SecretType {
    pub fn type_name(self) -> &'static str {
        match self {
            SecretType::DockerConfigJson => "kubernetes.io/dockerconfigjson",
            SecretType::Dockercfg => "kubernetes.io/dockercfg",
        }
    }

    pub fn data_key(self) -> &'static str {
        match self {
            SecretType::DockerConfigJson => ".dockerconfigjson",
            SecretType::Dockercfg => ".dockercfg",
        }
    }
}

/// Input that would not produce a working pull secret or a valid object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{what} name must not be empty")]
    EmptyName { what: &'static str },
    #[error(
        "{what} name {name:?} is invalid: {reason}; Kubernetes names are lowercase letters, \
         digits, '-' and '.', starting and ending with a letter or digit (try {suggestion:?})"
    )]
    InvalidName {
        what: &'static str,
        name: String,
        reason: String,
        suggestion: String,
    },
    #[error(
        "namespace {name:?} is invalid: {reason}; namespaces are lowercase letters, digits and '-', \
         at most 63 characters, starting and ending with a letter or digit"
    )]
    InvalidNamespace { name: String, reason: String },
    #[error("the username is empty; pass the registry account's username")]
    EmptyUsername,
    #[error("the password is empty; pass the registry password or access token")]
    EmptyPassword,
    #[error(
        "the username {0:?} contains ':'; the kubelet reads credentials from \
         base64(username:password) and splits at the first ':', so it would log in with the wrong \
         name; use a robot or token account without ':'"
    )]
    ColonInUsername(String),
    #[error("the registry server is empty; pass the registry host, e.g. registry.example.com:5000")]
    EmptyServer,
    #[error(
        "the registry server {server:?} is not a URL the kubelet can parse ({error}); \
         pass just the registry host, e.g. registry.example.com:5000"
    )]
    ServerUnparsable { server: String, error: UrlError },
    #[error(
        "the registry server {server:?} uses scheme {scheme:?}; the kubelet only understands \
         http:// and https:// (and ignores either), so pass just the registry host"
    )]
    ServerScheme { server: String, scheme: String },
    #[error(
        "the registry server {server:?} has no host; pass the registry host, e.g. registry.example.com"
    )]
    ServerNoHost { server: String },
    #[error(
        "{host:?} in {server:?} is not a registry host: {reason}; pass the host (and port) that \
         appears at the start of your image names"
    )]
    ServerInvalidHost {
        server: String,
        host: String,
        reason: String,
    },
    #[error(
        "the registry server {server:?} contains a tag or digest; credentials are matched \
         against image names without tags, so pass the host (optionally with a repository \
         path), not an image reference"
    )]
    ServerHasTagOrDigest { server: String },
    #[error(
        "the path {path:?} in registry server {server:?} can never be a prefix of an image's \
         repository path (lowercase letters, digits, '.', '_', '-', '/'); drop it or fix its case"
    )]
    ServerBadPath { server: String, path: String },
    #[error(
        "the registry server {server:?} carries user info, a query or a fragment, which the \
         kubelet drops; pass just the registry host"
    )]
    ServerExtraParts { server: String },
    #[error("a pull secret needs credentials for at least one registry")]
    NoRegistries,
    #[error(
        "the registry server {server:?} is given twice; a pull secret holds one entry per \
         server, so name each registry once"
    )]
    DuplicateServer { server: String },
}

static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("dns-1123 subdomain")
});

static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("dns-1123 label"));

/// A close valid name for `name`: lowercased, other characters turned into
/// `-`, trimmed to start and end with an alphanumeric.
pub fn suggest_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = mapped
        .replace("..", ".")
        .replace(".-", ".")
        .replace("-.", ".");
    out.truncate(MAX_NAME_LEN);
    let out = out.trim_matches(|c: char| c == '-' || c == '.').to_owned();
    if out.is_empty() {
        "pull-secret".to_owned()
    } else {
        out
    }
}

/// Checks an object name (Secret, ServiceAccount) as the API server will.
pub fn validate_object_name(what: &'static str, name: &str) -> Result<(), SecretError> {
    if name.is_empty() {
        return Err(SecretError::EmptyName { what });
    }
    let reason = if name.len() > MAX_NAME_LEN {
        format!(
            "it is {} characters long, the limit is {MAX_NAME_LEN}",
            name.len()
        )
    } else if !DNS1123_SUBDOMAIN.is_match(name) {
        "it is not a lowercase RFC 1123 subdomain".to_owned()
    } else {
        return Ok(());
    };
    Err(SecretError::InvalidName {
        what,
        name: name.to_owned(),
        reason,
        suggestion: suggest_name(name),
    })
}

/// Checks a namespace name (DNS-1123 label).
pub fn validate_namespace(name: &str) -> Result<(), SecretError> {
    let reason = if name.is_empty() {
        "it is empty".to_owned()
    } else if name.len() > MAX_NAMESPACE_LEN {
        format!("it is {} characters long", name.len())
    } else if !DNS1123_LABEL.is_match(name) {
        "it is not a lowercase RFC 1123 label".to_owned()
    } else {
        return Ok(());
    };
    Err(SecretError::InvalidNamespace {
        name: name.to_owned(),
        reason,
    })
}

/// Checks that `server` names a registry the kubelet can match image names
/// against: a host (globs like `*.example.com` allowed) with optional port
/// and repository path, optionally with `http(s)://` and `/v1/`, `/v2/`.
pub fn validate_registry_server(server: &str) -> Result<(), SecretError> {
    let err_server = || server.to_owned();
    if server.trim().is_empty() {
        return Err(SecretError::EmptyServer);
    }
    if let Some((scheme, _)) = server.split_once("://")
        && scheme != "http"
        && scheme != "https"
    {
        return Err(SecretError::ServerScheme {
            server: err_server(),
            scheme: scheme.to_owned(),
        });
    }
    let key = normalize_key(server).map_err(|error| SecretError::ServerUnparsable {
        server: err_server(),
        error,
    })?;
    if key.dropped_other {
        return Err(SecretError::ServerExtraParts {
            server: err_server(),
        });
    }
    if key.host.is_empty() {
        return Err(SecretError::ServerNoHost {
            server: err_server(),
        });
    }
    let invalid_host = |reason: &str| SecretError::ServerInvalidHost {
        server: err_server(),
        host: key.host.clone(),
        reason: reason.to_owned(),
    };
    let (host, _port, split_error) = split_host_port(&key.host);
    let host = if split_error == Some("missing port in address") || split_error.is_none() {
        host
    } else if key.host.contains(['[', ']']) && !key.host.starts_with('[') {
        // Go's SplitHostPort gives up on brackets inside a glob; the host keeps its port then.
        return Err(invalid_host(
            "a '[...]' character class together with a port makes the kubelet ignore the port; \
             use '?' or '*' instead",
        ));
    } else {
        return Err(invalid_host("it is not host[:port]"));
    };
    if key.host.ends_with(':') {
        return Err(invalid_host("it ends with ':' but has no port number"));
    }
    if host.starts_with('[') || host.contains(':') {
        // An IPv6 literal, which image references write in brackets.
        if !host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':')
        {
            return Err(invalid_host("it is not a valid IPv6 address"));
        }
    } else {
        for label in host.split('.') {
            if label.is_empty() {
                return Err(invalid_host(
                    "it has an empty label (two dots in a row, or a leading or trailing dot)",
                ));
            }
            if !label.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'*' | b'?' | b'[' | b']' | b'^' | b'\\')
            }) {
                return Err(invalid_host(
                    "host names consist of letters, digits, '-' and '.'",
                ));
            }
        }
        if host.contains(['*', '?', '[']) {
            for label in host.split('.') {
                if crate::go::glob::matches(label, "x").is_err() {
                    return Err(invalid_host(
                        "it contains a malformed glob, which never matches",
                    ));
                }
            }
        }
    }
    if key.path.contains([':', '@']) {
        return Err(SecretError::ServerHasTagOrDigest {
            server: err_server(),
        });
    }
    if !key.path.is_empty() {
        let path = key.path.trim_end_matches('/');
        let ok = path.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/')
        });
        if !ok {
            return Err(SecretError::ServerBadPath {
                server: err_server(),
                path: key.path.clone(),
            });
        }
    }
    Ok(())
}

/// The inputs of `kubectl create secret docker-registry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRegistrySecret {
    pub name: String,
    /// Printed only when set (kubectl prints it only for an explicit `-n`
    /// or a namespace in the kubeconfig context).
    pub namespace: Option<String>,
    /// Used verbatim as the key of the entry.
    pub server: String,
    pub username: String,
    pub password: String,
    /// Omitted from the payload when empty.
    pub email: String,
    pub append_hash: bool,
    pub secret_type: SecretType,
}

impl DockerRegistrySecret {
    /// A `kubernetes.io/dockerconfigjson` secret for Docker Hub's default server.
    pub fn new(name: &str, username: &str, password: &str) -> Self {
        DockerRegistrySecret {
            name: name.to_owned(),
            namespace: None,
            server: DEFAULT_DOCKER_SERVER.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            email: String::new(),
            append_hash: false,
            secret_type: SecretType::DockerConfigJson,
        }
    }

    pub fn server(mut self, server: &str) -> Self {
        self.server = server.to_owned();
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    pub fn email(mut self, email: &str) -> Self {
        self.email = email.to_owned();
        self
    }

    pub fn append_hash(mut self, on: bool) -> Self {
        self.append_hash = on;
        self
    }

    pub fn secret_type(mut self, t: SecretType) -> Self {
        self.secret_type = t;
        self
    }

    /// The same secret as a one-registry [`MultiRegistrySecret`], which
    /// renders and validates it: one server is the general case's special case.
    fn as_multi(&self) -> MultiRegistrySecret {
        MultiRegistrySecret {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            registries: vec![
                RegistryCredentials::new(&self.server, &self.username, &self.password)
                    .email(&self.email),
            ],
            append_hash: self.append_hash,
            secret_type: self.secret_type,
        }
    }

    /// Refuses what kubectl would accept but the kubelet could not use.
    pub fn validate(&self) -> Result<(), SecretError> {
        self.as_multi().validate()
    }

    /// The secret's payload (`.dockerconfigjson` or `.dockercfg`) as kubectl
    /// would marshal it.
    pub fn payload(&self) -> String {
        self.as_multi().payload()
    }

    /// The payload base64-encoded, as it appears under `data`.
    pub fn data_value(&self) -> String {
        self.as_multi().data_value()
    }

    /// kubectl's `--append-hash` suffix for this secret (`hash.SecretHash`).
    pub fn hash_suffix(&self) -> String {
        self.as_multi().hash_suffix()
    }

    /// The name as printed: with `-HASH` when `append_hash` is set.
    pub fn final_name(&self) -> String {
        self.as_multi().final_name()
    }

    /// `-o yaml` output, after validation.
    pub fn to_yaml(&self) -> Result<String, SecretError> {
        self.as_multi().to_yaml()
    }

    /// `-o json` output, after validation.
    pub fn to_json(&self) -> Result<String, SecretError> {
        self.as_multi().to_json()
    }
}

/// Checks a Secret name, leaving room for the `--append-hash` suffix.
fn validate_secret_name(name: &str, append_hash: bool) -> Result<(), SecretError> {
    validate_object_name("secret", name)?;
    if append_hash && name.len() + 11 > MAX_NAME_LEN {
        return Err(SecretError::InvalidName {
            what: "secret",
            name: name.to_owned(),
            reason: format!(
                "with the 11-character hash suffix it exceeds {MAX_NAME_LEN} characters"
            ),
            suggestion: name[..MAX_NAME_LEN - 11]
                .trim_end_matches(['-', '.'])
                .to_owned(),
        });
    }
    Ok(())
}

/// Checks one registry's credentials as the kubelet will use them.
fn validate_credentials(server: &str, username: &str, password: &str) -> Result<(), SecretError> {
    if username.is_empty() {
        return Err(SecretError::EmptyUsername);
    }
    if username.contains(':') {
        return Err(SecretError::ColonInUsername(username.to_owned()));
    }
    if password.is_empty() {
        return Err(SecretError::EmptyPassword);
    }
    validate_registry_server(server)
}

fn render_yaml(name: &str, namespace: Option<&str>, t: SecretType, data_value: &str) -> String {
    let mut out = String::new();
    out.push_str("apiVersion: v1\ndata:\n");
    let _ = writeln!(out, "  {}: {}", scalar(t.data_key()), scalar(data_value));
    out.push_str("kind: Secret\nmetadata:\n  creationTimestamp: null\n");
    let _ = writeln!(out, "  name: {}", scalar(name));
    if let Some(ns) = namespace {
        let _ = writeln!(out, "  namespace: {}", scalar(ns));
    }
    let _ = writeln!(out, "type: {}", scalar(t.type_name()));
    out
}

fn render_json(name: &str, namespace: Option<&str>, t: SecretType, data_value: &str) -> String {
    let mut out = String::new();
    out.push_str("{\n    \"kind\": \"Secret\",\n    \"apiVersion\": \"v1\",\n");
    write_metadata_json(&mut out, name, namespace);
    out.push_str(",\n    \"data\": {\n");
    let _ = writeln!(
        out,
        "        {}: {}",
        gojson::string(t.data_key()),
        gojson::string(data_value)
    );
    out.push_str("    },\n");
    let _ = writeln!(out, "    \"type\": {}", gojson::string(t.type_name()));
    out.push_str("}\n");
    out
}

/// One registry's entry in a [`MultiRegistrySecret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// Used verbatim as the key of the entry.
    pub server: String,
    pub username: String,
    pub password: String,
    /// Omitted from the payload when empty.
    pub email: String,
}

impl RegistryCredentials {
    pub fn new(server: &str, username: &str, password: &str) -> Self {
        RegistryCredentials {
            server: server.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            email: String::new(),
        }
    }

    pub fn email(mut self, email: &str) -> Self {
        self.email = email.to_owned();
        self
    }
}

/// A pull secret for several registries at once, e.g. copied from a docker
/// `config.json`. kubectl's generator takes one server only; the equivalent
/// is `kubectl create secret docker-registry NAME
/// --from-file=.dockerconfigjson=FILE` with a file holding exactly
/// [`payload`](Self::payload), which this renders byte-for-byte. With one
/// registry it prints the same bytes as [`DockerRegistrySecret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiRegistrySecret {
    pub name: String,
    pub namespace: Option<String>,
    /// Entries in payload order.
    pub registries: Vec<RegistryCredentials>,
    pub append_hash: bool,
    pub secret_type: SecretType,
}

impl MultiRegistrySecret {
    /// A `kubernetes.io/dockerconfigjson` secret with no namespace and no hash.
    pub fn new(name: &str, registries: Vec<RegistryCredentials>) -> Self {
        MultiRegistrySecret {
            name: name.to_owned(),
            namespace: None,
            registries,
            append_hash: false,
            secret_type: SecretType::DockerConfigJson,
        }
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    pub fn append_hash(mut self, on: bool) -> Self {
        self.append_hash = on;
        self
    }

    pub fn secret_type(mut self, t: SecretType) -> Self {
        self.secret_type = t;
        self
    }

    /// Refuses what the kubelet could not use, and a server named twice
    /// (one entry would silently replace the other).
    pub fn validate(&self) -> Result<(), SecretError> {
        validate_secret_name(&self.name, self.append_hash)?;
        if let Some(ns) = &self.namespace {
            validate_namespace(ns)?;
        }
        if self.registries.is_empty() {
            return Err(SecretError::NoRegistries);
        }
        for (i, r) in self.registries.iter().enumerate() {
            if self.registries[..i].iter().any(|o| o.server == r.server) {
                return Err(SecretError::DuplicateServer {
                    server: r.server.clone(),
                });
            }
            validate_credentials(&r.server, &r.username, &r.password)?;
        }
        Ok(())
    }

    /// The payload: kubectl-style entries (`username`, `password`, `email`
    /// when set, `auth`) in order.
    pub fn payload(&self) -> String {
        let format = match self.secret_type {
            SecretType::DockerConfigJson => ConfigFormat::ConfigJson,
            SecretType::Dockercfg => ConfigFormat::Dockercfg,
        };
        let mut doc = DockerConfigFile::new(format);
        for r in &self.registries {
            doc.put_entry(AuthEntry::kubectl_style(
                &r.server,
                &r.username,
                &r.password,
                &r.email,
            ));
        }
        doc.to_json_compact()
    }

    pub fn data_value(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.payload())
    }

    /// kubectl's `--append-hash` suffix for this secret (`hash.SecretHash`).
    pub fn hash_suffix(&self) -> String {
        secret_hash(
            &self.name,
            self.secret_type.type_name(),
            &[(self.secret_type.data_key(), &self.data_value())],
        )
    }

    /// The name as printed: with kubectl's `-HASH` when `append_hash` is set.
    pub fn final_name(&self) -> String {
        if self.append_hash {
            format!("{}-{}", self.name, self.hash_suffix())
        } else {
            self.name.clone()
        }
    }

    /// `-o yaml` output, after validation.
    pub fn to_yaml(&self) -> Result<String, SecretError> {
        self.validate()?;
        Ok(render_yaml(
            &self.final_name(),
            self.namespace.as_deref(),
            self.secret_type,
            &self.data_value(),
        ))
    }

    /// `-o json` output, after validation.
    pub fn to_json(&self) -> Result<String, SecretError> {
        self.validate()?;
        Ok(render_json(
            &self.final_name(),
            self.namespace.as_deref(),
            self.secret_type,
            &self.data_value(),
        ))
    }
}

/// Several YAML manifests as one stream, separated by `---` lines, which
/// `kubectl apply -f -` reads as one object per document.
pub fn yaml_stream(documents: &[String]) -> String {
    documents.join("---\n")
}

/// Several JSON manifests (each as kubectl's `-o json` prints it) wrapped in
/// a `v1` `List`: one valid JSON document that `kubectl apply -f -` and
/// `kubectl create -f -` unpack into its items, and what kubectl itself
/// prints for several objects.
pub fn json_list(items: &[String]) -> String {
    let mut out = String::from("{\n    \"apiVersion\": \"v1\",\n    \"items\": [");
    for (i, item) in items.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        let lines: Vec<String> = item
            .trim_end_matches('\n')
            .lines()
            .map(|l| format!("        {l}"))
            .collect();
        out.push_str(&lines.join("\n"));
    }
    out.push_str(if items.is_empty() {
        "],\n"
    } else {
        "\n    ],\n"
    });
    out.push_str("    \"kind\": \"List\"\n}\n");
    out
}

fn write_metadata_json(out: &mut String, name: &str, namespace: Option<&str>) {
    out.push_str("    \"metadata\": {\n");
    let _ = writeln!(out, "        \"name\": {},", gojson::string(name));
    if let Some(ns) = namespace {
        let _ = writeln!(out, "        \"namespace\": {},", gojson::string(ns));
    }
    out.push_str("        \"creationTimestamp\": null\n    }");
}

/// kubectl's `hash.SecretHash`: sha256 of the compact JSON of
/// `{"data":…,"kind":"Secret","name":…,"type":…}` (keys sorted, data values
/// base64), first 10 hex digits with `0,1,3,a,e` mapped to `g,h,k,m,t` so
/// the suffix has no vowels.
pub fn secret_hash(name: &str, secret_type: &str, data_base64: &[(&str, &str)]) -> String {
    let mut data: Vec<_> = data_base64.to_vec();
    data.sort();
    let mut encoded = String::from("{\"data\":{");
    for (i, (k, v)) in data.iter().enumerate() {
        if i > 0 {
            encoded.push(',');
        }
        gojson::write_string(&mut encoded, k);
        encoded.push(':');
        gojson::write_string(&mut encoded, v);
    }
    encoded.push_str("},\"kind\":\"Secret\",\"name\":");
    gojson::write_string(&mut encoded, name);
    encoded.push_str(",\"type\":");
    gojson::write_string(&mut encoded, secret_type);
    encoded.push('}');
    let digest = Sha256::digest(encoded.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// A ServiceAccount manifest as `kubectl create serviceaccount NAME
/// [-n NS] --dry-run=client -o yaml` prints it, plus `imagePullSecrets`.
pub fn service_account_yaml(
    name: &str,
    namespace: Option<&str>,
    pull_secrets: &[&str],
) -> Result<String, SecretError> {
    validate_service_account(name, namespace, pull_secrets)?;
    let mut out = String::from("apiVersion: v1\n");
    if !pull_secrets.is_empty() {
        out.push_str("imagePullSecrets:\n");
        for s in pull_secrets {
            let _ = writeln!(out, "- name: {}", scalar(s));
        }
    }
    out.push_str("kind: ServiceAccount\nmetadata:\n  creationTimestamp: null\n");
    let _ = writeln!(out, "  name: {}", scalar(name));
    if let Some(ns) = namespace {
        let _ = writeln!(out, "  namespace: {}", scalar(ns));
    }
    Ok(out)
}

/// The same ServiceAccount as kubectl's `-o json` prints it.
pub fn service_account_json(
    name: &str,
    namespace: Option<&str>,
    pull_secrets: &[&str],
) -> Result<String, SecretError> {
    validate_service_account(name, namespace, pull_secrets)?;
    let mut out =
        String::from("{\n    \"kind\": \"ServiceAccount\",\n    \"apiVersion\": \"v1\",\n");
    write_metadata_json(&mut out, name, namespace);
    if !pull_secrets.is_empty() {
        out.push_str(",\n    \"imagePullSecrets\": [\n");
        for (i, s) in pull_secrets.iter().enumerate() {
            let sep = if i + 1 < pull_secrets.len() { "," } else { "" };
            let _ = writeln!(
                out,
                "        {{\n            \"name\": {}\n        }}{sep}",
                gojson::string(s)
            );
        }
        out.push_str("    ]");
    }
    out.push_str("\n}\n");
    Ok(out)
}

fn validate_service_account(
    name: &str,
    namespace: Option<&str>,
    pull_secrets: &[&str],
) -> Result<(), SecretError> {
    validate_object_name("serviceaccount", name)?;
    if let Some(ns) = namespace {
        validate_namespace(ns)?;
    }
    for s in pull_secrets {
        validate_object_name("secret", s)?;
    }
    Ok(())
}

/// A patch that sets a ServiceAccount's `imagePullSecrets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSecretsPatch {
    /// The resulting list: existing names in order, minus removed ones, plus
    /// new ones at the end, without duplicates.
    pub names: Vec<String>,
    /// Whether the list differs from the existing one.
    pub changed: bool,
    /// The patch body, e.g. `{"imagePullSecrets":[{"name":"a"}]}`, or
    /// `{"imagePullSecrets":null}` (which deletes the field) when no name is left.
    ///
    /// `ServiceAccount.imagePullSecrets` has no merge key, so a strategic
    /// merge patch replaces the list just like a JSON merge patch: the body
    /// must carry the whole list, and it works with `--type merge` and with
    /// kubectl's default strategic type alike.
    pub body: String,
}

/// The patch adding `add` to and removing `remove` from `existing`.
pub fn image_pull_secrets_patch(
    existing: &[&str],
    add: &[&str],
    remove: &[&str],
) -> Result<PullSecretsPatch, SecretError> {
    for s in add {
        validate_object_name("secret", s)?;
    }
    let mut names: Vec<String> = Vec::new();
    for n in existing.iter().chain(add) {
        if !remove.contains(n) && !names.iter().any(|x| x == n) {
            names.push((*n).to_owned());
        }
    }
    let changed = names.len() != existing.len() || names.iter().zip(existing).any(|(a, b)| a != b);
    if names.is_empty() {
        // `null` deletes the field; `[]` would leave an empty list behind.
        let body = "{\"imagePullSecrets\":null}".to_owned();
        return Ok(PullSecretsPatch {
            names,
            changed,
            body,
        });
    }
    let mut body = String::from("{\"imagePullSecrets\":[");
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str("{\"name\":");
        gojson::write_string(&mut body, n);
        body.push('}');
    }
    body.push_str("]}");
    Ok(PullSecretsPatch {
        names,
        changed,
        body,
    })
}

/// An RFC 6902 JSON patch appending one secret without reading the list
/// first (`kubectl patch --type json`). `list_exists` must say whether the
/// ServiceAccount already has an `imagePullSecrets` array: appending with
/// `/-` fails on a missing array, creating it replaces an existing one.
pub fn image_pull_secrets_json_patch(name: &str, list_exists: bool) -> Result<String, SecretError> {
    validate_object_name("secret", name)?;
    let value = format!("{{\"name\":{}}}", gojson::string(name));
    Ok(if list_exists {
        format!("[{{\"op\":\"add\",\"path\":\"/imagePullSecrets/-\",\"value\":{value}}}]")
    } else {
        format!("[{{\"op\":\"add\",\"path\":\"/imagePullSecrets\",\"value\":[{value}]}}]")
    })
}

/// The `kubectl patch serviceaccount` command line applying `patch`.
pub fn kubectl_patch_command(
    service_account: &str,
    namespace: Option<&str>,
    patch: &PullSecretsPatch,
) -> String {
    let ns = namespace.map(|n| format!(" -n {n}")).unwrap_or_default();
    // Validated names contain no quote, so single quotes are safe.
    format!(
        "kubectl patch serviceaccount {service_account}{ns} -p '{}'",
        patch.body
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bytes_match_kubectl() {
        let s = DockerRegistrySecret::new("my-secret", "u<>&", "p:w").server("reg.example.com");
        assert_eq!(
            s.payload(),
            r#"{"auths":{"reg.example.com":{"username":"u\u003c\u003e\u0026","password":"p:w","auth":"dTw+JjpwOnc="}}}"#
        );
        // Observed from kubectl 1.32.
        assert_eq!(
            s.data_value(),
            "eyJhdXRocyI6eyJyZWcuZXhhbXBsZS5jb20iOnsidXNlcm5hbWUiOiJ1XHUwMDNjXHUwMDNlXHUwMDI2IiwicGFzc3dvcmQiOiJwOnciLCJhdXRoIjoiZFR3K0pqcHdPbmM9In19fQ=="
        );
        let legacy = s.clone().secret_type(SecretType::Dockercfg).email("a@b");
        assert_eq!(
            legacy.payload(),
            r#"{"reg.example.com":{"username":"u\u003c\u003e\u0026","password":"p:w","email":"a@b","auth":"dTw+JjpwOnc="}}"#
        );
    }

    #[test]
    fn hash_suffix_matches_kubectl() {
        // Observed: kubectl create secret docker-registry my-secret --docker-username=u
        // --docker-password=p --docker-email=a@b -n ns1 --append-hash
        let s = DockerRegistrySecret::new("my-secret", "u", "p")
            .email("a@b")
            .namespace("ns1")
            .append_hash(true);
        assert_eq!(s.final_name(), "my-secret-8hthf474mm");
        // kubectl create secret generic s --type=kubernetes.io/dockercfg --from-literal=.dockercfg='{}' --append-hash
        assert_eq!(
            secret_hash("s", "kubernetes.io/dockercfg", &[(".dockercfg", "e30=")]),
            "5mt5g4kgcf"
        );
    }

    #[test]
    fn yaml_and_json_shapes() {
        let s = DockerRegistrySecret::new("123", "u", "p")
            .server("r.io")
            .namespace("on");
        let yaml = s.to_yaml().unwrap();
        assert!(yaml.starts_with("apiVersion: v1\ndata:\n  .dockerconfigjson: eyJ"));
        assert!(yaml.ends_with(
            "  name: \"123\"\n  namespace: \"on\"\ntype: kubernetes.io/dockerconfigjson\n"
        ));
        let json = s.to_json().unwrap();
        assert!(json.contains("\"metadata\": {\n        \"name\": \"123\",\n        \"namespace\": \"on\",\n        \"creationTimestamp\": null\n    },"));
        assert!(json.ends_with("    \"type\": \"kubernetes.io/dockerconfigjson\"\n}\n"));
    }

    #[test]
    fn refuses_unusable_input() {
        let base = DockerRegistrySecret::new("s", "u", "p").server("reg.io");
        let err = |s: DockerRegistrySecret| s.validate().unwrap_err();
        assert_eq!(err(base.clone().server("")), SecretError::EmptyServer);
        assert!(matches!(
            err(DockerRegistrySecret::new("s", "", "p")),
            SecretError::EmptyUsername
        ));
        assert!(matches!(
            err(DockerRegistrySecret::new("s", "u", "")),
            SecretError::EmptyPassword
        ));
        assert!(matches!(
            err(DockerRegistrySecret::new("s", "a:b", "p")),
            SecretError::ColonInUsername(_)
        ));
        let e = err(DockerRegistrySecret::new("My_Secret", "u", "p"));
        assert!(e.to_string().contains("try \"my-secret\""), "{e}");
        assert!(matches!(
            err(DockerRegistrySecret::new("", "u", "p")),
            SecretError::EmptyName { .. }
        ));
        assert!(matches!(
            err(base.clone().namespace("a.b")),
            SecretError::InvalidNamespace { .. }
        ));
        assert!(matches!(
            err(DockerRegistrySecret::new(&"a".repeat(250), "u", "p").append_hash(true)),
            SecretError::InvalidName { .. }
        ));
        for bad in [
            "ftp://reg.io",
            "reg.io:abc",
            "https://",
            "/just/a/path",
            "reg.io/app:1.0",
            "reg.io/app@sha256:abc",
            "reg..io",
            "reg_io.com",
            "reg.io/Team",
            "user@reg.io",
            "reg.io?x=1",
            "reg.io:",
            "re[g.io",
            "reg[0-9].io:5000",
            "a b",
            "reg?.io",
        ] {
            assert!(base.clone().server(bad).validate().is_err(), "{bad}");
        }
        for good in [
            DEFAULT_DOCKER_SERVER,
            "docker.io",
            "reg.io:5000",
            "http://reg.io:5000/",
            "https://reg.io/v2/",
            "reg.io/team/app",
            "*.dkr.ecr.us-east-1.amazonaws.com",
            "localhost:5000",
            "[::1]:5000",
            "127.0.0.1:5000",
        ] {
            assert_eq!(base.clone().server(good).validate(), Ok(()), "{good}");
        }
        let e = err(base.clone().server("reg.io/app:1.0"));
        assert!(e.to_string().contains("not an image reference"), "{e}");
    }

    #[test]
    fn service_account_manifests() {
        assert_eq!(
            service_account_yaml("builder", Some("team"), &[]).unwrap(),
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  creationTimestamp: null\n  name: builder\n  namespace: team\n"
        );
        assert_eq!(
            service_account_yaml("default", None, &["a", "b"]).unwrap(),
            "apiVersion: v1\nimagePullSecrets:\n- name: a\n- name: b\nkind: ServiceAccount\nmetadata:\n  creationTimestamp: null\n  name: default\n"
        );
        assert_eq!(
            service_account_json("builder", None, &[]).unwrap(),
            "{\n    \"kind\": \"ServiceAccount\",\n    \"apiVersion\": \"v1\",\n    \"metadata\": {\n        \"name\": \"builder\",\n        \"creationTimestamp\": null\n    }\n}\n"
        );
        let with = service_account_json("sa", None, &["x", "y"]).unwrap();
        assert!(with.contains("    },\n    \"imagePullSecrets\": [\n        {\n            \"name\": \"x\"\n        },\n        {\n            \"name\": \"y\"\n        }\n    ]\n}\n"), "{with}");
        assert!(service_account_yaml("Bad", None, &[]).is_err());
    }

    #[test]
    fn pull_secret_patches() {
        let p = image_pull_secrets_patch(&["a", "b"], &["c", "a"], &[]).unwrap();
        assert_eq!(
            p.body,
            r#"{"imagePullSecrets":[{"name":"a"},{"name":"b"},{"name":"c"}]}"#
        );
        assert!(p.changed);
        let same = image_pull_secrets_patch(&["a"], &["a"], &[]).unwrap();
        assert!(!same.changed);
        let rotated = image_pull_secrets_patch(&["old", "keep"], &["new"], &["old"]).unwrap();
        assert_eq!(rotated.names, ["keep", "new"]);
        let empty = image_pull_secrets_patch(&["a"], &[], &["a"]).unwrap();
        assert_eq!(empty.body, r#"{"imagePullSecrets":null}"#);
        assert_eq!(
            kubectl_patch_command("default", Some("app"), &p),
            r#"kubectl patch serviceaccount default -n app -p '{"imagePullSecrets":[{"name":"a"},{"name":"b"},{"name":"c"}]}'"#
        );
        assert_eq!(
            image_pull_secrets_json_patch("x", true).unwrap(),
            r#"[{"op":"add","path":"/imagePullSecrets/-","value":{"name":"x"}}]"#
        );
        assert_eq!(
            image_pull_secrets_json_patch("x", false).unwrap(),
            r#"[{"op":"add","path":"/imagePullSecrets","value":[{"name":"x"}]}]"#
        );
    }

    #[test]
    fn multi_registry_secret() {
        let one = MultiRegistrySecret::new(
            "s",
            vec![RegistryCredentials::new("reg.io:5000", "u", "p:w").email("e@x")],
        )
        .namespace("ns")
        .append_hash(true);
        let single = DockerRegistrySecret::new("s", "u", "p:w")
            .server("reg.io:5000")
            .email("e@x")
            .namespace("ns")
            .append_hash(true);
        // One registry: the same bytes as kubectl's generator.
        assert_eq!(one.to_yaml().unwrap(), single.to_yaml().unwrap());
        assert_eq!(one.to_json().unwrap(), single.to_json().unwrap());

        let two = MultiRegistrySecret::new(
            "s",
            vec![
                RegistryCredentials::new("b.io", "u1", "p1"),
                RegistryCredentials::new("a.io", "u2", "p2"),
            ],
        );
        assert_eq!(
            two.payload(),
            r#"{"auths":{"b.io":{"username":"u1","password":"p1","auth":"dTE6cDE="},"a.io":{"username":"u2","password":"p2","auth":"dTI6cDI="}}}"#
        );
        assert_eq!(
            two.clone().secret_type(SecretType::Dockercfg).payload(),
            r#"{"b.io":{"username":"u1","password":"p1","auth":"dTE6cDE="},"a.io":{"username":"u2","password":"p2","auth":"dTI6cDI="}}"#
        );

        let err = |s: MultiRegistrySecret| s.validate().unwrap_err();
        assert_eq!(
            err(MultiRegistrySecret::new("s", vec![])),
            SecretError::NoRegistries
        );
        let dup = MultiRegistrySecret::new(
            "s",
            vec![
                RegistryCredentials::new("a.io", "u", "p"),
                RegistryCredentials::new("a.io", "v", "q"),
            ],
        );
        assert!(matches!(err(dup), SecretError::DuplicateServer { .. }));
        let empty_password =
            MultiRegistrySecret::new("s", vec![RegistryCredentials::new("a.io", "u", "")]);
        assert_eq!(err(empty_password), SecretError::EmptyPassword);
        let bad_server =
            MultiRegistrySecret::new("s", vec![RegistryCredentials::new("a.io/x:1", "u", "p")]);
        assert!(matches!(
            err(bad_server),
            SecretError::ServerHasTagOrDigest { .. }
        ));
    }

    #[test]
    fn multi_document_output() {
        let docs = ["a: 1\n".to_owned(), "b: 2\n".to_owned()];
        assert_eq!(yaml_stream(&docs), "a: 1\n---\nb: 2\n");
        assert_eq!(yaml_stream(&docs[..1]), "a: 1\n");
        let items = [
            "{\n    \"a\": 1\n}\n".to_owned(),
            "{\n    \"b\": 2\n}\n".to_owned(),
        ];
        let list = json_list(&items);
        assert_eq!(
            list,
            "{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n        {\n            \"a\": 1\n        },\n        {\n            \"b\": 2\n        }\n    ],\n    \"kind\": \"List\"\n}\n"
        );
        assert_eq!(
            json_list(&[]),
            "{\n    \"apiVersion\": \"v1\",\n    \"items\": [],\n    \"kind\": \"List\"\n}\n"
        );
    }
}
