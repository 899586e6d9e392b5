//! containerd, the runtime behind the kubelet on most clusters, against berth
//! with authentication: `ctr` pulls and unpacks, pushes, and fails with the
//! texts a pod's events then carry, which `berth doctor` must recognise.
//! Fails (never skips) when containerd is missing; needs root, as containerd
//! does.

use crate::common::daemons::Containerd;
use crate::common::image::Layout;
use crate::common::{Server, fail, fixture, run_tool, sha256, succeed};
use berth_client::Outcome;
use berth_doctor::Reason;

/// The platform architecture of this machine, as image indexes name it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The event message the kubelet records when containerd's pull fails with
/// `ctr_error` (ctr prints the same chain of causes after its `ctr: ` prefix).
fn kubelet_event(image: &str, ctr_error: &str) -> String {
    let cause = ctr_error
        .lines()
        .find_map(|line| line.strip_prefix("ctr: "))
        .unwrap_or_else(|| panic!("no ctr error in:\n{ctr_error}"));
    format!(
        "Failed to pull image \"{image}\": rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": {cause}"
    )
}

/// What `berth doctor` names as the cause of that event.
fn doctor_reason(image: &str, ctr_error: &str) -> Reason {
    let event = kubelet_event(image, ctr_error);
    berth_doctor::events::classify(&event)
        .unwrap_or_else(|| panic!("doctor does not recognise: {event}"))
        .0
}

#[test]
fn containerd_pulls_and_pushes_through_the_token_flow() {
    let f = fixture("", &[]);
    let host = &f.server.addr;
    let work = tempfile::tempdir().unwrap();
    let layout_dir = work.path().join("image");
    let mut layout = Layout::new(&layout_dir);
    let other_arch = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let index = layout.index(&[host_arch(), other_arch], 21);
    layout.tag(&index, "v1");
    let single = layout.image(host_arch(), &[4_000], 22);
    layout.tag(&single, "single");
    let source = |tag: &str| format!("oci:{}:{tag}", layout_dir.display());
    for (tag, target) in [
        ("v1", "team/app:v1"),
        ("single", "public/app:v1"),
        ("single", "other/app:v1"),
    ] {
        run_tool(
            "skopeo",
            &[
                "copy",
                "--all",
                "--dest-tls-verify=false",
                "--dest-creds=root:root-pw",
                &source(tag),
                &format!("docker://{host}/{target}"),
            ],
        );
    }

    let containerd = Containerd::start();
    let image = |name: &str| format!("{host}/{name}");
    let pull = |user: Option<&str>, name: &str| {
        let mut command = containerd.ctr(&[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "native",
            "--all-platforms",
        ]);
        if let Some(user) = user {
            command.args(["--user", user]);
        }
        command.arg(image(name));
        command
    };

    // alice pulls (containerd's OAuth POST to the token endpoint) and unpacks
    // every platform; the digest is the index's own.
    succeed(&mut pull(Some("alice:alice-pw"), "team/app:v1"));
    assert_eq!(containerd.image_digest(&image("team/app:v1")), index.digest);
    // Anonymous pulls work where the policy grants them.
    succeed(&mut pull(None, "public/app:v1"));
    assert_eq!(
        containerd.image_digest(&image("public/app:v1")),
        single.digest
    );

    // bob pushes the index under a new name; berth keeps its exact bytes.
    succeed(&mut containerd.ctr(&[
        "images",
        "tag",
        &image("team/app:v1"),
        &image("team/copy:v1"),
    ]));
    succeed(&mut containerd.ctr(&[
        "images",
        "push",
        "--plain-http",
        "--user",
        "bob:bob-pw",
        &image("team/copy:v1"),
    ]));
    let pushed = run_tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds=root:root-pw",
            &format!("docker://{host}/team/copy:v1"),
        ],
    );
    assert_eq!(sha256(pushed.as_bytes()), index.digest);

    // Each failure, in containerd's words, is named correctly by the doctor.
    let cases = [
        (Some("alice:wrong"), "team/app:v1", Outcome::Unauthorized),
        (None, "team/app:v1", Outcome::AuthRequired),
        (Some("alice:alice-pw"), "other/app:v1", Outcome::Forbidden),
        (
            Some("alice:alice-pw"),
            "team/app:missing",
            Outcome::ManifestUnknown,
        ),
    ];
    for (user, name, expected) in cases {
        let error = fail(&mut pull(user, name));
        assert_eq!(
            doctor_reason(&image(name), &error),
            Reason::Probe(expected),
            "{user:?} pulling {name}: {error}"
        );
    }

    // A node with a stale password retries (the kubelet's back-off) and asks
    // twice per pull (OAuth2 POST, then GET): it keeps getting 401, the true
    // cause, rather than being locked out into 429s.
    for attempt in 0..4 {
        let error = fail(&mut pull(Some("alice:stale"), "team/app:v1"));
        assert_eq!(
            doctor_reason(&image("team/app:v1"), &error),
            Reason::Probe(Outcome::Unauthorized),
            "attempt {attempt}: {error}"
        );
    }

    // A pull-only user cannot push: containerd reports the 403.
    succeed(&mut containerd.ctr(&[
        "images",
        "tag",
        &image("team/app:v1"),
        &image("team/alice:v1"),
    ]));
    let error = fail(&mut containerd.ctr(&[
        "images",
        "push",
        "--plain-http",
        "--user",
        "alice:alice-pw",
        &image("team/alice:v1"),
    ]));
    assert!(error.contains("403 Forbidden"), "{error}");
}

/// berth over TLS with its self-signed CA, as a node meets it. Without
/// hosts.toml, containerd speaks plain HTTP to a loopback registry; with
/// `server = "https://…"` alone it does not trust the CA; with `ca = …`, as
/// `berth serve --tls-self-signed` advises, the pull works. The doctor names
/// each failure from containerd's own words.
#[test]
fn containerd_trusts_the_self_signed_ca_from_hosts_toml() {
    let server = Server::start(&["--tls-self-signed"]);
    let host = &server.addr;
    let ca = server.data_dir.join("tls/ca.crt");
    let work = tempfile::tempdir().unwrap();
    let layout_dir = work.path().join("image");
    let mut layout = Layout::new(&layout_dir);
    let image = layout.image(host_arch(), &[3_000], 31);
    layout.tag(&image, "v1");
    // skopeo reads a directory of CA certificates.
    let certs = work.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    run_tool(
        "skopeo",
        &[
            "copy",
            &format!("--dest-cert-dir={}", certs.display()),
            &format!("--dest-creds={}", server.admin_creds()),
            &format!("oci:{}:v1", layout_dir.display()),
            &format!("docker://{host}/secure/app:v1"),
        ],
    );

    let containerd = Containerd::start();
    let reference = format!("{host}/secure/app:v1");
    let creds = server.admin_creds();
    let pull = |hosts_dir: Option<&std::path::Path>| {
        let mut command = containerd.ctr(&[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--user",
            &creds,
        ]);
        if let Some(dir) = hosts_dir {
            command.arg("--hosts-dir").arg(dir);
        }
        command.arg(&reference);
        command
    };

    let error = fail(&mut pull(None));
    assert_eq!(
        doctor_reason(&reference, &error),
        Reason::Probe(Outcome::HttpRequestToHttps),
        "{error}"
    );

    let hosts = work.path().join("certs.d");
    std::fs::create_dir_all(hosts.join(host)).unwrap();
    let hosts_toml = |ca_line: &str| {
        std::fs::write(
            hosts.join(host).join("hosts.toml"),
            format!("server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n{ca_line}"),
        )
        .unwrap();
    };
    hosts_toml("");
    let error = fail(&mut pull(Some(&hosts)));
    assert_eq!(
        doctor_reason(&reference, &error),
        Reason::Probe(Outcome::TlsUnknownAuthority),
        "{error}"
    );

    hosts_toml(&format!("  ca = \"{}\"\n", ca.display()));
    succeed(&mut pull(Some(&hosts)));
    assert_eq!(containerd.image_digest(&reference), image.digest);
}
