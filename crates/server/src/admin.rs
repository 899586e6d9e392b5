//! berth's administration API (`/berth/v1/gc`, `/berth/v1/repositories`):
//! garbage collection on demand, repositories with their sizes and quotas,
//! and deleting a repository whole. The bodies are
//! [`berth_api::admin`]'s; every call takes an administrator's Basic
//! credentials and changes are audit-logged.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use berth_api::admin::{
    BlobGone, GcEvent, GcReport, GcRequest, ManifestGone, Quota, Repository, RepositoryList,
};
use berth_auth::{Credentials, Principal, Required};
use berth_registry::{BlobRef, GcOptions, GcProgress};
use futures_util::StreamExt;

use crate::access::AppState;
use crate::body::{json_or_default, read_small};
use crate::client_addr::ClientAddr;
use crate::error::{AccessError, ApiError, EdgeError};
use crate::query::Query;

pub use berth_api::admin::{GC_PATH, REPOSITORIES_PATH};

/// How long a collection request body may take: a few bytes of JSON.
const BODY_DEADLINE: Duration = Duration::from_secs(10);
const BODY_LIMIT: usize = 4096;
/// Repositories listed per page unless `n` says otherwise.
const PAGE: usize = 100;

/// The administrator making a request, or the answer refusing it.
pub(crate) async fn administrator(
    state: &AppState,
    headers: &HeaderMap,
    client: ClientAddr,
) -> Result<Principal, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let Ok(Credentials::Basic { user, password }) = Credentials::from_header(authorization) else {
        return Err(EdgeError::BasicLoginRequired(
            "log in with Basic authentication as an administrator (a user that a policy rule \
             with admin = true names)",
        )
        .into());
    };
    let principal = Principal::Direct(state.login(&user, &password, client.ip, false).await?);
    if !state.auth.permits(&principal, &Required::Admin) {
        return Err(AccessError::Denied {
            subject: principal.name().to_owned(),
            required: Required::Admin,
        }
        .into());
    }
    Ok(principal)
}

fn audit(subject: &Principal, client: ClientAddr, event: &str, target: &str) {
    tracing::info!(
        target: "berth::audit",
        event,
        subject = subject.name(),
        client = %client.ip,
        repository = target,
    );
}

/// `POST /berth/v1/gc`: runs a collection, answering its progress as it
/// goes. The run goes on if the client leaves.
pub async fn gc(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let subject = administrator(&state, &headers, client).await?;
    let bytes = read_small(body, BODY_LIMIT, BODY_DEADLINE)
        .await
        .map_err(|e| EdgeError::AdminRequestInvalid(e.to_string()))?;
    let request: GcRequest = json_or_default(&bytes).map_err(|e| {
        EdgeError::AdminRequestInvalid(format!(
            "the body is not a collection request ({e}); send e.g. {{\"dry_run\":true}} or \
             nothing"
        ))
    })?;
    let options = GcOptions {
        dry_run: request.dry_run,
        grace: request.grace_seconds.map(Duration::from_secs),
    };
    if !options.dry_run {
        audit(&subject, client, "gc", "");
    }
    let (lines, received) = tokio::sync::mpsc::channel::<GcEvent>(64);
    let registry = state.registry.clone();
    tokio::spawn(async move {
        let progress_lines = lines.clone();
        let progress = move |p: GcProgress| {
            // Progress is best effort: a slow or gone client skips some.
            let _ = progress_lines.try_send(GcEvent::Progress {
                phase: p.phase.as_str().to_owned(),
                done: p.done,
                total: p.total,
            });
        };
        let last = match registry.collect(options, &progress).await {
            Ok(report) => {
                tracing::info!(
                    dry_run = report.dry_run,
                    manifests = report.manifests.len(),
                    blobs = report.blobs.len(),
                    orphans = report.orphans.len(),
                    bytes = report.bytes(),
                    "garbage collection finished"
                );
                GcEvent::Report(wire_report(&report))
            }
            // As any answer: a fault inside berth is logged, not sent.
            Err(e) => GcEvent::Error {
                message: ApiError::from(e).message().to_owned(),
            },
        };
        let _ = lines.send(last).await;
    });
    let events = futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|event| (event, received))
    });
    let stream = events.map(|event| {
        let mut line = serde_json::to_vec(&event).expect("an event serialises");
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn blob_gone(blob: &BlobRef) -> BlobGone {
    BlobGone {
        digest: blob.digest.to_string(),
        size: blob.size,
    }
}

fn wire_report(report: &berth_registry::GcReport) -> GcReport {
    GcReport {
        dry_run: report.dry_run,
        tags: report
            .tags
            .iter()
            .map(|t| format!("{}:{}", t.repository, t.tag))
            .collect(),
        manifests: report
            .manifests
            .iter()
            .map(|m| ManifestGone {
                repository: m.repository.clone(),
                digest: m.digest.to_string(),
                size: m.size,
            })
            .collect(),
        links: report.links,
        blobs: report.blobs.iter().map(blob_gone).collect(),
        orphans: report.orphans.iter().map(blob_gone).collect(),
        bytes: report.bytes(),
    }
}

/// `GET /berth/v1/repositories?n=&last=`.
pub async fn repositories(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    administrator(&state, &headers, client).await?;
    let query = Query::parse(uri.query());
    let n = match query.get("n") {
        None => PAGE,
        Some(n) => n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            EdgeError::AdminRequestInvalid(format!(
                "n={n:?} is not a page size: give a whole number from 1, e.g. n=100"
            ))
        })?,
    };
    let mut infos = state
        .registry
        .repository_usage(query.get("last"), n.saturating_add(1))
        .await?;
    let more = infos.len() > n;
    infos.truncate(n);
    let last = infos.last().filter(|_| more).map(|i| i.usage.name.as_str());
    let link = query.next_link(REPOSITORIES_PATH, "n", last);
    let list = RepositoryList {
        repositories: infos
            .into_iter()
            .map(|info| Repository {
                name: info.usage.name,
                bytes: info.usage.bytes,
                manifests: info.usage.manifests,
                tags: info.usage.tags,
                quota: info.quota.map(|q| Quota {
                    pattern: q.pattern,
                    limit: q.limit,
                    used: q.used,
                }),
            })
            .collect(),
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&list).expect("a list serialises"),
    )
        .into_response();
    if let Some(link) = link.and_then(|l| l.parse().ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// `DELETE /berth/v1/repositories/<name>`.
pub async fn delete_repository(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let subject = administrator(&state, &headers, client).await?;
    state.registry.delete_repository(&name).await?;
    audit(&subject, client, "delete_repository", &name);
    Ok(StatusCode::ACCEPTED.into_response())
}
