//! skopeo and podman against berth with authentication and TLS: what users of
//! those clients see for good and bad credentials, missing rights, anonymous
//! pulls, expiring robots and a self-signed CA. Fails when a client is missing.

use std::time::Duration;

use crate::common::image::Layout;
use crate::common::{Server, create_robot, fixture, run_tool, run_tool_failing};

/// An OCI layout with one small image tagged v1.
fn image(dir: &std::path::Path) -> String {
    let mut layout = Layout::new(dir);
    let image = layout.image("amd64", &[20_000, 5_000], 11);
    layout.tag(&image, "v1");
    format!("oci:{}:v1", dir.display())
}

fn lower(text: String) -> String {
    text.to_lowercase()
}

#[test]
fn skopeo_sees_401_403_and_anonymous_access_as_the_policy_says() {
    let f = fixture("", &[]);
    let work = tempfile::tempdir().unwrap();
    let source = image(&work.path().join("image"));
    let host = &f.server.addr;
    for repo in ["team/app", "public/app"] {
        run_tool(
            "skopeo",
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds=root:root-pw",
                &source,
                &format!("docker://{host}/{repo}:v1"),
            ],
        );
    }

    // Good credentials pull.
    run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds=alice:alice-pw",
            &format!("docker://{host}/team/app:v1"),
        ],
    );

    // A wrong password: the client reports the 401.
    let err = lower(run_tool_failing(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds=alice:wrong",
            &format!("docker://{host}/team/app:v1"),
        ],
    ));
    assert!(err.contains("unauthorized") || err.contains("401"), "{err}");

    // Pull-only alice cannot push: the client reports the 403.
    let err = lower(run_tool_failing(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds=alice:alice-pw",
            &source,
            &format!("docker://{host}/team/app:v2"),
        ],
    ));
    assert!(err.contains("denied"), "{err}");

    // Anonymous pull works where the policy grants it, and nowhere else.
    run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--no-creds",
            &format!("docker://{host}/public/app:v1"),
        ],
    );
    let err = lower(run_tool_failing(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--no-creds",
            &format!("docker://{host}/team/app:v1"),
        ],
    ));
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );
}

#[test]
fn a_robot_credential_works_with_skopeo_until_it_expires() {
    let f = fixture("", &[]);
    let work = tempfile::tempdir().unwrap();
    let source = image(&work.path().join("image"));
    let host = &f.server.addr;
    let target = format!("docker://{host}/team/app:v1");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds=root:root-pw",
            &source,
            &target,
        ],
    );

    let data_dir = f.server.data_dir.to_str().unwrap();
    let (username, password) = create_robot(&[
        "ci",
        "--repo",
        "team/**",
        "--actions",
        "pull,push",
        "--ttl",
        "10s",
        "--data-dir",
        data_dir,
    ]);
    // The expiry is fixed during `create`: counting from its return always
    // reaches it.
    let created = std::time::Instant::now();
    let creds = format!("{username}:{password}");

    run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("--creds={creds}"),
            &target,
        ],
    );
    run_tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("--dest-creds={creds}"),
            &source,
            &format!("docker://{host}/team/robot:v1"),
        ],
    );
    // Wait past the expiry, plus one second for its resolution.
    std::thread::sleep(
        (created + Duration::from_secs(11)).saturating_duration_since(std::time::Instant::now()),
    );
    let err = lower(run_tool_failing(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("--creds={creds}"),
            &target,
        ],
    ));
    assert!(err.contains("unauthorized") || err.contains("401"), "{err}");
}

#[test]
fn skopeo_and_podman_over_tls_with_the_self_signed_ca() {
    let server = Server::start(&["--tls-self-signed"]);
    let work = tempfile::tempdir().unwrap();
    let source = image(&work.path().join("image"));
    // containers/image reads a directory of CA certificates (*.crt), and
    // takes any *.key there for a client key: berth logs one that holds the
    // CA alone, by its absolute path.
    let certs = server.data_dir.join("tls/ca");
    assert_eq!(
        std::fs::read_dir(&certs).unwrap().count(),
        1,
        "the CA certificate alone"
    );
    let certs = certs.to_str().unwrap();
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains(&format!("--cert-dir {certs}"))),
        "the log names the directory"
    );
    let creds = server.admin_creds();
    let target = format!("docker://{}/secure/app:v1", server.addr);

    // Without the CA the certificate is refused.
    let err = lower(run_tool_failing(
        "skopeo",
        &["inspect", &format!("--creds={creds}"), &target],
    ));
    assert!(err.contains("certificate") || err.contains("x509"), "{err}");

    run_tool(
        "skopeo",
        &[
            "copy",
            &format!("--dest-cert-dir={certs}"),
            &format!("--dest-creds={creds}"),
            &source,
            &target,
        ],
    );
    let inspect: serde_json::Value = serde_json::from_str(&run_tool(
        "skopeo",
        &[
            "inspect",
            &format!("--cert-dir={certs}"),
            &format!("--creds={creds}"),
            &target,
        ],
    ))
    .unwrap();
    assert_eq!(inspect["Architecture"], "amd64");

    // podman: login (wrong, then right) and pull, trusting the CA.
    let podman = |args: &[&str]| {
        crate::common::podman(work.path())
            .args(args)
            .output()
            .expect("podman is installed (scripts/test installs it)")
    };
    let out = podman(&[
        "login",
        "--cert-dir",
        certs,
        "-u",
        "admin",
        "-p",
        "wrong",
        &server.addr,
    ]);
    assert!(!out.status.success());
    let err = lower(String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(
        err.contains("unauthorized")
            || err.contains("401")
            || err.contains("invalid username/password"),
        "{err}"
    );
    let password = server.admin_password();
    let out = podman(&[
        "login",
        "--cert-dir",
        certs,
        "-u",
        "admin",
        "-p",
        &password,
        &server.addr,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = podman(&[
        "pull",
        "--cert-dir",
        certs,
        &format!("{}/secure/app:v1", server.addr),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
