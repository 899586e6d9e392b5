//! HTTPS for `berth serve`: certificates from files (reloaded when they change)
//! or a CA and server certificate generated into the data directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum_server::tls_rustls::RustlsConfig;
use berth_auth::files::write_private;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// How often certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The files of a self-signed setup, under `DATA_DIR/tls`.
pub struct SelfSigned {
    pub ca_cert: PathBuf,
    /// A directory holding the CA certificate alone, for clients' cert
    /// directories (podman, skopeo and docker's `--cert-dir` take any
    /// `*.key` beside it for a client key, so `tls/` itself will not do).
    pub trust_dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    // It signs server certificates only, never another CA. (Name
    // constraints would also bound what it signs, but would need a new CA,
    // distrusted by every node, whenever --tls-host gains a name.)
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "berth registry CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Creates (once) a CA and, whenever the host list changes, a server
/// certificate for `hosts` signed by it.
pub fn self_signed(data_dir: &Path, hosts: &[String]) -> Result<SelfSigned> {
    // Absolute, so the paths logged for clients work from anywhere.
    let data_dir = std::path::absolute(data_dir)
        .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let dir = data_dir.join("tls");
    let trust_dir = dir.join("ca");
    std::fs::create_dir_all(&trust_dir)
        .with_context(|| format!("cannot create {}", trust_dir.display()))?;
    let files = SelfSigned {
        ca_cert: dir.join("ca.crt"),
        trust_dir,
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    let ca_key_path = dir.join("ca.key");
    let hosts_path = dir.join("server.hosts");

    // Only a missing key means "no CA yet": a new CA would break every node
    // that trusts the old one.
    let ca_key = match std::fs::read_to_string(&ca_key_path) {
        Ok(pem) => KeyPair::from_pem(&pem).context("the stored CA key is not valid")?,
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read {}: give the user berth runs as read access to it",
                    ca_key_path.display()
                )
            });
        }
        Err(_) => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_private(&ca_key_path, &key.serialize_pem())?;
            std::fs::write(&files.ca_cert, cert.pem())?;
            key
        }
    };
    let wanted = hosts.join("\n");
    let current = std::fs::read_to_string(&hosts_path).unwrap_or_default();
    if current != wanted || !files.cert.exists() || !files.key.exists() {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(
            DnType::CommonName,
            hosts.first().map_or("berth", String::as_str),
        );
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(h.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()
            .context("a --tls-host is neither a host name nor an IP address")?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        // The issuer is rebuilt from the same name and key as the stored CA
        // certificate, so certificates signed now chain to it.
        let issuer = Issuer::new(ca_params()?, &ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&files.key, &key.serialize_pem())?;
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&hosts_path, wanted)?;
    }
    std::fs::copy(&files.ca_cert, files.trust_dir.join("ca.crt"))
        .with_context(|| format!("cannot copy the CA into {}", files.trust_dir.display()))?;
    Ok(files)
}

/// Loads a certificate and key and keeps them current: a renewed certificate
/// (cert-manager rewriting a Secret) is picked up without a restart.
pub async fn load(cert: &Path, key: &Path) -> Result<RustlsConfig> {
    let config = RustlsConfig::from_pem_file(cert, key).await.with_context(|| {
        format!(
            "cannot load the TLS certificate {} and key {}: check they are PEM files that belong together",
            cert.display(),
            key.display()
        )
    })?;
    tokio::spawn(reload(config.clone(), cert.to_owned(), key.to_owned()));
    Ok(config)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

async fn reload(config: RustlsConfig, cert: PathBuf, key: PathBuf) {
    let mut seen = (modified(&cert), modified(&key));
    loop {
        tokio::time::sleep(RELOAD_CHECK).await;
        let now = (modified(&cert), modified(&key));
        if now == seen {
            continue;
        }
        match config.reload_from_pem_file(&cert, &key).await {
            Ok(()) => {
                seen = now;
                tracing::info!(cert = %cert.display(), "reloaded the TLS certificate");
            }
            // Half-written files: try again at the next check.
            Err(e) => tracing::warn!(error = %e, "could not reload the TLS certificate yet"),
        }
    }
}
