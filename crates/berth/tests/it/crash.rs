//! kill -9 at awkward moments: the store stays consistent and pushes can be redone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Api, OCI_MANIFEST, Server, image_manifest, noise, sha256};
use futures_util::StreamExt;
use sha2::Digest as _;

const CHUNK: usize = 1 << 20;

/// The bytes of the large test blob: `chunks` MiB, generated chunk by chunk.
fn chunk(i: usize) -> Vec<u8> {
    noise(CHUNK, i as u64 + 1)
}

#[tokio::test]
async fn kill_during_a_large_upload_leaves_nothing_visible_and_the_push_resumes() {
    const CHUNKS: usize = 256;
    let data = tempfile::tempdir().unwrap();
    // On disk, whose upload keeps every byte that reached it (the test
    // watches the file grow). On S3 a stream cut off by a crash keeps what
    // the chunks before it saved; the replicas test kills one mid-push there.
    let mut server = Server::start_in_on_disk(data.path(), &[]);
    let api = Api::new(&server);
    let mut hasher = sha2::Sha256::new();
    for i in 0..CHUNKS {
        hasher.update(chunk(i));
    }
    let digest = format!("sha256:{}", crate::common::hex(&hasher.finalize()));

    let r = api
        .http
        .post(api.url("/v2/big/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    // Stream the blob slowly enough that the kill lands mid-body.
    let body = futures_util::stream::iter(0..CHUNKS).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, std::io::Error>(chunk(i))
    });
    let upload = tokio::spawn(
        api.http
            .patch(api.url(&location))
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    let partial = data.path().join("uploads").join(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < 8 * CHUNK as u64 {
        assert!(Instant::now() < deadline, "upload never progressed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    assert!(
        upload.await.unwrap().is_err(),
        "the client saw the connection die"
    );

    let server = Server::start_in_on_disk(data.path(), &[]);
    let api = Api::new(&server);
    let r = api
        .http
        .head(api.url(&format!("/v2/big/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a partial upload is never a blob");

    // The session survived with what reached the disk; resume from there.
    let r = api.http.get(api.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let range = r.headers()["range"].to_str().unwrap();
    let received: usize = range.split('-').nth(1).unwrap().parse::<usize>().unwrap() + 1;
    assert!(received > 0 && received < CHUNKS * CHUNK, "{range}");
    let on_disk = std::fs::metadata(&partial).unwrap().len() as usize;
    assert_eq!(received, on_disk, "Range reports exactly what is stored");

    let rest: Vec<u8> = (received / CHUNK..CHUNKS)
        .flat_map(chunk)
        .skip(received % CHUNK)
        .collect();
    let r = api
        .http
        .patch(api.url(&location))
        .header(
            "content-range",
            format!("{received}-{}", CHUNKS * CHUNK - 1),
        )
        .body(rest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = api
        .http
        .put(api.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let mut stream = api
        .http
        .get(api.url(&format!("/v2/big/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut served = sha2::Sha256::new();
    while let Some(bytes) = stream.next().await {
        served.update(bytes.unwrap());
    }
    assert_eq!(
        format!("sha256:{}", crate::common::hex(&served.finalize())),
        digest
    );
}

#[tokio::test]
async fn kill_during_manifest_pushes_keeps_every_tag_consistent() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[]);
    let api = Api::new(&server);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = noise(10_000, 9);
    let config_digest = api.push_blob("race", config).await;
    let layer_digest = api.push_blob("race", &layer).await;
    let layer_len = layer.len();
    let manifest = move |i: usize| {
        image_manifest(
            &config_digest,
            config.len(),
            &[(&layer_digest, layer_len)],
            &format!(r#","annotations":{{"n":"{i}"}}"#),
        )
    };

    // Eight writers push distinct manifests until the server dies under them.
    let pushed = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let http = api.http.clone();
            let base = api.base.clone();
            let manifest = manifest.clone();
            let pushed = pushed.clone();
            tokio::spawn(async move {
                for i in (w..1500).step_by(8) {
                    let sent = http
                        .put(format!("{base}/v2/race/manifests/t{i}"))
                        .header("content-type", OCI_MANIFEST)
                        .body(manifest(i))
                        .send()
                        .await;
                    if sent.is_err() {
                        return;
                    }
                    pushed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Killed once pushes are well under way, with eight more in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pushed.load(Ordering::Relaxed) < 40 {
        assert!(Instant::now() < deadline, "the pushes never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    for writer in writers {
        writer.await.unwrap();
    }

    let server = Server::start_in(data.path(), &[]);
    let api = Api::new(&server);
    let tags: serde_json::Value = api
        .http
        .get(api.url("/v2/race/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tags: Vec<String> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert!(!tags.is_empty(), "some pushes completed before the kill");
    for tag in &tags {
        let r = api
            .http
            .get(api.url(&format!("/v2/race/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "tag {tag} resolves");
        let digest = r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = r.bytes().await.unwrap();
        assert_eq!(sha256(&body), digest, "tag {tag} serves intact content");
        let i: usize = tag[1..].parse().unwrap();
        assert_eq!(body, manifest(i).as_bytes());
    }
    // Every push can be redone, and then every tag is there.
    for i in 0..1500 {
        let r = api
            .put_manifest(
                "race",
                &format!("t{i}"),
                OCI_MANIFEST,
                manifest(i).as_bytes(),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let tags: serde_json::Value = api
        .http
        .get(api.url("/v2/race/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"].as_array().unwrap().len(), 1500);
    assert_eq!(
        server.stored.count_under("uploads"),
        0,
        "temporary files were cleaned up"
    );
}
