//! The client side of berth's own API (`/berth/v1/…`, defined in
//! `berth-api`): the pull credential exchange, for `berth
//! credential-provider`, and administration (garbage collection,
//! repositories), for `berth gc` and `berth repo`. Every call sends Basic
//! credentials and turns a refusal into an error that says what to fix.

use berth_api::admin::{
    GC_PATH, GcEvent, GcReport, GcRequest, REPOSITORIES_PATH, Repository, RepositoryList,
};
use berth_api::pull_credentials::{self, IssuedPullCredential, PullCredentialRequest};
use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LINK};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

use crate::{Credentials, RegistryClient, classify, read_small};

/// Why a call to berth's API failed.
#[derive(Debug, thiserror::Error)]
pub enum BerthApiError {
    #[error("{0}")]
    Transport(String),
    #[error("{url} answered {status}: {message}{hint}")]
    Refused {
        url: String,
        status: u16,
        message: String,
        /// What to check, for the caller's kind of credential.
        hint: &'static str,
    },
    #[error("{url} answered something other than expected: {detail}")]
    BadAnswer { url: String, detail: String },
}

/// Hints for a refused pull credential exchange.
fn exchange_hint(status: u16) -> &'static str {
    match status {
        401 => "; check the node credential (user or robot name and password)",
        403 => "; give the node credential's user or robot pull access",
        404 | 405 => "; is this a berth registry, and its base URL?",
        _ => "",
    }
}

/// Hints for a refused administration call.
fn admin_hint(status: u16) -> &'static str {
    match status {
        401 => "; check the administrator's user name and password",
        403 => "; the user must be named by a policy rule with admin = true",
        404 | 405 => "; is this a berth registry, and its base URL?",
        _ => "",
    }
}

/// `path` below a registry base URL such as `https://reg.example.com`.
pub fn api_url(base_url: &str, path: &str) -> String {
    format!("{}{path}", base_url.trim_end_matches('/'))
}

impl RegistryClient {
    /// Sends `request` with Basic `credentials`; a non-success answer is
    /// [`BerthApiError::Refused`], with the spec error's code and message.
    async fn call(
        &self,
        request: RequestBuilder,
        url: &str,
        credentials: &Credentials,
        hint: fn(u16) -> &'static str,
    ) -> Result<Response, BerthApiError> {
        let response = request
            .header(AUTHORIZATION, credentials.basic())
            .send()
            .await
            .map_err(|e| {
                let kind = classify::transport_kind(&e);
                BerthApiError::Transport(classify::classify_transport(&kind, url).detail)
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = read_small(response).await.unwrap_or_default();
        let message = classify::spec_error(&text)
            .map(|(code, message)| format!("{code}: {message}"))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        Err(BerthApiError::Refused {
            url: url.to_owned(),
            status: status.as_u16(),
            message,
            hint: hint(status.as_u16()),
        })
    }

    /// `POST`s `request` as JSON to `url` (see [`Self::call`]).
    async fn post_json(
        &self,
        url: &str,
        request: &impl serde::Serialize,
        credentials: &Credentials,
        hint: fn(u16) -> &'static str,
    ) -> Result<Response, BerthApiError> {
        let body = serde_json::to_string(request).expect("request serialises");
        let post = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        self.call(post, url, credentials, hint).await
    }

    async fn json<T: DeserializeOwned>(response: Response, url: &str) -> Result<T, BerthApiError> {
        let text = read_small(response).await.unwrap_or_default();
        serde_json::from_str(&text).map_err(|e| BerthApiError::BadAnswer {
            url: url.to_owned(),
            detail: format!("invalid JSON at line {} column {}", e.line(), e.column()),
        })
    }

    /// Exchanges `credentials` at the berth registry at `base_url`.
    pub async fn exchange_pull_credential(
        &self,
        base_url: &str,
        credentials: &Credentials,
        request: &PullCredentialRequest,
    ) -> Result<IssuedPullCredential, BerthApiError> {
        let url = api_url(base_url, pull_credentials::PATH);
        let response = self
            .post_json(&url, request, credentials, exchange_hint)
            .await?;
        let issued: IssuedPullCredential = Self::json(response, &url).await?;
        if issued.username.is_empty() || issued.password.is_empty() {
            return Err(BerthApiError::BadAnswer {
                url,
                detail: "an empty username or password".to_owned(),
            });
        }
        Ok(issued)
    }

    /// Runs a garbage collection; `on_event` sees each line of progress as
    /// it comes. Returns the final report.
    pub async fn collect_garbage(
        &self,
        base_url: &str,
        credentials: &Credentials,
        request: &GcRequest,
        mut on_event: impl FnMut(&GcEvent),
    ) -> Result<GcReport, BerthApiError> {
        let url = api_url(base_url, GC_PATH);
        let response = self
            .post_json(&url, request, credentials, admin_hint)
            .await?;
        let bad = |detail: String| BerthApiError::BadAnswer {
            url: url.clone(),
            detail,
        };
        let mut pending: Vec<u8> = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| bad(format!("the answer broke off: {e}")))?;
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: GcEvent = serde_json::from_slice(&line)
                    .map_err(|e| bad(format!("a line is not a collection event: {e}")))?;
                on_event(&event);
                match event {
                    GcEvent::Report(report) => return Ok(report),
                    GcEvent::Error { message } => {
                        return Err(BerthApiError::Refused {
                            url,
                            status: 200,
                            message,
                            hint: "",
                        });
                    }
                    GcEvent::Progress { .. } => {}
                }
            }
        }
        Err(bad(
            "the answer ended before the collection's report".to_owned()
        ))
    }

    /// Every repository with what it holds, following the pages.
    pub async fn repositories(
        &self,
        base_url: &str,
        credentials: &Credentials,
    ) -> Result<Vec<Repository>, BerthApiError> {
        let mut repositories = Vec::new();
        let mut url = api_url(base_url, REPOSITORIES_PATH);
        loop {
            let response = self
                .call(self.http.get(&url), &url, credentials, admin_hint)
                .await?;
            let next = response
                .headers()
                .get(LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.strip_prefix('<'))
                .and_then(|l| l.split_once('>'))
                .map(|(path, _)| api_url(base_url, path));
            let page: RepositoryList = Self::json(response, &url).await?;
            repositories.extend(page.repositories);
            match next {
                Some(next) => url = next,
                None => return Ok(repositories),
            }
        }
    }

    /// Deletes a repository whole.
    pub async fn delete_repository(
        &self,
        base_url: &str,
        credentials: &Credentials,
        name: &str,
    ) -> Result<(), BerthApiError> {
        let url = api_url(base_url, &format!("{REPOSITORIES_PATH}/{name}"));
        let delete = self.http.request(Method::DELETE, &url);
        self.call(delete, &url, credentials, admin_hint).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            api_url("https://r.example.com/", pull_credentials::PATH),
            "https://r.example.com/berth/v1/pull-credentials"
        );
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let refused = |status, hint: fn(u16) -> &'static str| BerthApiError::Refused {
            url: "https://r/berth/v1/x".into(),
            status,
            message: "UNAUTHORIZED: wrong user name or password".into(),
            hint: hint(status),
        };
        let e = refused(401, exchange_hint);
        assert!(e.to_string().contains("check the node credential"), "{e}");
        let e = refused(403, admin_hint);
        assert!(e.to_string().contains("admin = true"), "{e}");
    }
}
