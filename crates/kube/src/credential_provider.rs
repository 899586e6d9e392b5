//! The kubelet credential provider exec plugin API
//! (`credentialprovider.kubelet.k8s.io`) and its configuration file
//! (`CredentialProviderConfig`, `kubelet.config.k8s.io/v1`).
//!
//! The kubelet writes a [`CredentialProviderRequest`] to the plugin's stdin
//! and reads a [`CredentialProviderResponse`] from its stdout. It first checks
//! that the response's `apiVersion` equals the configured one, then decodes
//! it **strictly**: unknown or duplicate fields make it discard the response
//! (so the response types deny unknown fields). Requests are read leniently,
//! since newer kubelets add fields (`serviceAccountToken`,
//! `serviceAccountAnnotations`). A provider is only asked about images that
//! one of its `matchImages` patterns matches, with the keyring's
//! `URLsMatch` rules; the keys of the returned `auth` map are matched again
//! the same way.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Deserializer, Serialize};

use crate::docker_config::Credentials;
pub use crate::go::duration::{DurationError, GoDuration};
use crate::go::json as gojson;
use crate::image_ref::ImageRef;
use crate::keyring::{self, CredentialSource, Keyring, Mismatch};

/// The plugin API versions the kubelet accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApiVersion {
    #[serde(rename = "credentialprovider.kubelet.k8s.io/v1")]
    V1,
    #[serde(rename = "credentialprovider.kubelet.k8s.io/v1beta1")]
    V1beta1,
    #[serde(rename = "credentialprovider.kubelet.k8s.io/v1alpha1")]
    V1alpha1,
}

impl ApiVersion {
    pub const ALL: [ApiVersion; 3] = [ApiVersion::V1, ApiVersion::V1beta1, ApiVersion::V1alpha1];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "credentialprovider.kubelet.k8s.io/v1",
            ApiVersion::V1beta1 => "credentialprovider.kubelet.k8s.io/v1beta1",
            ApiVersion::V1alpha1 => "credentialprovider.kubelet.k8s.io/v1alpha1",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `kind` of a request; only one value exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RequestKind {
    #[default]
    CredentialProviderRequest,
}

/// The `kind` of a response; only one value exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ResponseKind {
    #[default]
    CredentialProviderResponse,
}

/// What the kubelet sends on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialProviderRequest {
    pub kind: RequestKind,
    pub api_version: ApiVersion,
    /// The fully-qualified repository without tag or digest
    /// (`docker.io/library/nginx`, `123.dkr.ecr.us-east-1.amazonaws.com/app`).
    pub image: String,
    /// A bound ServiceAccount token, when `tokenAttributes` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_token: Option<String>,
    /// Selected annotations of the pod's ServiceAccount.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub service_account_annotations: BTreeMap<String, String>,
}

impl CredentialProviderRequest {
    /// The request the kubelet sends for `image`.
    pub fn for_image(api_version: ApiVersion, image: &ImageRef) -> Self {
        CredentialProviderRequest {
            kind: RequestKind::CredentialProviderRequest,
            api_version,
            image: image.name(),
            service_account_token: None,
            service_account_annotations: BTreeMap::new(),
        }
    }

    /// Reads a request (lenient about fields this version does not know).
    pub fn from_json(text: &str) -> Result<Self, ProviderError> {
        serde_json::from_str(text).map_err(|e| ProviderError::Decode(describe(&e)))
    }
}

/// Which cache entry the kubelet stores the response under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheKeyType {
    /// Only this repository (`registry[:port]/path`).
    Image,
    /// Every image of the registry (`host[:port]`).
    Registry,
    /// Every image the provider matches.
    Global,
}

/// One credential in a response; only username and password exist.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a plugin prints on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialProviderResponse {
    pub kind: ResponseKind,
    pub api_version: ApiVersion,
    pub cache_key_type: CacheKeyType,
    /// `None` uses the provider's `defaultCacheDuration`; zero disables caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration: Option<GoDuration>,
    /// Credentials by image pattern (same matching rules as `matchImages`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub auth: BTreeMap<String, AuthConfig>,
}

/// Problems with plugin input or output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "apiVersion from credential plugin response did not match expected apiVersion:{expected}, \
         actual apiVersion:{actual}"
    )]
    ApiVersionMismatch {
        expected: ApiVersion,
        actual: String,
    },
    #[error("error reading GVK from response: {0}")]
    NoTypeMeta(String),
    #[error(
        "error decoding credential provider plugin response from stdout: {0} \
         (the kubelet decodes strictly and then ignores the plugin)"
    )]
    Decode(String),
}

impl CredentialProviderResponse {
    /// A response carrying `auth`, for a plugin to print.
    pub fn new(
        api_version: ApiVersion,
        cache_key_type: CacheKeyType,
        cache_duration: Option<GoDuration>,
    ) -> Self {
        CredentialProviderResponse {
            kind: ResponseKind::CredentialProviderResponse,
            api_version,
            cache_key_type,
            cache_duration,
            auth: BTreeMap::new(),
        }
    }

    /// Reads plugin output the way the kubelet does for a provider
    /// configured with `expected`: apiVersion check first, then strict decoding.
    pub fn from_plugin_output(text: &str, expected: ApiVersion) -> Result<Self, ProviderError> {
        #[derive(Deserialize)]
        struct TypeMeta {
            #[serde(default, rename = "apiVersion")]
            api_version: String,
        }
        let meta: TypeMeta =
            serde_json::from_str(text).map_err(|e| ProviderError::NoTypeMeta(describe(&e)))?;
        if meta.api_version != expected.as_str() {
            return Err(ProviderError::ApiVersionMismatch {
                expected,
                actual: meta.api_version,
            });
        }
        serde_json::from_str(text).map_err(|e| ProviderError::Decode(describe(&e)))
    }

    /// Compact JSON for stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    /// The cache key the kubelet stores this response under for `repo`
    /// (`Registry` keeps the text before the first `/`).
    pub fn cache_key(&self, repo: &str) -> String {
        match self.cache_key_type {
            CacheKeyType::Image => repo.to_owned(),
            CacheKeyType::Registry => repo.split('/').next().unwrap_or_default().to_owned(),
            CacheKeyType::Global => "global".to_owned(),
        }
    }

    /// The response as the keyring the kubelet builds from it.
    pub fn to_keyring(&self, provider_name: &str) -> Keyring {
        let mut k = Keyring::new();
        for (pattern, auth) in &self.auth {
            k.add_credentials(
                CredentialSource::Plugin {
                    name: provider_name.to_owned(),
                },
                pattern,
                Credentials {
                    username: auth.username.clone(),
                    password: auth.password.clone(),
                    email: String::new(),
                },
            );
        }
        k
    }
}

/// The widest `cacheKeyType` that stays correct for a plugin choosing one
/// credential by `patterns` (first match wins): `Registry` when every pattern
/// is a bare host, because the answer is then the same for every image of a
/// registry; `Image` as soon as one pattern has a path, since a cached
/// per-registry answer would otherwise be reused for a repository another
/// pattern selects (the kubelet does not call the plugin on a cache hit).
pub fn cache_key_type_for<'a>(patterns: impl IntoIterator<Item = &'a str>) -> CacheKeyType {
    if patterns.into_iter().any(|p| p.contains('/')) {
        CacheKeyType::Image
    } else {
        CacheKeyType::Registry
    }
}

impl CredentialProviderResponse {
    /// One credential for `image` (the request's fully-qualified repository),
    /// keyed so that it matches exactly what the cache entry covers: the
    /// registry (`host[:port]`) for `Registry` and `Global`, the repository
    /// for `Image`.
    pub fn single_credential(
        api_version: ApiVersion,
        image: &str,
        cache_key_type: CacheKeyType,
        cache_duration: Option<GoDuration>,
        username: &str,
        password: &str,
    ) -> Self {
        let key = match cache_key_type {
            CacheKeyType::Image => image,
            CacheKeyType::Registry | CacheKeyType::Global => {
                image.split('/').next().unwrap_or_default()
            }
        };
        let mut r = CredentialProviderResponse::new(api_version, cache_key_type, cache_duration);
        r.auth.insert(
            key.to_owned(),
            AuthConfig {
                username: username.to_owned(),
                password: password.to_owned(),
            },
        );
        r
    }

    /// The answer for an image the plugin has no credential for: no `auth`
    /// (the kubelet then tries other credentials or pulls anonymously) and
    /// not cached, so a fixed plugin configuration applies at the next pull.
    pub fn no_credentials(api_version: ApiVersion) -> Self {
        CredentialProviderResponse::new(api_version, CacheKeyType::Image, Some(GoDuration::ZERO))
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A decoding error without echoing values, which may be secrets.
fn describe(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        format!(
            "a field has the wrong type at line {} column {}",
            e.line(),
            e.column()
        )
    } else {
        msg
    }
}

/// Whether a `matchImages` pattern applies to `image` (`URLsMatchStr`).
pub fn match_image(pattern: &str, image: &ImageRef) -> bool {
    keyring::urls_match(pattern, &image.name())
}

/// Why a `matchImages` pattern does not apply to `image` (empty when it does).
pub fn explain_match_image(pattern: &str, image: &ImageRef) -> Vec<Mismatch> {
    keyring::explain_match(pattern, &image.name())
}

/// `tokenAttributes.cacheType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenCacheType {
    ServiceAccount,
    Token,
}

/// `tokenAttributes`: ask the kubelet for a ServiceAccount token (KEP-4412).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenAttributes {
    pub service_account_token_audience: String,
    pub cache_type: TokenCacheType,
    pub require_service_account: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_service_account_annotation_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_service_account_annotation_keys: Vec<String>,
}

/// An environment variable for the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecEnvVar {
    pub name: String,
    pub value: String,
}

/// One provider of a `CredentialProviderConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialProvider {
    /// The executable's name in `--image-credential-provider-bin-dir`.
    pub name: String,
    pub match_images: Vec<String>,
    pub default_cache_duration: GoDuration,
    pub api_version: ApiVersion,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<ExecEnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_attributes: Option<TokenAttributes>,
}

impl CredentialProvider {
    /// Whether the kubelet would run this provider for `image`.
    pub fn matches(&self, image: &ImageRef) -> bool {
        self.match_images.iter().any(|p| match_image(p, image))
    }
}

/// The kubelet's `--image-credential-provider-config` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialProviderConfig {
    pub api_version: String,
    pub kind: String,
    pub providers: Vec<CredentialProvider>,
}

/// The config file's `apiVersion` berth writes.
pub const CONFIG_API_VERSION: &str = "kubelet.config.k8s.io/v1";

impl CredentialProviderConfig {
    pub fn new(providers: Vec<CredentialProvider>) -> Self {
        CredentialProviderConfig {
            api_version: CONFIG_API_VERSION.to_owned(),
            kind: "CredentialProviderConfig".to_owned(),
            providers,
        }
    }

    /// A ready-to-edit example: one provider for `registry` and its subdomains.
    pub fn example(provider_name: &str, registry: &str) -> Self {
        CredentialProviderConfig::new(vec![CredentialProvider {
            name: provider_name.to_owned(),
            match_images: vec![registry.to_owned(), format!("*.{registry}")],
            default_cache_duration: GoDuration::from_secs(12 * 3600),
            api_version: ApiVersion::V1,
            args: vec!["get-credentials".to_owned()],
            env: Vec::new(),
            token_attributes: None,
        }])
    }

    /// The kubelet's `validateCredentialProviderConfig`, as field errors.
    /// `sa_token_gate` is the `KubeletServiceAccountTokenForCredentialProviders` feature gate.
    pub fn validate(&self, sa_token_gate: bool) -> Vec<String> {
        let mut errs = Vec::new();
        if self.kind != "CredentialProviderConfig" {
            errs.push(format!("failed to decode {:?} (wrong Kind)", self.kind));
        }
        if !self.api_version.starts_with("kubelet.config.k8s.io/") {
            errs.push(format!(
                "unexpected apiVersion {:?}: use {CONFIG_API_VERSION}",
                self.api_version
            ));
        }
        if self.providers.is_empty() {
            errs.push(
                "providers: Required value: at least 1 item in plugins is required".to_owned(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.providers {
            let name = &p.name;
            if name.contains('/') {
                errs.push(format!(
                    "providers.name: Invalid value: {name:?}: provider name cannot contain '/'"
                ));
            }
            if name.contains(' ') {
                errs.push(format!(
                    "providers.name: Invalid value: {name:?}: provider name cannot contain spaces"
                ));
            }
            if name == "." || name == ".." {
                errs.push(format!(
                    "providers.name: Invalid value: {name:?}: provider name cannot be '{name}'"
                ));
            }
            if !seen.insert(name.clone()) {
                errs.push(format!("providers.name: Duplicate value: {name:?}"));
            }
            if p.match_images.is_empty() {
                errs.push("providers.matchImages: Required value: at least 1 item in matchImages is required".to_owned());
            }
            for m in &p.match_images {
                if let Err(e) = crate::go::url::parse(&format!("https://{m}")) {
                    errs.push(format!(
                        "providers.matchImages: Invalid value: {m:?}: match image is invalid: {e}"
                    ));
                }
            }
            if p.default_cache_duration.is_negative() {
                errs.push(format!(
                    "providers.defaultCacheDuration: Invalid value: {:?}: must be greater than or equal to 0",
                    p.default_cache_duration.to_string()
                ));
            }
            if let Some(t) = &p.token_attributes {
                if !sa_token_gate {
                    errs.push(
                        "providers.tokenAttributes: Forbidden: tokenAttributes is not supported when \
                         KubeletServiceAccountTokenForCredentialProviders feature gate is disabled"
                            .to_owned(),
                    );
                }
                if t.service_account_token_audience.is_empty() {
                    errs.push(
                        "providers.tokenAttributes.serviceAccountTokenAudience: Required value"
                            .to_owned(),
                    );
                }
                if p.api_version != ApiVersion::V1 {
                    errs.push(format!(
                        "providers.tokenAttributes: Forbidden: tokenAttributes is only supported for {} API version",
                        ApiVersion::V1
                    ));
                }
                if !t.require_service_account
                    && !t.required_service_account_annotation_keys.is_empty()
                {
                    errs.push(
                        "providers.tokenAttributes.requiredServiceAccountAnnotationKeys: Forbidden: \
                         requireServiceAccount cannot be false when requiredServiceAccountAnnotationKeys is set"
                            .to_owned(),
                    );
                }
                let both: Vec<_> = t
                    .required_service_account_annotation_keys
                    .iter()
                    .filter(|k| t.optional_service_account_annotation_keys.contains(k))
                    .collect();
                if !both.is_empty() {
                    errs.push(format!(
                        "providers.tokenAttributes: Invalid value: {both:?}: annotation keys cannot be both required and optional"
                    ));
                }
            }
        }
        errs
    }

    /// Patterns that parse but can never match what their author likely meant.
    pub fn lint(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.providers {
            for m in &p.match_images {
                if m.contains("://") {
                    out.push(format!(
                        "{}: matchImages {m:?} has a scheme; patterns are schemeless, so it never matches",
                        p.name
                    ));
                }
                let path = m.split_once('/').map(|(_, path)| path).unwrap_or_default();
                if path.contains(['*', '?', '[']) {
                    out.push(format!(
                        "{}: matchImages {m:?} has a glob in its path; only host labels are globs, \
                         the path is a literal prefix",
                        p.name
                    ));
                }
            }
        }
        out
    }

    /// The config as YAML (strings double-quoted so globs like `*.x` stay strings).
    pub fn to_yaml(&self) -> String {
        let q = gojson::string;
        let mut out = String::new();
        let _ = writeln!(out, "apiVersion: {}", q(&self.api_version));
        let _ = writeln!(out, "kind: {}", q(&self.kind));
        out.push_str("providers:\n");
        for p in &self.providers {
            let _ = writeln!(out, "  - name: {}", q(&p.name));
            out.push_str("    matchImages:\n");
            for m in &p.match_images {
                let _ = writeln!(out, "      - {}", q(m));
            }
            let _ = writeln!(
                out,
                "    defaultCacheDuration: {}",
                q(&p.default_cache_duration.to_string())
            );
            let _ = writeln!(out, "    apiVersion: {}", q(p.api_version.as_str()));
            if !p.args.is_empty() {
                out.push_str("    args:\n");
                for a in &p.args {
                    let _ = writeln!(out, "      - {}", q(a));
                }
            }
            if !p.env.is_empty() {
                out.push_str("    env:\n");
                for e in &p.env {
                    let _ = writeln!(
                        out,
                        "      - name: {}\n        value: {}",
                        q(&e.name),
                        q(&e.value)
                    );
                }
            }
            if let Some(t) = &p.token_attributes {
                out.push_str("    tokenAttributes:\n");
                let _ = writeln!(
                    out,
                    "      serviceAccountTokenAudience: {}",
                    q(&t.service_account_token_audience)
                );
                let cache = match t.cache_type {
                    TokenCacheType::ServiceAccount => "ServiceAccount",
                    TokenCacheType::Token => "Token",
                };
                let _ = writeln!(out, "      cacheType: {cache}");
                let _ = writeln!(
                    out,
                    "      requireServiceAccount: {}",
                    t.require_service_account
                );
                for (field, keys) in [
                    (
                        "requiredServiceAccountAnnotationKeys",
                        &t.required_service_account_annotation_keys,
                    ),
                    (
                        "optionalServiceAccountAnnotationKeys",
                        &t.optional_service_account_annotation_keys,
                    ),
                ] {
                    if !keys.is_empty() {
                        let _ = writeln!(out, "      {field}:");
                        for k in keys {
                            let _ = writeln!(out, "        - {}", q(k));
                        }
                    }
                }
            }
        }
        out
    }

    /// The config as indented JSON (the kubelet accepts JSON too).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn request_round_trip() {
        let req = CredentialProviderRequest::for_image(ApiVersion::V1, &image("nginx:1"));
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"docker.io/library/nginx"}"#
        );
        let with_sa = CredentialProviderRequest::from_json(
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"r.io/a","serviceAccountToken":"tok","serviceAccountAnnotations":{"k":"v"},"futureField":1}"#,
        )
        .unwrap();
        assert_eq!(with_sa.service_account_token.as_deref(), Some("tok"));
        assert_eq!(with_sa.service_account_annotations["k"], "v");
        for v in ["v1alpha1", "v1beta1"] {
            let text = format!(
                r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/{v}","kind":"CredentialProviderRequest","image":"x"}}"#
            );
            assert!(CredentialProviderRequest::from_json(&text).is_ok());
        }
        assert!(
            CredentialProviderRequest::from_json(
                r#"{"apiVersion":"v1","kind":"CredentialProviderRequest","image":"x"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn response_is_decoded_strictly() {
        let ok = r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"6h0m0s","auth":{"*.dkr.ecr.*.amazonaws.com":{"username":"AWS","password":"s3cr3t-value"}}}"#;
        let r = CredentialProviderResponse::from_plugin_output(ok, ApiVersion::V1).unwrap();
        assert_eq!(r.cache_duration, Some(GoDuration::from_secs(6 * 3600)));
        assert_eq!(r.to_json(), ok);
        assert_eq!(
            r.cache_key("1.dkr.ecr.us-east-1.amazonaws.com/app"),
            "1.dkr.ecr.us-east-1.amazonaws.com"
        );

        let err =
            CredentialProviderResponse::from_plugin_output(ok, ApiVersion::V1beta1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "apiVersion from credential plugin response did not match expected \
             apiVersion:credentialprovider.kubelet.k8s.io/v1beta1, actual apiVersion:credentialprovider.kubelet.k8s.io/v1"
        );
        for bad in [
            ok.replace("\"auth\":", "\"extra\":1,\"auth\":"),
            ok.replace("\"username\"", "\"user\""),
            ok.replace(
                "\"username\":\"AWS\"",
                "\"username\":\"AWS\",\"identitytoken\":\"x\"",
            ),
            ok.replace("Registry", "Repository"),
            ok.replace("6h0m0s", "6 hours"),
            ok.replace("CredentialProviderResponse", "CredentialProviderRequest"),
            ok.replace("\"cacheKeyType\":\"Registry\",", ""),
            ok.replace("\"cacheKeyType\"", "\"CacheKeyType\""),
            ok.replace(
                "\"cacheDuration\":\"6h0m0s\"",
                "\"cacheDuration\":\"6h0m0s\",\"cacheDuration\":\"1h\"",
            ),
            ok.replace("\"s3cr3t-value\"", "5"),
            ok.replace("\"AWS\"", "[\"s3cr3t-value\"]"),
        ] {
            let e =
                CredentialProviderResponse::from_plugin_output(&bad, ApiVersion::V1).unwrap_err();
            assert!(matches!(e, ProviderError::Decode(_)), "{bad}: {e}");
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
        }
        let minimal = r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1alpha1","cacheKeyType":"Global","auth":null}"#;
        let r =
            CredentialProviderResponse::from_plugin_output(minimal, ApiVersion::V1alpha1).unwrap();
        assert!(r.auth.is_empty() && r.cache_duration.is_none());
        assert_eq!(r.cache_key("x/y"), "global");
    }

    #[test]
    fn response_auth_keys_match_like_the_keyring() {
        let mut r = CredentialProviderResponse::new(
            ApiVersion::V1,
            CacheKeyType::Image,
            Some(GoDuration::ZERO),
        );
        r.auth.insert(
            "*.registry.io".into(),
            AuthConfig {
                username: "wild".into(),
                password: "p".into(),
            },
        );
        r.auth.insert(
            "a.registry.io/team".into(),
            AuthConfig {
                username: "team".into(),
                password: "p".into(),
            },
        );
        let k = r.to_keyring("berth");
        let users: Vec<_> = k
            .lookup(&image("a.registry.io/team/app"))
            .into_iter()
            .map(|m| (m.entry.credentials.username, m.entry.source.to_string()))
            .collect();
        assert_eq!(
            users,
            [
                ("team".into(), "credential provider berth".into()),
                ("wild".into(), "credential provider berth".into())
            ]
        );
        assert_eq!(
            r.to_json(),
            r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Image","cacheDuration":"0s","auth":{"*.registry.io":{"username":"wild","password":"p"},"a.registry.io/team":{"username":"team","password":"p"}}}"#
        );
    }

    #[test]
    fn match_images_like_the_kubelet() {
        let yes = [
            (
                "*.dkr.ecr.*.amazonaws.com",
                "123.dkr.ecr.us-east-1.amazonaws.com/app",
            ),
            ("registry.io:8080/path", "registry.io:8080/path/app"),
            ("registry.io:8080/path", "registry.io:8080/pathological"),
            ("*.k8s.io", "registry.k8s.io/pause"),
            ("docker.io", "nginx"),
        ];
        for (p, i) in yes {
            assert!(match_image(p, &image(i)), "{p} vs {i}");
        }
        let no = [
            ("*.io", "registry.k8s.io/pause"),
            ("*.example.com", "example.com/a"),
            ("registry.io", "registry.io:8080/app"),
            ("registry.io:8080", "registry.io/app"),
            ("harbor.example.com/*", "harbor.example.com/proj/app"),
            ("https://registry.io", "registry.io/app"),
            ("index.docker.io", "nginx"),
        ];
        for (p, i) in no {
            assert!(!match_image(p, &image(i)), "{p} vs {i}");
            assert!(!explain_match_image(p, &image(i)).is_empty());
        }
    }

    #[test]
    fn config_rendering_and_validation() {
        let cfg =
            CredentialProviderConfig::example("berth-credential-provider", "registry.example.com");
        assert!(cfg.validate(false).is_empty());
        assert!(cfg.lint().is_empty());
        assert_eq!(
            cfg.to_yaml(),
            "apiVersion: \"kubelet.config.k8s.io/v1\"\nkind: \"CredentialProviderConfig\"\nproviders:\n  \
             - name: \"berth-credential-provider\"\n    matchImages:\n      - \"registry.example.com\"\n      \
             - \"*.registry.example.com\"\n    defaultCacheDuration: \"12h0m0s\"\n    \
             apiVersion: \"credentialprovider.kubelet.k8s.io/v1\"\n    args:\n      - \"get-credentials\"\n"
        );
        let back: CredentialProviderConfig = serde_json::from_str(&cfg.to_json()).unwrap();
        assert_eq!(back, cfg);

        let mut bad = cfg.clone();
        let mut dup = bad.providers[0].clone();
        dup.match_images = vec![
            "reg:abc".into(),
            "harbor.io/*".into(),
            "https://x.io".into(),
        ];
        dup.default_cache_duration = GoDuration::from_secs(-1);
        dup.api_version = ApiVersion::V1beta1;
        dup.token_attributes = Some(TokenAttributes {
            service_account_token_audience: String::new(),
            cache_type: TokenCacheType::Token,
            require_service_account: false,
            required_service_account_annotation_keys: vec!["a".into()],
            optional_service_account_annotation_keys: vec!["a".into()],
        });
        bad.providers.push(dup);
        bad.providers.push(CredentialProvider {
            name: "a/b c".into(),
            match_images: vec![],
            ..cfg.providers[0].clone()
        });
        let errs = bad.validate(false);
        for want in [
            "Duplicate value",
            "match image is invalid: invalid port \":abc\" after host",
            "must be greater than or equal to 0",
            "feature gate is disabled",
            "serviceAccountTokenAudience: Required value",
            "only supported for credentialprovider.kubelet.k8s.io/v1 API version",
            "requireServiceAccount cannot be false",
            "both required and optional",
            "cannot contain '/'",
            "cannot contain spaces",
            "at least 1 item in matchImages",
        ] {
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "missing {want:?} in {errs:#?}"
            );
        }
        let lints = bad.lint();
        assert_eq!(lints.len(), 2, "{lints:?}");
        let with_token = bad.providers[1].clone();
        let yaml = CredentialProviderConfig::new(vec![with_token]).to_yaml();
        assert!(yaml.contains("    tokenAttributes:\n      serviceAccountTokenAudience: \"\"\n      cacheType: Token\n      requireServiceAccount: false\n      requiredServiceAccountAnnotationKeys:\n        - \"a\"\n"), "{yaml}");
    }

    #[test]
    fn plugin_answers() {
        assert_eq!(
            cache_key_type_for(["reg.io", "*.reg.io:5000"]),
            CacheKeyType::Registry
        );
        assert_eq!(
            cache_key_type_for(["reg.io", "reg.io/team"]),
            CacheKeyType::Image
        );
        let r = CredentialProviderResponse::single_credential(
            ApiVersion::V1,
            "reg.io:5000/team/app",
            CacheKeyType::Registry,
            Some(GoDuration::from_secs(3600)),
            "u",
            "p:w",
        );
        assert_eq!(
            r.to_json(),
            r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"1h0m0s","auth":{"reg.io:5000":{"username":"u","password":"p:w"}}}"#
        );
        let image = CredentialProviderResponse::single_credential(
            ApiVersion::V1beta1,
            "reg.io/team/app",
            CacheKeyType::Image,
            None,
            "u",
            "p",
        );
        assert_eq!(
            image.to_json(),
            r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","cacheKeyType":"Image","auth":{"reg.io/team/app":{"username":"u","password":"p"}}}"#
        );
        // Every key matches the image it was asked for, so the kubelet uses it.
        for resp in [&r, &image] {
            let repo = if resp.cache_key_type == CacheKeyType::Image {
                "reg.io/team/app"
            } else {
                "reg.io:5000/team/app"
            };
            assert_eq!(resp.to_keyring("berth").lookup_repo(repo).len(), 1);
        }
        assert_eq!(
            CredentialProviderResponse::no_credentials(ApiVersion::V1).to_json(),
            r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Image","cacheDuration":"0s"}"#
        );
    }
}
