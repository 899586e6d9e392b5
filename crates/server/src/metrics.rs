//! Prometheus metrics, `GET /metrics` in the text format: requests by
//! endpoint, method and status with their latencies, bytes in and out and
//! requests in flight (uploads in progress among them), what the store
//! holds, garbage collection, the pull-through cache, refused logins.
//!
//! Labels never carry repository names, tags or users, so the number of
//! series stays fixed however the registry is used. On the registry's port
//! `/metrics` takes an administrator's Basic credentials (it would
//! otherwise go out through an ingress to anyone); `--metrics-addr` serves
//! it without, on an address meant for scrapers inside the cluster. Counters kept by other
//! layers (collection, cache, logins: plain atomics there, so those crates
//! need nothing of Prometheus) are brought up to date at each scrape.
//!
//! prometheus-client is the Prometheus project's own Rust client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use berth_cache::CacheStats;

use berth_registry::StorageTotals;

use crate::access::AppState;
use crate::admin::administrator;
use crate::client_addr::ClientAddr;
use crate::route::Route;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Every metric berth exports.
pub struct Metrics {
    registry: Registry,
    /// One scrape at a time: catching counters up is read-then-add.
    scrape: tokio::sync::Mutex<Option<(Instant, StorageTotals)>>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<EndpointLabels, Histogram>,
    bytes_in: Family<EndpointLabels, Counter>,
    bytes_out: Family<EndpointLabels, Counter>,
    in_flight: Family<EndpointLabels, Gauge>,
    stored: Family<KindLabels, Gauge>,
    stored_bytes: Gauge,
    gc_runs: Counter,
    gc_failures: Counter,
    gc_freed_bytes: Counter,
    gc_deleted: Family<KindLabels, Counter>,
    gc_last_run: Gauge,
    gc_last_duration: Gauge<f64, AtomicU64>,
    cache_requests: Family<KindLabels, Counter>,
    cache_upstream_bytes: Counter,
    logins_refused: Family<KindLabels, Counter>,
}

/// The endpoint a path names, as a label: a fixed set.
pub fn endpoint(path: &str) -> &'static str {
    match Route::parse(path) {
        Some(Route::Base) => "base",
        Some(Route::Catalog) => "catalog",
        Some(Route::Tags { .. }) => "tags",
        Some(Route::Manifest { .. }) => "manifest",
        Some(Route::Blob { .. }) => "blob",
        Some(Route::Uploads { .. }) => "uploads",
        Some(Route::Upload { .. }) => "upload",
        Some(Route::Referrers { .. }) => "referrers",
        None => match path {
            "/token" => "token",
            "/healthz" => "healthz",
            "/readyz" => "readyz",
            "/metrics" => "metrics",
            "/.well-known/jwks.json" => "jwks",
            "/berth/v1/pull-credentials" => "pull_credentials",
            p if p.starts_with("/berth/v1/") => "admin",
            _ => "other",
        },
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// How long the store's counted totals are reused between scrapes.
const TOTALS_EVERY: Duration = Duration::from_secs(15);

/// Brings a counter up to a total kept elsewhere.
fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn load(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

/// `metric`, registered under `name` with `help`.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("berth");
        let durations = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to about 65 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        Metrics {
            scrape: tokio::sync::Mutex::new(None),
            requests: registered(
                &mut r,
                "http_requests",
                "Requests answered, by endpoint, method and status",
                Family::default(),
            ),
            durations: registered(
                &mut r,
                "http_request_duration_seconds",
                "Time to the response head (for a blob: to its first byte)",
                durations,
            ),
            bytes_in: registered(
                &mut r,
                "http_request_bytes",
                "Request body bytes, as declared",
                Family::default(),
            ),
            bytes_out: registered(
                &mut r,
                "http_response_bytes",
                "Response body bytes, as announced",
                Family::default(),
            ),
            in_flight: registered(
                &mut r,
                "http_requests_in_flight",
                "Requests being handled (endpoint=upload: upload requests under way)",
                Family::default(),
            ),
            stored: registered(
                &mut r,
                "storage_objects",
                "What the store holds: repositories, manifests, tags, blobs",
                Family::default(),
            ),
            stored_bytes: registered(
                &mut r,
                "storage_bytes",
                "Bytes of the stored blobs and manifests, each once",
                Gauge::default(),
            ),
            gc_runs: registered(
                &mut r,
                "gc_runs",
                "Garbage collections run by this process",
                Counter::default(),
            ),
            gc_failures: registered(
                &mut r,
                "gc_failures",
                "Garbage collections that failed",
                Counter::default(),
            ),
            gc_freed_bytes: registered(
                &mut r,
                "gc_freed_bytes",
                "Bytes garbage collection removed",
                Counter::default(),
            ),
            gc_deleted: registered(
                &mut r,
                "gc_deleted",
                "Manifests and blobs garbage collection deleted",
                Family::default(),
            ),
            gc_last_run: registered(
                &mut r,
                "gc_last_run_timestamp_seconds",
                "When the last garbage collection ended (0: none yet)",
                Gauge::default(),
            ),
            gc_last_duration: registered(
                &mut r,
                "gc_last_duration_seconds",
                "How long the last garbage collection took",
                Gauge::default(),
            ),
            cache_requests: registered(
                &mut r,
                "cache_requests",
                "Pull-through cache requests: manifest_hit, manifest_fetch, blob_hit, \
                 blob_download, stale",
                Family::default(),
            ),
            cache_upstream_bytes: registered(
                &mut r,
                "cache_upstream_bytes",
                "Blob bytes the pull-through cache received from upstreams",
                Counter::default(),
            ),
            logins_refused: registered(
                &mut r,
                "logins_refused",
                "Logins refused: credentials (wrong user or password), throttled",
                Family::default(),
            ),
            registry: r,
        }
    }
}

/// A request being counted: in flight until [`RequestTimer::done`].
pub struct RequestTimer<'a> {
    metrics: &'a Metrics,
    labels: EndpointLabels,
}

impl Metrics {
    /// Starts counting a request.
    pub fn start(&self, method: &Method, path: &str, bytes_in: u64) -> RequestTimer<'_> {
        let labels = EndpointLabels {
            endpoint: endpoint(path),
            method: method_label(method),
        };
        self.in_flight.get_or_create(&labels).inc();
        self.bytes_in.get_or_create(&labels).inc_by(bytes_in);
        RequestTimer {
            metrics: self,
            labels,
        }
    }

    /// Brings what other layers count up to date; the store's totals (a
    /// scan of its tables) at most every [`TOTALS_EVERY`].
    async fn refresh(&self, state: &AppState, totals: &mut Option<(Instant, StorageTotals)>) {
        let counted = match *totals {
            Some((at, counted)) if at.elapsed() < TOTALS_EVERY => Ok(counted),
            _ => state.registry.totals().await.inspect(|counted| {
                *totals = Some((Instant::now(), *counted));
            }),
        };
        match counted {
            Ok(totals) => {
                for (kind, value) in [
                    ("repositories", totals.repositories),
                    ("manifests", totals.manifests),
                    ("tags", totals.tags),
                    ("blobs", totals.blobs),
                ] {
                    self.stored
                        .get_or_create(&KindLabels { kind })
                        .set(value as i64);
                }
                self.stored_bytes.set(totals.blob_bytes as i64);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count what the store holds"),
        }
        let gc = state.registry.gc_stats();
        catch_up(&self.gc_runs, load(&gc.runs));
        catch_up(&self.gc_failures, load(&gc.failures));
        catch_up(&self.gc_freed_bytes, load(&gc.freed_bytes));
        for (kind, total) in [
            ("manifests", &gc.deleted_manifests),
            ("blobs", &gc.deleted_blobs),
        ] {
            catch_up(
                &self.gc_deleted.get_or_create(&KindLabels { kind }),
                load(total),
            );
        }
        self.gc_last_run.set((load(&gc.last_run) / 1000) as i64);
        self.gc_last_duration
            .set(load(&gc.last_duration) as f64 / 1000.0);
        // Without a cache its series are there, at zero: dashboards show
        // that nothing happened rather than no data.
        let idle = CacheStats::default();
        let stats = state.cache.as_ref().map_or(&idle, |cache| cache.stats());
        for (kind, total) in [
            ("manifest_hit", &stats.manifest_hits),
            ("manifest_fetch", &stats.manifest_fetches),
            ("blob_hit", &stats.blob_hits),
            ("blob_download", &stats.blob_downloads),
            ("stale", &stats.stale),
        ] {
            catch_up(
                &self.cache_requests.get_or_create(&KindLabels { kind }),
                load(total),
            );
        }
        catch_up(&self.cache_upstream_bytes, load(&stats.upstream_bytes));
        let (failed, throttled) = state.auth.login_counts();
        for (kind, total) in [("credentials", failed), ("throttled", throttled)] {
            catch_up(
                &self.logins_refused.get_or_create(&KindLabels { kind }),
                total,
            );
        }
    }
}

impl Drop for RequestTimer<'_> {
    /// A request whose handler was dropped (the client went away) is no
    /// longer in flight either.
    fn drop(&mut self) {
        self.metrics.in_flight.get_or_create(&self.labels).dec();
    }
}

impl RequestTimer<'_> {
    /// The response head is ready: counts it.
    pub fn done(self, status: StatusCode, bytes_out: u64, took: Duration) {
        let metrics = self.metrics;
        metrics
            .bytes_out
            .get_or_create(&self.labels)
            .inc_by(bytes_out);
        metrics
            .durations
            .get_or_create(&self.labels)
            .observe(took.as_secs_f64());
        metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: self.labels.endpoint,
                method: self.labels.method,
                status: status.as_u16(),
            })
            .inc();
    }
}

/// `GET /metrics` on the registry's port: for administrators.
pub async fn metrics_for_administrators(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
) -> Response {
    match administrator(&state, &headers, client).await {
        Ok(_) => exposition(&state).await,
        Err(refused) => refused.into_response(),
    }
}

/// `GET /metrics` on `--metrics-addr`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    exposition(&state).await
}

async fn exposition(state: &AppState) -> Response {
    let metrics = &state.metrics;
    let mut totals = metrics.scrape.lock().await;
    metrics.refresh(state, &mut totals).await;
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &metrics.registry) {
        tracing::error!(error = %e, "cannot encode the metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_a_fixed_set() {
        assert_eq!(endpoint("/v2/"), "base");
        assert_eq!(endpoint("/v2/team/app/blobs/uploads/abc"), "upload");
        assert_eq!(endpoint("/v2/a/b/c/manifests/latest"), "manifest");
        assert_eq!(endpoint("/berth/v1/gc"), "admin");
        assert_eq!(endpoint("/anything/else"), "other");
    }

    #[test]
    fn requests_are_counted_and_encoded() {
        let metrics = Metrics::default();
        let timer = metrics.start(&Method::PATCH, "/v2/a/blobs/uploads/x", 10);
        let in_flight = || {
            metrics
                .in_flight
                .get_or_create(&EndpointLabels {
                    endpoint: "upload",
                    method: "PATCH",
                })
                .get()
        };
        assert_eq!(in_flight(), 1);
        timer.done(StatusCode::ACCEPTED, 0, Duration::from_millis(3));
        assert_eq!(in_flight(), 0);
        let mut text = String::new();
        encode(&mut text, &metrics.registry).unwrap();
        assert!(
            text.contains(
                "berth_http_requests_total{endpoint=\"upload\",method=\"PATCH\",status=\"202\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "berth_http_request_bytes_total{endpoint=\"upload\",method=\"PATCH\"} 10"
            )
        );
    }
}
