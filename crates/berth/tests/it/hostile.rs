//! Hostile and broken input over real HTTP: trickled bodies, oversized
//! heads, chunks that contradict their Content-Range, other subjects' upload
//! sessions, forged forwarding headers, and a store damaged behind berth's
//! back. Each gets a spec error body with the right status and loses nothing.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Api, OCI_MANIFEST, Server, error_code, fixture, header, sha256};

/// A body that sends `piece` every `every`, `times` times.
fn trickle(piece: &'static [u8], every: Duration, times: usize) -> reqwest::Body {
    let stream = futures_util::stream::unfold(0, move |sent| async move {
        if sent == times {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok::<_, std::io::Error>(piece.to_vec()), sent + 1))
    });
    reqwest::Body::wrap_stream(stream)
}

/// A byte now and then, never idle for the body timeout, used to hold a
/// connection forever; now the body is ended at the first window in which
/// it sent less than the minimum rate, and what arrived is kept.
#[tokio::test]
async fn a_trickled_upload_is_ended_by_the_minimum_rate() {
    let server = Server::start(&["--body-timeout", "2s", "--body-min-rate", "1000"]);
    let api = Api::new(&server);
    let location = api.open_upload("slow").await;
    let started = Instant::now();
    // 10 bytes every 500 ms: 20 bytes/s, for up to a minute.
    let r = api
        .http
        .patch(api.url(&location))
        .body(trickle(b"0123456789", Duration::from_millis(500), 120))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "connection"), "close");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("slower than the 1000 bytes/s"),
        "{message}"
    );
    // A streamed body keeps what it sent; the client may resume.
    let r = api.http.get(api.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let kept: u64 = header(&r, "range")
        .strip_prefix("0-")
        .unwrap()
        .parse()
        .unwrap();
    assert!(kept > 0 && (kept + 1).is_multiple_of(10), "{kept}");
}

/// The anonymous token endpoint: a form trickled a byte at a time gets its
/// answer (and loses its connection) at the small-body deadline.
#[tokio::test]
async fn a_trickled_token_request_is_ended_at_its_deadline() {
    let server = Server::start(&[]);
    let mut stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickler = tokio::spawn(async move {
        for _ in 0..1000 {
            if writer.write_all(b"g").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes the connection")
        .unwrap();
    trickler.abort();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(9), "{elapsed:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive within 10s"), "{answer}");
    assert!(answer.contains("\"code\":\"UNSUPPORTED\""), "{answer}");
}

/// A chunk is what its Content-Range says, or it is refused whole (416)
/// and the upload stays where it was.
#[tokio::test]
async fn a_chunk_must_hold_what_its_content_range_says() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let location = api.open_upload("ranges").await;
    let patch = |body: reqwest::Body| {
        api.http
            .patch(api.url(&location))
            .header("content-range", "0-9")
            .body(body)
            .send()
    };
    for (what, body) in [
        ("100 bytes", trickle(&[7; 25], Duration::ZERO, 4)),
        ("5 bytes", trickle(&[7; 5], Duration::ZERO, 1)),
    ] {
        let r = patch(body).await.unwrap();
        assert_eq!(r.status(), 416, "{what}");
        assert_eq!(header(&r, "range"), "0-0", "{what}");
        let message = r.text().await.unwrap();
        assert!(message.contains("BLOB_UPLOAD_INVALID"), "{what}: {message}");
        assert!(message.contains("spans 10 bytes"), "{what}: {message}");
        let status = api.http.get(api.url(&location)).send().await.unwrap();
        assert_eq!(header(&status, "range"), "0-0", "{what}: nothing kept");
    }
    // A Content-Length that contradicts the range is refused up front.
    let r = api
        .http
        .patch(api.url(&location))
        .header("content-range", "0-9")
        .body(vec![7; 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    let r = patch(trickle(&[7; 10], Duration::ZERO, 1)).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-9");
    let r = api
        .http
        .put(api.url(&format!("{location}?digest={}", sha256(&[7; 10]))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// Heads past berth's limits get the spec's error body, not hyper's empty
/// answer (which only heads of more than 100 fields still get).
#[tokio::test]
async fn oversized_heads_get_spec_errors() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let r = api
        .http
        .get(api.url(&format!("/v2/{}/tags/list", "a".repeat(20 * 1024))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = api
        .http
        .get(api.url("/v2/"))
        .header("x-large", "v".repeat(70 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let body = r.text().await.unwrap();
    assert!(body.contains("\"code\":\"UNSUPPORTED\""), "{body}");
    assert!(body.contains("berth accepts at most 65536"), "{body}");
}

/// Another subject that may push to the repository, and learns a session's
/// id, can neither see nor touch it.
#[tokio::test]
async fn an_upload_session_belongs_to_the_subject_that_opened_it() {
    let f = fixture("", &[]);
    let bob = Api::with_credentials(&f.server, "bob", "bob-pw");
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    let location = bob.open_upload("team/app").await;
    let url = root.url(&location);
    let content = b"bob's layer";
    let digest = sha256(content);
    let attempts = [
        root.http.get(&url),
        root.http
            .patch(&url)
            .header("content-range", "0-3")
            .body("evil"),
        root.http.put(format!("{url}?digest={digest}")),
        root.http.delete(&url),
    ];
    for attempt in attempts {
        let r = attempt.send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    }
    let r = bob
        .http
        .put(bob.url(&format!("{location}?digest={digest}")))
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "bob's session is intact");
}

async fn challenge(server: &Server, headers: &[(&str, &str)]) -> reqwest::Response {
    let api = Api::anonymous(server);
    let mut request = api.http.get(api.url("/v2/"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// `X-Forwarded-Proto` is believed only from a trusted proxy, like
/// `X-Forwarded-For`; a `Host` that is no host is refused, never echoed
/// into the challenge.
#[tokio::test]
async fn forwarding_headers_and_the_host_are_checked_before_they_reach_the_challenge() {
    let forwarded = [("x-forwarded-proto", "https")];
    let direct = Server::start(&[]);
    let r = challenge(&direct, &forwarded).await;
    assert_eq!(r.status(), 401);
    let realm = header(&r, "www-authenticate");
    assert!(realm.starts_with("Bearer realm=\"http://"), "{realm}");
    let proxied = Server::start(&["--trusted-proxy", "127.0.0.1"]);
    let r = challenge(&proxied, &forwarded).await;
    let realm = header(&r, "www-authenticate");
    assert!(realm.starts_with("Bearer realm=\"https://"), "{realm}");

    for host in ["evil\",error=\"x", "a b", "user@host"] {
        let r = challenge(&direct, &[("host", host)]).await;
        assert_eq!(r.status(), 400, "{host}");
        assert!(r.headers().get("www-authenticate").is_none());
        assert_eq!(error_code(r).await, "UNSUPPORTED");
    }
}

/// Bytes that vanished from the blob store while the metadata still names
/// them are berth's fault (500, cause logged), not an unknown blob (404).
#[tokio::test]
async fn content_missing_from_the_store_is_a_server_fault() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    let api = Api::new(&server);
    let (manifest, manifest_digest) = api.push_image("team/app", "v1", 1).await;
    let layer =
        serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
    server.stored.remove_blob(&layer);
    server.stored.remove_blob(&manifest_digest);
    drop(server);
    // A fresh process, so no manifest is served from memory.
    let server = Server::start_in(data.path(), &[]);
    let api = Api::new(&server);
    for path in [
        format!("/v2/team/app/blobs/{layer}"),
        "/v2/team/app/manifests/v1".to_owned(),
    ] {
        let r = api.http.get(api.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 500, "{path}");
        assert_eq!(error_code(r).await, "UNSUPPORTED", "{path}");
    }
    server.wait_for_line("is recorded but its content is missing from the blob store");
    // What is intact still answers.
    let r = api
        .http
        .head(api.url("/v2/team/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
