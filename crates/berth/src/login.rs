//! `berth login` and `berth logout`: credentials in docker's `config.json`,
//! written as `docker login` writes them.
//!
//! The credentials are checked first, with `GET /v2/` through the registry's
//! token flow, and the file is written only when the registry accepts them,
//! so a typo never replaces a working password. Everything else in the file
//! (other registries, `credsStore`, `credHelpers`, proxies, unknown members)
//! stays as it is. With a credential helper configured for the registry,
//! the helper keeps the password and the file an empty entry, as with docker.

use std::ffi::OsString;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use berth_client::{ClientConfig, Credentials, Outcome, Probe, RegistryClient};
use berth_kube::cred_helper::{self, convert_to_hostname};
use berth_kube::docker_config::DockerConfigFile;
use clap::Args;

/// The key docker uses for Docker Hub (`registry.IndexServer`).
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Args)]
pub struct LoginArgs {
    /// The registry: host[:port] as in image names, or a URL; docker.io means
    /// Docker Hub
    server: String,

    /// User name (a robot account logs in as robot.NAME); prompted for when absent
    #[arg(short, long)]
    username: Option<String>,

    /// Read the password from the first line of standard input (needs --username)
    #[arg(long, requires = "username")]
    password_stdin: bool,

    #[command(flatten)]
    file: ConfigFileArg,

    /// PEM file of a CA to trust besides the system's (repeatable), e.g. the
    /// CA of `berth serve --tls-self-signed`
    #[arg(long, value_name = "FILE")]
    ca_file: Vec<PathBuf>,

    /// Speak plain HTTP to the registry (also implied by an http:// SERVER)
    #[arg(long)]
    insecure: bool,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// The registry, as given to `berth login`
    server: String,

    #[command(flatten)]
    file: ConfigFileArg,
}

#[derive(Args)]
struct ConfigFileArg {
    /// The docker config file [default: $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json]
    #[arg(long, value_name = "PATH")]
    config_file: Option<PathBuf>,
}

impl ConfigFileArg {
    fn path(self) -> anyhow::Result<PathBuf> {
        match self.config_file {
            Some(path) => Ok(path),
            None => {
                default_config_path(std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME"))
            }
        }
    }
}

/// docker's rule: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn default_config_path(
    docker_config: Option<OsString>,
    home: Option<OsString>,
) -> anyhow::Result<PathBuf> {
    if let Some(dir) = docker_config.filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = home.filter(|h| !h.is_empty()).context(
        "HOME is not set, so ~/.docker/config.json cannot be found; pass --config-file PATH",
    )?;
    Ok(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The `auths` key `docker login SERVER` writes: Docker Hub's historical
/// URL for `docker.io` (or that URL itself), else the bare `host[:port]`
/// (scheme and path dropped).
pub fn config_key(server: &str) -> String {
    if server.is_empty() || server == "docker.io" || server == DOCKER_HUB_KEY {
        DOCKER_HUB_KEY.to_owned()
    } else {
        convert_to_hostname(server).to_owned()
    }
}

/// The registry as the client addresses it (`docker.io` for Docker Hub).
fn registry_host(key: &str) -> &str {
    if key == DOCKER_HUB_KEY {
        "docker.io"
    } else {
        key
    }
}

/// The keys `berth logout SERVER` removes: what `berth login` writes, and
/// the spellings older clients wrote, as `docker logout` does. Unlike
/// docker, `docker.io` also removes Docker Hub's key, which login wrote.
pub fn logout_keys(server: &str) -> Vec<String> {
    let key = config_key(server);
    let mut keys = vec![server.to_owned(), key.clone()];
    if key != DOCKER_HUB_KEY {
        keys.push(format!("http://{key}"));
        keys.push(format!("https://{key}"));
    }
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| !k.is_empty() && seen.insert(k.clone()));
    keys
}

/// Why a login failed, with what to do about it.
fn login_failure(server: &str, username: &str, path: &Path, probe: &Probe) -> anyhow::Error {
    let unchanged = format!("{} was not changed", path.display());
    match probe.outcome {
        Outcome::Unauthorized | Outcome::AuthRequired => anyhow::anyhow!(
            "{server} answered 401 Unauthorized: it does not accept this password for {username:?} \
             ({}). {unchanged}. Check the user name and password (a robot account logs in as \
             robot.NAME with its secret) and run berth login again",
            probe.detail
        ),
        Outcome::RateLimited => anyhow::anyhow!(
            "{server} answered 429: too many failed logins from here; wait a minute and retry. \
             {unchanged}"
        ),
        Outcome::TlsUnknownAuthority => anyhow::anyhow!(
            "{}. {unchanged}. Pass the registry's CA certificate with --ca-file",
            probe.detail
        ),
        Outcome::HttpResponseToHttps => anyhow::anyhow!(
            "{}. {unchanged}. The registry serves plain HTTP: add --insecure",
            probe.detail
        ),
        Outcome::HttpRequestToHttps => anyhow::anyhow!(
            "{}. {unchanged}. Drop --insecure (and any http:// in the server), adding --ca-file \
             if its CA is not a public one",
            probe.detail
        ),
        _ => anyhow::anyhow!("cannot log in to {server}: {}. {unchanged}", probe.detail),
    }
}

/// The file's bytes (if it exists) and its parsed content.
fn read_config(path: &Path) -> anyhow::Result<(Option<Vec<u8>>, DockerConfigFile)> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((
                None,
                DockerConfigFile::new(berth_kube::docker_config::ConfigFormat::ConfigJson),
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?;
    // An empty file is what a fresh `touch` leaves; docker treats it as empty.
    let doc = if text.trim().is_empty() {
        DockerConfigFile::new(berth_kube::docker_config::ConfigFormat::ConfigJson)
    } else {
        DockerConfigFile::parse_config_json(&text).with_context(|| {
            format!(
                "{} is not a valid docker config file; fix it, or pass another with --config-file",
                path.display()
            )
        })?
    };
    Ok((Some(bytes), doc))
}

/// Replaces the file atomically, as docker does: the target of a symlink,
/// the existing permissions, else 0600 (it holds passwords).
fn write_config(path: &Path, doc: &DockerConfigFile) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(&target).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let file_name = target.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{file_name}.berth-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(doc.to_json_pretty().as_bytes())?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        anyhow::anyhow!("cannot write {}: {e}", target.display())
    })
}

fn read_username() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask the user name on: pass --username");
    }
    eprint!("Username: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let name = line.trim().to_owned();
    if name.is_empty() {
        bail!("the user name is empty: give one with --username");
    }
    Ok(name)
}

pub fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        return crate::user::read_password(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no terminal to ask the password on: pass --username and the password on standard \
             input with --password-stdin"
        );
    }
    // Asked once: a mistyped password is caught by the registry, not by a
    // second prompt.
    let password = rpassword::prompt_password("Password: ")?;
    if password.is_empty() {
        bail!("the password is empty: give a non-empty one");
    }
    Ok(password)
}

pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    let path = args.file.path()?;
    let key = config_key(&args.server);
    // A broken file is reported before anything is asked or sent.
    let (_, mut doc) = read_config(&path)?;
    let username = match args.username {
        Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
        Some(_) => bail!("the user name is empty: give one with --username"),
        None => read_username()?,
    };
    let password = read_password(args.password_stdin)?;
    let host = registry_host(&key).to_owned();
    let plain_http = args.insecure || args.server.starts_with("http://");
    let client = RegistryClient::new(ClientConfig {
        ca_files: args.ca_file,
        insecure_registries: if plain_http {
            vec![host.clone()]
        } else {
            Vec::new()
        },
        ..ClientConfig::default()
    })?;
    let credentials = Credentials::new(username.clone(), password.clone());
    let probe = crate::block_on(client.check_login(&host, Some(&credentials)))
        .context("cannot start the async runtime")?;
    if !probe.outcome.is_success() {
        return Err(login_failure(&host, &username, &path, &probe));
    }
    if probe.auth_scheme.is_none() {
        eprintln!(
            "berth: warning: {host} did not ask for credentials, so they could not be checked"
        );
    }
    // Like `docker login`: a configured credential helper keeps the
    // password and the file only records the login.
    let saved_in = match cred_helper::store_helper(&doc, &key) {
        Some(helper) => {
            crate::docker_helper::store(
                &helper,
                &key,
                &username,
                &password,
                &format!(
                    "remove credsStore (or the credHelpers entry for {key}) from {}",
                    path.display()
                ),
            )
            .with_context(|| format!("{} was not changed", path.display()))?;
            doc.set_helper_login(&key);
            format!(
                "docker-credential-{helper} (login recorded in {})",
                path.display()
            )
        }
        None => {
            doc.set_credentials(&key, &username, &password);
            path.display().to_string()
        }
    };
    write_config(&path, &doc)?;
    eprintln!("berth: credentials for {key} saved in {saved_in}");
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let path = args.file.path()?;
    let (bytes, mut doc) = read_config(&path)?;
    let keys = logout_keys(&args.server);
    let removed: Vec<String> = keys
        .iter()
        .filter_map(|k| doc.remove(k).map(|e| e.server().to_owned()))
        .collect();
    if bytes.is_none() || removed.is_empty() {
        eprintln!(
            "berth: no credentials for {} in {}; nothing changed",
            config_key(&args.server),
            path.display()
        );
        return Ok(());
    }
    // As `docker logout`: each removed login is also erased from the helper
    // that keeps it; a helper that fails is reported, and the file entry
    // goes anyway.
    for key in &removed {
        if let Some(helper) = cred_helper::store_helper(&doc, key)
            && let Err(e) = crate::docker_helper::erase(
                &helper,
                key,
                "remove them with the keychain's own tool",
            )
        {
            eprintln!(
                "berth: warning: {e:#}; docker-credential-{helper} may still hold the \
                 credentials for {key}"
            );
        }
    }
    write_config(&path, &doc)?;
    eprintln!(
        "berth: removed the credentials for {} from {}",
        removed.join(", "),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_docker_writes_them() {
        for (server, key) in [
            ("docker.io", DOCKER_HUB_KEY),
            (DOCKER_HUB_KEY, DOCKER_HUB_KEY),
            ("index.docker.io", "index.docker.io"),
            ("reg.example.com", "reg.example.com"),
            ("reg.example.com:5000", "reg.example.com:5000"),
            ("https://reg.example.com:5000/v2/", "reg.example.com:5000"),
            ("http://127.0.0.1:5000", "127.0.0.1:5000"),
            ("localhost:5000/team", "localhost:5000"),
        ] {
            assert_eq!(config_key(server), key, "{server}");
        }
        assert_eq!(registry_host(DOCKER_HUB_KEY), "docker.io");
        assert_eq!(registry_host("reg:5000"), "reg:5000");
    }

    #[test]
    fn logout_removes_every_spelling() {
        assert_eq!(
            logout_keys("reg:5000"),
            ["reg:5000", "http://reg:5000", "https://reg:5000"]
        );
        assert_eq!(
            logout_keys("https://reg:5000/"),
            [
                "https://reg:5000/",
                "reg:5000",
                "http://reg:5000",
                "https://reg:5000"
            ]
        );
        assert_eq!(logout_keys("docker.io"), ["docker.io", DOCKER_HUB_KEY]);
    }

    #[test]
    fn default_path_follows_docker() {
        let p = |c: Option<&str>, h: Option<&str>| {
            default_config_path(c.map(OsString::from), h.map(OsString::from))
        };
        assert_eq!(
            p(Some("/cfg"), Some("/home/u")).unwrap(),
            Path::new("/cfg/config.json")
        );
        assert_eq!(
            p(Some(""), Some("/home/u")).unwrap(),
            Path::new("/home/u/.docker/config.json")
        );
        assert!(
            p(None, None)
                .unwrap_err()
                .to_string()
                .contains("--config-file")
        );
    }

    #[test]
    fn failures_name_the_fix() {
        let probe = |outcome| Probe {
            outcome,
            url: "http://r/v2/".into(),
            status: Some(401),
            detail: "the registry answered 401".into(),
            digest: None,
            media_type: None,
            rate_limit: None,
            auth_scheme: Some("bearer".into()),
        };
        let msg = |o| login_failure("r", "alice", Path::new("/c.json"), &probe(o)).to_string();
        let m = msg(Outcome::Unauthorized);
        assert!(
            m.contains("401 Unauthorized") && m.contains("/c.json was not changed"),
            "{m}"
        );
        assert!(msg(Outcome::TlsUnknownAuthority).contains("--ca-file"));
        assert!(msg(Outcome::HttpResponseToHttps).contains("--insecure"));
        assert!(msg(Outcome::HttpRequestToHttps).contains("Drop --insecure"));
    }

    #[test]
    fn writes_keep_mode_and_follow_links() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        let mut doc = DockerConfigFile::new(berth_kube::docker_config::ConfigFormat::ConfigJson);
        doc.set_credentials("reg:5000", "u", "p");
        write_config(&path, &doc).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        write_config(&link, &doc).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(mode(&path), 0o640);
        let (_, back) = read_config(&link).unwrap();
        assert_eq!(
            back.entry("reg:5000")
                .unwrap()
                .credentials()
                .unwrap()
                .password,
            "p"
        );
    }
}
