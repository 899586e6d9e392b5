//! The Kubernetes manifests under `deploy/`: each overlay renders with
//! `kubectl kustomize` and validates against the Kubernetes OpenAPI schemas
//! (`kubernetes-validate`, offline: it ships them; scripts/test installs
//! it), holds what running berth in a pod needs, and the berth.toml and
//! arguments it gives berth start a real server.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;

use crate::common::{Server, add_user, succeed};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `kubernetes-validate` as scripts/test installs it, or from PATH.
fn validator() -> Command {
    let program = std::env::var("BERTH_KUBERNETES_VALIDATE")
        .unwrap_or_else(|_| "kubernetes-validate".to_owned());
    let mut command = Command::new(program);
    command.args(["--strict", "--quiet", "--kubernetes-version", "1.32.0"]);
    command
}

fn render(overlay: &str) -> String {
    succeed(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(repository().join("deploy/overlays").join(overlay)),
    )
}

#[test]
fn every_overlay_renders_and_validates() {
    let work = tempfile::tempdir().unwrap();
    for overlay in ["single-node", "ingress-tls"] {
        let rendered = render(overlay);
        let file = work.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        succeed(validator().arg(&file));
        for needed in [
            "namespace: docker-registry",
            "type: Recreate",
            "path: /healthz",
            "path: /readyz",
            "runAsNonRoot: true",
            "readOnlyRootFilesystem: true",
            "kind: PodDisruptionBudget",
            "claimName: berth-data",
            "secretName: berth-htpasswd",
        ] {
            assert!(
                rendered.contains(needed),
                "{overlay} lacks {needed}:\n{rendered}"
            );
        }
    }
    assert!(render("ingress-tls").contains("cert-manager.io/cluster-issuer"));
    // The validator does validate: a wrong type is refused.
    let broken = work.path().join("broken.yaml");
    std::fs::write(
        &broken,
        render("single-node").replace("replicas: 1", "replicas: one"),
    )
    .unwrap();
    let out = validator().arg(&broken).output().unwrap();
    assert!(!out.status.success(), "a broken manifest passed");
}

/// The configuration and the arguments the Deployment gives berth (paths
/// moved to a temporary directory) start a server whose probes answer.
#[tokio::test]
async fn the_deployments_settings_start_berth() {
    let rendered = render("single-node");
    let deployment = serde_norway::Deserializer::from_str(&rendered)
        .map(|document| serde_norway::Value::deserialize(document).unwrap())
        .find(|document| document["kind"] == "Deployment")
        .expect("a Deployment");
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("the container's args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args.first(), Some(&"serve"), "{rendered}");
    let work = tempfile::tempdir().unwrap();
    let htpasswd = work.path().join("htpasswd");
    add_user(&htpasswd, "alice", "alice-pw");
    let config = repository().join("deploy/base/berth.toml");
    let mut given = Vec::new();
    for arg in &args[1..] {
        let (flag, _) = arg.split_once('=').expect("--flag=value");
        match flag {
            // The harness picks the address and the data directory.
            "--addr" | "--data-dir" => {}
            "--metrics-addr" => given.push("--metrics-addr=127.0.0.1:0".to_owned()),
            "--config" => given.push(format!("--config={}", config.display())),
            "--htpasswd" => given.push(format!("--htpasswd={}", htpasswd.display())),
            other => panic!("a flag the test does not know: {other}"),
        }
    }
    let given: Vec<&str> = given.iter().map(String::as_str).collect();
    let server = Server::start_in(&work.path().join("data"), &given);
    crate::common::install_crypto_provider();
    for probe in ["/healthz", "/readyz"] {
        let status = reqwest::get(server.url(probe)).await.unwrap().status();
        assert_eq!(status, 200, "{probe}");
    }
    assert!(
        server.log().iter().any(|l| l.starts_with('{')),
        "log_format = \"json\" from berth.toml"
    );
}
