//! berth-kube: how Kubernetes finds and uses image pull credentials, as pure
//! functions with no cluster access, network or HTTP.
//!
//! This crate owns berth's model of the Kubernetes side of a private
//! registry, mirrored from the kubelet, the API server and kubectl so that
//! berth can predict and explain what a cluster will do:
//!
//! - [`docker_config`]: Docker `config.json` and legacy `.dockercfg`, read the
//!   way the kubelet reads pull secrets and edited without losing unknown
//!   members (for `berth login`).
//! - [`cred_helper`]: where the docker CLI finds one registry's credentials
//!   (`credsStore`, `credHelpers`, `auths`) and the credential-helper protocol.
//! - [`image_ref`]: image reference normalization (`nginx` →
//!   `docker.io/library/nginx`), exactly as distribution/reference does it.
//! - [`keyring`]: the kubelet's credential keyring: key normalization,
//!   `URLsMatch` globbing, ordering, the Docker Hub fallback, and
//!   explanations of near misses (for `berth doctor`).
//! - [`pull_policy`]: `imagePullPolicy` defaulting.
//! - [`secret`]: `kubernetes.io/dockerconfigjson` / `dockercfg` Secrets
//!   byte-identical to `kubectl create secret docker-registry`, validation
//!   that refuses unusable input, and ServiceAccount manifests and patches.
//! - [`credential_provider`]: the kubelet credential provider plugin API and
//!   its `CredentialProviderConfig`.
//!
//! Go behaviour these depend on (URL parsing, `filepath.Match`, JSON
//! escaping, duration text, YAML quoting) is re-implemented in a private
//! module and tested against Go's own tables.

pub mod cred_helper;
pub mod credential_provider;
pub mod docker_config;
mod go;
pub mod image_ref;
pub mod keyring;
pub mod pull_policy;
pub mod secret;

pub use go::url::UrlError;
