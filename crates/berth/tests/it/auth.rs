//! Authentication and authorization over real HTTP: challenges, the token
//! endpoint, forged tokens, the 401/403/404 distinctions, the policy, robots,
//! throttling, the audit log, file reloads and TLS.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    Api, OCI_MANIFEST, Server, add_user, berth, create_robot, error_code, fixture,
};
use base64::Engine as _;
use reqwest::StatusCode;

fn www_authenticate(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .expect("a challenge")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn token(server: &Server, user: Option<(&str, &str)>, scopes: &[&str]) -> String {
    crate::common::install_crypto_provider();
    let query: Vec<String> = scopes.iter().map(|s| format!("scope={s}")).collect();
    let mut request = reqwest::Client::new()
        .get(server.url(&format!("/token?service=berth&{}", query.join("&"))));
    if let Some((u, p)) = user {
        request = request.basic_auth(u, Some(p));
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let token = body["token"].as_str().unwrap().to_owned();
    // The lifetime said is the token's own (shorter than the configured one
    // only for a robot about to expire).
    let c = claims(&token);
    assert_eq!(
        body["expires_in"].as_u64().unwrap(),
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap()
    );
    token
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn anonymous_requests_are_challenged_with_the_right_scope() {
    let f = fixture("", &[]);
    let anonymous = Api::anonymous(&f.server);
    let r = anonymous
        .http
        .get(anonymous.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let realm = format!("http://{}/token", f.server.addr);
    assert_eq!(
        www_authenticate(&r),
        format!(r#"Bearer realm="{realm}",service="berth""#)
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");

    let r = anonymous
        .http
        .get(anonymous.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a private repository answers 401, not 404 or 403"
    );
    assert_eq!(
        www_authenticate(&r),
        format!(r#"Bearer realm="{realm}",service="berth",scope="repository:team/app:pull""#)
    );
    let r = anonymous
        .http
        .post(anonymous.url("/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert!(www_authenticate(&r).contains(r#"scope="repository:team/app:pull,push""#));
    let r = anonymous
        .http
        .get(anonymous.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert!(www_authenticate(&r).contains(r#"scope="registry:catalog:*""#));

    // Anonymous pull where the policy grants it: authorized, so a 404 for a missing tag.
    let r = anonymous
        .http
        .get(anonymous.url("/v2/public/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = anonymous
        .http
        .post(anonymous.url("/v2/public/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn policy_separates_401_403_and_404() {
    let f = fixture("", &[]);
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    root.push_image("team/app", "v1", 1).await;
    let alice = Api::with_credentials(&f.server, "alice", "alice-pw");
    let bob = Api::with_credentials(&f.server, "bob", "bob-pw");
    let wrong = Api::with_credentials(&f.server, "alice", "nope");

    let r = alice
        .http
        .get(alice.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "alice may pull team/*");
    let r = alice
        .http
        .get(alice.url("/v2/team/app/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "allowed, and the tag does not exist");
    let r = alice
        .http
        .post(alice.url("/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "authenticated without push: DENIED");
    assert_eq!(error_code(r).await, "DENIED");
    let r = alice
        .http
        .get(alice.url("/v2/other/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = alice
        .http
        .delete(alice.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A refusal says what was refused and what would allow it.
    let text = r.text().await.unwrap();
    assert!(
        text.contains("alice may not delete team/app: no policy rule grants it"),
        "{text}"
    );
    let r = alice
        .http
        .get(alice.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("alice may not list the catalog: no policy rule with catalog = true"),
        "{text}"
    );
    let r = root
        .http
        .get(root.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = wrong
        .http
        .get(wrong.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a wrong password is a 401");
    assert_eq!(error_code(r).await, "UNAUTHORIZED");

    // bob may push below team/ at any depth.
    bob.push_image("team/deep/app", "v1", 2).await;
    let r = bob
        .http
        .delete(bob.url("/v2/team/deep/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no delete for bob");
}

#[tokio::test]
async fn mounting_needs_pull_on_the_source() {
    let f = fixture("", &[]);
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    let digest = root.push_blob("secret/app", b"secret layer").await;
    root.push_blob("team/base", b"team layer").await;
    let bob = Api::with_credentials(&f.server, "bob", "bob-pw");
    let r = bob
        .http
        .post(bob.url(&format!(
            "/v2/team/app/blobs/uploads/?mount={digest}&from=secret/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        202,
        "no pull on secret/app: an upload session, not a mount"
    );
    let r = bob
        .http
        .head(bob.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let team = crate::common::sha256(b"team layer");
    let r = bob
        .http
        .post(bob.url(&format!(
            "/v2/team/app/blobs/uploads/?mount={team}&from=team/base"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn token_endpoint_grants_the_intersection() {
    let f = fixture("", &[]);
    let token = token(
        &f.server,
        Some(("alice", "alice-pw")),
        &["repository:team/app:pull,push", "repository:other/x:pull"],
    )
    .await;
    let c = claims(&token);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "berth");
    assert_eq!(c["iss"], "berth");
    for claim in ["exp", "nbf", "iat", "jti"] {
        assert!(!c[claim].is_null(), "{claim}");
    }
    // The token spec's minimum lifetime, with the default configuration.
    assert!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap() >= 60);
    assert_eq!(
        c["access"],
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
    let client = reqwest::Client::new();
    let r = client
        .get(f.server.url("/v2/team/app/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "pull granted (the repository is empty)");
    let r = client
        .get(f.server.url("/v2/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Push was not granted: alice is denied.
    let r = client
        .post(f.server.url("/v2/team/app/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Another repository alice may pull, but the token does not cover it: re-authenticate.
    let r = client
        .get(f.server.url("/v2/team/other/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(www_authenticate(&r).contains(r#"error="insufficient_scope""#));

    // Anonymous tokens carry only what anonymous may do.
    let anonymous = token_anonymous(&f.server).await;
    let c = claims(&anonymous);
    assert_eq!(c["sub"], "");
    assert_eq!(c["access"][0]["name"], "public/app");
    let r = client
        .get(f.server.url("/v2/"))
        .bearer_auth(&anonymous)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an anonymous token is no login");

    // Wrong credentials at the token endpoint.
    let r = client
        .get(
            f.server
                .url("/token?service=berth&scope=repository:team/app:pull"),
        )
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn token_anonymous(server: &Server) -> String {
    token(
        server,
        None,
        &["repository:public/app:pull", "repository:team/app:pull"],
    )
    .await
}

#[tokio::test]
async fn oauth2_password_and_refresh_grants() {
    crate::common::install_crypto_provider();
    let f = fixture("", &[]);
    let client = reqwest::Client::new();
    let form = |pairs: &[(&str, &str)]| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish()
    };
    let post = |body: String| {
        client
            .post(f.server.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r = post(form(&[
        ("grant_type", "password"),
        ("username", "bob"),
        ("password", "bob-pw"),
        ("service", "berth"),
        ("client_id", "docker"),
        ("access_type", "offline"),
        ("scope", "repository:team/app:pull,push"),
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "repository:team/app:pull,push");
    // OAuth2's `scope` answer is what was granted: alice may only pull.
    let r = post(form(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "alice-pw"),
        ("service", "berth"),
        ("client_id", "docker"),
        (
            "scope",
            "repository:team/app:pull,push repository:other/x:pull",
        ),
    ]))
    .await
    .unwrap();
    let granted: serde_json::Value = r.json().await.unwrap();
    assert_eq!(granted["scope"], "repository:team/app:pull");
    let refresh = body["refresh_token"]
        .as_str()
        .expect("offline access gives a refresh token")
        .to_owned();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );

    // The refresh token is no access token.
    let r = client
        .get(f.server.url("/v2/"))
        .bearer_auth(&refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = post(form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
        ("service", "berth"),
        ("client_id", "docker"),
        ("scope", "repository:team/app:pull"),
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(claims(body["access_token"].as_str().unwrap())["sub"], "bob");

    let r = post(form(&[
        ("grant_type", "password"),
        ("username", "bob"),
        ("password", "no"),
        ("service", "berth"),
        ("client_id", "x"),
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let r = post(form(&[
        ("grant_type", "authorization_code"),
        ("service", "berth"),
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    // Once bob is removed, his refresh token stops working.
    let out = berth(
        &[
            "user",
            "del",
            "--htpasswd",
            f.htpasswd.to_str().unwrap(),
            "bob",
        ],
        "",
    );
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = post(form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "berth"),
            ("client_id", "docker"),
        ]))
        .await
        .unwrap();
        if r.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refresh kept working after the user was deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn forged_and_unusable_tokens_are_rejected() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let f = fixture("", &[]);
    let other = Server::start(&[]);
    let client = reqwest::Client::new();
    let good = token(
        &f.server,
        Some(("alice", "alice-pw")),
        &["repository:team/app:pull"],
    )
    .await;
    let check = |token: String, what: &'static str| {
        let client = client.clone();
        let url = f.server.url("/v2/team/app/tags/list");
        async move {
            let r = client.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 401, "{what}");
            assert!(
                www_authenticate(&r).contains(r#"error="invalid_token""#),
                "{what}"
            );
        }
    };
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };

    // Wrong signature: the payload widened to push and delete, signature kept.
    let mut widened = claims(&good);
    widened["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);
    check(
        format!("{}.{}.{}", parts[0], b64(&widened), parts[2]),
        "edited claims",
    )
    .await;
    // alg: none.
    check(
        format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            parts[1]
        ),
        "alg none",
    )
    .await;
    // Another registry's key.
    let foreign = token(
        &other,
        Some(("admin", &other.admin_password())),
        &["repository:team/app:pull"],
    )
    .await;
    check(foreign, "another key").await;
    // Signed with the real key, but expired, not yet valid, for another
    // audience or another issuer.
    let pem = std::fs::read(f.server.data_dir.join("token-signing-key.pem")).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let sign = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(&good);
        edit(&mut c);
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &c, &key).unwrap()
    };
    let now = claims(&good)["iat"].as_u64().unwrap();
    // Sanity: the real key with unchanged claims is accepted.
    let r = client
        .get(f.server.url("/v2/team/app/tags/list"))
        .bearer_auth(sign(&|_| {}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    check(
        sign(&|c| {
            c["exp"] = (now - 10).into();
            c["nbf"] = (now - 100).into();
        }),
        "expired",
    )
    .await;
    check(
        sign(&|c| {
            c["nbf"] = (now + 3600).into();
            c["exp"] = (now + 7200).into();
        }),
        "not yet valid",
    )
    .await;
    check(
        sign(&|c| c["aud"] = "another-registry".into()),
        "wrong audience",
    )
    .await;
    check(sign(&|c| c["iss"] = "someone-else".into()), "wrong issuer").await;
    // HS256 keyed with the public key.
    let jwks: serde_json::Value = client
        .get(f.server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&good),
        &EncodingKey::from_secret(jwks.to_string().as_bytes()),
    )
    .unwrap();
    check(hs, "HS256").await;
    check("not-a-token".to_owned(), "garbage").await;
}

#[test]
fn token_lifetimes_below_the_spec_minimum_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "[auth]\ntoken_ttl = \"10s\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("token_ttl must be at least 60s"),
        "{stderr}"
    );
}

/// A user file or CA key berth cannot read stops the start, naming the
/// file, and is left as it was: never taken for "no users yet" (which would
/// replace every user by a new admin) or "no CA yet" (which would break every
/// node trusting the old CA).
#[test]
fn unreadable_user_file_or_ca_key_stops_the_start_and_is_kept() {
    let start = |data_dir: &std::path::Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .output()
            .unwrap()
    };
    // Not UTF-8: unreadable as text even for root, whom permissions never stop.
    let garbage = [0xff_u8, 0xfe, 0x00, 0x80];

    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, garbage).unwrap();
    let out = start(dir.path(), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read") && stderr.contains("htpasswd"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&htpasswd).unwrap(), garbage);
    assert!(!dir.path().join("admin-password").exists());

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    let ca_key = dir.path().join("tls/ca.key");
    std::fs::write(&ca_key, garbage).unwrap();
    let out = start(dir.path(), &["--tls-self-signed"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read") && stderr.contains("ca.key"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&ca_key).unwrap(), garbage);
}

/// The catalog names only what the caller may pull, with Basic
/// credentials and with a catalog token alike, pages included.
#[tokio::test]
async fn the_catalog_lists_only_pullable_repositories() {
    let f = fixture(
        r#"
[[policy]]
subjects = ["user:bob"]
repositories = []
actions = []
catalog = true
"#,
        &[],
    );
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    for repository in ["a/x", "other/app", "team/app", "team/deep/b", "z/y"] {
        root.push_image(repository, "v1", 3).await;
    }
    let list = |api: &Api, query: &'static str| {
        let request = api.http.get(api.url(&format!("/v2/_catalog{query}")));
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let link = r
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_owned());
            let body: serde_json::Value = r.json().await.unwrap();
            (body["repositories"].clone(), link)
        }
    };
    let (all, _) = list(&root, "").await;
    assert_eq!(
        all,
        serde_json::json!(["a/x", "other/app", "team/app", "team/deep/b", "z/y"])
    );
    let bob = Api::with_credentials(&f.server, "bob", "bob-pw");
    let (mine, _) = list(&bob, "").await;
    assert_eq!(mine, serde_json::json!(["team/app", "team/deep/b"]));
    let (first, link) = list(&bob, "?n=1").await;
    assert_eq!(first, serde_json::json!(["team/app"]));
    assert_eq!(
        link.as_deref(),
        Some(r#"</v2/_catalog?n=1&last=team%2Fapp>; rel="next""#)
    );
    let (second, link) = list(&bob, "?n=1&last=team%2Fapp").await;
    assert_eq!(second, serde_json::json!(["team/deep/b"]));
    assert_eq!(link, None);

    let t = token(&f.server, Some(("bob", "bob-pw")), &["registry:catalog:*"]).await;
    let r = reqwest::Client::new()
        .get(f.server.url("/v2/_catalog"))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["repositories"], mine);
}

/// The server's audit log lines (JSON format) once `complete` says they are
/// all there.
fn audit_log(
    server: &Server,
    complete: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    server.wait_for_log(|lines| {
        let audit: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &serde_json::Value| l["target"] == "berth::audit")
            .collect();
        complete(&audit).then_some(audit)
    })
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_and_audited() {
    let f = fixture("", &["--log-format", "json"]);
    let wrong = Api::with_credentials(&f.server, "alice", "guess");
    for _ in 0..5 {
        let r = wrong.http.get(wrong.url("/v2/")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let right = Api::with_credentials(&f.server, "alice", "alice-pw");
    let r = right.http.get(right.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 429, "locked out, even with the right password");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // Other users are not affected.
    let bob = Api::with_credentials(&f.server, "bob", "bob-pw");
    assert_eq!(
        bob.http.get(bob.url("/v2/")).send().await.unwrap().status(),
        200
    );

    // The audit trail: failures, a push, a denial, a delete; never a password.
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    let (_, digest) = root.push_image("team/app", "v1", 4).await;
    bob.http
        .delete(bob.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    root.http
        .delete(root.url(&format!("/v2/team/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    let audit = audit_log(&f.server, |lines| {
        ["login_failed", "push", "denied", "delete"]
            .iter()
            .all(|e| lines.iter().any(|l| l["event"] == *e))
    });
    for line in &audit {
        assert!(
            line["client"].as_str().unwrap().starts_with("127.0.0.1"),
            "{line}"
        );
    }
    let push = audit.iter().find(|l| l["event"] == "push").unwrap();
    assert_eq!(push["subject"], "root");
    assert_eq!(push["repository"], "team/app");
    let failed = audit.iter().find(|l| l["event"] == "login_failed").unwrap();
    assert_eq!(failed["user"], "alice");
    let denied = audit.iter().find(|l| l["event"] == "denied").unwrap();
    assert_eq!(denied["subject"], "bob");
    let log = f.server.log().join("\n");
    for secret in ["guess", "alice-pw", "root-pw", "bob-pw"] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}

/// Behind an ingress every connection comes from the ingress: its
/// `X-Forwarded-For` names the client, but only when berth is told to trust it.
#[tokio::test]
async fn throttling_sees_the_clients_behind_a_trusted_proxy() {
    async fn login(api: &Api, forwarded_for: &str) -> reqwest::StatusCode {
        let r = api.http.get(api.url("/v2/"));
        let r = r.header("x-forwarded-for", forwarded_for).send().await;
        r.unwrap().status()
    }
    let f = fixture(
        "",
        &["--log-format", "json", "--trusted-proxy", "127.0.0.0/8"],
    );
    let wrong = Api::with_credentials(&f.server, "alice", "guess");
    let right = Api::with_credentials(&f.server, "alice", "alice-pw");
    for _ in 0..5 {
        assert_eq!(login(&wrong, "203.0.113.5").await, 401);
    }
    assert_eq!(
        login(&right, "203.0.113.5").await,
        429,
        "the guesser is locked out"
    );
    // What the guesser writes into the header itself is not believed.
    assert_eq!(login(&right, "203.0.113.6, 203.0.113.5").await, 429);
    assert_eq!(
        login(&right, "203.0.113.6").await,
        200,
        "alice elsewhere is not"
    );
    let audit = audit_log(&f.server, |lines| {
        lines
            .iter()
            .filter(|l| l["event"] == "login_failed")
            .count()
            == 5
    });
    let failed: Vec<_> = audit
        .iter()
        .filter(|l| l["event"] == "login_failed")
        .collect();
    assert!(
        failed.iter().all(|l| l["client"] == "203.0.113.5"),
        "{failed:?}"
    );

    // Without --trusted-proxy the header is ignored: every attempt is the peer's.
    let f = fixture("", &[]);
    let wrong = Api::with_credentials(&f.server, "alice", "guess");
    let right = Api::with_credentials(&f.server, "alice", "alice-pw");
    for n in 0..5 {
        assert_eq!(login(&wrong, &format!("203.0.113.{n}")).await, 401);
    }
    assert_eq!(login(&right, "203.0.113.99").await, 429);
}

#[tokio::test]
async fn htpasswd_changes_take_effect_without_restart() {
    let f = fixture("", &[]);
    let carol = Api::with_credentials(&f.server, "carol", "carol-pw");
    assert_eq!(
        carol
            .http
            .get(carol.url("/v2/"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    add_user(&f.htpasswd, "carol", "carol-pw");
    let deadline = Instant::now() + Duration::from_secs(10);
    while carol
        .http
        .get(carol.url("/v2/"))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(Instant::now() < deadline, "the new user never worked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = berth(
        &[
            "user",
            "del",
            "--htpasswd",
            f.htpasswd.to_str().unwrap(),
            "alice",
        ],
        "",
    );
    assert!(out.status.success());
    let alice = Api::with_credentials(&f.server, "alice", "alice-pw");
    let deadline = Instant::now() + Duration::from_secs(70);
    while alice
        .http
        .get(alice.url("/v2/"))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::UNAUTHORIZED
    {
        assert!(Instant::now() < deadline, "the deleted user kept working");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `berth user` and `berth robot` find the data directory as `berth serve`
/// does (the config file's included) and never invent one: run elsewhere,
/// they would edit files the running server does not read.
#[test]
fn user_and_robot_commands_use_the_servers_data_directory_only() {
    let elsewhere = tempfile::tempdir().unwrap();
    let in_elsewhere = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .args(args)
            .current_dir(elsewhere.path())
            .env_remove("BERTH_DATA_DIR")
            .env_remove("BERTH_CONFIG");
        crate::common::output_with_stdin(&mut command, "secret-pw\n")
    };
    for args in [
        &["user", "add", "carol", "--password-stdin"][..],
        &["robot", "list"],
    ] {
        let out = in_elsewhere(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("berth-data does not exist") && stderr.contains("--config"),
            "{stderr}"
        );
    }
    assert!(
        !elsewhere.path().join("berth-data").exists(),
        "nothing invented"
    );

    let data = elsewhere.path().join("served");
    std::fs::create_dir(&data).unwrap();
    let config = elsewhere.path().join("berth.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    let out = in_elsewhere(&[
        "user",
        "add",
        "carol",
        "--password-stdin",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let users = std::fs::read_to_string(data.join("htpasswd")).unwrap();
    assert!(users.starts_with("carol:"), "{users}");
    // The config file's htpasswd is the server's, and so the command's.
    let elsewhere_users = elsewhere.path().join("users");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nhtpasswd = {:?}\n",
            data.display().to_string(),
            elsewhere_users.display().to_string()
        ),
    )
    .unwrap();
    let out = in_elsewhere(&[
        "user",
        "add",
        "dave",
        "--password-stdin",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let users = std::fs::read_to_string(&elsewhere_users).unwrap();
    assert!(users.starts_with("dave:"), "{users}");
}

#[tokio::test]
async fn robots_work_until_they_expire_or_are_revoked() {
    let f = fixture("", &[]);
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    root.push_image("team/app", "v1", 5).await;
    let data_dir = f.server.data_dir.to_str().unwrap().to_owned();
    let create = |name: &str, ttl: Option<&str>| {
        let mut args = vec![
            name,
            "--repo",
            "team/*",
            "--actions",
            "pull",
            "--data-dir",
            &data_dir,
        ];
        if let Some(ttl) = ttl {
            args.extend(["--ttl", ttl]);
        }
        create_robot(&args)
    };
    // The expiry is fixed during `create`, so counting from its return always
    // reaches it however slow the machine; one more second covers the
    // one-second resolution.
    let (user, password) = create("puller", Some("6s"));
    let created = Instant::now();
    assert_eq!(user, "robot.puller");
    let robot = Api::with_credentials(&f.server, &user, &password);
    let r = robot
        .http
        .get(robot.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = robot
        .http
        .post(robot.url("/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a pull-only robot cannot push");
    let text = r.text().await.unwrap();
    assert!(
        text.contains(
            "may not push team/app: neither its scope nor a policy rule naming it (robot:"
        ),
        "{text}"
    );
    let r = robot
        .http
        .get(robot.url("/v2/other/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Its token works too.
    let t = token(
        &f.server,
        Some((&user, &password)),
        &["repository:team/app:pull,push"],
    )
    .await;
    assert_eq!(
        claims(&t)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    // It does not outlive the robot.
    let c = claims(&t);
    assert!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap() <= 6,
        "{c}"
    );

    let list = berth(&["robot", "list", "--data-dir", &data_dir], "");
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(
        listed.contains("robot.puller") && listed.contains("team/*"),
        "{listed}"
    );
    assert!(!listed.contains(&password));
    let stored = std::fs::read_to_string(f.server.data_dir.join("robots.json")).unwrap();
    assert!(
        !stored.contains(&password),
        "only a hash of the secret is stored"
    );

    tokio::time::sleep(
        (created + Duration::from_secs(7)).saturating_duration_since(Instant::now()),
    )
    .await;
    let r = robot
        .http
        .get(robot.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an expired robot is refused");

    let (user, password) = create("forever", None);
    let robot = Api::with_credentials(&f.server, &user, &password);
    let r = robot
        .http
        .get(robot.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out = berth(&["robot", "revoke", "forever", "--data-dir", &data_dir], "");
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(70);
    while robot
        .http
        .get(robot.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::UNAUTHORIZED
    {
        assert!(Instant::now() < deadline, "a revoked robot kept working");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn first_start_creates_an_admin_and_says_where_its_password_is() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let path = server.data_dir.join("admin-password");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("created user admin") && l.contains("admin-password"))
    );
    let password = server.admin_password();
    assert!(password.len() >= 32);
    let admin = Api::new(&server);
    assert_eq!(
        admin
            .http
            .get(admin.url("/v2/_catalog"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let anonymous = Api::anonymous(&server);
    assert_eq!(
        anonymous
            .http
            .get(anonymous.url("/v2/a/tags/list"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // A restart keeps the same admin and says nothing new.
    drop(server);
    let again = Server::start_in(dir.path(), &[]);
    assert_eq!(again.admin_password(), password);
    assert!(!again.log().iter().any(|l| l.contains("created user admin")));
}

#[test]
fn non_bcrypt_htpasswd_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, "# users\nbob:$apr1$xyz$abcdefghijklmnopqrstuv\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--htpasswd")
        .arg(&htpasswd)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("bob") && stderr.contains("bcrypt"),
        "{stderr}"
    );
}

#[tokio::test]
async fn self_signed_tls_serves_https_with_a_ca_to_trust() {
    crate::common::install_crypto_provider();
    let server = Server::start(&["--tls-self-signed"]);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let ca = std::fs::read(server.data_dir.join("tls/ca.crt")).unwrap();
    assert!(
        server.log().iter().any(|l| l.contains("tls/ca.crt")),
        "the CA path is printed"
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(server.url("/v2/"))
        .basic_auth("admin", Some(server.admin_password()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The challenge's realm is https too.
    let r = client.get(server.url("/v2/")).send().await.unwrap();
    assert!(www_authenticate(&r).contains(&format!("realm=\"https://{}/token\"", server.addr)));
    // Without the CA, the certificate is not trusted.
    assert!(
        reqwest::Client::new()
            .get(server.url("/v2/"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn anonymous_pull_works_only_where_granted() {
    let f = fixture("", &[]);
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    root.push_image("public/app", "v1", 6).await;
    root.push_image("team/app", "v1", 7).await;
    let anonymous = Api::anonymous(&f.server);
    let r = anonymous
        .http
        .get(anonymous.url("/v2/public/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = anonymous
        .http
        .get(anonymous.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = anonymous
        .put_manifest("public/app", "v2", OCI_MANIFEST, b"{}")
        .await;
    assert_eq!(r.status(), 401);
}
