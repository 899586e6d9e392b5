//! `berth doctor` against the real berth registry on loopback: the probe's
//! outcomes through berth's token flow (200, 401 without and with wrong
//! credentials, 403, 404 tag, 404 repository), berth over TLS with a CA the
//! client does not trust, the CLI's JSON schema and exit codes, and fixes
//! that the real kubectl applies.

use std::path::Path;
use std::time::Duration;

use crate::common::{Api, Server, fixture};
use berth_client::{ClientConfig, Credentials, Outcome, RegistryClient};
use berth_testkit::Kubectl;

/// Runs the berth binary with no input.
fn berth(args: &[&str]) -> std::process::Output {
    crate::common::berth(args, "")
}

fn client(insecure: &str) -> RegistryClient {
    RegistryClient::new(ClientConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(15),
        insecure_registries: vec![insecure.to_owned()],
        ..ClientConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn probe_outcomes_against_berth() {
    let f = fixture("", &[]);
    let server = &f.server;
    let root = Api::with_credentials(server, "root", "root-pw");
    let (_, digest) = root.push_image("team/app", "1.0", 7).await;
    root.push_image("other/app", "1.0", 8).await;
    let c = client(&server.addr);
    let alice = Credentials::new("alice", "alice-pw");
    let addr = server.addr.as_str();

    let p = c.head_manifest(addr, "team/app", "1.0", Some(&alice)).await;
    assert_eq!(p.outcome, Outcome::Pullable, "{p:?}");
    assert_eq!(p.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(p.auth_scheme.as_deref(), Some("bearer"));
    // The token came from the OAuth2 password grant, as containerd asks.
    server.wait_for_line(r#"method=POST path="/token" status=200"#);

    let p = c.head_manifest(addr, "team/app", "1.0", None).await;
    assert_eq!(p.outcome, Outcome::AuthRequired, "{p:?}");

    let wrong = Credentials::new("alice", "expired");
    let p = c.head_manifest(addr, "team/app", "1.0", Some(&wrong)).await;
    assert_eq!(p.outcome, Outcome::Unauthorized, "{p:?}");

    let p = c
        .head_manifest(addr, "other/app", "1.0", Some(&alice))
        .await;
    assert_eq!(p.outcome, Outcome::Forbidden, "{p:?}");

    let p = c.head_manifest(addr, "team/app", "9.9", Some(&alice)).await;
    assert_eq!(p.outcome, Outcome::ManifestUnknown, "{p:?}");

    let p = c
        .head_manifest(addr, "team/gone", "1.0", Some(&alice))
        .await;
    assert_eq!(p.outcome, Outcome::RepositoryUnknown, "{p:?}");

    let p = c.check_login(addr, Some(&alice)).await;
    assert_eq!(p.outcome, Outcome::Pullable, "{p:?}");
    let p = c.check_login(addr, Some(&wrong)).await;
    assert_eq!(p.outcome, Outcome::Unauthorized, "{p:?}");
}

#[tokio::test]
async fn berth_over_tls_with_an_untrusted_ca() {
    let server = Server::start(&["--tls-self-signed"]);
    let c = RegistryClient::new(ClientConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(15),
        ..ClientConfig::default()
    })
    .unwrap();
    let p = c.head_manifest(&server.addr, "team/app", "1.0", None).await;
    assert_eq!(p.outcome, Outcome::TlsUnknownAuthority, "{p:?}");

    // Trusting berth's CA, the same probe gets through TLS to the registry.
    let trusting = RegistryClient::new(ClientConfig {
        ca_files: vec![server.data_dir.join("tls/ca.crt")],
        ..ClientConfig::default()
    })
    .unwrap();
    let p = trusting
        .head_manifest(&server.addr, "team/app", "1.0", None)
        .await;
    assert_eq!(p.outcome, Outcome::AuthRequired, "{p:?}");
}

fn secret_yaml(name: &str, server: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config = format!(
        r#"{{"auths":{{"{server}":{{"username":"{user}","password":"{password}","auth":"{}"}}}}}}"#,
        b64(&format!("{user}:{password}"))
    );
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: prod\n\
         type: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        b64(&config)
    )
}

fn deployment_yaml(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: prod\n\
         spec:\n  template:\n    spec:\n      imagePullSecrets:\n      - name: regcred\n\
         \x20     containers:\n      - name: app\n        image: {image}\n"
    )
}

/// A `manifests` directory in `dir` holding `secret` (YAML).
fn manifests_dir(dir: &Path, secret: &str) -> std::path::PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("secret.yaml"), secret).unwrap();
    manifests
}

fn findings(out: &std::process::Output) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    doc["findings"].as_array().unwrap().clone()
}

#[tokio::test]
async fn doctor_probe_cli_reports_pullable_and_missing_tags() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture("", &[]);
    let server = &f.server;
    let root = Api::with_credentials(server, "root", "root-pw");
    root.push_image("team/app", "1.0", 9).await;
    let manifests = manifests_dir(
        dir.path(),
        &secret_yaml("regcred", &server.addr, "alice", "alice-pw"),
    );
    let probe = |image: &str| {
        std::fs::write(manifests.join("app.yaml"), deployment_yaml(image)).unwrap();
        berth(&[
            "doctor",
            "-f",
            manifests.to_str().unwrap(),
            "--probe",
            "--insecure-registry",
            &server.addr,
            "-o",
            "json",
        ])
    };
    let out = probe(&format!("{}/team/app:1.0", server.addr));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let found = findings(&out);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["reason"], "Pullable");
    assert_eq!(found[0]["severity"], "info");
    assert!(
        found[0]["message"]
            .as_str()
            .unwrap()
            .contains("secret prod/regcred")
    );

    let out = probe(&format!("{}/team/app:2.0", server.addr));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let found = findings(&out);
    assert_eq!(found[0]["reason"], "ManifestUnknown", "{found:#?}");
    assert_eq!(found[0]["severity"], "error");
}

/// A pull secret for Docker Hub only, on a pod whose image is on berth: the
/// mismatch fails the pull, unless the probe finds that berth serves the
/// image anonymously (its `public/*` policy); then it is only said.
#[tokio::test]
async fn doctor_probe_downgrades_a_mismatch_for_an_anonymous_image() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture("", &[]);
    let server = &f.server;
    let root = Api::with_credentials(server, "root", "root-pw");
    root.push_image("public/app", "1.0", 11).await;
    root.push_image("team/app", "1.0", 12).await;
    let manifests = manifests_dir(
        dir.path(),
        &secret_yaml(
            "regcred",
            "https://index.docker.io/v1/",
            "alice",
            "alice-pw",
        ),
    );
    let doctor = |image: &str, probe: bool| {
        std::fs::write(manifests.join("app.yaml"), deployment_yaml(image)).unwrap();
        let mut args = vec!["doctor", "-f", manifests.to_str().unwrap(), "-o", "json"];
        if probe {
            args.extend(["--probe", "--insecure-registry", &server.addr]);
        }
        let out = berth(&args);
        let found: Vec<(String, String)> = findings(&out)
            .iter()
            .map(|f| {
                (
                    f["severity"].as_str().unwrap().to_owned(),
                    f["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (out.status.code(), found)
    };
    let pair = |severity: &str, reason: &str| (severity.to_owned(), reason.to_owned());

    let public = format!("{}/public/app:1.0", server.addr);
    let (code, found) = doctor(&public, false);
    assert_eq!(code, Some(1), "{found:?}");
    assert_eq!(found, [pair("error", "RegistryHostMismatch")]);

    let (code, found) = doctor(&public, true);
    assert_eq!(code, Some(0), "{found:?}");
    assert_eq!(
        found,
        [
            pair("info", "RegistryHostMismatch"),
            pair("info", "Pullable")
        ]
    );

    let private = format!("{}/team/app:1.0", server.addr);
    let (code, found) = doctor(&private, true);
    assert_eq!(code, Some(1), "{found:?}");
    assert_eq!(
        found,
        [
            pair("error", "RegistryHostMismatch"),
            pair("error", "AuthRequired")
        ]
    );
}

/// The `kubectl patch` that a SecretNotReferenced finding proposes, applied by
/// the real kubectl (`--local`) to the manifest it names, makes the finding
/// go away: for a Deployment with its own imagePullSecrets (a JSON patch of
/// the template) and for one relying on its ServiceAccount (a merge patch of
/// the ServiceAccount).
#[test]
fn proposed_patches_work_with_kubectl_and_clear_the_finding() {
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new();
    let manifests = manifests_dir(
        dir.path(),
        &secret_yaml("apicred", "registry.example.com", "robot", "pw"),
    );
    let unreferenced_fix = || {
        let out = berth(&["doctor", "-f", manifests.to_str().unwrap(), "-o", "json"]);
        findings(&out)
            .into_iter()
            .find(|f| f["reason"] == "SecretNotReferenced")
            .map(|f| f["fix"].as_str().unwrap().to_owned())
    };
    let deployment = deployment_yaml("registry.example.com/team/app:1.4.2");
    let without_own_secrets =
        deployment.replace("      imagePullSecrets:\n      - name: regcred\n", "");
    let service_account =
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: prod\n";
    for (app, patched_file, target) in [
        (deployment.as_str(), "app.yaml", "deployment web"),
        (
            without_own_secrets.as_str(),
            "sa.yaml",
            "serviceaccount default",
        ),
    ] {
        std::fs::write(manifests.join("app.yaml"), app).unwrap();
        std::fs::write(manifests.join("sa.yaml"), service_account).unwrap();
        let fix =
            unreferenced_fix().unwrap_or_else(|| panic!("no SecretNotReferenced for {target}"));
        // `kubectl patch KIND NAME --namespace NS [--type=json] -p 'PATCH'`,
        // then possibly a line on recreating the pods.
        let command = fix.lines().next().unwrap();
        let (head, patch) = command.split_once(" -p '").unwrap();
        assert!(
            head.starts_with(&format!("kubectl patch {target} --namespace prod")),
            "{fix}"
        );
        let patch = patch.strip_suffix('\'').unwrap();
        let file = manifests.join(patched_file);
        let mut args: Vec<String> = vec![
            "patch".into(),
            "--local".into(),
            "-f".into(),
            file.to_str().unwrap().into(),
            "-o".into(),
            "yaml".into(),
            "-p".into(),
            patch.into(),
        ];
        if head.contains("--type=json") {
            args.push("--type=json".into());
        }
        let patched = kubectl.run(&args);
        std::fs::write(&file, patched).unwrap();
        assert_eq!(unreferenced_fix(), None, "still unreferenced after: {fix}");
    }
}

#[test]
fn doctor_json_schema_and_exit_codes() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../doctor/tests/scenarios");
    let out = berth(&[
        "doctor",
        "-f",
        scenarios.join("mismatch-port").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "a pull will fail");
    let f = findings(&out);
    assert_eq!(f.len(), 1);
    let keys: Vec<&String> = f[0].as_object().unwrap().keys().collect();
    let mut want = [
        "namespace",
        "kind",
        "name",
        "container",
        "image",
        "severity",
        "reason",
        "message",
        "fix",
    ];
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(f[0]["reason"], "RegistryHostMismatch");
    assert_eq!(f[0]["namespace"], "prod");
    assert_eq!(f[0]["kind"], "Deployment");
    assert_eq!(f[0]["name"], "web");
    assert_eq!(f[0]["container"], "app");
    assert_eq!(f[0]["image"], "registry.example.com:5000/team/app:1.4.2");
    assert!(f[0]["fix"].as_str().unwrap().contains("--namespace prod"));

    let out = berth(&[
        "doctor",
        "-f",
        scenarios.join("match-scheme-irrelevant").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0 errors, 0 warnings\n"
    );

    let out = berth(&["doctor", "-f", "/nonexistent/manifests.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("cm.yaml"), "kind: ConfigMap\n").unwrap();
    let out = berth(&["doctor", "-f", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no workload"));
}

#[tokio::test]
async fn doctor_probe_runs_credential_provider_plugins() {
    let f = fixture("", &[]);
    let server = &f.server;
    let root = Api::with_credentials(server, "root", "root-pw");
    root.push_image("team/app", "1.0", 10).await;
    let dir = tempfile::tempdir().unwrap();
    // The plugin is berth's own credential provider with a static source, in
    // the kubelet's plugin directory under the name the kubelet config gives.
    let bin_dir = dir.path().join("plugins");
    std::fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth"), bin_dir.join("berth-plugin")).unwrap();
    let creds = dir.path().join("node.cred");
    let plugin_config = dir.path().join("plugin.toml");
    std::fs::write(
        &plugin_config,
        format!(
            "[[registry]]\nmatch = [\"{}\"]\nsource = \"static\"\ncredentials_file = \"{}\"\n",
            server.addr,
            creds.display()
        ),
    )
    .unwrap();
    let kubelet_config = dir.path().join("kubelet.yaml");
    std::fs::write(
        &kubelet_config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n\
             - name: berth-plugin\n  matchImages: [\"{}\"]\n  defaultCacheDuration: 1h\n\
             \x20 apiVersion: credentialprovider.kubelet.k8s.io/v1\n\
             \x20 args: [\"credential-provider\", \"--config\", \"{}\"]\n",
            server.addr,
            plugin_config.display()
        ),
    )
    .unwrap();
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: prod\n\
             spec:\n  containers:\n  - name: app\n    image: {}/team/app:1.0\n",
            server.addr
        ),
    )
    .unwrap();
    let doctor = || {
        berth(&[
            "doctor",
            "-f",
            manifest.to_str().unwrap(),
            "--credential-provider-config",
            kubelet_config.to_str().unwrap(),
            "--credential-provider-bin-dir",
            bin_dir.to_str().unwrap(),
            "--probe",
            "--insecure-registry",
            &server.addr,
            "-o",
            "json",
        ])
    };

    std::fs::write(&creds, "alice:alice-pw\n").unwrap();
    let out = doctor();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let found = findings(&out);
    let pullable = found
        .iter()
        .find(|f| f["reason"] == "Pullable")
        .expect("a Pullable finding");
    assert!(
        pullable["message"]
            .as_str()
            .unwrap()
            .contains("credential provider berth-plugin"),
        "{pullable}"
    );

    // Wrong node credentials: the plugin's answer is what fails.
    std::fs::write(&creds, "alice:wrong\n").unwrap();
    let out = doctor();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        findings(&out).iter().any(|f| f["reason"] == "Unauthorized"),
        "{out:?}"
    );

    // A plugin that fails: the kubelet offers nothing from it, and doctor says why.
    std::fs::remove_file(&creds).unwrap();
    let out = doctor();
    let found = findings(&out);
    let failed = found
        .iter()
        .find(|f| {
            f["reason"] == "NoCredentials" && f["message"].as_str().unwrap().contains("failed")
        })
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(failed["severity"], "warning");
    assert!(
        found.iter().any(|f| f["reason"] == "AuthRequired"),
        "{found:#?}"
    );
}

/// The sample in the README is what `berth doctor` prints for the input
/// behind it (`data/readme-doctor-sample.yaml`), word for word.
#[test]
fn the_readme_sample_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let sample = readme
        .split("```\nDeployment prod/web\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .map(|rest| format!("Deployment prod/web\n{rest}"))
        .expect("the README has the doctor sample");
    let input = root.join("tests/it/data/readme-doctor-sample.yaml");
    let out = berth(&["doctor", "-f", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), sample);
}
