//! `berth secret` and `berth credential-provider`, run as the real binary and
//! checked against the real kubectl (`--dry-run=client` and `--local`, no
//! cluster). kubectl is required: these tests fail, not skip, without it.
//! Set `KUBECTL` to use another binary.

use std::path::{Path, PathBuf};
use std::process::Output;

use berth_testkit::Kubectl;

use base64::Engine as _;
use berth_kube::credential_provider::{
    ApiVersion, CredentialProviderConfig, CredentialProviderResponse,
};
use berth_kube::docker_config::encode_auth;
use berth_kube::secret::{json_list, service_account_yaml};

/// Runs berth with `stdin` and extra environment variables.
fn berth(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    crate::common::berth_with_env(args, stdin, env)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asserts a refusal: non-zero exit, nothing on stdout, `want` on stderr.
fn refused(out: &Output, want: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure, got success");
    assert!(out.stdout.is_empty(), "stdout must stay empty: {out:?}");
    assert!(stderr.contains(want), "stderr lacks {want:?}: {stderr}");
    stderr
}

struct Case {
    name: &'static str,
    server: Option<&'static str>,
    username: &'static str,
    password: &'static str,
    email: Option<&'static str>,
    namespaces: &'static [&'static str],
    append_hash: bool,
}

const fn case(
    name: &'static str,
    server: Option<&'static str>,
    username: &'static str,
    password: &'static str,
) -> Case {
    Case {
        name,
        server,
        username,
        password,
        email: None,
        namespaces: &[],
        append_hash: false,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("hub", None, "alice", "hunter2"),
        Case {
            email: Some("alice@example.com"),
            ..case("hub-email", None, "alice", "hunter2")
        },
        case(
            "hub-explicit",
            Some("https://index.docker.io/v1/"),
            "alice",
            "x",
        ),
        case("colons", Some("reg.example.com"), "robot$ci", "a:b:c::"),
        case(
            "specials",
            Some("reg.example.com"),
            "us er",
            "<>&\"'\\ `$(x) #!%",
        ),
        case(
            "unicode",
            Some("reg.example.com"),
            "jürgen",
            "pässwörd-😀-\u{2028}",
        ),
        case("port", Some("reg.example.com:5000"), "u", "p"),
        case("https", Some("https://reg.example.com"), "u", "p"),
        case(
            "https-port",
            Some("https://reg.example.com:8443/v2/"),
            "u",
            "p",
        ),
        case("http-local", Some("http://localhost:5000"), "u", "p"),
        case("ipv4", Some("10.0.0.7:5000"), "u", "p"),
        case("path", Some("reg.example.com/team-a"), "u", "p"),
        case(
            "glob",
            Some("*.dkr.ecr.us-east-1.amazonaws.com"),
            "AWS",
            "tok",
        ),
        Case {
            email: Some("<a&b>@example.com"),
            namespaces: &["team-a"],
            ..case("email-ns", Some("reg.example.com"), "u", "p")
        },
        Case {
            namespaces: &["prod", "staging", "123"],
            append_hash: true,
            ..case("multi", Some("reg.example.com:5000"), "bot", "p:w")
        },
        Case {
            namespaces: &["on", "y"],
            ..case("123", None, "u", "p")
        },
    ]
}

#[test]
fn create_matches_kubectl_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new();
    for c in cases() {
        for output in ["yaml", "json"] {
            // berth: the password on stdin; every namespace in one run.
            let mut args = vec!["secret", "create", c.name, "--username", c.username];
            args.extend(["--password-stdin", "-o", output]);
            if let Some(s) = c.server {
                args.extend(["--server", s]);
            }
            if let Some(e) = c.email {
                args.extend(["--email", e]);
            }
            for ns in c.namespaces {
                args.extend(["--namespace", ns]);
            }
            if c.append_hash {
                args.push("--append-hash");
            }
            let got = ok(&berth(&args, &format!("{}\n", c.password), &[]));

            // kubectl: one run per namespace.
            let namespaces: Vec<Option<&str>> = if c.namespaces.is_empty() {
                vec![None]
            } else {
                c.namespaces.iter().map(|n| Some(*n)).collect()
            };
            let docs: Vec<String> = namespaces
                .iter()
                .map(|ns| {
                    let mut a = vec![
                        "create".to_owned(),
                        "secret".to_owned(),
                        "docker-registry".to_owned(),
                        c.name.to_owned(),
                        format!("--docker-username={}", c.username),
                        format!("--docker-password={}", c.password),
                        "--dry-run=client".to_owned(),
                        format!("-o={output}"),
                    ];
                    if let Some(s) = c.server {
                        a.push(format!("--docker-server={s}"));
                    }
                    if let Some(e) = c.email {
                        a.push(format!("--docker-email={e}"));
                    }
                    if let Some(ns) = ns {
                        a.push(format!("--namespace={ns}"));
                    }
                    if c.append_hash {
                        a.push("--append-hash".to_owned());
                    }
                    k.run(&a)
                })
                .collect();
            let want = match (output, docs.len()) {
                (_, 1) => docs[0].clone(),
                ("yaml", _) => docs.join("---\n"),
                _ => json_list(&docs),
            };
            assert_eq!(got, want, "{} -o {output}", c.name);
            if output == "json" && docs.len() > 1 {
                // Each List item is kubectl's object, and kubectl reads the List.
                let list: serde_json::Value = serde_json::from_str(&got).unwrap();
                for (item, doc) in list["items"].as_array().unwrap().iter().zip(&docs) {
                    assert_eq!(
                        item,
                        &serde_json::from_str::<serde_json::Value>(doc).unwrap()
                    );
                }
                let file = dir.path().join("list.json");
                std::fs::write(&file, &got).unwrap();
                let names = k.run(&[
                    "annotate".to_owned(),
                    "--local".to_owned(),
                    format!("-f={}", file.display()),
                    "checked=yes".to_owned(),
                    "-o=name".to_owned(),
                ]);
                assert_eq!(names.lines().count(), docs.len(), "{names}");
            }
        }
    }
    // --password (kubectl's way) gives the same bytes, with a warning.
    let out = berth(
        &[
            "secret",
            "create",
            "s",
            "--username",
            "u",
            "--password",
            "p",
        ],
        "",
        &[],
    );
    assert_eq!(
        ok(&out),
        k.run(&[
            "create".into(),
            "secret".into(),
            "docker-registry".into(),
            "s".into(),
            "--docker-username=u".into(),
            "--docker-password=p".into(),
            "--dry-run=client".into(),
            "-o=yaml".into(),
        ])
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
}

#[test]
fn legacy_dockercfg_type() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new();
    let got = ok(&berth(
        &[
            "secret",
            "create",
            "old",
            "--type",
            "dockercfg",
            "--server",
            "reg.io",
            "--username",
            "u",
            "--password-stdin",
            "-n",
            "ns",
        ],
        "p",
        &[],
    ));
    let payload = format!(
        r#"{{"reg.io":{{"username":"u","password":"p","auth":"{}"}}}}"#,
        encode_auth("u", "p")
    );
    let file = dir.path().join("dockercfg");
    std::fs::write(&file, payload).unwrap();
    let want = k.run(&[
        "create".into(),
        "secret".into(),
        "generic".into(),
        "old".into(),
        "--type=kubernetes.io/dockercfg".into(),
        format!("--from-file=.dockercfg={}", file.display()),
        "--namespace=ns".into(),
        "--dry-run=client".into(),
        "-o=yaml".into(),
    ]);
    assert_eq!(got, want);
}

#[test]
fn create_refuses_what_would_not_work() {
    let base = ["secret", "create"];
    let run = |extra: &[&str], stdin: &str| {
        let mut args = base.to_vec();
        args.extend(extra);
        berth(&args, stdin, &[])
    };
    refused(
        &run(&["s", "--username", "", "--password-stdin"], "p"),
        "username is empty",
    );
    refused(
        &run(&["s", "--username", "u", "--password-stdin"], "\n"),
        "password is empty",
    );
    refused(&run(&["s", "--username", "u"], ""), "--password-stdin");
    refused(
        &run(&["s", "--username", "a:b", "--password-stdin"], "p"),
        "contains ':'",
    );
    refused(
        &run(&["My_Secret", "--username", "u", "--password-stdin"], "p"),
        "try \"my-secret\"",
    );
    refused(
        &run(
            &["s", "--username", "u", "--password-stdin", "-n", "Team"],
            "p",
        ),
        "namespace \"Team\" is invalid",
    );
    for (server, why) in [
        ("reg.example.com/app:1.0", "not an image reference"),
        ("ftp://reg.example.com", "scheme \"ftp\""),
        ("reg_example.com", "not a registry host"),
        ("reg.example.com/Team", "can never be a prefix"),
        ("https://", "has no host"),
    ] {
        refused(
            &run(
                &[
                    "s",
                    "--username",
                    "u",
                    "--password-stdin",
                    "--server",
                    server,
                ],
                "p",
            ),
            why,
        );
    }
    // A server named twice would silently lose one entry.
    refused(
        &run(
            &[
                "s",
                "--username",
                "u",
                "--password-stdin",
                "--server",
                "r.io",
                "--server",
                "r.io",
            ],
            "p",
        ),
        "given twice",
    );
}

/// A fake credential helper: answers for two servers, logs every request.
const HELPER: &str = r#"#!/bin/sh
[ "$1" = get ] || { echo "unexpected action $1" >&2; exit 2; }
server=$(cat)
echo "$server" >> "$(dirname "$0")/asked.log"
case "$server" in
  helper.example.com) echo '{"ServerURL":"helper.example.com","Username":"robot","Secret":"s3cr:et<&>"}' ;;
  store.example.com) echo '{"ServerURL":"store.example.com","Username":"storeuser","Secret":"storepass"}' ;;
  token.example.com) echo '{"ServerURL":"token.example.com","Username":"<token>","Secret":"refresh"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"#;

struct DockerHome {
    dir: tempfile::TempDir,
    path_var: String,
}

impl DockerHome {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path_var = crate::common::path_with_script(
            &dir.path().join("bin"),
            "docker-credential-berthtest",
            HELPER,
        );
        DockerHome { dir, path_var }
    }

    fn config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        berth(args, "", &[("PATH", &self.path_var)])
    }

    fn asked(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("bin/asked.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn kubectl_from_payload(k: &Kubectl, dir: &Path, name: &str, payload: &str, ns: &str) -> String {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, payload).unwrap();
    k.run(&[
        "create".into(),
        "secret".into(),
        "docker-registry".into(),
        name.into(),
        format!("--from-file=.dockerconfigjson={}", file.display()),
        format!("--namespace={ns}"),
        "--dry-run=client".into(),
        "-o=yaml".into(),
    ])
}

fn secret_payload(yaml: &str) -> String {
    let data = yaml
        .lines()
        .find_map(|l| l.strip_prefix("  .dockerconfigjson: "))
        .expect("a .dockerconfigjson line");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn from_docker_config_takes_only_the_named_registries() {
    let home = DockerHome::new();
    let k = Kubectl::new();
    let config = home.config(
        "plain/config.json",
        &format!(
            r#"{{
	"auths": {{
		"https://index.docker.io/v1/": {{"auth": "{hub}"}},
		"plain.example.com:5000": {{"auth": "{plain}", "email": "a@example.com"}},
		"other.example.com": {{"auth": "{leak}"}}
	}},
	"credHelpers": {{"helper.example.com": "berthtest", "token.example.com": "berthtest"}}
}}"#,
            hub = encode_auth("hubuser", "hubpass"),
            plain = encode_auth("alice", "pa:ss"),
            leak = encode_auth("leak", "LEAKED-PASSWORD"),
        ),
    );
    let from = format!("--from-docker-config={}", config.display());

    // A plain `auth` entry: the same Secret kubectl makes from those values.
    let got = ok(&home.run(&[
        "secret",
        "create",
        "plain",
        &from,
        "--server",
        "plain.example.com:5000",
    ]));
    let want = k.run(&[
        "create".into(),
        "secret".into(),
        "docker-registry".into(),
        "plain".into(),
        "--docker-server=plain.example.com:5000".into(),
        "--docker-username=alice".into(),
        "--docker-password=pa:ss".into(),
        "--docker-email=a@example.com".into(),
        "--dry-run=client".into(),
        "-o=yaml".into(),
    ]);
    assert_eq!(got, want);
    assert!(home.asked().is_empty(), "no helper for plain entries");

    // Docker Hub is the default server, as in kubectl.
    let hub = secret_payload(&ok(&home.run(&["secret", "create", "hub", &from])));
    assert_eq!(
        hub,
        format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"username":"hubuser","password":"hubpass","auth":"{}"}}}}}}"#,
            encode_auth("hubuser", "hubpass")
        )
    );

    // A credHelpers entry and a plain one in one Secret, in two namespaces:
    // exactly those two entries, with the helper's real credentials.
    let got = ok(&home.run(&[
        "secret",
        "create",
        "both",
        &from,
        "--server",
        "helper.example.com",
        "--server",
        "plain.example.com:5000",
        "-n",
        "a",
        "-n",
        "b",
    ]));
    assert_eq!(home.asked(), ["helper.example.com"]);
    let payload = format!(
        r#"{{"auths":{{"helper.example.com":{{"username":"robot","password":"s3cr:et\u003c\u0026\u003e","auth":"{}"}},"plain.example.com:5000":{{"username":"alice","password":"pa:ss","email":"a@example.com","auth":"{}"}}}}}}"#,
        encode_auth("robot", "s3cr:et<&>"),
        encode_auth("alice", "pa:ss")
    );
    let want = [
        kubectl_from_payload(&k, home.dir.path(), "both", &payload, "a"),
        kubectl_from_payload(&k, home.dir.path(), "both", &payload, "b"),
    ]
    .join("---\n");
    assert_eq!(got, want);
    for doc in got.split("---\n") {
        let p = secret_payload(doc);
        assert!(
            !p.contains("LEAKED") && !p.contains("other.example.com") && !p.contains("hubuser"),
            "{p}"
        );
    }

    // A server the file does not have: named, with what it does have.
    let err = refused(
        &home.run(&[
            "secret",
            "create",
            "x",
            &from,
            "--server",
            "missing.example.com",
        ]),
        "\"missing.example.com\" is not in the docker config",
    );
    assert!(
        err.contains("plain.example.com:5000") && err.contains("docker login"),
        "{err}"
    );
    // An identity token cannot go into a pull secret.
    refused(
        &home.run(&[
            "secret",
            "create",
            "x",
            &from,
            "--server",
            "token.example.com",
        ]),
        "identity token",
    );
    // Passwords never mix with --from-docker-config.
    assert!(
        !home
            .run(&["secret", "create", "x", &from, "--username", "u"])
            .status
            .success()
    );
}

#[test]
fn from_docker_config_uses_creds_store_and_docker_config_dir() {
    let home = DockerHome::new();
    let k = Kubectl::new();
    home.config(
        "dc/config.json",
        r#"{"auths":{"store.example.com":{},"empty.example.com":{}},"credsStore":"berthtest"}"#,
    );
    let dc = home.dir.path().join("dc");
    let env = [
        ("PATH", home.path_var.as_str()),
        ("DOCKER_CONFIG", dc.to_str().unwrap()),
        ("HOME", "/nonexistent"),
    ];
    let got = ok(&berth(
        &[
            "secret",
            "create",
            "store",
            "--from-docker-config",
            "--server",
            "store.example.com",
        ],
        "",
        &env,
    ));
    let want = k.run(&[
        "create".into(),
        "secret".into(),
        "docker-registry".into(),
        "store".into(),
        "--docker-server=store.example.com".into(),
        "--docker-username=storeuser".into(),
        "--docker-password=storepass".into(),
        "--dry-run=client".into(),
        "-o=yaml".into(),
    ]);
    assert_eq!(got, want);
    // "credentials not found" from the helper and nothing in the file.
    refused(
        &berth(
            &[
                "secret",
                "create",
                "e",
                "--from-docker-config",
                "--server",
                "empty.example.com",
            ],
            "",
            &env,
        ),
        "nor in docker-credential-berthtest",
    );
    assert_eq!(home.asked(), ["store.example.com", "empty.example.com"]);
    // A helper that is not installed.
    let no_helper = [
        ("PATH", "/usr/bin:/bin"),
        ("DOCKER_CONFIG", dc.to_str().unwrap()),
    ];
    refused(
        &berth(
            &[
                "secret",
                "create",
                "s",
                "--from-docker-config",
                "--server",
                "store.example.com",
            ],
            "",
            &no_helper,
        ),
        "docker-credential-berthtest, which is not on PATH",
    );
    // A missing file says where it looked.
    refused(
        &berth(
            &["secret", "create", "s", "--from-docker-config"],
            "",
            &[("DOCKER_CONFIG", "/nonexistent/dir")],
        ),
        "/nonexistent/dir/config.json",
    );
}

#[test]
fn attach_patch_gives_the_expected_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new();
    let out = berth(
        &[
            "secret",
            "attach",
            "--secret",
            "regcred",
            "--secret",
            "keep-me",
            "--service-account",
            "builder",
            "-n",
            "app",
        ],
        "",
        &[],
    );
    let patch = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kubectl patch serviceaccount builder -n app -p '")
            && stderr.contains("kubectl rollout restart deployment -n app")
            && stderr.contains("only when the pod is created"),
        "{stderr}"
    );
    let want = service_account_yaml("builder", Some("app"), &["regcred", "keep-me"]).unwrap();
    for before in [
        service_account_yaml("builder", Some("app"), &[]).unwrap(),
        service_account_yaml("builder", Some("app"), &["old"]).unwrap(),
    ] {
        let file = dir.path().join("sa.yaml");
        std::fs::write(&file, before).unwrap();
        let patched = k.run(&[
            "patch".into(),
            "--local".into(),
            format!("-f={}", file.display()),
            format!("-p={}", patch.trim_end()),
            "-o=yaml".into(),
        ]);
        assert_eq!(patched, want);
    }
    // --full prints the same ServiceAccount for `kubectl apply`.
    let full = ok(&berth(
        &[
            "secret",
            "attach",
            "--secret",
            "regcred",
            "--secret",
            "keep-me",
            "--service-account",
            "builder",
            "-n",
            "app",
            "--full",
        ],
        "",
        &[],
    ));
    assert_eq!(full, want);
    let plain = k.run(&[
        "create".into(),
        "serviceaccount".into(),
        "builder".into(),
        "--namespace=app".into(),
        "--dry-run=client".into(),
        "-o=yaml".into(),
    ]);
    let file = dir.path().join("plain.yaml");
    std::fs::write(&file, plain).unwrap();
    assert_eq!(
        k.run(&[
            "patch".into(),
            "--local".into(),
            format!("-f={}", file.display()),
            format!("-p={}", patch.trim_end()),
            "-o=yaml".into(),
        ]),
        full
    );
    refused(
        &berth(&["secret", "attach", "--secret", "Bad_Name"], "", &[]),
        "secret name \"Bad_Name\" is invalid",
    );
}

struct Plugin {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Plugin {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reg.cred"), "robot:pa:ss<&>\n").unwrap();
        let path = dir.path().join("provider.toml");
        std::fs::write(&path, config).unwrap();
        Plugin { dir, config: path }
    }

    fn ask(&self, request: &str) -> Output {
        berth(
            &[
                "credential-provider",
                "--config",
                self.config.to_str().unwrap(),
            ],
            request,
            &[],
        )
    }
}

const PROVIDER_CONFIG: &str = r#"
[[registry]]
match = ["registry.example.com", "*.registry.example.com:5000"]
source = "static"
credentials_file = "reg.cred"
cache_duration = "6h"
"#;

fn request(version: &str, image: &str, extra: &str) -> String {
    format!(
        r#"{{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/{version}","image":"{image}"{extra}}}"#
    )
}

#[test]
fn credential_provider_answers_like_the_kubelet_expects() {
    let p = Plugin::new(PROVIDER_CONFIG);
    for extra in [
        "",
        r#","serviceAccountToken":"eyJhbGciOi.token","serviceAccountAnnotations":{"example.com/role":"puller"}"#,
    ] {
        let got = ok(&p.ask(&request("v1", "registry.example.com/team/app", extra)));
        assert_eq!(
            got,
            "{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"cacheKeyType\":\"Registry\",\"cacheDuration\":\"6h0m0s\",\"auth\":{\"registry.example.com\":{\"username\":\"robot\",\"password\":\"pa:ss<&>\"}}}\n"
        );
        // What the kubelet does with it: strict decoding, then the keyring.
        let r = CredentialProviderResponse::from_plugin_output(&got, ApiVersion::V1).unwrap();
        let found = r
            .to_keyring("berth")
            .lookup_repo("registry.example.com/team/app");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].entry.credentials.password, "pa:ss<&>");
    }
    // The request's apiVersion is echoed; ports and globs follow matchImages.
    for (version, api) in [
        ("v1beta1", ApiVersion::V1beta1),
        ("v1alpha1", ApiVersion::V1alpha1),
    ] {
        let got = ok(&p.ask(&request(version, "a.registry.example.com:5000/app", "")));
        let r = CredentialProviderResponse::from_plugin_output(&got, api).unwrap();
        assert_eq!(
            r.auth.keys().collect::<Vec<_>>(),
            ["a.registry.example.com:5000"]
        );
    }
    // Images berth has nothing for: a valid answer without credentials, not cached.
    for image in [
        "docker.io/library/nginx",
        "registry.example.com:5000/app",
        "a.b.registry.example.com:5000/app",
    ] {
        let out = p.ask(&request("v1", image, ""));
        let got = ok(&out);
        let r = CredentialProviderResponse::from_plugin_output(&got, ApiVersion::V1).unwrap();
        assert!(r.auth.is_empty(), "{image}");
        assert_eq!(
            got,
            "{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"cacheKeyType\":\"Image\",\"cacheDuration\":\"0s\"}\n"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("no [[registry]]"));
    }
}

#[test]
fn credential_provider_failures_print_nothing_on_stdout() {
    let p = Plugin::new(PROVIDER_CONFIG);
    for (req, why) in [
        ("".to_owned(), "not a CredentialProviderRequest"),
        ("{".to_owned(), "not a CredentialProviderRequest"),
        (
            request("v2", "registry.example.com/app", ""),
            "not a CredentialProviderRequest",
        ),
        (
            request("v1", "registry.example.com/app", "").replace(
                "CredentialProviderRequest",
                "CredentialProviderResponse",
            ),
            "not a CredentialProviderRequest",
        ),
        (
            r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1"}"#
                .to_owned(),
            "missing field `image`",
        ),
        (request("v1", "", ""), "empty image"),
    ] {
        refused(&p.ask(&req), why);
    }
    let good = request("v1", "registry.example.com/app", "");
    std::fs::remove_file(p.dir.path().join("reg.cred")).unwrap();
    refused(&p.ask(&good), "cannot read the credentials file");
    std::fs::write(p.dir.path().join("reg.cred"), "no-colon\n").unwrap();
    refused(&p.ask(&good), "username:password");

    let incomplete = Plugin::new(
        "[[registry]]\nmatch = [\"registry.example.com\"]\nsource = \"berth-registry\"\nurl = \"https://registry.example.com\"\n",
    );
    refused(
        &incomplete.ask(&good),
        "missing field `node_credentials_file`",
    );
    let no_config = berth(&["credential-provider"], &good, &[]);
    refused(&no_config, "pass --config FILE");
}

#[test]
fn example_config_is_a_valid_kubelet_config() {
    let strict = |text: &str| {
        let cfg: CredentialProviderConfig = serde_json::from_str(text).unwrap();
        // No member was dropped by decoding.
        assert_eq!(
            serde_json::to_value(&cfg).unwrap(),
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        assert_eq!(cfg.validate(false), Vec::<String>::new());
        assert_eq!(cfg.lint(), Vec::<String>::new());
        cfg
    };
    let json = ok(&berth(
        &["credential-provider", "example-config", "-o", "json"],
        "",
        &[],
    ));
    let cfg = strict(&json);
    let provider = &cfg.providers[0];
    assert_eq!(provider.name, "berth");
    assert_eq!(provider.api_version, ApiVersion::V1);
    assert_eq!(
        provider.args,
        [
            "credential-provider",
            "--config",
            "/etc/berth/credential-provider.toml"
        ]
    );
    let yaml = ok(&berth(&["credential-provider", "example-config"], "", &[]));
    assert_eq!(yaml, cfg.to_yaml());

    // From berth's own file: its patterns, its absolute path.
    let p = Plugin::new(PROVIDER_CONFIG);
    let json = ok(&berth(
        &[
            "credential-provider",
            "example-config",
            "--config",
            p.config.to_str().unwrap(),
            "-o",
            "json",
        ],
        "",
        &[],
    ));
    let cfg = strict(&json);
    assert_eq!(
        cfg.providers[0].match_images,
        ["registry.example.com", "*.registry.example.com:5000"]
    );
    assert_eq!(cfg.providers[0].args[2], p.config.to_str().unwrap());
    // The repository's example file is accepted as it is.
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../berth-credential-provider.example.toml");
    ok(&berth(
        &[
            "credential-provider",
            "example-config",
            "--config",
            example.to_str().unwrap(),
        ],
        "",
        &[],
    ));
}
