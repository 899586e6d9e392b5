//! Registry tokens: ES256-signed JWTs in the form of the Docker/OCI token spec.
//!
//! The signing key is a P-256 key in PKCS#8 PEM, generated into the data
//! directory on first start (or given in the configuration); its public half is
//! published as a JWKS so other services can check berth's tokens.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::scope::ResourceAccess;

/// The claims of an access token. Field names are the spec's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceAccess>,
    /// Set in access tokens obtained with a pull credential, so that a push
    /// with one is refused (403) rather than challenged for a wider token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pull_only: bool,
    /// In refresh tokens and pull credentials: a fingerprint of the password
    /// or robot secret they were obtained with, so that changing it (a new
    /// password, a robot revoked and created again) ends them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred: Option<String>,
}

/// A token as handed to a client.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    /// RFC 3339.
    pub issued_at: String,
    /// What it grants, as space-separated scopes (OAuth2's `scope` answer).
    pub scope: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write the token signing key {path}: {message}")]
    Key { path: String, message: String },
    #[error("token rejected: {0}")]
    Invalid(String),
}

/// Audience suffix of refresh tokens, so one can never pass as an access token.
const REFRESH_AUDIENCE_SUFFIX: &str = "#refresh";
/// Audience suffix of pull credentials (passwords, see [`crate::pull_credential`]),
/// so that none of the three kinds can pass as another.
const PULL_CREDENTIAL_AUDIENCE_SUFFIX: &str = "#pull-credential";

pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwk: serde_json::Value,
    issuer: String,
    service: String,
    ttl: Duration,
    refresh_ttl: Duration,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new token signing key: ECDSA P-256 (ES256), PKCS#8 PEM.
pub fn new_signing_key() -> Result<String, String> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|key| key.serialize_pem())
        .map_err(|e| e.to_string())
}

impl TokenIssuer {
    /// Loads the PEM key at `path`, creating it (mode 0600) if absent.
    pub fn load_or_create(
        path: &Path,
        issuer: &str,
        service: &str,
        ttl: Duration,
        refresh_ttl: Duration,
    ) -> Result<Self, TokenError> {
        let key_error = |message: String| TokenError::Key {
            path: path.display().to_string(),
            message,
        };
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = new_signing_key().map_err(key_error)?;
                crate::files::write_private(path, &pem).map_err(|e| key_error(e.to_string()))?;
                pem
            }
            Err(e) => return Err(key_error(e.to_string())),
        };
        let key = rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| key_error(format!("not a PKCS#8 PEM P-256 key: {e}")))?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(key_error(
                "the key must be an ECDSA P-256 key (ES256)".into(),
            ));
        }
        let encoding =
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| key_error(e.to_string()))?;
        let decoding = DecodingKey::from_ec_pem(key.public_key_pem().as_bytes())
            .map_err(|e| key_error(e.to_string()))?;
        // Uncompressed point: 0x04 || x || y.
        let raw = key.public_key_raw();
        let (x, y) = raw[1..].split_at(32);
        let kid = b64url(&sha2::Sha256::digest(raw)[..16]);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": kid, "x": b64url(x), "y": b64url(y),
        });
        Ok(TokenIssuer {
            encoding,
            decoding,
            kid,
            jwk,
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            ttl,
            refresh_ttl,
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The public key as a JSON Web Key Set.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("ES256 signing cannot fail")
    }

    fn claims(
        &self,
        subject: &str,
        audience: String,
        ttl: Duration,
        access: Vec<ResourceAccess>,
    ) -> Claims {
        let now = unix_now();
        Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: audience,
            exp: now + ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
            pull_only: false,
            cred: None,
        }
    }

    /// An access token for `subject` carrying `access`, valid for the
    /// configured time to live.
    pub fn issue(&self, subject: &str, access: Vec<ResourceAccess>) -> IssuedToken {
        self.issue_limited(subject, access, false, None)
    }

    /// An access token as [`TokenIssuer::issue`], marked `pull_only` when
    /// obtained with a pull credential, and never valid past `not_after`
    /// (the expiry of the robot or pull credential it was obtained with).
    pub fn issue_limited(
        &self,
        subject: &str,
        access: Vec<ResourceAccess>,
        pull_only: bool,
        not_after: Option<u64>,
    ) -> IssuedToken {
        let scope = access
            .iter()
            .map(ResourceAccess::to_scope)
            .collect::<Vec<_>>()
            .join(" ");
        let mut claims = self.claims(subject, self.service.clone(), self.ttl, access);
        claims.pull_only = pull_only;
        if let Some(limit) = not_after {
            claims.exp = claims.exp.min(limit);
        }
        IssuedToken {
            token: self.sign(&claims),
            expires_in: claims.exp.saturating_sub(claims.iat),
            issued_at: humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_secs(claims.iat),
            )
            .to_string(),
            scope,
        }
    }

    /// A pull credential's password for `subject`, valid until `expires_at`
    /// (Unix seconds) for pulling from `patterns`.
    pub fn issue_pull_credential(
        &self,
        subject: &str,
        credential: &str,
        patterns: &[&str],
        expires_at: u64,
    ) -> String {
        let audience = format!("{}{PULL_CREDENTIAL_AUDIENCE_SUFFIX}", self.service);
        let access = patterns
            .iter()
            .map(|p| ResourceAccess {
                kind: crate::pull_credential::PATTERN_ACCESS_TYPE.to_owned(),
                name: (*p).to_owned(),
                actions: vec!["pull".to_owned()],
            })
            .collect();
        let mut claims = self.claims(subject, audience, Duration::ZERO, access);
        claims.exp = expires_at;
        claims.cred = Some(credential.to_owned());
        self.sign(&claims)
    }

    /// Checks a pull credential's password and returns its claims.
    pub fn verify_pull_credential(&self, token: &str) -> Result<Claims, TokenError> {
        let audience = format!("{}{PULL_CREDENTIAL_AUDIENCE_SUFFIX}", self.service);
        self.verify(token, &audience)
    }

    /// A refresh token (what `docker login` keeps as an identity token) for
    /// `subject`, bound to the fingerprint of its `credential`.
    pub fn issue_refresh(&self, subject: &str, credential: &str) -> String {
        let audience = format!("{}{REFRESH_AUDIENCE_SUFFIX}", self.service);
        let mut claims = self.claims(subject, audience, self.refresh_ttl, Vec::new());
        claims.cred = Some(credential.to_owned());
        self.sign(&claims)
    }

    fn verify(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        // Only ES256 is accepted, so `alg: none` or an HMAC algorithm keyed
        // with the public key cannot pass.
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Checks an access token's signature, issuer, audience and validity time.
    pub fn verify_access(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify(token, &self.service)
    }

    /// Checks a refresh token and returns its claims.
    pub fn verify_refresh(&self, token: &str) -> Result<Claims, TokenError> {
        let audience = format!("{}{REFRESH_AUDIENCE_SUFFIX}", self.service);
        self.verify(token, &audience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(dir: &Path, name: &str) -> TokenIssuer {
        TokenIssuer::load_or_create(
            &dir.join(name),
            "berth",
            "registry.test",
            Duration::from_secs(300),
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    fn access() -> Vec<ResourceAccess> {
        vec![ResourceAccess {
            kind: "repository".into(),
            name: "team/app".into(),
            actions: vec!["pull".into()],
        }]
    }

    #[test]
    fn issue_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = issuer(dir.path(), "key.pem");
        let issued = tokens.issue("alice", access());
        let claims = tokens.verify_access(&issued.token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.aud, "registry.test");
        assert_eq!(claims.access, access());
        assert_eq!(claims.exp - claims.iat, 300);
        // Never past the expiry of what it was obtained with.
        let limit = unix_now() + 20;
        let limited = tokens.issue_limited("robot.ci", access(), false, Some(limit));
        assert_eq!(tokens.verify_access(&limited.token).unwrap().exp, limit);
        assert!(limited.expires_in <= 20);
        // The same key is loaded again on restart.
        let again = issuer(dir.path(), "key.pem");
        assert!(again.verify_access(&issued.token).is_ok());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("key.pem"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(tokens.jwks()["keys"][0]["crv"], "P-256");
    }

    #[test]
    fn refresh_and_access_tokens_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = issuer(dir.path(), "key.pem");
        let refresh = tokens.issue_refresh("alice", "fingerprint");
        let claims = tokens.verify_refresh(&refresh).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.cred.as_deref(), Some("fingerprint"));
        assert!(tokens.verify_access(&refresh).is_err());
        assert!(
            tokens
                .verify_refresh(&tokens.issue("alice", vec![]).token)
                .is_err()
        );
    }

    #[test]
    fn pull_credentials_do_not_mix_with_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = issuer(dir.path(), "key.pem");
        let exp = unix_now() + 100;
        let credential = tokens.issue_pull_credential("alice", "fingerprint", &["team/*"], exp);
        let claims = tokens.verify_pull_credential(&credential).unwrap();
        assert_eq!((claims.sub.as_str(), claims.exp), ("alice", exp));
        assert_eq!(claims.cred.as_deref(), Some("fingerprint"));
        assert_eq!(claims.aud, "registry.test#pull-credential");
        assert_eq!(claims.access[0].kind, "repository-pattern");
        assert_eq!(claims.access[0].actions, ["pull"]);
        assert!(tokens.verify_access(&credential).is_err());
        assert!(tokens.verify_refresh(&credential).is_err());
        assert!(
            tokens
                .verify_pull_credential(&tokens.issue("alice", access()).token)
                .is_err()
        );
        assert!(
            tokens
                .verify_pull_credential(&tokens.issue_refresh("alice", "fingerprint"))
                .is_err()
        );
        let expired =
            tokens.issue_pull_credential("alice", "fingerprint", &["team/*"], unix_now() - 1);
        assert!(tokens.verify_pull_credential(&expired).is_err());
        // The marker of pull-only access tokens survives a round trip and is
        // absent from ordinary ones.
        let pull_only = tokens.issue_limited("alice", access(), true, None);
        assert!(tokens.verify_access(&pull_only.token).unwrap().pull_only);
        assert!(
            !tokens
                .verify_access(&tokens.issue("alice", access()).token)
                .unwrap()
                .pull_only
        );
    }

    #[test]
    fn forged_tokens_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = issuer(dir.path(), "key.pem");
        let other = issuer(dir.path(), "other.pem");
        let token = tokens.issue("alice", access()).token;
        // Another key.
        assert!(
            tokens
                .verify_access(&other.issue("alice", access()).token)
                .is_err()
        );
        // Claims widened by editing the payload.
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap(),
        )
        .unwrap();
        claims["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);
        let edited = b64url(serde_json::to_string(&claims).unwrap().as_bytes());
        assert!(
            tokens
                .verify_access(&format!("{}.{edited}.{}", parts[0], parts[2]))
                .is_err()
        );
        // alg: none, unsigned.
        let none = b64url(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(
            tokens
                .verify_access(&format!("{none}.{}.", parts[1]))
                .is_err()
        );
        // HS256 keyed with the public key.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &tokens.verify_access(&token).unwrap(),
            &EncodingKey::from_secret(tokens.jwk.to_string().as_bytes()),
        )
        .unwrap();
        assert!(tokens.verify_access(&hs).is_err());
        // Garbage.
        assert!(tokens.verify_access("a.b.c").is_err());
    }
}
