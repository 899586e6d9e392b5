//! Where the docker CLI finds one registry's credentials in `config.json`,
//! and the docker credential-helper protocol (docker/docker-credential-helpers).
//!
//! With `credsStore` or `credHelpers` set, `config.json` holds no passwords:
//! `auths` entries are empty and the credentials live in a helper program,
//! `docker-credential-<name>`. Its `get` action reads the server URL on stdin
//! and prints `{"ServerURL":…,"Username":…,"Secret":…}`; when it knows
//! nothing it exits non-zero printing `credentials not found in native
//! keychain`. A username of `<token>` means the secret is an identity
//! (OAuth refresh) token, which the kubelet cannot use.
//!
//! [`lookup`] decides what to ask as the docker CLI does: a `credHelpers`
//! entry for the registry, else `credsStore`, else the `auths` entry. Running
//! the helper is left to the caller; [`parse_get_reply`] and [`resolve`]
//! turn its output into [`Credentials`].
//!
//! `docker login` saves through the same helpers ([`store_helper`]): `store`
//! reads [`store_input`] on stdin, `erase` the server URL, and both report
//! failure by a non-zero exit with the message on stdout
//! ([`parse_change_reply`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::docker_config::{AuthEntry, Credentials, DockerConfigError, DockerConfigFile};

/// What a helper prints (on stdout) when it has nothing for the server.
pub const NOT_FOUND_MESSAGE: &str = "credentials not found in native keychain";

/// The username a helper returns when the secret is an identity token.
pub const TOKEN_USERNAME: &str = "<token>";

/// Why one registry's credentials cannot be taken from a docker config.
#[derive(Debug, thiserror::Error)]
pub enum CredHelperError {
    #[error(
        "{server:?} is not in the docker config (it has entries for: {}); pass a --server \
         that is listed, or run `docker login {server}` first",
        if available.is_empty() { "nothing".to_owned() } else { available.join(", ") }
    )]
    NotInConfig {
        server: String,
        available: Vec<String>,
    },
    #[error(
        "credential helper name {0:?} is not a plain program suffix; fix credsStore/credHelpers \
         in the docker config"
    )]
    BadHelperName(String),
    #[error("docker-credential-{helper} {action} failed for {server:?}: {message}")]
    HelperFailed {
        helper: String,
        action: HelperAction,
        server: String,
        message: String,
    },
    #[error(
        "docker-credential-{helper} get printed something other than \
         {{\"ServerURL\",\"Username\",\"Secret\"}} JSON for {server:?}: {error}"
    )]
    BadReply {
        helper: String,
        server: String,
        error: String,
    },
    #[error(
        "no username and password for {server:?} in the docker config{}; run `docker login \
         {server}` (or pass --username and --password-stdin instead of --from-docker-config)",
        helper.as_ref().map(|h| format!(" nor in docker-credential-{h}")).unwrap_or_default()
    )]
    NoCredentials {
        server: String,
        helper: Option<String>,
    },
    #[error(
        "the docker credentials for {server:?} are an identity token (a browser or SSO \
         login), which pull secrets cannot carry: the kubelet only sends a username and \
         password; create an access token or robot account and pass it with --username and \
         --password-stdin"
    )]
    IdentityToken { server: String },
    #[error(transparent)]
    Config(#[from] DockerConfigError),
}

/// The actions of the credential-helper protocol berth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperAction {
    Get,
    Store,
    Erase,
}

impl HelperAction {
    /// The helper's command-line argument.
    pub fn as_str(self) -> &'static str {
        match self {
            HelperAction::Get => "get",
            HelperAction::Store => "store",
            HelperAction::Erase => "erase",
        }
    }
}

impl fmt::Display for HelperAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a registry's credentials come from.
#[derive(Debug, Clone)]
pub enum Lookup<'a> {
    /// Run `docker-credential-<helper> get` with `server` on stdin. `entry`
    /// is the `auths` entry, if any: its email is kept, and its credentials
    /// are used when the helper has none (as the docker CLI does).
    Helper {
        helper: String,
        server: String,
        entry: Option<&'a AuthEntry>,
    },
    /// The credentials are in the `auths` entry.
    File { entry: &'a AuthEntry },
}

/// docker's `ConvertToHostname`: drops `http(s)://` and any path, so
/// `https://reg.io/v1/` and `reg.io` name the same registry.
pub fn convert_to_hostname(server: &str) -> &str {
    let s = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("https://"))
        .unwrap_or(server);
    s.split('/').next().unwrap_or(s)
}

/// Finds where `server`'s credentials are, the way the docker CLI does: the
/// exact key first, then a key naming the same host.
pub fn lookup<'a>(doc: &'a DockerConfigFile, server: &str) -> Result<Lookup<'a>, CredHelperError> {
    let host = convert_to_hostname(server);
    let entry = doc.entry(server).or_else(|| {
        doc.entries()
            .iter()
            .find(|e| convert_to_hostname(e.server()) == host)
    });
    let helpers = doc.cred_helpers();
    let per_registry = helpers
        .iter()
        .find(|(k, _)| k == server)
        .or_else(|| helpers.iter().find(|(k, _)| convert_to_hostname(k) == host));
    let (helper, key) = match (per_registry, doc.creds_store()) {
        (Some((key, helper)), _) => (helper.clone(), entry.map_or(key.as_str(), |e| e.server())),
        (None, Some(store)) => (store, entry.map_or(server, |e| e.server())),
        (None, None) => {
            return match entry {
                Some(entry) => Ok(Lookup::File { entry }),
                None => Err(CredHelperError::NotInConfig {
                    server: server.to_owned(),
                    available: doc
                        .entries()
                        .iter()
                        .map(|e| e.server().to_owned())
                        .chain(helpers.iter().map(|(k, _)| k.clone()))
                        .collect(),
                }),
            };
        }
    };
    helper_program(&helper)?;
    Ok(Lookup::Helper {
        helper,
        server: key.to_owned(),
        entry,
    })
}

/// The helper's executable name, refusing names that would leave `PATH`.
pub fn helper_program(helper: &str) -> Result<String, CredHelperError> {
    if helper.is_empty() || helper.contains(['/', '\\']) || helper.chars().any(char::is_control) {
        return Err(CredHelperError::BadHelperName(helper.to_owned()));
    }
    Ok(format!("docker-credential-{helper}"))
}

/// A helper's answer to `get`.
#[derive(Clone, PartialEq, Eq)]
pub enum HelperReply {
    Found { username: String, secret: String },
    NotFound,
}

impl fmt::Debug for HelperReply {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelperReply::Found { username, .. } => f
                .debug_struct("Found")
                .field("username", username)
                .field("secret", &"<redacted>")
                .finish(),
            HelperReply::NotFound => f.write_str("NotFound"),
        }
    }
}

/// Reads a helper's `get` output. `success` is whether it exited 0; on
/// failure its stdout carries the message, like docker-credential-helpers'
/// client reads it.
pub fn parse_get_reply(
    helper: &str,
    server: &str,
    success: bool,
    stdout: &[u8],
) -> Result<HelperReply, CredHelperError> {
    let text = String::from_utf8_lossy(stdout);
    if !success {
        return match failure(helper, HelperAction::Get, server, &text) {
            Some(error) => Err(error),
            None => Ok(HelperReply::NotFound),
        };
    }
    // Go's decoder matches field names case-insensitively.
    #[derive(Deserialize)]
    struct Reply {
        #[serde(rename = "Username", alias = "username", default)]
        username: String,
        #[serde(rename = "Secret", alias = "secret", default)]
        secret: String,
    }
    let reply: Reply = serde_json::from_str(&text).map_err(|e| CredHelperError::BadReply {
        helper: helper.to_owned(),
        server: server.to_owned(),
        // Only the position: the text may hold the secret.
        error: format!("invalid JSON at line {} column {}", e.line(), e.column()),
    })?;
    Ok(HelperReply::Found {
        username: reply.username,
        secret: reply.secret,
    })
}

/// The error in a failed helper's output, or `None` when it only says it
/// holds nothing for the server.
fn failure(
    helper: &str,
    action: HelperAction,
    server: &str,
    stdout: &str,
) -> Option<CredHelperError> {
    let message = stdout.trim();
    (message != NOT_FOUND_MESSAGE).then(|| CredHelperError::HelperFailed {
        helper: helper.to_owned(),
        action,
        server: server.to_owned(),
        message: if message.is_empty() {
            "it exited with an error and printed nothing".to_owned()
        } else {
            message.to_owned()
        },
    })
}

/// The helper `docker login KEY` saves into, chosen as the docker CLI's
/// `GetCredentialsStore` does: the `credHelpers` entry for exactly that key,
/// else `credsStore`. `None`: the credentials go into the file itself.
pub fn store_helper(doc: &DockerConfigFile, key: &str) -> Option<String> {
    doc.cred_helpers()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, helper)| helper)
        .or_else(|| doc.creds_store())
}

/// What a helper's `store` action reads on stdin.
pub fn store_input(server: &str, username: &str, secret: &str) -> String {
    #[derive(Serialize)]
    struct Input<'a> {
        #[serde(rename = "ServerURL")]
        server: &'a str,
        #[serde(rename = "Username")]
        username: &'a str,
        #[serde(rename = "Secret")]
        secret: &'a str,
    }
    serde_json::to_string(&Input {
        server,
        username,
        secret,
    })
    .expect("strings serialise")
}

/// Reads the outcome of `store` or `erase`. Erasing what the helper does not
/// hold is not an error: the credentials are gone either way.
pub fn parse_change_reply(
    helper: &str,
    action: HelperAction,
    server: &str,
    success: bool,
    stdout: &[u8],
) -> Result<(), CredHelperError> {
    if success {
        return Ok(());
    }
    let text = String::from_utf8_lossy(stdout);
    match failure(helper, action, server, &text) {
        Some(error) => Err(error),
        None if action == HelperAction::Erase => Ok(()),
        None => Err(CredHelperError::HelperFailed {
            helper: helper.to_owned(),
            action,
            server: server.to_owned(),
            message: NOT_FOUND_MESSAGE.to_owned(),
        }),
    }
}

/// The credentials for `server` from what [`lookup`] found and, for a
/// helper, its reply. Refuses empty credentials and identity tokens.
pub fn resolve(
    server: &str,
    found: &Lookup<'_>,
    reply: Option<HelperReply>,
) -> Result<Credentials, CredHelperError> {
    let (entry, helper) = match found {
        Lookup::Helper { helper, entry, .. } => (*entry, Some(helper.clone())),
        Lookup::File { entry } => (Some(*entry), None),
    };
    let from_file = || -> Result<Credentials, CredHelperError> {
        let Some(entry) = entry else {
            return Ok(Credentials::default());
        };
        let creds = entry.credentials()?;
        // `docker login` against a token server that grants refresh tokens
        // keeps `auth` as "user:" beside the token: no password to copy.
        if creds.password.is_empty() && entry.identity_token().is_some_and(|t| !t.is_empty()) {
            return Err(CredHelperError::IdentityToken {
                server: server.to_owned(),
            });
        }
        Ok(creds)
    };
    let creds = match reply {
        Some(HelperReply::Found { username, secret }) => {
            if username == TOKEN_USERNAME {
                return Err(CredHelperError::IdentityToken {
                    server: server.to_owned(),
                });
            }
            Credentials {
                username,
                password: secret,
                email: entry.and_then(AuthEntry::email).unwrap_or_default(),
            }
        }
        Some(HelperReply::NotFound) | None => from_file()?,
    };
    if creds.username.is_empty() && creds.password.is_empty() {
        return Err(CredHelperError::NoCredentials {
            server: server.to_owned(),
            helper,
        });
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> DockerConfigFile {
        DockerConfigFile::parse_config_json(text).unwrap()
    }

    #[test]
    fn hostnames_like_docker() {
        assert_eq!(
            convert_to_hostname("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(convert_to_hostname("http://reg:5000"), "reg:5000");
        assert_eq!(convert_to_hostname("reg.io/team"), "reg.io");
        assert_eq!(convert_to_hostname("reg.io"), "reg.io");
    }

    #[test]
    fn plain_auths_entries() {
        let d = doc(
            r#"{"auths":{"https://reg.io/v1/":{"auth":"dTpwOnc=","email":"e@x"},"other.io":{"auth":"eDp5"}}}"#,
        );
        for server in ["https://reg.io/v1/", "reg.io", "https://reg.io"] {
            let found = lookup(&d, server).unwrap();
            assert!(
                matches!(found, Lookup::File { entry } if entry.server() == "https://reg.io/v1/")
            );
            let c = resolve(server, &found, None).unwrap();
            assert_eq!(
                (c.username.as_str(), c.password.as_str(), c.email.as_str()),
                ("u", "p:w", "e@x")
            );
        }
        let err = lookup(&d, "missing.io").unwrap_err().to_string();
        assert!(
            err.contains("\"missing.io\" is not in the docker config")
                && err.contains("https://reg.io/v1/, other.io"),
            "{err}"
        );
        // A port is part of the host.
        assert!(lookup(&d, "reg.io:5000").is_err());
    }

    #[test]
    fn helpers_take_precedence() {
        let d = doc(
            r#"{"auths":{"reg.io":{},"ghcr.io":{"email":"me@x"}},"credsStore":"desktop","credHelpers":{"gcr.io":"gcloud"}}"#,
        );
        let Lookup::Helper {
            helper,
            server,
            entry,
        } = lookup(&d, "gcr.io").unwrap()
        else {
            panic!("gcr.io uses its credHelper")
        };
        assert_eq!(
            (helper.as_str(), server.as_str(), entry.is_none()),
            ("gcloud", "gcr.io", true)
        );
        let found = lookup(&d, "https://ghcr.io").unwrap();
        let Lookup::Helper { helper, server, .. } = &found else {
            panic!("credsStore applies")
        };
        assert_eq!((helper.as_str(), server.as_str()), ("desktop", "ghcr.io"));
        let reply = parse_get_reply(
            "desktop",
            "ghcr.io",
            true,
            br#"{"ServerURL":"ghcr.io","Username":"bob","Secret":"s:3"}"#,
        )
        .unwrap();
        let c = resolve("https://ghcr.io", &found, Some(reply)).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str(), c.email.as_str()),
            ("bob", "s:3", "me@x")
        );
        // With a credsStore, a server without an entry is still asked for.
        assert!(matches!(
            lookup(&d, "new.io").unwrap(),
            Lookup::Helper { entry: None, .. }
        ));
    }

    #[test]
    fn login_saves_where_docker_would() {
        let d = doc(r#"{"credsStore":"desktop","credHelpers":{"gcr.io":"gcloud"}}"#);
        assert_eq!(store_helper(&d, "gcr.io").as_deref(), Some("gcloud"));
        // docker matches credHelpers by the exact key login writes.
        assert_eq!(
            store_helper(&d, "https://gcr.io").as_deref(),
            Some("desktop")
        );
        assert_eq!(store_helper(&d, "reg.io").as_deref(), Some("desktop"));
        assert_eq!(store_helper(&doc(r#"{"auths":{}}"#), "reg.io"), None);

        assert_eq!(
            store_input("reg.io", "u", "p\"<&>"),
            r#"{"ServerURL":"reg.io","Username":"u","Secret":"p\"<&>"}"#
        );
        let change = |action, success, out: &[u8]| {
            parse_change_reply("pass", action, "reg.io", success, out)
        };
        assert!(change(HelperAction::Store, true, b"").is_ok());
        let err = change(HelperAction::Store, false, b"gpg: no secret key\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "docker-credential-pass store failed for \"reg.io\": gpg: no secret key"
        );
        assert!(change(HelperAction::Erase, false, NOT_FOUND_MESSAGE.as_bytes()).is_ok());
        assert!(change(HelperAction::Erase, false, b"").is_err());
        assert!(change(HelperAction::Store, false, NOT_FOUND_MESSAGE.as_bytes()).is_err());
    }

    #[test]
    fn not_found_and_tokens() {
        let d = doc(r#"{"auths":{"reg.io":{}},"credsStore":"pass"}"#);
        let found = lookup(&d, "reg.io").unwrap();
        let reply = parse_get_reply(
            "pass",
            "reg.io",
            false,
            b"credentials not found in native keychain\n",
        )
        .unwrap();
        assert_eq!(reply, HelperReply::NotFound);
        let err = resolve("reg.io", &found, Some(reply))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nor in docker-credential-pass"), "{err}");

        let token = parse_get_reply(
            "pass",
            "reg.io",
            true,
            br#"{"serverurl":"reg.io","username":"<token>","secret":"refresh"}"#,
        )
        .unwrap();
        assert!(matches!(
            resolve("reg.io", &found, Some(token)),
            Err(CredHelperError::IdentityToken { .. })
        ));

        let failed = parse_get_reply("pass", "reg.io", false, b"gpg: decryption failed\n")
            .unwrap_err()
            .to_string();
        assert!(failed.contains("gpg: decryption failed"), "{failed}");
        let garbage = parse_get_reply("pass", "reg.io", true, b"hunter2 not json")
            .unwrap_err()
            .to_string();
        assert!(!garbage.contains("hunter2"), "{garbage}");

        // As docker 20.10's `docker login` writes it for berth: "bob:" and a token.
        for file in [
            r#"{"auths":{"reg.io":{"identitytoken":"t"}}}"#,
            r#"{"auths":{"reg.io":{"auth":"Ym9iOg==","identitytoken":"t"}}}"#,
        ] {
            let file_token = doc(file);
            let found = lookup(&file_token, "reg.io").unwrap();
            assert!(matches!(
                resolve("reg.io", &found, None),
                Err(CredHelperError::IdentityToken { .. })
            ));
        }
        let empty = doc(r#"{"auths":{"reg.io":{}}}"#);
        let found = lookup(&empty, "reg.io").unwrap();
        assert!(matches!(
            resolve("reg.io", &found, None),
            Err(CredHelperError::NoCredentials { helper: None, .. })
        ));
    }

    #[test]
    fn helper_names_stay_on_path() {
        assert_eq!(
            helper_program("osxkeychain").unwrap(),
            "docker-credential-osxkeychain"
        );
        for bad in ["", "../x", "a/b", "a\\b"] {
            assert!(helper_program(bad).is_err(), "{bad:?}");
        }
        let d = doc(r#"{"auths":{"reg.io":{}},"credsStore":"../evil"}"#);
        assert!(matches!(
            lookup(&d, "reg.io"),
            Err(CredHelperError::BadHelperName(_))
        ));
    }
}
