//! The Kubernetes objects doctor understands, read from JSON values:
//! workloads with their pod templates, Secrets, ServiceAccounts and Events.
//! Only the fields that decide an image pull are kept.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::input::Document;

/// A container of a pod template or pod.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LocalObjectReference {
    #[serde(default)]
    pub name: String,
}

/// The parts of a PodSpec that matter for pulls.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Vec<Container>,
    #[serde(default)]
    pub ephemeral_containers: Vec<Container>,
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`, still honoured by the API server.
    #[serde(default)]
    pub service_account: Option<String>,
}

impl PodSpec {
    /// The ServiceAccount the pod runs as (`default` when unset).
    pub fn service_account(&self) -> &str {
        self.service_account_name
            .as_deref()
            .or(self.service_account.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
    }

    /// Every container with its field name, in spec order.
    pub fn all_containers(&self) -> impl Iterator<Item = (&'static str, &Container)> {
        self.init_containers
            .iter()
            .map(|c| ("initContainers", c))
            .chain(self.containers.iter().map(|c| ("containers", c)))
            .chain(
                self.ephemeral_containers
                    .iter()
                    .map(|c| ("ephemeralContainers", c)),
            )
    }
}

/// A container status's waiting state, from a live Pod.
#[derive(Debug, Clone)]
pub struct WaitingState {
    pub container: String,
    pub reason: String,
    pub message: String,
}

/// A Pod or an object with a pod template.
#[derive(Debug, Clone)]
pub struct Workload {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub spec: PodSpec,
    /// A Pod read back from a cluster: admission already copied (or did not
    /// copy) its ServiceAccount's pull secrets.
    pub live: bool,
    pub waiting: Vec<WaitingState>,
    /// The kind and name of the object controlling this one
    /// (`metadata.ownerReferences`): a Pod's ReplicaSet, a ReplicaSet's
    /// Deployment, a Job's CronJob.
    pub controller: Option<(String, String)>,
}

/// A Secret with `data` decoded and `stringData` merged in.
#[derive(Debug, Clone)]
pub struct Secret {
    pub namespace: String,
    pub name: String,
    pub secret_type: String,
    pub data: BTreeMap<String, Vec<u8>>,
    /// `data` keys whose value is not base64.
    pub undecodable: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    pub image_pull_secrets: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub namespace: String,
    pub object_kind: String,
    pub object_name: String,
    /// From `fieldPath` `spec.containers{app}`.
    pub container: Option<String>,
    pub reason: String,
    pub message: String,
}

/// Everything understood from the input.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub workloads: Vec<Workload>,
    pub secrets: Vec<Secret>,
    pub service_accounts: Vec<ServiceAccount>,
    pub events: Vec<Event>,
    /// Documents that were not understood, as `origin: kind/name`.
    pub skipped: Vec<String>,
}

impl Inventory {
    pub fn from_documents(docs: &[Document], default_namespace: &str) -> Self {
        let mut inv = Inventory::default();
        for doc in docs {
            inv.add(&doc.value, default_namespace, &doc.origin);
        }
        inv
    }

    fn add(&mut self, v: &Value, default_ns: &str, origin: &str) {
        let kind = v["kind"].as_str().unwrap_or_default();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let namespace = v["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(default_ns)
            .to_owned();
        let template = match kind {
            "Pod" => Some(&v["spec"]),
            "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "DaemonSet"
            | "Job"
            | "ReplicationController" => Some(&v["spec"]["template"]["spec"]),
            "CronJob" => Some(&v["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
            _ => None,
        };
        if let Some(t) = template {
            match PodSpec::deserialize(t) {
                Ok(spec) => {
                    let live = kind == "Pod"
                        && (v.get("status").is_some() || v["metadata"].get("uid").is_some());
                    self.workloads.push(Workload {
                        namespace,
                        kind: kind.to_owned(),
                        name,
                        spec,
                        live,
                        waiting: waiting_states(&v["status"]),
                        controller: controller(&v["metadata"]["ownerReferences"]),
                    });
                }
                Err(e) => self.skipped.push(format!("{origin}: {kind}/{name}: {e}")),
            }
            return;
        }
        match kind {
            "Secret" => self.secrets.push(secret(v, namespace, name)),
            "ServiceAccount" => self.service_accounts.push(ServiceAccount {
                namespace,
                name,
                image_pull_secrets: names(&v["imagePullSecrets"]),
            }),
            "Event" => {
                let obj = &v["involvedObject"];
                let field_path = obj["fieldPath"].as_str().unwrap_or_default();
                self.events.push(Event {
                    namespace: obj["namespace"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or(namespace),
                    object_kind: obj["kind"].as_str().unwrap_or("Pod").to_owned(),
                    object_name: obj["name"].as_str().unwrap_or_default().to_owned(),
                    container: container_from_field_path(field_path),
                    reason: v["reason"].as_str().unwrap_or_default().to_owned(),
                    message: v["message"]
                        .as_str()
                        .or(v["note"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            _ => self.skipped.push(format!("{origin}: {kind}/{name}")),
        }
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    pub fn service_account(&self, namespace: &str, name: &str) -> Option<&ServiceAccount> {
        self.service_accounts
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// Whether the input holds any Secret of `namespace`, so that a missing
    /// one is evidence rather than an omission.
    pub fn has_secrets_in(&self, namespace: &str) -> bool {
        self.secrets.iter().any(|s| s.namespace == namespace)
    }

    pub fn workload(&self, namespace: &str, kind: &str, name: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.namespace == namespace && w.kind == kind && w.name == name)
    }

    /// The outermost workload of the input that controls `w` through
    /// ownerReferences (a Pod's Deployment, through its ReplicaSet), or `w`
    /// itself.
    pub fn controller_root<'a>(&'a self, w: &'a Workload) -> &'a Workload {
        let mut root = w;
        // Real chains are at most two links long; the bound stops a cycle in
        // hand-written input.
        for _ in 0..4 {
            match root
                .controller
                .as_ref()
                .and_then(|(kind, name)| self.workload(&root.namespace, kind, name))
            {
                Some(owner) => root = owner,
                None => break,
            }
        }
        root
    }

    pub fn has_service_accounts_in(&self, namespace: &str) -> bool {
        self.service_accounts
            .iter()
            .any(|s| s.namespace == namespace)
    }
}

/// The controller among `ownerReferences` (the entry with `controller:
/// true`; the API server allows only one).
fn controller(refs: &Value) -> Option<(String, String)> {
    let owner = refs
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))?;
    Some((
        owner["kind"].as_str()?.to_owned(),
        owner["name"].as_str()?.to_owned(),
    ))
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["name"].as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn secret(v: &Value, namespace: String, name: String) -> Secret {
    let mut data = BTreeMap::new();
    let mut undecodable = Vec::new();
    if let Some(map) = v["data"].as_object() {
        for (k, val) in map {
            let text = val.as_str().unwrap_or_default();
            match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                Ok(bytes) => {
                    data.insert(k.clone(), bytes);
                }
                Err(_) => undecodable.push(k.clone()),
            }
        }
    }
    // The API server merges stringData over data on write.
    if let Some(map) = v["stringData"].as_object() {
        for (k, val) in map {
            data.insert(
                k.clone(),
                val.as_str().unwrap_or_default().as_bytes().to_vec(),
            );
        }
    }
    Secret {
        namespace,
        name,
        secret_type: v["type"].as_str().unwrap_or("Opaque").to_owned(),
        data,
        undecodable,
    }
}

fn waiting_states(status: &Value) -> Vec<WaitingState> {
    let mut out = Vec::new();
    for field in [
        "initContainerStatuses",
        "containerStatuses",
        "ephemeralContainerStatuses",
    ] {
        for s in status[field].as_array().into_iter().flatten() {
            let w = &s["state"]["waiting"];
            if let Some(reason) = w["reason"].as_str() {
                out.push(WaitingState {
                    container: s["name"].as_str().unwrap_or_default().to_owned(),
                    reason: reason.to_owned(),
                    message: w["message"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
    }
    out
}

/// `spec.containers{app}` → `app`.
fn container_from_field_path(p: &str) -> Option<String> {
    let start = p.find('{')?;
    let end = p.rfind('}')?;
    (end > start + 1).then(|| p[start + 1..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_text;

    #[test]
    fn workloads_and_defaults() {
        let text = r#"
kind: CronJob
metadata: {name: nightly}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          serviceAccount: legacy
          initContainers: [{name: init, image: busybox}]
          containers: [{name: main, image: app:1}]
---
kind: Pod
metadata: {name: p, namespace: prod, uid: abc}
spec:
  containers: [{name: c, image: x}]
  ephemeralContainers: [{name: debug, image: busybox}]
status:
  containerStatuses:
  - name: c
    state: {waiting: {reason: ImagePullBackOff, message: 'Back-off pulling image "x"'}}
---
kind: Event
involvedObject: {kind: Pod, name: p, namespace: prod, fieldPath: 'spec.containers{c}'}
reason: Failed
message: 'Failed to pull image "x": not found'
---
kind: ConfigMap
metadata: {name: cm}
"#;
        let inv = Inventory::from_documents(&parse_text(text, "t").unwrap(), "team");
        assert_eq!(inv.workloads.len(), 2);
        let cj = &inv.workloads[0];
        assert_eq!(
            (cj.namespace.as_str(), cj.kind.as_str()),
            ("team", "CronJob")
        );
        assert_eq!(cj.spec.service_account(), "legacy");
        assert_eq!(cj.spec.all_containers().count(), 2);
        assert!(!cj.live);
        let pod = &inv.workloads[1];
        assert!(pod.live);
        assert_eq!(pod.spec.service_account(), "default");
        assert_eq!(pod.spec.all_containers().count(), 2);
        assert_eq!(pod.waiting[0].reason, "ImagePullBackOff");
        assert_eq!(inv.events[0].container.as_deref(), Some("c"));
        assert_eq!(inv.skipped.len(), 1);
    }

    #[test]
    fn secrets_decode_and_merge_string_data() {
        let text = r#"
kind: Secret
metadata: {name: s}
type: kubernetes.io/dockerconfigjson
data: {.dockerconfigjson: e30=, bad: "!!"}
stringData: {extra: plain}
"#;
        let inv = Inventory::from_documents(&parse_text(text, "t").unwrap(), "default");
        let s = &inv.secrets[0];
        assert_eq!(s.data[".dockerconfigjson"], b"{}");
        assert_eq!(s.data["extra"], b"plain");
        assert_eq!(s.undecodable, ["bad"]);
    }
}
