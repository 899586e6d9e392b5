//! `POST /berth/v1/pull-credentials`: a user or robot exchanges its own
//! credential (Basic authentication) for a short-lived, pull-only one.

use serde::{Deserialize, Serialize};

pub const PATH: &str = "/berth/v1/pull-credentials";

/// What to ask for (the request body; every field optional, and an empty
/// body asks for the defaults). The registry caps both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullCredentialRequest {
    /// Repository patterns; empty asks for everything the caller may pull.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// The registry's answer: a username and password any client understands.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedPullCredential {
    pub username: String,
    pub password: String,
    /// The repository patterns it may pull.
    pub repositories: Vec<String>,
    /// Seconds the credential lives from now, by the registry's clock.
    pub expires_in: u64,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

impl std::fmt::Debug for IssuedPullCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedPullCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("repositories", &self.repositories)
            .field("expires_in", &self.expires_in)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_refuse_unknown_fields() {
        assert_eq!(
            serde_json::to_string(&PullCredentialRequest::default()).unwrap(),
            "{}"
        );
        let request = PullCredentialRequest {
            repositories: vec!["team/*".into()],
            ttl_seconds: Some(60),
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"repositories":["team/*"],"ttl_seconds":60}"#);
        assert_eq!(
            serde_json::from_str::<PullCredentialRequest>(&text).unwrap(),
            request
        );
        for bad in [r#"{"ttl":60}"#, "[]", "{", r#"{"ttl_seconds":-1}"#] {
            assert!(serde_json::from_str::<PullCredentialRequest>(bad).is_err());
        }
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let issued = IssuedPullCredential {
            username: "node".into(),
            password: "secret-jwt".into(),
            repositories: vec!["team/*".into()],
            expires_in: 60,
            expires_at: "2026-12-01T00:00:00Z".into(),
        };
        assert!(!format!("{issued:?}").contains("secret-jwt"));
    }
}
