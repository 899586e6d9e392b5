//! berth's own container image: `scripts/image` builds it offline with
//! podman (FROM scratch: the binary and the libraries it loads, a non-root
//! user, the CA bundle), berth hosts it (pushed into a running berth by
//! podman), and what a client pulls back holds exactly that binary and runs
//! as that user. (Running it here is not possible: this machine's runc may
//! not set a container's rlimits.)

use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use crate::common::{Server, podman, sha256, skopeo, succeed};

#[test]
fn berth_builds_its_own_image_and_hosts_it() {
    let server = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    // The storage common::podman uses, so that it can push what was built.
    let global = format!(
        "podman --root {} --runroot {} --storage-driver vfs --events-backend file \
         --cgroup-manager cgroupfs",
        dir.join("podman-root").display(),
        dir.join("podman-run").display()
    );
    let binary = env!("CARGO_BIN_EXE_berth");
    let tag = "localhost/berth:it";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/image");
    let built = succeed(
        Command::new(script)
            .args(["--binary", binary, "--tag", tag])
            .env("PODMAN", global),
    );
    assert_eq!(built.trim(), tag);

    let target = format!("{}/berth:it", server.addr);
    succeed(podman(dir).args([
        "push",
        "--tls-verify=false",
        "--creds",
        &server.admin_creds(),
        tag,
        &target,
    ]));
    let layout = dir.join("pulled");
    skopeo(
        &server,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{target}"),
            &format!("oci:{}:it", layout.display()),
        ],
    );

    let blob =
        |digest: &str| std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap();
    let json = |bytes: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
    let index = json(std::fs::read(layout.join("index.json")).unwrap());
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = json(blob(manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/berth");

    // Path → (mode, owner, content).
    let mut files = std::collections::HashMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let bytes = blob(layer["digest"].as_str().unwrap());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let header = entry.header();
            let (mode, owner) = (header.mode().unwrap(), header.uid().unwrap());
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            let path = path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned();
            files.insert(path, (mode, owner, content));
        }
    }
    let (_, _, inside) = files
        .get("usr/local/bin/berth")
        .expect("the binary is in the image");
    assert_eq!(sha256(inside), sha256(&std::fs::read(binary).unwrap()));
    let (loader, (mode, _, _)) = files
        .iter()
        .find(|(path, _)| path.contains("ld-linux"))
        .expect("the loader is in the image");
    assert_eq!(mode & 0o111, 0o111, "{loader} must be executable");
    let (_, _, bundle) = &files["etc/ssl/certs/ca-certificates.crt"];
    assert!(
        bundle.starts_with(b"-----BEGIN CERTIFICATE-----"),
        "the CA bundle"
    );
    let (_, owner, _) = &files["var/lib/berth"];
    assert_eq!(*owner, 65532, "the data directory belongs to berth's user");
    let passwd = String::from_utf8_lossy(&files["etc/passwd"].2).into_owned();
    assert!(passwd.contains("berth:x:65532:65532:"), "{passwd}");
}
