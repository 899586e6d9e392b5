//! Garbage collection of a large store, and pushes while it runs.
//!
//! Builds a store of 100 000 blobs and 10 000 manifests in 100 repositories,
//! half of them unreferenced (untagged manifests and their blobs, all older
//! than the grace period), starts the real `berth serve` on it, and prints:
//! the time one collection takes through the API and what it removed, and
//! the latency of pushes (two blobs and a manifest) without a collection
//! and while one runs, with their ratio. Run with
//! `cargo bench -p berth --bench gc` (scripts/bench does).
//!
//! The store is written directly (files, and rows in one transaction of the
//! embedded database's schema): through the API the same 110 000 writes
//! would take many minutes.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_storage::SqliteMetadataStore;
use berth_testkit::{noise, sha256};
use r2d2_sqlite::rusqlite::{Connection, params};

const REPOSITORIES: usize = 100;
const MANIFESTS_PER_REPOSITORY: usize = 100;
const BLOBS_PER_MANIFEST: usize = 10;
const BLOB_BYTES: usize = 256;
/// Pushes measured without a collection.
const BASELINE_PUSHES: usize = 200;
/// At most this many pushes, or this long, while the collection runs.
const MAX_PUSHES_DURING: usize = 5000;
const MAX_DURING: Duration = Duration::from_secs(300);

fn store_file(data: &Path, digest: &str, content: &[u8]) {
    let hex = &digest["sha256:".len()..];
    let dir = data.join("blobs/sha256").join(&hex[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex), content).unwrap();
}

fn manifest(blobs: &[(String, usize)]) -> String {
    let descriptor = |(digest, size): &(String, usize), media_type: &str| {
        format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{size}}}"#)
    };
    let layers: Vec<String> = blobs[1..]
        .iter()
        .map(|b| descriptor(b, "application/vnd.oci.image.layer.v1.tar+gzip"))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}]}}"#,
        descriptor(&blobs[0], "application/vnd.oci.image.config.v1+json"),
        layers.join(",")
    )
}

/// Writes the store: every blob and manifest two hours old, even-numbered
/// manifests tagged, odd ones not.
fn build_store(data: &Path) {
    std::fs::create_dir_all(data).unwrap();
    drop(SqliteMetadataStore::open(&data.join("metadata.db")).unwrap());
    let old = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 2 * 3600 * 1000;
    let mut conn = Connection::open(data.join("metadata.db")).unwrap();
    let tx = conn.transaction().unwrap();
    let mut seed = 0u64;
    for r in 0..REPOSITORIES {
        tx.execute(
            "INSERT INTO repositories (id, name) VALUES (?1, ?2)",
            params![r as i64 + 1, format!("bench/r{r}")],
        )
        .unwrap();
        let mut repository_bytes = 0i64;
        for m in 0..MANIFESTS_PER_REPOSITORY {
            let mut blobs = Vec::new();
            for _ in 0..BLOBS_PER_MANIFEST {
                seed += 1;
                let content = noise(BLOB_BYTES, seed);
                let digest = sha256(&content);
                store_file(data, &digest, &content);
                tx.execute(
                    "INSERT INTO blobs (digest, size, touched_at) VALUES (?1, ?2, ?3)",
                    params![digest, BLOB_BYTES as i64, old],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO repository_blobs (repository_id, digest, linked_at)
                     VALUES (?1, ?2, ?3)",
                    params![r as i64 + 1, digest, old],
                )
                .unwrap();
                blobs.push((digest, BLOB_BYTES));
            }
            let document = manifest(&blobs);
            let digest = sha256(document.as_bytes());
            store_file(data, &digest, document.as_bytes());
            tx.execute(
                "INSERT INTO blobs (digest, size, touched_at) VALUES (?1, ?2, ?3)",
                params![digest, document.len() as i64, old],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO manifests (repository_id, digest, media_type, size, touched_at)
                 VALUES (?1, ?2, 'application/vnd.oci.image.manifest.v1+json', ?3, ?4)",
                params![r as i64 + 1, digest, document.len() as i64, old],
            )
            .unwrap();
            for (child, _) in &blobs {
                tx.execute(
                    "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest)
                     VALUES (?1, ?2, ?3)",
                    params![r as i64 + 1, digest, child],
                )
                .unwrap();
            }
            if m % 2 == 0 {
                tx.execute(
                    "INSERT INTO tags (repository_id, name, digest, updated_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![r as i64 + 1, format!("t{m}"), digest, old],
                )
                .unwrap();
            }
            repository_bytes += (BLOBS_PER_MANIFEST * BLOB_BYTES + document.len()) as i64;
        }
        tx.execute(
            "UPDATE repositories SET bytes = ?2 WHERE id = ?1",
            params![r as i64 + 1, repository_bytes],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// The berth server under measurement, stopped when dropped.
struct Berth {
    child: std::process::Child,
    base: String,
}

impl Berth {
    fn start(data: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--gc-interval",
                "0s",
                // The untagged manifests are two hours old.
                "--gc-untagged-after",
                "1h",
                "--data-dir",
            ])
            .arg(data)
            .env("RUST_LOG", "warn,berth=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(url);
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("berth announces its address");
        Berth { child, base }
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One push as a client makes it: config and layer blobs, then the manifest.
async fn push(http: &reqwest::Client, base: &str, seed: u64) -> Duration {
    let started = Instant::now();
    let mut blobs = Vec::new();
    for (i, len) in [(0u64, 512usize), (1, 64 * 1024)] {
        let content = noise(len, 1_000_000_000 + seed * 2 + i);
        let digest = sha256(&content);
        let r = http
            .post(format!(
                "{base}/v2/bench/pushed/blobs/uploads/?digest={digest}"
            ))
            .body(content)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        blobs.push((digest, len));
    }
    let r = http
        .put(format!("{base}/v2/bench/pushed/manifests/p{seed}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest(&blobs))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    eprintln!(
        "== building a store of {} blobs and {} manifests",
        REPOSITORIES * MANIFESTS_PER_REPOSITORY * BLOBS_PER_MANIFEST,
        REPOSITORIES * MANIFESTS_PER_REPOSITORY
    );
    let building = Instant::now();
    build_store(&data);
    eprintln!("   built in {:.1} s", building.elapsed().as_secs_f64());

    let berth = Berth::start(&data);
    // reqwest is built without a crypto provider of its own; berth uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let password = std::fs::read_to_string(data.join("admin-password")).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("admin:{}", password.trim()),
    );
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {basic}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();

    let mut baseline = Vec::new();
    for seed in 0..BASELINE_PUSHES as u64 {
        baseline.push(push(&http, &berth.base, seed).await);
    }
    baseline.sort();

    let gc = {
        let http = http.clone();
        let base = berth.base.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut response = http
                .post(format!("{base}/berth/v1/gc"))
                .body("{}")
                .send()
                .await
                .unwrap();
            // When each phase began, from the progress lines as they come.
            let mut phases: Vec<(String, Duration)> = Vec::new();
            let mut text = Vec::new();
            while let Some(chunk) = response.chunk().await.unwrap() {
                text.extend_from_slice(&chunk);
                for line in String::from_utf8_lossy(&chunk).lines() {
                    let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                        continue;
                    };
                    if let Some(phase) = event["progress"]["phase"].as_str()
                        && phases.last().is_none_or(|(p, _)| p != phase)
                    {
                        phases.push((phase.to_owned(), started.elapsed()));
                    }
                }
            }
            let text = String::from_utf8(text).unwrap();
            let report: serde_json::Value =
                serde_json::from_str(text.lines().last().unwrap()).unwrap();
            (started.elapsed(), phases, report)
        })
    };
    let mut during = Vec::new();
    let started = Instant::now();
    let mut seed = BASELINE_PUSHES as u64;
    while !gc.is_finished() && during.len() < MAX_PUSHES_DURING && started.elapsed() < MAX_DURING {
        during.push(push(&http, &berth.base, seed).await);
        seed += 1;
    }
    let (took, phases, report) = gc.await.unwrap();
    let report = &report["report"];
    during.sort();

    let count = |key: &str| report[key].as_array().map_or(0, Vec::len);
    println!(
        "gc: {:.1} s for {} blobs and {} manifests: removed {} manifests, {} links, {} blobs, \
         {:.1} MB (target: under 30 s)",
        took.as_secs_f64(),
        REPOSITORIES * MANIFESTS_PER_REPOSITORY * BLOBS_PER_MANIFEST,
        REPOSITORIES * MANIFESTS_PER_REPOSITORY,
        count("manifests"),
        report["links"],
        count("blobs"),
        report["bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
    );
    let ends = phases.iter().skip(1).map(|(_, at)| *at).chain([took]);
    let spans: Vec<String> = phases
        .iter()
        .zip(ends)
        .map(|((phase, start), end)| format!("{phase} {:.1} s", (end - *start).as_secs_f64()))
        .collect();
    println!(
        "gc phases: snapshot and plan {:.1} s, {}",
        phases.first().map_or(took, |(_, at)| *at).as_secs_f64(),
        spans.join(", ")
    );
    for (name, sample) in [("without gc", &baseline), ("during gc", &during)] {
        println!(
            "push latency {name}: median {:.1} ms, p95 {:.1} ms ({} pushes)",
            millis(percentile(sample, 0.5)),
            millis(percentile(sample, 0.95)),
            sample.len()
        );
    }
    if !during.is_empty() {
        println!(
            "push latency during gc / without: median {:.2}x, p95 {:.2}x (target: at most 1.5x)",
            millis(percentile(&during, 0.5)) / millis(percentile(&baseline, 0.5)),
            millis(percentile(&during, 0.95)) / millis(percentile(&baseline, 0.95)),
        );
    }
}
