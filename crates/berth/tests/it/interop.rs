//! Real clients against a real berth: skopeo and podman, from Debian's packages.
//! These tests fail (they never skip) when a client is missing.

use std::path::Path;

use crate::common::image::{Layout, layout_digest};
use crate::common::{Server, run_tool_failing, sha256, skopeo, succeed};

fn blob_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn skopeo_copies_a_multi_layer_image_in_and_out_unchanged() {
    let server = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let mut layout = Layout::new(&source);
    let image = layout.image("amd64", &[2 << 20, 100_000, 10_000], 1);
    layout.tag(&image, "v1");

    let remote = format!("docker://{}/interop/app:v1", server.addr);
    skopeo(
        &server,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", source.display()),
            &remote,
        ],
    );

    let raw = skopeo(
        &server,
        &["inspect", "--tls-verify=false", "--raw", &remote],
    );
    assert_eq!(
        sha256(raw.as_bytes()),
        image.digest,
        "the registry serves the pushed bytes"
    );

    let inspect: serde_json::Value = serde_json::from_str(&skopeo(
        &server,
        &["inspect", "--tls-verify=false", &remote],
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], image.digest);
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);

    let back = work.path().join("back");
    skopeo(
        &server,
        &[
            "copy",
            "--src-tls-verify=false",
            &remote,
            &format!("oci:{}:v1", back.display()),
        ],
    );
    assert_eq!(layout_digest(&back, "v1"), image.digest);
    assert_eq!(
        blob_names(&back),
        blob_names(&source),
        "every blob comes back byte for byte"
    );

    // A second tag and the tag list.
    skopeo(
        &server,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", source.display()),
            &format!("docker://{}/interop/app:v2", server.addr),
        ],
    );
    let tags: serde_json::Value = serde_json::from_str(&skopeo(
        &server,
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/interop/app", server.addr),
        ],
    ))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1", "v2"]));

    // skopeo delete removes the manifest (and so both tags).
    skopeo(&server, &["delete", "--tls-verify=false", &remote]);
    let creds = format!("--creds={}", server.admin_creds());
    let stderr = run_tool_failing(
        "skopeo",
        &["inspect", &creds, "--tls-verify=false", "--raw", &remote],
    );
    assert!(stderr.contains("manifest unknown"), "{stderr}");
}

#[test]
fn skopeo_copies_a_multi_arch_index() {
    let server = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let mut layout = Layout::new(&source);
    let index = layout.index(&["amd64", "arm64", "s390x"], 7);
    layout.tag(&index, "multi");

    let remote = format!("docker://{}/interop/multi:1.0", server.addr);
    skopeo(
        &server,
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &format!("oci:{}:multi", source.display()),
            &remote,
        ],
    );
    let raw = skopeo(
        &server,
        &["inspect", "--tls-verify=false", "--raw", &remote],
    );
    assert_eq!(sha256(raw.as_bytes()), index.digest);

    // Each platform resolves through the index.
    let arm: serde_json::Value = serde_json::from_str(&skopeo(
        &server,
        &[
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            &remote,
        ],
    ))
    .unwrap();
    assert_eq!(arm["Architecture"], "arm64");

    let back = work.path().join("back");
    skopeo(
        &server,
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &remote,
            &format!("oci:{}:multi", back.display()),
        ],
    );
    assert_eq!(layout_digest(&back, "multi"), index.digest);
    assert_eq!(blob_names(&back), blob_names(&source));
}

#[test]
fn podman_pulls_and_pushes() {
    let server = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let mut layout = Layout::new(&source);
    let image = layout.image("amd64", &[50_000, 20_000], 3);
    layout.tag(&image, "v1");
    let pulled = format!("{}/podman/source:v1", server.addr);
    skopeo(
        &server,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", source.display()),
            &format!("docker://{pulled}"),
        ],
    );

    let podman = |args: &[&str]| succeed(crate::common::podman(work.path()).args(args));
    let creds = server.admin_creds();
    podman(&["pull", "--tls-verify=false", "--creds", &creds, &pulled]);
    let pushed = format!("{}/podman/copy:v1", server.addr);
    podman(&["tag", &pulled, &pushed]);
    podman(&["push", "--tls-verify=false", "--creds", &creds, &pushed]);
    podman(&["rmi", "--all", "--force"]);
    podman(&["pull", "--tls-verify=false", "--creds", &creds, &pushed]);
    let images = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("podman/copy:v1"), "{images}");

    let inspect: serde_json::Value = serde_json::from_str(&skopeo(
        &server,
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{pushed}"),
        ],
    ))
    .unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
}
