//! berth-doctor: says exactly why a pod will not pull its image, and how to
//! fix it.
//!
//! This crate owns `berth doctor`'s logic: reading manifests and `kubectl
//! get -o yaml` output ([`input`], [`model`]), simulating the API server's
//! and the kubelet's pull decisions on them with `berth-kube` ([`analyze`]),
//! recognising the kubelet's and containerd's failure texts in Events
//! ([`events`]), probing registries with `berth-client` ([`probe`]), and
//! presenting findings ([`report`]) with what to do about them ([`fix`]).
//! The command line lives in the `berth` crate; everything here is callable
//! and testable without it.

pub mod analyze;
pub mod events;
pub mod fix;
pub mod input;
pub mod model;
pub mod plugin;
pub mod probe;
pub mod report;

use std::path::PathBuf;

use berth_kube::credential_provider::CredentialProviderConfig;
use berth_kube::docker_config::DockerConfigFile;

pub use analyze::{Analysis, NodeConfig, PullPlan, analyze};
pub use report::{Finding, Reason, Severity, Subject};

/// Exit code for input doctor cannot use.
pub const EXIT_UNUSABLE_INPUT: u8 = 2;

/// Why the input cannot be used (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin} is not valid YAML or JSON: {message}")]
    Syntax { origin: String, message: String },
    #[error(
        "no workload or Event found in the input ({skipped} other documents skipped); pass \
         manifests or `kubectl get pods,deployments,serviceaccounts,secrets -A -o yaml` output"
    )]
    NothingToCheck { skipped: usize },
    #[error("node docker config {path}: {message}")]
    NodeConfig { path: PathBuf, message: String },
    #[error(
        "credential provider config {path}: {message}; it must be a kubelet \
         CredentialProviderConfig (apiVersion kubelet.config.k8s.io/v1)"
    )]
    ProviderConfig { path: PathBuf, message: String },
    #[error(transparent)]
    Client(#[from] berth_client::ClientError),
}

/// Reads the node's `config.json` (or legacy `.dockercfg`).
pub fn read_node_docker_config(path: &std::path::Path) -> Result<NodeConfigFile, DoctorError> {
    let text = std::fs::read_to_string(path).map_err(|source| DoctorError::Read {
        path: path.to_owned(),
        source,
    })?;
    let err = |e: &dyn std::fmt::Display| DoctorError::NodeConfig {
        path: path.to_owned(),
        message: e.to_string(),
    };
    // `.dockercfg` is the bare map; config.json has "auths".
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(&e))?;
    let format = if value.get("auths").is_some() || path.ends_with("config.json") {
        berth_kube::docker_config::ConfigFormat::ConfigJson
    } else {
        berth_kube::docker_config::ConfigFormat::Dockercfg
    };
    let cfg = DockerConfigFile::parse(&text, format).map_err(|e| err(&e))?;
    Ok((path.display().to_string(), cfg))
}

/// A node config with the path it came from.
pub type NodeConfigFile = (String, DockerConfigFile);

/// Reads a kubelet `CredentialProviderConfig` (YAML or JSON).
pub fn read_provider_config(
    path: &std::path::Path,
) -> Result<CredentialProviderConfig, DoctorError> {
    let text = std::fs::read_to_string(path).map_err(|source| DoctorError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|e| DoctorError::ProviderConfig {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads the inputs and runs the offline analysis.
pub fn check(
    paths: &[PathBuf],
    stdin: &mut dyn std::io::Read,
    default_namespace: &str,
    node: &NodeConfig,
) -> Result<Analysis, DoctorError> {
    let docs = input::read_paths(paths, stdin)?;
    let inv = model::Inventory::from_documents(&docs, default_namespace);
    if inv.workloads.is_empty() && inv.events.is_empty() {
        return Err(DoctorError::NothingToCheck {
            skipped: inv.skipped.len() + inv.secrets.len() + inv.service_accounts.len(),
        });
    }
    let mut a = analyze(&inv, node);
    report::sort(&mut a.findings);
    Ok(a)
}
