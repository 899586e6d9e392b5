//! HTTPS from certificate files, and their reload when the files change (what
//! cert-manager does to a mounted Secret).

use std::time::{Duration, Instant};

use crate::common::Server;

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM.
fn certificate(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

fn client(ca: &str) -> reqwest::Client {
    crate::common::install_crypto_provider();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn certificate_files_are_served_and_reloaded_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, cert1, key1) = certificate("first");
    let (ca2, cert2, key2) = certificate("second");
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, cert1).unwrap();
    std::fs::write(&key_path, key1).unwrap();
    let server = Server::start(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    assert!(server.base.starts_with("https://"));
    let url = server.url("/healthz");
    assert_eq!(client(&ca1).get(&url).send().await.unwrap().status(), 200);
    assert!(client(&ca2).get(&url).send().await.is_err());

    // Renewal: both files replaced while berth runs.
    std::fs::write(&cert_path, cert2).unwrap();
    std::fs::write(&key_path, key2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client(&ca2).get(&url).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        client(&ca1).get(&url).send().await.is_err(),
        "the old certificate is gone"
    );
}

#[test]
fn a_key_that_does_not_match_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, _) = certificate("one");
    let (_, _, other_key) = certificate("two");
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), other_key).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot load the TLS certificate"),
        "{stderr}"
    );
}
