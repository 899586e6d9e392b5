//! Probes against real servers on 127.0.0.1: tiny registries speaking the
//! token and Basic challenges, 429s, 404s, a plain-HTTP server probed as
//! HTTPS, a closed port, an unresolvable name, a server that never answers
//! and a TLS server whose CA is not trusted. Each server lives only as long
//! as its test; every wait is bounded by the client's timeouts.

use std::sync::Arc;
use std::time::Duration;

use berth_client::{ClientConfig, Credentials, Outcome, RegistryClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request as the tiny servers see it.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

type Handler = Arc<dyn Fn(&Request) -> String + Send + Sync>;

async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap_or(0));
    let mut body = buf[end..].to_vec();
    while body.len() < length {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&byte[..n]);
    }
    let mut first = head.lines().next()?.split(' ');
    Some(Request {
        method: first.next()?.to_owned(),
        path: first.next()?.to_owned(),
        authorization: header("authorization"),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A plain-HTTP server answering each request with `handler`'s raw response.
async fn serve(handler: Handler) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                while let Some(req) = read_request(&mut sock).await {
                    let resp = handler(&req);
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

const DIGEST: &str = "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1";

fn client(insecure: &[&str]) -> RegistryClient {
    RegistryClient::new(ClientConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(4),
        insecure_registries: insecure.iter().map(|s| s.to_string()).collect(),
        ..ClientConfig::default()
    })
    .unwrap()
}

/// The `Authorization` header of [`good`] credentials.
fn good_basic() -> String {
    format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "robot:s3cret")
    )
}

fn good() -> Credentials {
    Credentials::new("robot", "s3cret")
}

/// Which token requests a token service takes.
#[derive(Clone, Copy)]
enum TokenService {
    /// `GET` only: a `POST` gets 404, as from GCR.
    GetOnly,
    /// The OAuth2 password grant only: a `GET` gets 404.
    OAuthOnly,
}

/// A registry with a Docker-style token service on the same address, and
/// the `METHOD /token` requests it saw.
async fn token_registry(service: TokenService) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let addr_cell = Arc::new(std::sync::OnceLock::<String>::new());
    let cell = addr_cell.clone();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let token_requests = seen.clone();
    let good_basic = good_basic();
    let handler: Handler = Arc::new(move |req: &Request| {
        let addr = cell.get().cloned().unwrap_or_default();
        if req.path.starts_with("/token") {
            token_requests.lock().unwrap().push(req.method.clone());
            let bad = || {
                response(
                    "401 Unauthorized",
                    &[],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
                )
            };
            let not_found = || response("404 Not Found", &[], "");
            return match (service, req.method.as_str()) {
                (TokenService::GetOnly, "GET") | (TokenService::OAuthOnly, "POST")
                    if req.authorization.is_none() && req.body.is_empty() =>
                {
                    response("200 OK", &[], r#"{"token":"anonymous"}"#)
                }
                (TokenService::GetOnly, "GET")
                    if req.authorization.as_ref() == Some(&good_basic) =>
                {
                    response("200 OK", &[], r#"{"token":"robot"}"#)
                }
                (TokenService::GetOnly, "GET") => bad(),
                (TokenService::OAuthOnly, "POST") => {
                    let form: Vec<&str> = req.body.split('&').collect();
                    let good = ["grant_type=password", "username=robot", "password=s3cret"]
                        .iter()
                        .all(|field| form.contains(field))
                        && form.iter().any(|f| f.starts_with("scope=repository"));
                    if good {
                        response(
                            "200 OK",
                            &[],
                            r#"{"access_token":"robot","expires_in":300}"#,
                        )
                    } else {
                        bad()
                    }
                }
                _ => not_found(),
            };
        }
        let challenge = format!(
            "Bearer realm=\"http://{addr}/token\",service=\"test-registry\",scope=\"repository:team/app:pull\""
        );
        let unauthorized = response(
            "401 Unauthorized",
            &[("WWW-Authenticate", &challenge)],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        match req.authorization.as_deref() {
            Some("Bearer robot") => {
                if req.path.starts_with("/v2/team/locked/") {
                    response(
                        "403 Forbidden",
                        &[],
                        r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
                    )
                } else if req.path == "/v2/team/app/manifests/1.0" {
                    let body = if req.method == "HEAD" { "" } else { "{}" };
                    let mut r = response(
                        "200 OK",
                        &[
                            ("Docker-Content-Digest", DIGEST),
                            ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
                        ],
                        body,
                    );
                    if req.method == "HEAD" {
                        r = r.replace("Content-Length: 0", "Content-Length: 2");
                    }
                    r
                } else {
                    unauthorized
                }
            }
            _ => unauthorized,
        }
    });
    let addr = serve(handler).await;
    addr_cell.set(addr.clone()).unwrap();
    (addr, seen)
}

#[tokio::test]
async fn token_flow_outcomes() {
    let (addr, seen) = token_registry(TokenService::GetOnly).await;
    let c = client(&[&addr]);
    let p = c
        .head_manifest(&addr, "team/app", "1.0", Some(&good()))
        .await;
    assert_eq!(p.outcome, Outcome::Pullable, "{p:?}");
    assert_eq!(p.digest.as_deref(), Some(DIGEST));
    assert_eq!(p.auth_scheme.as_deref(), Some("bearer"));

    let p = c.head_manifest(&addr, "team/app", "1.0", None).await;
    assert_eq!(p.outcome, Outcome::AuthRequired, "{p:?}");
    // Credentials without a password (empty ones, or docker login's user
    // beside an identity token) are asked for anonymously, as containerd does.
    for user in ["", "robot"] {
        let no_password = Credentials::new(user, "");
        let p = c
            .head_manifest(&addr, "team/app", "1.0", Some(&no_password))
            .await;
        assert_eq!(p.outcome, Outcome::AuthRequired, "{user:?}: {p:?}");
    }

    let wrong = Credentials::new("robot", "old");
    let p = c
        .head_manifest(&addr, "team/app", "1.0", Some(&wrong))
        .await;
    assert_eq!(p.outcome, Outcome::Unauthorized, "{p:?}");
    assert!(p.detail.contains("token endpoint"), "{}", p.detail);

    let p = c
        .head_manifest(&addr, "team/locked", "1.0", Some(&good()))
        .await;
    assert_eq!(p.outcome, Outcome::Forbidden, "{p:?}");
    assert!(p.detail.contains("DENIED"), "{}", p.detail);

    // A token granted for these credentials that still gets 401 (what Docker
    // Hub answers for a repository that does not exist or is someone else's):
    // the credentials are fine, the repository is not theirs to pull.
    let p = c
        .head_manifest(&addr, "team/hidden", "1.0", Some(&good()))
        .await;
    assert_eq!(p.outcome, Outcome::Forbidden, "{p:?}");
    assert!(p.detail.contains("does not exist"), "{}", p.detail);

    let p = c.check_login(&addr, Some(&good())).await;
    assert_eq!(
        p.outcome,
        Outcome::Unauthorized,
        "/v2/ is not served: {p:?}"
    );
    // With credentials the OAuth2 POST comes first, as from containerd; its
    // 404 sends the client to GET.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(&seen[..2], ["POST", "GET"], "{seen:?}");
    assert_eq!(seen[2], "GET", "anonymous: GET only; {seen:?}");
}

#[tokio::test]
async fn oauth_password_grant_alone_is_enough() {
    let (addr, seen) = token_registry(TokenService::OAuthOnly).await;
    let c = client(&[&addr]);
    let p = c
        .head_manifest(&addr, "team/app", "1.0", Some(&good()))
        .await;
    assert_eq!(p.outcome, Outcome::Pullable, "{p:?}");
    let wrong = Credentials::new("robot", "old");
    let p = c
        .head_manifest(&addr, "team/app", "1.0", Some(&wrong))
        .await;
    // The POST's 401 sends the client to GET, as containerd goes, and this
    // service has no GET: containerd would fail on that 404 too.
    assert_eq!(p.outcome, Outcome::RegistryError, "{p:?}");
    assert!(p.detail.contains("token endpoint answered 404"), "{p:?}");
    assert_eq!(*seen.lock().unwrap(), ["POST", "POST", "GET"]);
}

/// A registry answering `good()` in Basic with 200 and anything else with
/// 401 and `challenges`.
async fn basic_registry(challenges: &'static [(&'static str, &'static str)]) -> String {
    let good_basic = good_basic();
    serve(Arc::new(move |req: &Request| {
        if req.authorization.as_deref() == Some(good_basic.as_str()) {
            response("200 OK", &[("Docker-Content-Digest", DIGEST)], "")
        } else {
            response("401 Unauthorized", challenges, "")
        }
    }))
    .await
}

#[tokio::test]
async fn basic_challenge() {
    let addr = basic_registry(&[("WWW-Authenticate", "Basic realm=\"Registry\"")]).await;
    let c = client(&[&addr]);
    assert_eq!(
        c.head_manifest(&addr, "a", "1", Some(&good()))
            .await
            .outcome,
        Outcome::Pullable
    );
    let p = c.head_manifest(&addr, "a", "1", None).await;
    assert_eq!(p.outcome, Outcome::AuthRequired);
    assert!(
        p.detail.contains("no basic auth credentials"),
        "{}",
        p.detail
    );
    assert_eq!(
        c.head_manifest(&addr, "a", "1", Some(&Credentials::new("x", "y")))
            .await
            .outcome,
        Outcome::Unauthorized
    );
    assert_eq!(
        c.check_login(&addr, Some(&good())).await.outcome,
        Outcome::Pullable
    );
}

#[tokio::test]
async fn rate_limited_with_headers() {
    let addr = serve(Arc::new(|_: &Request| {
        response(
            "429 Too Many Requests",
            &[
                ("Retry-After", "30"),
                ("ratelimit-limit", "100;w=21600"),
                ("ratelimit-remaining", "0;w=21600"),
            ],
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#,
        )
    }))
    .await;
    let p = client(&[&addr])
        .head_manifest(&addr, "library/nginx", "1", None)
        .await;
    assert_eq!(p.outcome, Outcome::RateLimited);
    let rl = p.rate_limit.expect("rate limit headers");
    assert_eq!(rl.retry_after.as_deref(), Some("30"));
    assert_eq!(rl.limit.as_deref(), Some("100;w=21600"));
    assert_eq!(rl.remaining.as_deref(), Some("0;w=21600"));
    assert!(
        p.detail.contains("ratelimit-remaining: 0;w=21600"),
        "{}",
        p.detail
    );
}

#[tokio::test]
async fn not_found_kinds_and_server_errors() {
    let addr = serve(Arc::new(|req: &Request| {
        let (code, msg) = if req.path.starts_with("/v2/missing/") {
            ("NAME_UNKNOWN", "repository name not known to registry")
        } else {
            ("MANIFEST_UNKNOWN", "manifest unknown")
        };
        if req.path.starts_with("/v2/broken/") {
            return response("503 Service Unavailable", &[], "");
        }
        let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{msg}"}}]}}"#);
        // HEAD answers carry no body, as a real registry's.
        let body = if req.method == "HEAD" {
            ""
        } else {
            body.as_str()
        };
        response(
            "404 Not Found",
            &[("Content-Type", "application/json")],
            body,
        )
    }))
    .await;
    let c = client(&[&addr]);
    assert_eq!(
        c.head_manifest(&addr, "team/app", "9.9", None)
            .await
            .outcome,
        Outcome::ManifestUnknown
    );
    let p = c.head_manifest(&addr, "missing", "1", None).await;
    assert_eq!(p.outcome, Outcome::RepositoryUnknown, "{p:?}");
    assert_eq!(
        c.head_manifest(&addr, "broken", "1", None).await.outcome,
        Outcome::RegistryError
    );
}

#[tokio::test]
async fn plain_http_server_probed_as_https() {
    // Like Go's and hyper's servers, answer unparsable bytes (a TLS
    // ClientHello) with a plain 400.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = sock.read(&mut buf).await;
            let r = response(
                "400 Bad Request",
                &[("Connection", "close")],
                "bad request\n",
            );
            let _ = sock.write_all(r.as_bytes()).await;
        }
    });
    let p = client(&[]).head_manifest(&addr, "a", "1", None).await;
    server.abort();
    assert_eq!(p.outcome, Outcome::HttpResponseToHttps, "{p:?}");
    assert!(p.url.starts_with("https://"));
}

#[tokio::test]
async fn closed_port_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let p = client(&[&addr]).head_manifest(&addr, "a", "1", None).await;
    assert_eq!(p.outcome, Outcome::ConnectionRefused, "{p:?}");
}

#[tokio::test]
async fn invalid_host_name_is_a_dns_failure() {
    let p = client(&[])
        .head_manifest("registry.berth-test.invalid", "a", "1", None)
        .await;
    assert_eq!(p.outcome, Outcome::DnsFailure, "{p:?}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        // Accept and keep every connection open without a word.
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    // Without the bound this would never return.
    let p = client(&[&addr]).head_manifest(&addr, "a", "1", None).await;
    assert_eq!(p.outcome, Outcome::Timeout, "{p:?}");
    hold.abort();
}

/// A TLS registry whose certificate comes from a fresh CA.
async fn tls_registry() -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                while read_request(&mut tls).await.is_some() {
                    let r = response("200 OK", &[("Docker-Content-Digest", DIGEST)], "");
                    if tls.write_all(r.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, ca.pem())
}

#[tokio::test]
async fn tls_with_untrusted_ca_and_with_ca_file() {
    let (addr, ca_pem) = tls_registry().await;
    let p = client(&[]).head_manifest(&addr, "a", "1", None).await;
    assert_eq!(p.outcome, Outcome::TlsUnknownAuthority, "{p:?}");

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let trusting = RegistryClient::new(ClientConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(4),
        ca_files: vec![ca_file],
        ..ClientConfig::default()
    })
    .unwrap();
    let p = trusting.head_manifest(&addr, "a", "1", None).await;
    assert_eq!(p.outcome, Outcome::Pullable, "{p:?}");
}

#[tokio::test]
async fn plain_http_to_a_tls_registry() {
    let (addr, _) = tls_registry().await;
    let p = client(&[&addr]).head_manifest(&addr, "a", "1", None).await;
    assert_eq!(p.outcome, Outcome::HttpRequestToHttps, "{p:?}");
}

/// Offered Basic first and Bearer second, a client with credentials answers
/// the first it can, Basic, as containerd does; the Bearer realm here does not
/// even exist.
#[tokio::test]
async fn first_usable_challenge_in_header_order() {
    let addr = basic_registry(&[
        ("WWW-Authenticate", "Basic realm=\"Registry\""),
        (
            "WWW-Authenticate",
            "Bearer realm=\"http://127.0.0.1:9/token\",service=\"x\"",
        ),
    ])
    .await;
    let p = client(&[&addr])
        .head_manifest(&addr, "a", "1", Some(&good()))
        .await;
    assert_eq!(p.outcome, Outcome::Pullable, "{p:?}");
    assert_eq!(p.auth_scheme.as_deref(), Some("basic"));
}
