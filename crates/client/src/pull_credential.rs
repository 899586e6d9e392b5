//! The client side of berth's pull credential exchange
//! (`POST /berth/v1/pull-credentials`): a long-lived credential in, a
//! short-lived pull-only one out.

use berth_api::pull_credentials::{IssuedPullCredential, PATH, PullCredentialRequest};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use crate::{Credentials, RegistryClient, classify, read_small};

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{0}")]
    Transport(String),
    #[error("{url} answered {status}: {message}{}", hint(*.status))]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} answered something other than a pull credential: {detail}")]
    BadAnswer { url: String, detail: String },
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => "; check the node credential (user or robot name and password)",
        403 => "; give the node credential's user or robot pull access",
        404 | 405 => "; is this a berth registry, and its base URL?",
        _ => "",
    }
}

/// The exchange URL for a registry base URL such as `https://reg.example.com`.
pub fn exchange_url(base_url: &str) -> String {
    format!("{}{PATH}", base_url.trim_end_matches('/'))
}

impl RegistryClient {
    /// Exchanges `credentials` at the berth registry at `base_url`.
    pub async fn exchange_pull_credential(
        &self,
        base_url: &str,
        credentials: &Credentials,
        request: &PullCredentialRequest,
    ) -> Result<IssuedPullCredential, ExchangeError> {
        let url = exchange_url(base_url);
        let body = serde_json::to_string(request).expect("request serialises");
        let response = self
            .http
            .post(&url)
            .header(AUTHORIZATION, credentials.basic())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let kind = classify::transport_kind(&e);
                ExchangeError::Transport(classify::classify_transport(&kind, &url).detail)
            })?;
        let status = response.status();
        let text = read_small(response).await.unwrap_or_default();
        if !status.is_success() {
            let message = classify::spec_error(&text)
                .map(|(code, message)| format!("{code}: {message}"))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
            return Err(ExchangeError::Refused {
                url,
                status: status.as_u16(),
                message,
            });
        }
        let issued: IssuedPullCredential =
            serde_json::from_str(&text).map_err(|e| ExchangeError::BadAnswer {
                url: url.clone(),
                detail: format!("invalid JSON at line {} column {}", e.line(), e.column()),
            })?;
        if issued.username.is_empty() || issued.password.is_empty() {
            return Err(ExchangeError::BadAnswer {
                url,
                detail: "an empty username or password".to_owned(),
            });
        }
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_urls() {
        assert_eq!(
            exchange_url("https://r.example.com/"),
            "https://r.example.com/berth/v1/pull-credentials"
        );
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let e = ExchangeError::Refused {
            url: "https://r/berth/v1/pull-credentials".into(),
            status: 401,
            message: "UNAUTHORIZED: wrong user name or password".into(),
        };
        assert!(e.to_string().contains("check the node credential"), "{e}");
    }
}
