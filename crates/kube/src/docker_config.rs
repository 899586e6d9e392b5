//! Docker client configuration: `~/.docker/config.json` and the legacy
//! `~/.dockercfg`, which are also the payloads of `kubernetes.io/dockerconfigjson`
//! and `kubernetes.io/dockercfg` Secrets.
//!
//! Reading follows the kubelet (`pkg/credentialprovider/config.go`), which is
//! what decides whether a pull secret works: member names match
//! case-insensitively (Go's `encoding/json`), a later duplicate wins, a
//! non-empty `auth` overrides `username`/`password`, and `auth` may be padded
//! or unpadded base64. Writing keeps every member it does not touch, in
//! document order, so `berth login` can add or remove one registry without
//! disturbing `credsStore`, `credHelpers`, proxies or other entries.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::go::json as gojson;

/// Which of the two file layouts a document uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigFormat {
    /// `config.json` / `.dockerconfigjson`: `{"auths": {SERVER: ENTRY}, ...}`.
    ConfigJson,
    /// Legacy `.dockercfg`: the bare `{SERVER: ENTRY}` map.
    Dockercfg,
}

/// Why a `auth` field cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFieldError {
    #[error("it is not valid base64 ({0}); it must be base64(username:password)")]
    Base64(String),
    #[error(
        "unable to parse auth field, must be formatted as base64(username:password): \
         the decoded text has no ':'"
    )]
    MissingColon,
    #[error("the decoded text is not UTF-8; it must be base64(username:password)")]
    NotUtf8,
}

/// Errors reading a Docker config document or the credentials in it.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("{what} must be a JSON object: {source}")]
    NotAnObject {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "field {field:?} of the entry for {server:?} must be a string; \
         the kubelet rejects the whole secret otherwise"
    )]
    FieldNotString { server: String, field: &'static str },
    #[error("the `auth` field of the entry for {server:?} cannot be decoded: {source}")]
    Auth {
        server: String,
        #[source]
        source: AuthFieldError,
    },
}

/// Credentials as the kubelet extracts them from one entry.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub email: String,
}

impl fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("email", &self.email)
            .finish()
    }
}

/// One `SERVER: {...}` entry, with every member kept as written.
#[derive(Debug, Clone)]
pub struct AuthEntry {
    server: String,
    fields: Vec<(String, Box<RawValue>)>,
}

// The fields the kubelet decodes; a non-string value in any of them makes it
// reject the whole secret.
const KUBELET_FIELDS: [&str; 4] = ["username", "password", "email", "auth"];

impl AuthEntry {
    /// An entry shaped like `docker login` writes it: only `auth`.
    pub fn docker_style(server: &str, username: &str, password: &str) -> Self {
        AuthEntry {
            server: server.to_owned(),
            fields: vec![(
                "auth".to_owned(),
                raw_string(&encode_auth(username, password)),
            )],
        }
    }

    /// An entry shaped like `kubectl create secret docker-registry` writes it:
    /// `username`, `password`, `email` (omitted when empty), `auth`.
    pub fn kubectl_style(server: &str, username: &str, password: &str, email: &str) -> Self {
        let mut fields = Vec::with_capacity(4);
        if !username.is_empty() {
            fields.push(("username".to_owned(), raw_string(username)));
        }
        if !password.is_empty() {
            fields.push(("password".to_owned(), raw_string(password)));
        }
        if !email.is_empty() {
            fields.push(("email".to_owned(), raw_string(email)));
        }
        fields.push((
            "auth".to_owned(),
            raw_string(&encode_auth(username, password)),
        ));
        AuthEntry {
            server: server.to_owned(),
            fields,
        }
    }

    /// The key exactly as written (`https://index.docker.io/v1/`, `reg:5000`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The string value of a member, matched like Go's `encoding/json` does
    /// (exact or case-insensitive; the last occurrence wins). `None` when
    /// absent, `null` or not a string.
    pub fn field(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| go_field_eq(k, name))
            .and_then(|(_, v)| {
                serde_json::from_str::<Option<String>>(v.get())
                    .ok()
                    .flatten()
            })
    }

    pub fn username(&self) -> Option<String> {
        self.field("username")
    }

    pub fn password(&self) -> Option<String> {
        self.field("password")
    }

    pub fn email(&self) -> Option<String> {
        self.field("email")
    }

    /// The raw base64 `auth` value.
    pub fn auth(&self) -> Option<String> {
        self.field("auth")
    }

    /// Docker's OAuth refresh token. The kubelet never reads it from a pull
    /// secret, so an entry carrying only this has no credentials for it.
    pub fn identity_token(&self) -> Option<String> {
        self.field("identitytoken")
    }

    /// Docker's registry bearer token; ignored by the kubelet like `identitytoken`.
    pub fn registry_token(&self) -> Option<String> {
        self.field("registrytoken")
    }

    /// Names of all members in document order (including unknown ones).
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_str())
    }

    /// The credentials the kubelet derives: `username`/`password`/`email`,
    /// with a non-empty `auth` overriding username and password.
    pub fn credentials(&self) -> Result<Credentials, DockerConfigError> {
        let mut creds = Credentials {
            username: self.username().unwrap_or_default(),
            password: self.password().unwrap_or_default(),
            email: self.email().unwrap_or_default(),
        };
        if let Some(auth) = self.auth().filter(|a| !a.is_empty()) {
            let (user, pass) = decode_auth(&auth).map_err(|source| DockerConfigError::Auth {
                server: self.server.clone(),
                source,
            })?;
            creds.username = user;
            creds.password = pass;
        }
        Ok(creds)
    }

    /// Sets the credentials the way `docker login` does: writes `auth` and
    /// drops `username`, `password` and `identitytoken`, which would otherwise
    /// shadow or contradict the new password. Other members stay.
    pub fn set_credentials(&mut self, username: &str, password: &str) {
        let at = self.take_credentials().unwrap_or(self.fields.len());
        self.fields.insert(
            at,
            (
                "auth".to_owned(),
                raw_string(&encode_auth(username, password)),
            ),
        );
    }

    /// Drops every credential member, keeping the others; returns where the
    /// first one was.
    fn take_credentials(&mut self) -> Option<usize> {
        let stale = ["auth", "username", "password", "identitytoken"];
        let is_stale = |k: &str| stale.iter().any(|s| go_field_eq(k, s));
        let position = self.fields.iter().position(|(k, _)| is_stale(k));
        self.fields.retain(|(k, _)| !is_stale(k));
        position
    }

    fn from_raw(server: String, raw: &RawValue) -> Result<Self, DockerConfigError> {
        let fields =
            parse_object(raw.get(), &format!("the entry for {server:?}"))?.unwrap_or_default();
        let entry = AuthEntry { server, fields };
        for (key, value) in &entry.fields {
            if let Some(name) = KUBELET_FIELDS.iter().find(|n| go_field_eq(key, n))
                && serde_json::from_str::<Option<String>>(value.get()).is_err()
            {
                return Err(DockerConfigError::FieldNotString {
                    server: entry.server.clone(),
                    field: name,
                });
            }
        }
        Ok(entry)
    }

    fn write_compact(&self, out: &mut String) {
        out.push('{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            gojson::write_string(out, k);
            out.push(':');
            out.push_str(&gojson::compact(v.get()));
        }
        out.push('}');
    }
}

#[derive(Debug, Clone)]
enum Member {
    /// Where the `auths` object sits; `key` keeps its spelling.
    Auths {
        key: String,
    },
    Other {
        key: String,
        value: Box<RawValue>,
    },
}

/// A parsed `config.json` or `.dockercfg` that can be edited and written back.
#[derive(Debug, Clone)]
pub struct DockerConfigFile {
    format: ConfigFormat,
    members: Vec<Member>,
    entries: Vec<AuthEntry>,
}

impl DockerConfigFile {
    /// An empty document.
    pub fn new(format: ConfigFormat) -> Self {
        DockerConfigFile {
            format,
            members: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Parses `text` in the given layout. Fails on invalid JSON and on the
    /// shapes the kubelet refuses (non-object entries, non-string
    /// `username`/`password`/`email`/`auth`); an undecodable `auth` is only
    /// reported by [`AuthEntry::credentials`] so the file can still be edited.
    pub fn parse(text: &str, format: ConfigFormat) -> Result<Self, DockerConfigError> {
        let mut doc = DockerConfigFile::new(format);
        let top = parse_object(text, "the document")?.unwrap_or_default();
        match format {
            ConfigFormat::Dockercfg => {
                for (server, raw) in top {
                    doc.put_entry(AuthEntry::from_raw(server, &raw)?);
                }
            }
            ConfigFormat::ConfigJson => {
                for (key, value) in top {
                    if go_field_eq(&key, "auths") {
                        // Go decodes repeated `auths` members into the same map.
                        if !doc
                            .members
                            .iter()
                            .any(|m| matches!(m, Member::Auths { .. }))
                        {
                            doc.members.push(Member::Auths { key });
                        }
                        let map = parse_object(value.get(), "\"auths\"")?.unwrap_or_default();
                        for (server, raw) in map {
                            doc.put_entry(AuthEntry::from_raw(server, &raw)?);
                        }
                    } else if let Some(pos) = doc
                        .members
                        .iter()
                        .position(|m| matches!(m, Member::Other { key: k, .. } if *k == key))
                    {
                        doc.members[pos] = Member::Other { key, value };
                    } else {
                        doc.members.push(Member::Other { key, value });
                    }
                }
            }
        }
        Ok(doc)
    }

    /// Parses a `config.json` / `.dockerconfigjson` document.
    pub fn parse_config_json(text: &str) -> Result<Self, DockerConfigError> {
        Self::parse(text, ConfigFormat::ConfigJson)
    }

    /// Parses a legacy `.dockercfg` document.
    pub fn parse_dockercfg(text: &str) -> Result<Self, DockerConfigError> {
        Self::parse(text, ConfigFormat::Dockercfg)
    }

    pub fn format(&self) -> ConfigFormat {
        self.format
    }

    /// All entries in document order (a repeated server appears once, with
    /// the last value, as Go's map decoding leaves it).
    pub fn entries(&self) -> &[AuthEntry] {
        &self.entries
    }

    /// The entry whose key is exactly `server`.
    pub fn entry(&self, server: &str) -> Option<&AuthEntry> {
        self.entries.iter().find(|e| e.server == server)
    }

    pub fn entry_mut(&mut self, server: &str) -> Option<&mut AuthEntry> {
        self.entries.iter_mut().find(|e| e.server == server)
    }

    /// Adds `entry`, replacing an entry with the same key in place.
    pub fn put_entry(&mut self, entry: AuthEntry) {
        match self.entries.iter_mut().find(|e| e.server == entry.server) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
        if self.format == ConfigFormat::ConfigJson
            && !self
                .members
                .iter()
                .any(|m| matches!(m, Member::Auths { .. }))
        {
            // docker writes `auths` first.
            self.members.insert(
                0,
                Member::Auths {
                    key: "auths".to_owned(),
                },
            );
        }
    }

    /// Sets credentials for `server` as `docker login` does (see
    /// [`AuthEntry::set_credentials`]), creating the entry if needed.
    pub fn set_credentials(&mut self, server: &str, username: &str, password: &str) {
        match self.entry_mut(server) {
            Some(entry) => entry.set_credentials(username, password),
            None => self.put_entry(AuthEntry::docker_style(server, username, password)),
        }
    }

    /// Records a login whose credentials a credential helper keeps, as
    /// `docker login` does: the entry stays (so `docker logout` and tools
    /// listing logins see it), with no credential members.
    pub fn set_helper_login(&mut self, server: &str) {
        match self.entry_mut(server) {
            Some(entry) => {
                entry.take_credentials();
            }
            None => self.put_entry(AuthEntry {
                server: server.to_owned(),
                fields: Vec::new(),
            }),
        }
    }

    /// Removes the entry for `server`; everything else stays.
    pub fn remove(&mut self, server: &str) -> Option<AuthEntry> {
        let pos = self.entries.iter().position(|e| e.server == server)?;
        Some(self.entries.remove(pos))
    }

    /// A top-level member other than `auths`, as raw JSON.
    pub fn member(&self, name: &str) -> Option<&RawValue> {
        self.members.iter().rev().find_map(|m| match m {
            Member::Other { key, value } if go_field_eq(key, name) => Some(&**value),
            _ => None,
        })
    }

    /// `credsStore`: a credential helper holding every password. Its entries
    /// in `auths` are empty, so such a file is useless as a pull secret.
    pub fn creds_store(&self) -> Option<String> {
        self.member("credsStore")
            .and_then(|v| {
                serde_json::from_str::<Option<String>>(v.get())
                    .ok()
                    .flatten()
            })
            .filter(|s| !s.is_empty())
    }

    /// `credHelpers`: per-registry credential helpers, in document order.
    pub fn cred_helpers(&self) -> Vec<(String, String)> {
        let Some(raw) = self.member("credHelpers") else {
            return Vec::new();
        };
        let Ok(Some(map)) = parse_object(raw.get(), "credHelpers") else {
            return Vec::new();
        };
        map.into_iter()
            .filter_map(|(k, v)| {
                serde_json::from_str::<String>(v.get())
                    .ok()
                    .map(|helper| (k, helper))
            })
            .collect()
    }

    /// Every entry's credentials as the kubelet decodes them; like the
    /// kubelet, one undecodable `auth` fails the whole document.
    pub fn kubelet_credentials(&self) -> Result<Vec<(String, Credentials)>, DockerConfigError> {
        self.entries
            .iter()
            .map(|e| Ok((e.server.clone(), e.credentials()?)))
            .collect()
    }

    /// Compact JSON with Go's escaping, members in document order.
    pub fn to_json_compact(&self) -> String {
        let mut out = String::new();
        match self.format {
            ConfigFormat::Dockercfg => self.write_entries(&mut out),
            ConfigFormat::ConfigJson => {
                out.push('{');
                for (i, member) in self.members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match member {
                        Member::Auths { key } => {
                            gojson::write_string(&mut out, key);
                            out.push(':');
                            self.write_entries(&mut out);
                        }
                        Member::Other { key, value } => {
                            gojson::write_string(&mut out, key);
                            out.push(':');
                            out.push_str(&gojson::compact(value.get()));
                        }
                    }
                }
                out.push('}');
            }
        }
        out
    }

    /// Tab-indented JSON as the docker CLI saves `config.json`.
    pub fn to_json_pretty(&self) -> String {
        gojson::reindent(&self.to_json_compact(), "\t", 0)
    }

    fn write_entries(&self, out: &mut String) {
        out.push('{');
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            gojson::write_string(out, &entry.server);
            out.push(':');
            entry.write_compact(out);
        }
        out.push('}');
    }
}

/// `base64(username:password)` with padding, as docker and kubectl write it.
pub fn encode_auth(username: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
}

// Go's decoders accept non-zero trailing bits; padded input must be padded
// correctly, unpadded input must have no padding.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);
const GO_RAW_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Decodes an `auth` value like the kubelet: padded base64 when it ends in
/// `=`, unpadded otherwise (line breaks ignored, as Go does), then split at
/// the first `:` so the password may contain colons.
pub fn decode_auth(field: &str) -> Result<(String, String), AuthFieldError> {
    let cleaned: String = field.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let engine = if field.trim().ends_with('=') {
        &GO_STD
    } else {
        &GO_RAW_STD
    };
    let bytes = engine
        .decode(cleaned)
        .map_err(|e| AuthFieldError::Base64(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| AuthFieldError::NotUtf8)?;
    let (user, pass) = text.split_once(':').ok_or(AuthFieldError::MissingColon)?;
    Ok((user.to_owned(), pass.to_owned()))
}

/// Go's `encoding/json` field matching: exact, else case-insensitive with
/// Unicode simple folding (so the Kelvin sign matches `k`, long s matches `s`).
fn go_field_eq(key: &str, name: &str) -> bool {
    fn fold(c: char) -> char {
        match c {
            '\u{212a}' => 'k',
            '\u{17f}' => 's',
            c => c.to_ascii_lowercase(),
        }
    }
    key == name || key.chars().map(fold).eq(name.chars().map(fold))
}

fn raw_string(s: &str) -> Box<RawValue> {
    RawValue::from_string(gojson::string(s)).expect("a JSON string literal is valid JSON")
}

type RawObject = Vec<(String, Box<RawValue>)>;

/// Parses an object keeping member order and raw values; `None` for `null`
/// (which Go's decoder treats as "leave empty").
fn parse_object(text: &str, what: &str) -> Result<Option<RawObject>, DockerConfigError> {
    let raw: Box<RawValue> = serde_json::from_str(text).map_err(DockerConfigError::Json)?;
    if raw.get().trim() == "null" {
        return Ok(None);
    }
    serde_json::from_str::<OrderedObject>(raw.get())
        .map(|o| Some(o.0))
        .map_err(|source| DockerConfigError::NotAnObject {
            what: what.to_owned(),
            source,
        })
}

struct OrderedObject(RawObject);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members: RawObject = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    // A repeated key: the later value wins, in the first position.
                    match members.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => members.push((key, value)),
                    }
                }
                Ok(OrderedObject(members))
            }
        }
        deserializer.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_DESKTOP: &str = r#"{
	"auths": {
		"https://index.docker.io/v1/": {},
		"ghcr.io": {
			"auth": "dXNlcjpwYXNz"
		}
	},
	"credsStore": "desktop",
	"credHelpers": {
		"123456789012.dkr.ecr.us-east-1.amazonaws.com": "ecr-login",
		"gcr.io": "gcloud"
	},
	"proxies": {
		"default": {
			"httpProxy": "http://proxy:3128",
			"noProxy": "*.local,169.254/16"
		}
	},
	"currentContext": "desktop-linux"
}"#;

    #[test]
    fn round_trips_unknown_members_in_order() {
        let doc = DockerConfigFile::parse_config_json(DOCKER_DESKTOP).unwrap();
        assert_eq!(doc.to_json_pretty(), DOCKER_DESKTOP);
        assert_eq!(doc.creds_store().as_deref(), Some("desktop"));
        assert_eq!(
            doc.cred_helpers(),
            vec![
                (
                    "123456789012.dkr.ecr.us-east-1.amazonaws.com".to_owned(),
                    "ecr-login".to_owned()
                ),
                ("gcr.io".to_owned(), "gcloud".to_owned())
            ]
        );
        let hub = doc.entry("https://index.docker.io/v1/").unwrap();
        assert_eq!(hub.credentials().unwrap(), Credentials::default());
    }

    #[test]
    fn add_and_remove_keep_the_rest() {
        let mut doc = DockerConfigFile::parse_config_json(DOCKER_DESKTOP).unwrap();
        doc.set_credentials("reg.example.com:5000", "bob", "s3cr:et");
        doc.remove("ghcr.io").unwrap();
        let out = doc.to_json_pretty();
        let reparsed = DockerConfigFile::parse_config_json(&out).unwrap();
        let names: Vec<_> = reparsed
            .entries()
            .iter()
            .map(|e| e.server().to_owned())
            .collect();
        assert_eq!(
            names,
            ["https://index.docker.io/v1/", "reg.example.com:5000"]
        );
        let creds = reparsed
            .entry("reg.example.com:5000")
            .unwrap()
            .credentials()
            .unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("bob", "s3cr:et")
        );
        assert!(out.contains("\"noProxy\": \"*.local,169.254/16\""));
        assert!(out.ends_with("\t\"currentContext\": \"desktop-linux\"\n}"));
    }

    #[test]
    fn relogin_replaces_stale_fields_but_keeps_unknown_ones() {
        let mut doc = DockerConfigFile::parse_config_json(
            r#"{"auths":{"r.io":{"username":"old","password":"old","identitytoken":"t","serveraddress":"r.io","email":"e@x"}}}"#,
        )
        .unwrap();
        doc.set_credentials("r.io", "new", "pw");
        assert_eq!(
            doc.to_json_compact(),
            r#"{"auths":{"r.io":{"auth":"bmV3OnB3","serveraddress":"r.io","email":"e@x"}}}"#
        );
    }

    #[test]
    fn helper_logins_leave_an_entry_without_credentials() {
        let mut doc = DockerConfigFile::parse_config_json(
            r#"{"auths":{"r.io":{"auth":"dTpw","email":"e@x"}},"credsStore":"pass"}"#,
        )
        .unwrap();
        doc.set_helper_login("r.io");
        doc.set_helper_login("new.io");
        assert_eq!(
            doc.to_json_compact(),
            r#"{"auths":{"r.io":{"email":"e@x"},"new.io":{}},"credsStore":"pass"}"#
        );
    }

    #[test]
    fn new_document_gets_auths_first() {
        let mut doc = DockerConfigFile::new(ConfigFormat::ConfigJson);
        doc.set_credentials("r.io", "u", "p");
        assert_eq!(
            doc.to_json_pretty(),
            "{\n\t\"auths\": {\n\t\t\"r.io\": {\n\t\t\t\"auth\": \"dTpw\"\n\t\t}\n\t}\n}"
        );
        let mut empty = DockerConfigFile::parse_config_json("{}").unwrap();
        assert_eq!(empty.to_json_pretty(), "{}");
        empty.set_credentials("r.io", "u", "p");
        assert_eq!(
            empty.to_json_compact(),
            r#"{"auths":{"r.io":{"auth":"dTpw"}}}"#
        );
    }

    #[test]
    fn auth_overrides_username_and_password() {
        let doc = DockerConfigFile::parse_config_json(
            r#"{"auths":{"r":{"username":"a","password":"b","email":"m","auth":"dTpwOnc="}}}"#,
        )
        .unwrap();
        let c = doc.entry("r").unwrap().credentials().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str(), c.email.as_str()),
            ("u", "p:w", "m")
        );
        // An empty auth does not override.
        let doc = DockerConfigFile::parse_config_json(
            r#"{"auths":{"r":{"username":"a","password":"b","auth":""}}}"#,
        )
        .unwrap();
        assert_eq!(doc.entry("r").unwrap().credentials().unwrap().username, "a");
    }

    #[test]
    fn decodes_padded_and_unpadded_auth() {
        assert_eq!(decode_auth("dTpw").unwrap(), ("u".into(), "p".into()));
        assert_eq!(decode_auth("dTo=").unwrap(), ("u".into(), "".into()));
        assert_eq!(decode_auth("dTo").unwrap(), ("u".into(), "".into()));
        assert_eq!(decode_auth("OnA=").unwrap(), ("".into(), "p".into()));
        assert_eq!(decode_auth("dTpw\n").unwrap(), ("u".into(), "p".into()));
        assert_eq!(decode_auth("dTo=\r\n").unwrap(), ("u".into(), "".into()));
        assert_eq!(decode_auth("dTpx").unwrap(), ("u".into(), "q".into()));
        // Go accepts non-zero trailing bits.
        assert_eq!(decode_auth("dTp=").unwrap(), ("u".into(), "".into()));
        assert!(
            decode_auth("YTpi:")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
    }

    #[test]
    fn auth_errors_are_clear() {
        assert!(matches!(
            decode_auth("dXNlcg=="),
            Err(AuthFieldError::MissingColon)
        ));
        assert!(matches!(
            decode_auth("not base64!"),
            Err(AuthFieldError::Base64(_))
        ));
        // Padded text must be padded correctly; unpadded must not be padded.
        assert!(matches!(
            decode_auth("dTo=="),
            Err(AuthFieldError::Base64(_))
        ));
        assert!(matches!(
            decode_auth(" dTpw"),
            Err(AuthFieldError::Base64(_))
        ));
        assert!(matches!(decode_auth("/w"), Err(AuthFieldError::NotUtf8)));
        let doc =
            DockerConfigFile::parse_config_json(r#"{"auths":{"r":{"auth":"dXNlcg=="}}}"#).unwrap();
        let err = doc.kubelet_credentials().unwrap_err().to_string();
        assert!(
            err.contains("\"r\"") && err.contains("base64(username:password)"),
            "{err}"
        );
    }

    #[test]
    fn matches_members_like_go() {
        let doc = DockerConfigFile::parse_config_json(
            r#"{"Auths":{"r":{"USERNAME":"a","Password":"b","username":"c"}},"auths":{"s":{}}}"#,
        )
        .unwrap();
        let names: Vec<_> = doc.entries().iter().map(AuthEntry::server).collect();
        assert_eq!(names, ["r", "s"]);
        let c = doc.entry("r").unwrap().credentials().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("c", "b"));
        let dup = DockerConfigFile::parse_config_json(
            r#"{"auths":{"r":{"auth":"dTpw"},"r":{"auth":"dzp4"}}}"#,
        )
        .unwrap();
        assert_eq!(dup.entries().len(), 1);
        assert_eq!(dup.entry("r").unwrap().credentials().unwrap().username, "w");
    }

    #[test]
    fn rejects_what_the_kubelet_rejects() {
        for bad in [
            "",
            "[]",
            r#"{"auths":[]}"#,
            r#"{"auths":{"r":"x"}}"#,
            r#"{"auths":{"r":{"username":1}}}"#,
            r#"{"auths":{"r":{"auth":true}}}"#,
        ] {
            assert!(DockerConfigFile::parse_config_json(bad).is_err(), "{bad}");
        }
        // null means "empty" to Go's decoder.
        for ok in [
            "null",
            r#"{"auths":null}"#,
            r#"{"auths":{"r":null}}"#,
            r#"{"auths":{"r":{"username":null}}}"#,
        ] {
            assert!(DockerConfigFile::parse_config_json(ok).is_ok(), "{ok}");
        }
        // Unknown fields of any type are fine.
        let doc =
            DockerConfigFile::parse_config_json(r#"{"auths":{"r":{"identitytoken":"t","x":[1]}}}"#)
                .unwrap();
        assert_eq!(
            doc.entry("r").unwrap().identity_token().as_deref(),
            Some("t")
        );
        assert_eq!(
            doc.entry("r").unwrap().credentials().unwrap(),
            Credentials::default()
        );
    }

    #[test]
    fn legacy_dockercfg() {
        let text = r#"{"https://index.docker.io/v1/":{"auth":"dTpw","email":"a@b"},"q.io":{"username":"x","password":"y"}}"#;
        let doc = DockerConfigFile::parse_dockercfg(text).unwrap();
        assert_eq!(doc.format(), ConfigFormat::Dockercfg);
        let all = doc.kubelet_credentials().unwrap();
        assert_eq!(all[0].1.email, "a@b");
        assert_eq!(all[1].1.password, "y");
        assert_eq!(doc.to_json_compact(), text);
        // A config.json read as .dockercfg has a single odd entry named "auths".
        let wrong = DockerConfigFile::parse_dockercfg(r#"{"auths":{"r":{}}}"#).unwrap();
        assert_eq!(wrong.entries()[0].server(), "auths");
    }

    #[test]
    fn kubectl_style_entry_bytes() {
        let mut doc = DockerConfigFile::new(ConfigFormat::ConfigJson);
        doc.put_entry(AuthEntry::kubectl_style("r<1>", "u&", "p", ""));
        assert_eq!(
            doc.to_json_compact(),
            r#"{"auths":{"r\u003c1\u003e":{"username":"u\u0026","password":"p","auth":"dSY6cA=="}}}"#
        );
    }

    #[test]
    fn credentials_debug_hides_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
            email: String::new(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
