//! Golden tests: berth's renderers against the real kubectl.
//!
//! Every case runs `kubectl ... --dry-run=client -o yaml|json` (no cluster is
//! contacted) and requires byte equality. kubectl is required: the tests
//! fail, not skip, when it is missing. Set `KUBECTL` to use another binary.

use std::path::Path;

use berth_kube::secret::{
    DEFAULT_DOCKER_SERVER, DockerRegistrySecret, SecretType, image_pull_secrets_json_patch,
    image_pull_secrets_patch, service_account_json, service_account_yaml,
};
use berth_testkit::Kubectl;

fn arg(s: impl Into<String>) -> String {
    s.into()
}

fn path_arg(prefix: &str, p: &Path) -> String {
    format!("{prefix}{}", p.display())
}

/// The flags kubectl needs for `s` (the server flag omitted when it is the default).
fn docker_registry_args(s: &DockerRegistrySecret, omit_default_server: bool) -> Vec<String> {
    let mut args = vec![
        arg("create"),
        arg("secret"),
        arg("docker-registry"),
        s.name.clone(),
    ];
    if !(omit_default_server && s.server == DEFAULT_DOCKER_SERVER) {
        args.push(format!("--docker-server={}", s.server));
    }
    args.push(format!("--docker-username={}", s.username));
    args.push(format!("--docker-password={}", s.password));
    if !s.email.is_empty() {
        args.push(format!("--docker-email={}", s.email));
    }
    if let Some(ns) = &s.namespace {
        args.push(format!("--namespace={ns}"));
    }
    if s.append_hash {
        args.push(arg("--append-hash"));
    }
    args.push(arg("--dry-run=client"));
    args
}

fn cases() -> Vec<DockerRegistrySecret> {
    let base = |name: &str, user: &str, pass: &str| DockerRegistrySecret::new(name, user, pass);
    let long_password = "Zx9-".repeat(80);
    vec![
        base("my-secret", "u<>&", "p:w").server("reg.example.com"),
        base("hub", "alice", "hunter2"),
        base("hub-email", "alice", "hunter2").email("alice@example.com"),
        base("hub-ns", "alice", "hunter2").namespace("team-a"),
        base("hub-hash", "alice", "hunter2").append_hash(true),
        base("all", "bob", "pw")
            .server("registry.example.com:5000")
            .email("b@x.io")
            .namespace("prod")
            .append_hash(true),
        base("specials", "us er", "<>&\"'\\ `$(x)").server("reg.example.com"),
        base("colons", "robot$ci", "a:b:c::").server("reg.example.com"),
        base("unicode", "jürgen", "pässwörd-😀-\u{2028}-\u{2029}-✓").server("reg.example.com"),
        base(
            "controls",
            "u",
            "tab\there\u{8}back\u{c}feed\u{1}\u{1f}\u{7f}",
        )
        .server("reg.example.com"),
        base("email-escape", "u", "p")
            .email("<a&b>@example.com")
            .server("reg.example.com"),
        base("port", "u", "p").server("reg.example.com:5000"),
        base("https", "u", "p").server("https://reg.example.com"),
        base("https-v2", "u", "p").server("https://reg.example.com:8443/v2/"),
        base("http-local", "u", "p").server("http://localhost:5000"),
        base("ipv6", "u", "p").server("[::1]:5000"),
        base("ipv4", "u", "p").server("10.0.0.7:5000"),
        base("wildcard", "u", "p").server("*.dkr.ecr.us-east-1.amazonaws.com"),
        base("path-scoped", "u", "p").server("reg.example.com/team-a"),
        base("docker-io", "u", "p").server("docker.io"),
        base("long", "svc", &long_password).server("reg.example.com"),
        base("long-hash", "svc", &long_password)
            .server("reg.example.com")
            .append_hash(true),
        // Names and namespaces that go-yaml must quote, or must not.
        base("123", "u", "p").namespace("456"),
        base("on", "u", "p").namespace("y"),
        base("2001-12-14", "u", "p").namespace("n"),
        base("0x1f", "u", "p").namespace("true"),
        base("1e3", "u", "p").namespace("null"),
        base("1e-3", "u", "p").namespace("0123"),
        base("1.5", "u", "p").namespace("09"),
        base("0.0", "u", "p").namespace("0o17"),
        base("1e999", "u", "p").namespace("0b101"),
        base("2001-2-30", "u", "p").namespace("1-2"),
        base("12.34.56", "u", "p").namespace("yes"),
        base("2000-02-29", "u", "p").namespace("off"),
        base("1900-02-29", "u", "p"),
        base("a.b.c", "u", "p").append_hash(true),
        base("123", "u", "p").append_hash(true),
    ]
}

#[test]
fn docker_registry_secrets_match_kubectl() {
    let k = Kubectl::new();
    for secret in cases() {
        secret
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", secret.name));
        for output in ["yaml", "json"] {
            let mut args = docker_registry_args(&secret, true);
            args.push(format!("--output={output}"));
            let want = k.run(&args);
            let got = if output == "yaml" {
                secret.to_yaml()
            } else {
                secret.to_json()
            }
            .unwrap();
            assert_eq!(got, want, "kubectl {args:?}");
        }
        // Spelling out kubectl's default server changes nothing.
        if secret.server == DEFAULT_DOCKER_SERVER {
            let mut args = docker_registry_args(&secret, false);
            args.push(arg("-o=yaml"));
            assert_eq!(
                secret.to_yaml().unwrap(),
                k.run(&args),
                "explicit default server"
            );
        }
    }
}

#[test]
fn legacy_dockercfg_secrets_match_kubectl() {
    // kubectl has no generator for kubernetes.io/dockercfg; the closest is a
    // generic secret of that type holding the payload, which fixes the
    // envelope, key, type and hash.
    let k = Kubectl::new();
    let legacy: Vec<DockerRegistrySecret> = cases()
        .into_iter()
        .filter(|s| {
            [
                "my-secret",
                "hub-email",
                "all",
                "unicode",
                "123",
                "long-hash",
            ]
            .contains(&s.name.as_str())
        })
        .map(|s| s.secret_type(SecretType::Dockercfg))
        .collect();
    assert_eq!(legacy.len(), 7);
    for (i, secret) in legacy.iter().enumerate() {
        let file = k.write(&format!("dockercfg-{i}"), &secret.payload());
        for output in ["yaml", "json"] {
            let mut args = vec![
                arg("create"),
                arg("secret"),
                arg("generic"),
                secret.name.clone(),
                arg("--type=kubernetes.io/dockercfg"),
                path_arg("--from-file=.dockercfg=", &file),
                arg("--dry-run=client"),
                format!("--output={output}"),
            ];
            if let Some(ns) = &secret.namespace {
                args.push(format!("--namespace={ns}"));
            }
            if secret.append_hash {
                args.push(arg("--append-hash"));
            }
            let want = k.run(&args);
            let got = if output == "yaml" {
                secret.to_yaml()
            } else {
                secret.to_json()
            }
            .unwrap();
            assert_eq!(got, want, "kubectl {args:?}");
        }
    }
}

#[test]
fn dockerconfigjson_payload_survives_from_file() {
    // The same payload through --from-file must give the same object as the
    // docker-registry generator: kubectl copies the file verbatim.
    let k = Kubectl::new();
    for (i, secret) in cases().into_iter().take(12).enumerate() {
        let file = k.write(&format!("config-{i}.json"), &secret.payload());
        let mut args = vec![
            arg("create"),
            arg("secret"),
            arg("docker-registry"),
            secret.name.clone(),
            path_arg("--from-file=.dockerconfigjson=", &file),
            arg("--dry-run=client"),
            arg("-o=yaml"),
        ];
        if let Some(ns) = &secret.namespace {
            args.push(format!("--namespace={ns}"));
        }
        if secret.append_hash {
            args.push(arg("--append-hash"));
        }
        assert_eq!(secret.to_yaml().unwrap(), k.run(&args), "kubectl {args:?}");
    }
}

#[test]
fn service_accounts_match_kubectl() {
    let k = Kubectl::new();
    for (name, ns) in [
        ("builder", Some("team")),
        ("default", None),
        ("123", Some("on")),
        ("a.b", None),
    ] {
        let mut args = vec![
            arg("create"),
            arg("serviceaccount"),
            arg(name),
            arg("--dry-run=client"),
        ];
        if let Some(ns) = ns {
            args.push(format!("--namespace={ns}"));
        }
        let mut yaml_args = args.clone();
        yaml_args.push(arg("-o=yaml"));
        assert_eq!(
            service_account_yaml(name, ns, &[]).unwrap(),
            k.run(&yaml_args),
            "{yaml_args:?}"
        );
        let mut json_args = args;
        json_args.push(arg("-o=json"));
        assert_eq!(
            service_account_json(name, ns, &[]).unwrap(),
            k.run(&json_args),
            "{json_args:?}"
        );
    }
}

#[test]
fn service_account_patches_match_kubectl() {
    // Apply berth's patch to berth's manifest with `kubectl patch --local`;
    // the result must be berth's manifest for the merged list.
    let k = Kubectl::new();
    let scenarios: [(&[&str], &[&str], &[&str]); 5] = [
        (&["a"], &["b"], &[]),
        (&[], &["regcred"], &[]),
        (&["old", "keep"], &["new", "keep"], &["old"]),
        (&["x", "y"], &["x"], &[]),
        (&["only"], &[], &["only"]),
    ];
    for (i, (existing, add, remove)) in scenarios.iter().enumerate() {
        for (ns, sa) in [(Some("team"), "default"), (None, "123")] {
            let before = service_account_yaml(sa, ns, existing).unwrap();
            let file = k.write(&format!("sa-{i}.yaml"), &before);
            let patch = image_pull_secrets_patch(existing, add, remove).unwrap();
            let names: Vec<&str> = patch.names.iter().map(String::as_str).collect();
            let expected = service_account_yaml(sa, ns, &names).unwrap();
            for patch_type in ["strategic", "merge"] {
                let args = vec![
                    arg("patch"),
                    arg("--local"),
                    path_arg("-f=", &file),
                    format!("--type={patch_type}"),
                    format!("-p={}", patch.body),
                    arg("-o=yaml"),
                ];
                assert_eq!(expected, k.run(&args), "kubectl {args:?}");
            }
        }
    }
    // The JSON-patch form appends without knowing the list.
    for (existing, list_exists) in [(&["a"][..], true), (&[][..], false)] {
        let before = service_account_yaml("default", None, existing).unwrap();
        let file = k.write("sa-json.yaml", &before);
        let body = image_pull_secrets_json_patch("added", list_exists).unwrap();
        let args = vec![
            arg("patch"),
            arg("--local"),
            path_arg("-f=", &file),
            arg("--type=json"),
            format!("-p={body}"),
            arg("-o=yaml"),
        ];
        let mut names = existing.to_vec();
        names.push("added");
        assert_eq!(
            service_account_yaml("default", None, &names).unwrap(),
            k.run(&args),
            "kubectl {args:?}"
        );
    }
}
