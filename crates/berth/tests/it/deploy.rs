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
            "fsGroupChangePolicy: OnRootMismatch",
        ] {
            assert!(
                rendered.contains(needed),
                "{overlay} lacks {needed}:\n{rendered}"
            );
        }
    }
    // Replicas on shared stores: no volume claim, a rolling update, the
    // stores' and the signing key's Secrets mounted where berth.toml says.
    let replicas = render("replicas");
    let file = work.path().join("replicas.yaml");
    std::fs::write(&file, &replicas).unwrap();
    succeed(validator().arg(&file));
    for needed in [
        "replicas: 3",
        "type: RollingUpdate",
        "secretName: berth-stores",
        "secretName: berth-signing-key",
        "password_file = \"/etc/berth/stores/database-password\"",
        "secret_access_key_file = \"/etc/berth/stores/s3-secret\"",
        "mountPath: /etc/berth/stores",
    ] {
        assert!(
            replicas.contains(needed),
            "replicas lacks {needed}:\n{replicas}"
        );
    }
    for absent in ["PersistentVolumeClaim", "claimName", "Recreate"] {
        assert!(
            !replicas.contains(absent),
            "replicas has {absent}:\n{replicas}"
        );
    }
    let ingress = render("ingress-tls");
    assert!(ingress.contains("cert-manager.io/cluster-issuer"));
    // Behind the ingress, clients are sent to the token endpoint over https.
    assert!(
        ingress.contains("realm = \"https://registry.example.com/token\""),
        "{ingress}"
    );
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

/// The node side of the cache: `berth mirror daemonset` prints a DaemonSet
/// that validates, and what it runs, `berth mirror hosts-toml --every`,
/// puts the hosts.toml and berth's CA in place and keeps them there.
#[test]
fn the_node_mirror_daemonset_keeps_hosts_toml_in_place() {
    let work = tempfile::tempdir().unwrap();
    let printed = crate::common::berth(
        &[
            "mirror",
            "daemonset",
            "--mirror",
            "https://berth.docker-registry.svc:5000",
            "--registry",
            "docker.io",
            "--image",
            "registry.example.com/berth:0.1.0",
            "--ca-secret",
            "berth-ca",
        ],
        "",
    );
    assert!(printed.status.success(), "{printed:?}");
    let manifest = work.path().join("daemonset.yaml");
    std::fs::write(&manifest, &printed.stdout).unwrap();
    succeed(validator().arg(&manifest));
    let daemonset: serde_norway::Value = serde_norway::from_slice(&printed.stdout).unwrap();
    let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[..2], ["mirror", "hosts-toml"]);

    // What the DaemonSet's container runs, with its paths here.
    let ca = work.path().join("ca.crt");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let out = work.path().join("certs.d");
    let _keeper = Stopped(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args.iter().map(|a| {
                a.replace("/host/certs.d", out.to_str().unwrap())
                    .replace("/etc/berth-ca/ca.crt", ca.to_str().unwrap())
                    .replace("--every=5m", "--every=100ms")
            }))
            .spawn()
            .unwrap(),
    );
    let hosts = out.join("docker.io/hosts.toml");
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait("hosts.toml is written", &|| hosts.exists());
    let content = std::fs::read_to_string(&hosts).unwrap();
    assert!(
        content.contains("ca = \"/etc/containerd/certs.d/docker.io/berth-ca.crt\""),
        "{content}"
    );
    assert!(out.join("docker.io/berth-ca.crt").exists());
    std::fs::remove_file(&hosts).unwrap();
    wait("hosts.toml comes back", &|| hosts.exists());
}

/// A process this test started, killed (by its PID) however the test ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
