//! The pull-through cache against a real upstream: a second berth with token
//! authentication (the Docker Hub flow: 401, token, retry), reached directly
//! or through a proxy in this test that can slow the bytes down or swallow
//! the connection. Counting the upstream's access log shows what the cache
//! asked for.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::common::daemons::Containerd;
use crate::common::image::Layout;
use crate::common::{
    Api, OCI_MANIFEST, Server, berth, error_code, image_manifest, noise, run_tool, sha256, succeed,
};

/// An image pushed to the upstream.
struct Image {
    manifest: Vec<u8>,
    digest: String,
    /// Config and layers, with their bytes.
    blobs: Vec<(String, Vec<u8>)>,
}

impl Image {
    fn layer(&self, i: usize) -> &(String, Vec<u8>) {
        &self.blobs[i + 1]
    }
}

/// Pushes an image of one config and layers of `sizes` to `repo:tag`.
async fn push(api: &Api, repo: &str, tag: &str, sizes: &[usize], seed: u64) -> Image {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let mut blobs = vec![(api.push_blob(repo, &config).await, config.clone())];
    for (i, size) in sizes.iter().enumerate() {
        let layer = noise(*size, seed * 100 + i as u64);
        blobs.push((api.push_blob(repo, &layer).await, layer));
    }
    let layers: Vec<(&str, usize)> = blobs[1..]
        .iter()
        .map(|(d, b)| (d.as_str(), b.len()))
        .collect();
    let manifest = image_manifest(&blobs[0].0, config.len(), &layers, "");
    let response = api
        .put_manifest(repo, tag, OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(response.status(), 201);
    Image {
        digest: sha256(manifest.as_bytes()),
        manifest: manifest.into_bytes(),
        blobs,
    }
}

/// A berth caching `upstream_url` under `hub` as the upstream's admin (with
/// Docker Hub's `library/` for one-segment names); anonymous clients may
/// pull `hub/*` and `hub/library/*`, its own admin does everything.
struct Cache {
    server: Server,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl Cache {
    fn start(upstream_url: &str, upstream_password: &str, extra: &str, args: &[&str]) -> Self {
        Cache::start_as(upstream_url, ("admin", upstream_password), extra, args)
    }

    /// A cache pulling from the upstream as `user`.
    fn start_as(upstream_url: &str, user: (&str, &str), extra: &str, args: &[&str]) -> Self {
        let (username, upstream_password) = user;
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("upstream-password");
        std::fs::write(&password_file, format!("{upstream_password}\n")).unwrap();
        let config = dir.path().join("berth.toml");
        std::fs::write(
            &config,
            format!(
                r#"
{extra}
[[policy]]
subjects = ["anonymous"]
repositories = ["hub/*", "hub/library/*"]
actions = ["pull"]

[[policy]]
subjects = ["user:admin"]
repositories = ["**"]
actions = ["*"]
catalog = true

[[policy]]
subjects = ["user:admin"]
admin = true

[[upstream]]
prefix = "hub"
url = "{upstream_url}"
hosts = ["docker.io"]
default_namespace = "library"
username = "{username}"
password_file = "{}"
"#,
                password_file.display()
            ),
        )
        .unwrap();
        let mut all = vec!["--config".to_owned(), config.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        Cache {
            server: Server::start_in(&dir.path().join("data"), &args),
            args: all,
            dir,
        }
    }

    /// A new process on the same data: what it cached stays, what it kept
    /// in memory (upstream tokens, tag checks) does not.
    fn restart(&mut self) {
        self.server.kill9();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.server = Server::start_in(&self.dir.path().join("data"), &args);
    }

    fn of(upstream: &Server, extra: &str) -> Self {
        Cache::start(&upstream.base, &upstream.admin_password(), extra, &[])
    }
}

/// Pulls `repo:reference` through `base` as a client does (manifest, then
/// each blob) and checks every digest; returns the manifest's digest.
async fn pull(http: &reqwest::Client, base: &str, repo: &str, reference: &str) -> String {
    let response = http
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{repo}:{reference}");
    let manifest = response.bytes().await.unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut digests = vec![parsed["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in parsed["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_owned());
    }
    for digest in digests {
        let response = http
            .get(format!("{base}/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{digest}");
        assert_eq!(sha256(&response.bytes().await.unwrap()), digest);
    }
    sha256(&manifest)
}

/// The upstream's access-log lines for `method path` answered `status`,
/// once there is at least `expected` of them (the log is read as it is
/// written), or however many there are when none are expected.
fn requests(upstream: &Server, method: &str, path: &str, status: u16, expected: usize) -> usize {
    let wanted = format!("method={method} path=\"{path}\" status={status} ");
    let count = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("berth::access") && l.contains(&wanted))
            .count()
    };
    upstream.wait_for_log(|lines| Some(count(lines)).filter(|&n| n >= expected))
}

/// What the test proxy does with connections.
const FORWARD: u8 = 0;
/// Forwards, upstream bytes at about 3 MB/s.
const THROTTLE: u8 = 1;
/// Accepts and never answers (an upstream that hangs); stops forwarding
/// midway on connections already open.
const STALL: u8 = 2;

/// A TCP proxy between the cache and its upstream.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    mode: Arc<AtomicU8>,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(target: &Server) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            target: Arc::new(Mutex::new(target.addr.parse().unwrap())),
            mode: Arc::new(AtomicU8::new(FORWARD)),
            connections: Arc::new(AtomicUsize::new(0)),
        };
        let (target, mode, connections) = (
            proxy.target.clone(),
            proxy.mode.clone(),
            proxy.connections.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let target = *target.lock().unwrap();
                tokio::spawn(relay(client, target, mode.clone()));
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn retarget(&self, server: &Server) {
        *self.target.lock().unwrap() = server.addr.parse().unwrap();
    }
}

async fn relay(client: TcpStream, target: SocketAddr, mode: Arc<AtomicU8>) {
    if mode.load(Ordering::SeqCst) == STALL {
        // Held open, unanswered, for longer than any test waits.
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(client);
        return;
    }
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
    });
    let mut buffer = vec![0; 64 * 1024];
    // When the upstream goes away, so does the connection to the client.
    while let Ok(n) = upstream_read.read(&mut buffer).await {
        if n == 0 || client_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
        match mode.load(Ordering::SeqCst) {
            THROTTLE => tokio::time::sleep(Duration::from_millis(20)).await,
            // Stalled midway: nothing more, until the test ends.
            STALL => tokio::time::sleep(Duration::from_secs(120)).await,
            _ => {}
        }
    }
}

/// The files in the cache's spool directory.
fn spooled(cache: &Server) -> Vec<PathBuf> {
    std::fs::read_dir(cache.data_dir.join("spool"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fifty clients pulling an image nobody pulled before: one request per
/// blob and manifest reaches the upstream, one login (the token is reused),
/// and every client gets every byte right. Pulls by digest and repeated
/// pulls within the revalidation interval ask the upstream nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cold_pulls_fetch_each_blob_once() {
    let upstream = Server::start(&[]);
    let image = push(
        &Api::new(&upstream),
        "library/app",
        "1",
        &[4 << 20, 1 << 20],
        1,
    )
    .await;
    let cache = Cache::of(&upstream, "");
    let http = Api::anonymous(&cache.server).http;
    let pulls: Vec<_> = (0..50)
        .map(|_| {
            let (http, base) = (http.clone(), cache.server.base.clone());
            tokio::spawn(async move { pull(&http, &base, "hub/app", "1").await })
        })
        .collect();
    for pull in pulls {
        assert_eq!(pull.await.unwrap(), image.digest);
    }
    for (digest, _) in &image.blobs {
        let path = format!("/v2/library/app/blobs/{digest}");
        assert_eq!(requests(&upstream, "GET", &path, 200, 1), 1, "{path}");
    }
    let manifest = "/v2/library/app/manifests/1";
    assert_eq!(requests(&upstream, "GET", manifest, 200, 1), 1);
    assert_eq!(requests(&upstream, "HEAD", manifest, 200, 0), 0);
    assert_eq!(requests(&upstream, "POST", "/token", 200, 1), 1);

    // Warm: by digest (path and mirror mode alike) and by tag, nothing more
    // goes upstream.
    let asked = || {
        upstream
            .log()
            .iter()
            .filter(|l| l.contains("berth::access"))
            .count()
    };
    let before = asked();
    let by_digest = pull(&http, &cache.server.base, "hub/library/app", &image.digest).await;
    assert_eq!(by_digest, image.digest);
    let mirrored = http
        .get(cache.server.url(&format!(
            "/v2/library/app/manifests/{}?ns=docker.io",
            image.digest
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(mirrored.status(), 200);
    assert_eq!(mirrored.bytes().await.unwrap(), image.manifest);
    pull(&http, &cache.server.base, "hub/app", "1").await;
    assert_eq!(asked(), before);

    // The metrics say so: every blob byte came from the upstream once.
    let metrics = Api::new(&cache.server)
        .http
        .get(cache.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let image_bytes: usize = image.blobs.iter().map(|(_, b)| b.len()).sum();
    assert!(
        metrics.contains(&format!("berth_cache_upstream_bytes_total {image_bytes}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("berth_cache_requests_total{kind=\"manifest_fetch\"} 1\n"));
}

/// Upstream gone: cached tags and digests still pull, the tag check
/// failing at once, and the log says the copy is stale. A hanging upstream
/// costs one timeout, after which it is left alone for a while.
/// A blob recorded without its bytes (what another berth process on the
/// same stores leaves for the moment between recording a download and
/// moving it into place, or a file lost behind berth's back) is a miss:
/// downloaded again, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_blob_without_its_bytes_is_downloaded_again() {
    let upstream = Server::start(&[]);
    let image = push(&Api::new(&upstream), "library/app", "1", &[100_000], 5).await;
    let cache = Cache::of(&upstream, "");
    let http = Api::anonymous(&cache.server).http;
    pull(&http, &cache.server.base, "hub/app", "1").await;
    let (layer, _) = image.layer(0);
    let path = format!("/v2/library/app/blobs/{layer}");
    assert_eq!(requests(&upstream, "GET", &path, 200, 1), 1);
    // Moved into place once verified, just after the client's last byte.
    let stored = &cache.server.stored;
    wait_until("the layer is stored", || stored.has_blob(layer));
    stored.remove_blob(layer);
    assert_eq!(
        pull(&http, &cache.server.base, "hub/app", "1").await,
        image.digest
    );
    assert_eq!(requests(&upstream, "GET", &path, 200, 2), 2);
    wait_until("the layer is stored again", || stored.has_blob(layer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_outage_serves_the_cached_copy() {
    let mut upstream = Server::start(&[]);
    let image = push(&Api::new(&upstream), "library/app", "1", &[100_000], 2).await;
    let proxy = Proxy::start(&upstream).await;
    let cache = Cache::start(
        &proxy.url(),
        &upstream.admin_password(),
        "[cache]\nrevalidate_after = \"0s\"\ntimeout = \"2s\"\noutage_backoff = \"5s\"\n",
        &[],
    );
    let http = Api::anonymous(&cache.server).http;
    let base = &cache.server.base;
    pull(&http, base, "hub/app", "1").await;

    upstream.kill9();
    let connections = proxy.connections.load(Ordering::SeqCst);
    assert_eq!(pull(&http, base, "hub/app", "1").await, image.digest);
    assert_eq!(
        pull(&http, base, "hub/app", &image.digest).await,
        image.digest
    );
    assert!(
        proxy.connections.load(Ordering::SeqCst) > connections,
        "it asked"
    );
    cache
        .server
        .wait_for_line("the upstream failed; serving the cached copy");

    // Hanging, once the backoff is over: the tag check waits out the 2 s
    // timeout once, then the cached copy is served.
    std::thread::sleep(Duration::from_millis(5_500));
    proxy.mode.store(STALL, Ordering::SeqCst);
    let started = Instant::now();
    assert_eq!(pull(&http, base, "hub/app", "1").await, image.digest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(15),
        "seconds, not minutes: {waited:?}"
    );
    // Left alone now: no further connection while the backoff lasts.
    let connections = proxy.connections.load(Ordering::SeqCst);
    for _ in 0..3 {
        pull(&http, base, "hub/app", "1").await;
    }
    assert_eq!(proxy.connections.load(Ordering::SeqCst), connections);
    // Never cached: the client learns the upstream is unavailable.
    let missing = http
        .get(cache.server.url("/v2/hub/app/manifests/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 503);
}

/// The upstream killed in the middle of a blob: the client's download
/// fails, the cache keeps nothing of it, and the next pull (upstream back)
/// gets the whole blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_killed_mid_blob_leaves_nothing_partial() {
    let mut upstream = Server::start(&[]);
    let image = push(&Api::new(&upstream), "library/big", "1", &[24 << 20], 3).await;
    let (digest, bytes) = image.layer(0).clone();
    let proxy = Proxy::start(&upstream).await;
    proxy.mode.store(THROTTLE, Ordering::SeqCst);
    let cache = Cache::start(&proxy.url(), &upstream.admin_password(), "", &[]);
    let http = Api::anonymous(&cache.server).http;
    let url = cache
        .server
        .url(&format!("/v2/hub/library/big/blobs/{digest}"));
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(bytes.len() as u64));
    broken_off(response, bytes.len(), || {
        if upstream_alive(&upstream) {
            upstream.kill9();
        }
    })
    .await;
    assert_nothing_kept(&cache, &digest);

    let restarted = Server::start_in(&upstream.data_dir, &[]);
    proxy.retarget(&restarted);
    proxy.mode.store(FORWARD, Ordering::SeqCst);
    let again = http.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(sha256(&again.bytes().await.unwrap()), digest);
    wait_until("the blob is stored", || {
        cache.server.stored.has_blob(&digest)
    });
}

/// Reads a blob's body of `size` bytes, doing `midway` once a mebibyte has
/// arrived, and checks that the body then broke off before its end.
async fn broken_off(response: reqwest::Response, size: usize, mut midway: impl FnMut()) {
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut received, mut failed) = (0, false);
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => received += chunk.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
        if received >= 1 << 20 {
            midway();
        }
    }
    assert!(
        failed && received < size,
        "{received} bytes, failed: {failed}"
    );
}

/// The cache logged a failed download of `digest` and kept nothing of it.
fn assert_nothing_kept(cache: &Cache, digest: &str) {
    cache.server.wait_for_line("nothing of it was cached");
    wait_until("the spool is empty", || spooled(&cache.server).is_empty());
    assert!(!cache.server.stored.has_blob(digest));
}

fn upstream_alive(upstream: &Server) -> bool {
    std::net::TcpStream::connect(&upstream.addr).is_ok()
}

/// A client going away does not stop the download it started: the blob is
/// cached all the same. A download that stalls midway is given up after
/// `stall_timeout`, keeps nothing, and the next pull starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_outlives_its_client_and_a_stalled_one_keeps_nothing() {
    let upstream = Server::start(&[]);
    let image = push(
        &Api::new(&upstream),
        "library/big",
        "1",
        &[8 << 20, 8 << 20],
        7,
    )
    .await;
    let proxy = Proxy::start(&upstream).await;
    proxy.mode.store(THROTTLE, Ordering::SeqCst);
    let cache = Cache::start(
        &proxy.url(),
        &upstream.admin_password(),
        "[cache]\nstall_timeout = \"2s\"\n",
        &[],
    );
    let http = Api::anonymous(&cache.server).http;
    let url = |digest: &str| cache.server.url(&format!("/v2/hub/big/blobs/{digest}"));

    let (first, _) = image.layer(0);
    let response = http.get(url(first)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    wait_until("the abandoned download is stored", || {
        cache.server.stored.has_blob(first)
    });
    let path = format!("/v2/library/big/blobs/{first}");
    assert_eq!(requests(&upstream, "GET", &path, 200, 1), 1);

    let (second, bytes) = image.layer(1);
    let response = http.get(url(second)).send().await.unwrap();
    broken_off(response, bytes.len(), || {
        proxy.mode.store(STALL, Ordering::SeqCst)
    })
    .await;
    assert_nothing_kept(&cache, second);
    proxy.mode.store(FORWARD, Ordering::SeqCst);
    let again = http.get(url(second)).send().await.unwrap();
    assert_eq!(sha256(&again.bytes().await.unwrap()), *second);
}

/// An upstream that throttles berth (429 with Retry-After, here berth's own
/// login throttling) is left alone for as long as it asks: cached tags are
/// served, and what is not cached gets 429 with the time left, without
/// another request upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttling_upstream_is_left_alone_for_its_retry_after() {
    let upstream = Server::start(&[]);
    let api = Api::new(&upstream);
    let image = push(&api, "library/app", "1", &[1000], 8).await;
    push(&api, "library/other", "1", &[1000], 9).await;
    let mut cache = Cache::of(&upstream, "[cache]\nrevalidate_after = \"0s\"\n");
    let http = Api::anonymous(&cache.server).http;
    pull(&http, &cache.server.base, "hub/app", "1").await;

    // Five failed logins lock the account berth pulls with, from this
    // address, for 30 s.
    let wrong = Api::with_credentials(&upstream, "admin", "wrong");
    for _ in 0..5 {
        let refused = wrong
            .http
            .get(upstream.url("/token?service=berth"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
    }
    // A new process has no upstream token: the tag check must log in.
    cache.restart();
    let http = Api::anonymous(&cache.server).http;
    assert_eq!(
        pull(&http, &cache.server.base, "hub/app", "1").await,
        image.digest
    );
    cache
        .server
        .wait_for_line("the upstream failed; serving the cached copy");
    let logins = || {
        upstream
            .log()
            .iter()
            .filter(|l| l.contains("path=\"/token\""))
            .count()
    };
    upstream.wait_for_line("path=\"/token\" status=429");
    let before = logins();
    let response = http
        .get(cache.server.url("/v2/hub/other/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(response).await, "TOOMANYREQUESTS");
    assert_eq!(logins(), before, "the upstream was left alone");
}

/// An upstream serving wrong bytes (its disk rotted): the client never gets
/// a whole wrong blob or a wrong manifest, and nothing wrong is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_upstream_content_is_caught() {
    let mut first = Server::start(&[]);
    let image = push(&Api::new(&first), "library/app", "1", &[2 << 20], 4).await;
    let (digest, bytes) = image.layer(0).clone();
    first.kill9();
    first.stored.corrupt_blob(&digest);
    first.stored.corrupt_blob(&image.digest);
    // A fresh process: the upstream's memory holds no good copy.
    let upstream = Server::start_in(&first.data_dir, &[]);
    let cache = Cache::of(&upstream, "");
    let http = Api::anonymous(&cache.server).http;
    for _ in 0..2 {
        let response = http
            .get(cache.server.url(&format!("/v2/hub/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.bytes().await;
        assert!(
            body.as_ref().is_err() || body.as_ref().unwrap().len() < bytes.len(),
            "a whole wrong blob was served"
        );
        cache
            .server
            .wait_for_line(&format!("not {digest}; nothing of it was kept"));
        wait_until("the spool is empty", || spooled(&cache.server).is_empty());
        assert!(!cache.server.stored.has_blob(&digest));
    }
    // A range short of the blob's end waits for the verification, so it
    // never gets unverified bytes either.
    let ranged = http
        .get(cache.server.url(&format!("/v2/hub/app/blobs/{digest}")))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert!(
        ranged.bytes().await.is_err(),
        "unverified bytes were served"
    );
    let manifest = http
        .get(cache.server.url("/v2/hub/app/manifests/1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 502);
    let text = manifest.text().await.unwrap();
    assert!(text.contains(&format!("not {}", image.digest)), "{text}");
}

/// At its size limit, collection evicts the least recently pulled cached
/// images, never a pushed one nor what a pushed one shares; an evicted
/// image pulls again from the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_cache_evicts_the_least_recently_pulled() {
    let upstream = Server::start(&[]);
    let api = Api::new(&upstream);
    let mut images = Vec::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        images.push(
            push(
                &api,
                &format!("library/{name}"),
                "1",
                &[400_000],
                10 + i as u64,
            )
            .await,
        );
    }
    // Room for two cached images, not three.
    let cache = Cache::of(&upstream, "[cache]\nmax_size = \"1MB\"\n");
    let own = Api::new(&cache.server);
    let pushed = push(&own, "team/own", "1", &[400_000], 20).await;
    let http = Api::anonymous(&cache.server).http;
    for name in ["a", "b", "c"] {
        pull(&http, &cache.server.base, &format!("hub/{name}"), "1").await;
    }
    // Past the grace period, so that nothing counts as in use.
    std::thread::sleep(Duration::from_millis(1_500));
    let report = own.gc(false, Some(1)).await;
    let evicted: Vec<&str> = report["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(evicted, [images[0].digest.as_str()], "{report}");
    assert!(!cache.server.stored.has_blob(&images[0].layer(0).0));
    for kept in [&images[1], &images[2], &pushed] {
        assert!(cache.server.stored.has_blob(&kept.layer(0).0));
    }
    assert_eq!(
        pull(&own.http, &cache.server.base, "team/own", "1").await,
        pushed.digest
    );
    let before = requests(&upstream, "GET", "/v2/library/a/manifests/1", 200, 1);
    assert_eq!(
        pull(&http, &cache.server.base, "hub/a", "1").await,
        images[0].digest
    );
    assert_eq!(
        requests(
            &upstream,
            "GET",
            "/v2/library/a/manifests/1",
            200,
            before + 1
        ),
        before + 1
    );
}

/// A repository berth's upstream account may not pull (or that does not
/// exist: registries answer both with 401) is unknown through the cache,
/// not a failure of the upstream: the client gets 404, and the upstream is
/// not left alone for it.
#[tokio::test]
async fn a_repository_closed_to_the_upstream_account_is_unknown() {
    // alice may pull team/* upstream, nothing else.
    let upstream = crate::common::fixture("", &[]);
    let root = Api::with_credentials(&upstream.server, "root", "root-pw");
    push(&root, "team/app", "1", &[1000], 11).await;
    push(&root, "secret/app", "1", &[1000], 12).await;
    let cache = Cache::start_as(
        &upstream.server.base,
        ("alice", "alice-pw"),
        "[cache]\nrevalidate_after = \"0s\"\n",
        &[],
    );
    let admin = Api::new(&cache.server);
    pull(&admin.http, &cache.server.base, "hub/team/app", "1").await;
    let closed = admin
        .http
        .get(admin.url("/v2/hub/secret/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 404);
    let text = closed.text().await.unwrap();
    assert!(
        text.contains("MANIFEST_UNKNOWN") && text.contains("refused it to berth's login"),
        "{text}"
    );
    // Not an outage: the next tag pull still checks upstream.
    let checks = || requests(&upstream.server, "HEAD", "/v2/team/app/manifests/1", 200, 0);
    let before = checks();
    pull(&admin.http, &cache.server.base, "hub/team/app", "1").await;
    assert_eq!(
        requests(
            &upstream.server,
            "HEAD",
            "/v2/team/app/manifests/1",
            200,
            before + 1
        ),
        before + 1
    );
}

/// Cached repositories are read-only; who may pull through the cache is
/// the policy's business, as for any repository; a registry berth does not
/// mirror is unknown.
#[tokio::test]
async fn cached_repositories_are_read_only_and_access_checked() {
    let upstream = Server::start(&[]);
    push(&Api::new(&upstream), "library/app", "1", &[1000], 5).await;
    push(&Api::new(&upstream), "team/app", "1", &[1000], 6).await;
    let cache = Cache::of(&upstream, "");
    let admin = Api::new(&cache.server);
    for (method, path) in [
        (reqwest::Method::POST, "/v2/hub/library/app/blobs/uploads/"),
        (reqwest::Method::PUT, "/v2/hub/library/app/manifests/2"),
        (reqwest::Method::DELETE, "/v2/hub/library/app/manifests/1"),
        (
            reqwest::Method::POST,
            "/v2/library/app/blobs/uploads/?ns=docker.io",
        ),
    ] {
        let response = admin
            .http
            .request(method.clone(), admin.url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        let text = response.text().await.unwrap();
        assert!(
            text.contains("is a pull-through cache of") && text.contains("UNSUPPORTED"),
            "{text}"
        );
    }
    // Anonymous clients may pull hub/library/*, not hub/team/*.
    let anonymous = Api::anonymous(&cache.server);
    let allowed = anonymous
        .http
        .get(anonymous.url("/v2/hub/library/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let refused = anonymous
        .http
        .get(anonymous.url("/v2/hub/team/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        pull(&admin.http, &cache.server.base, "hub/team/app", "1").await,
        sha256(
            &admin
                .http
                .get(admin.url("/v2/hub/team/app/manifests/1"))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        )
    );
    let unknown = anonymous
        .http
        .get(anonymous.url("/v2/library/app/manifests/1?ns=quay.io"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "NAME_UNKNOWN");
    let missing = anonymous
        .http
        .get(anonymous.url("/v2/hub/library/nothing/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "MANIFEST_UNKNOWN");
}

/// containerd with a `hosts.toml` from `berth mirror hosts-toml` pulls a
/// `docker.io/library/…` multi-platform image through berth (mirror mode:
/// the unprefixed path and `?ns=docker.io`), without any network beyond
/// loopback: had berth failed it, containerd would have tried Docker Hub
/// and failed. skopeo then reads the same index through path mode, byte for
/// byte what the upstream holds.
#[test]
fn containerd_pulls_docker_hub_references_through_the_mirror() {
    let upstream = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let layout_dir = work.path().join("image");
    let mut layout = Layout::new(&layout_dir);
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let other = if arch == "amd64" { "arm64" } else { "amd64" };
    let index = layout.index(&[arch, other], 31);
    layout.tag(&index, "v1");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &format!("--dest-creds={}", upstream.admin_creds()),
            &format!("oci:{}:v1", layout_dir.display()),
            &format!("docker://{}/library/app:v1", upstream.addr),
        ],
    );
    let cache = Cache::of(&upstream, "");
    let hosts = work.path().join("certs.d");
    let written = berth(
        &[
            "mirror",
            "hosts-toml",
            "--mirror",
            &cache.server.base,
            "--registry",
            "docker.io",
            "--out",
            hosts.to_str().unwrap(),
        ],
        "",
    );
    assert!(written.status.success(), "{written:?}");
    let hosts_toml = std::fs::read_to_string(hosts.join("docker.io/hosts.toml")).unwrap();
    assert!(
        hosts_toml.contains("server = \"https://registry-1.docker.io\""),
        "{hosts_toml}"
    );

    let containerd = Containerd::start();
    succeed(&mut containerd.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--snapshotter",
        "native",
        "docker.io/library/app:v1",
    ]));
    assert_eq!(
        containerd.image_digest("docker.io/library/app:v1"),
        index.digest
    );
    assert!(
        cache
            .server
            .log()
            .iter()
            .any(|l| l.contains("path=\"/v2/library/app/manifests/v1\" status=200")),
        "containerd asked berth"
    );
    let raw = run_tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/hub/library/app:v1", cache.server.addr),
        ],
    );
    assert_eq!(sha256(raw.as_bytes()), index.digest);
    // skopeo copies the whole index through path mode.
    let copied = work.path().join("copied");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{}/hub/app:v1", cache.server.addr),
            &format!("oci:{}:v1", copied.display()),
        ],
    );
    let copied_index = std::fs::read_to_string(copied.join("index.json")).unwrap();
    assert!(copied_index.contains(&index.digest), "{copied_index}");
}
