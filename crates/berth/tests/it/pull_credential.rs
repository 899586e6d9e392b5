//! Pull credentials: the exchange endpoint over HTTP, and
//! `berth credential-provider` with a `berth-registry` source against a
//! running berth, its answer then used by skopeo.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{Api, Fixture, create_robot, error_code, fixture, run_tool, run_tool_failing};
use berth_kube::credential_provider::{ApiVersion, CacheKeyType, CredentialProviderResponse};
use serde_json::{Value, json};

const EXCHANGE: &str = "/berth/v1/pull-credentials";

/// Exchange credentials are capped at one hour on this server.
fn server() -> Fixture {
    fixture("[auth]\npull_credential_ttl = \"1h\"\n", &[])
}

async fn exchange(api: &Api, body: Value) -> reqwest::Response {
    api.http
        .post(api.url(EXCHANGE))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A credential for `user`, as the endpoint returns it.
async fn credential(f: &Fixture, user: &str, password: &str, body: Value) -> Value {
    let api = Api::with_credentials(&f.server, user, password);
    let response = exchange(&api, body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

fn as_api(f: &Fixture, credential: &Value) -> Api {
    Api::with_credentials(
        &f.server,
        credential["username"].as_str().unwrap(),
        credential["password"].as_str().unwrap(),
    )
}

async fn status(api: &Api, method: reqwest::Method, path: &str) -> u16 {
    api.http
        .request(method, api.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A token from `/token` for `scope`, with Basic credentials.
async fn token(f: &Fixture, credential: &Value, scope: &str) -> String {
    let api = as_api(f, credential);
    let body: Value = api
        .http
        .get(api.url(&format!(
            "/token?service=berth&scope={scope}&offline_token=true"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("refresh_token").is_none(), "never a refresh token");
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn exchange_endpoint_issues_pull_only_expiring_credentials() {
    let f = server();
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    root.push_image("team/app", "v1", 1).await;
    root.push_image("other/app", "v1", 2).await;

    // No credentials, a wrong password, a bearer token: 401 with the spec's body.
    let anonymous = Api::anonymous(&f.server);
    let response = exchange(&anonymous, json!({})).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"berth\""
    );
    assert_eq!(error_code(response).await, "UNAUTHORIZED");
    let response = exchange(&Api::with_credentials(&f.server, "alice", "bad"), json!({})).await;
    assert_eq!(response.status(), 401);
    let response = anonymous
        .http
        .post(anonymous.url(EXCHANGE))
        .bearer_auth("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // alice may pull team/*: her credential says so, for at most the cap.
    let alice = credential(&f, "alice", "alice-pw", json!({"ttl_seconds": 999_999})).await;
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["repositories"], json!(["team/*"]));
    assert_eq!(alice["expires_in"], 3600);
    assert!(alice["expires_at"].as_str().unwrap().ends_with('Z'));
    let api = as_api(&f, &alice);
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/team/app/manifests/v1").await,
        200
    );
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/other/app/manifests/v1").await,
        403
    );
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/_catalog").await,
        403
    );

    // bob may push team/**; his credential still cannot, directly or through
    // the token flow.
    let bob = credential(&f, "bob", "bob-pw", json!({})).await;
    let api = as_api(&f, &bob);
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/team/app/manifests/v1").await,
        200
    );
    assert_eq!(
        status(&api, reqwest::Method::POST, "/v2/team/app/blobs/uploads/").await,
        403
    );
    let bearer = token(&f, &bob, "repository:team/app:pull,push").await;
    let with_token = |method, path: &str| {
        anonymous
            .http
            .request(method, anonymous.url(path))
            .bearer_auth(&bearer)
            .send()
    };
    assert_eq!(
        with_token(reqwest::Method::GET, "/v2/team/app/manifests/v1")
            .await
            .unwrap()
            .status(),
        200
    );
    let push = with_token(reqwest::Method::POST, "/v2/team/app/blobs/uploads/")
        .await
        .unwrap();
    assert_eq!(push.status(), 403);
    assert_eq!(error_code(push).await, "DENIED");

    // The credential is a password, never a bearer token.
    let response = anonymous
        .http
        .get(anonymous.url("/v2/team/app/manifests/v1"))
        .bearer_auth(alice["password"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // No widening: not a wider pattern, not a renewal with itself.
    let response = exchange(
        &Api::with_credentials(&f.server, "alice", "alice-pw"),
        json!({"repositories": ["**"]}),
    )
    .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("team/*"),
        "{body}"
    );
    let response = exchange(&as_api(&f, &alice), json!({})).await;
    assert_eq!(response.status(), 403);
    // Narrower is fine, and binds.
    let narrow = credential(
        &f,
        "alice",
        "alice-pw",
        json!({"repositories": ["team/app"]}),
    )
    .await;
    assert_eq!(narrow["repositories"], json!(["team/app"]));
    let api = as_api(&f, &narrow);
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/team/app/manifests/v1").await,
        200
    );
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/team/other/tags/list").await,
        403
    );
    // Malformed requests: 400 with the spec's body.
    let response = exchange(
        &Api::with_credentials(&f.server, "alice", "alice-pw"),
        json!({"lifetime": 60}),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "UNSUPPORTED");

    // Expiry: valid, then 401. The expiry is fixed while the request runs,
    // so counting from the response always reaches it however slow the
    // machine; one more second covers the one-second resolution.
    let short = credential(&f, "alice", "alice-pw", json!({"ttl_seconds": 5})).await;
    let issued = std::time::Instant::now();
    let api = as_api(&f, &short);
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/team/app/manifests/v1").await,
        200
    );
    tokio::time::sleep(
        (issued + Duration::from_secs(6)).saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/team/app/manifests/v1").await,
        401
    );

    // Every issue is audit-logged, refusals too.
    f.server.wait_for_line("pull_credential_issued");
    f.server.wait_for_line("pull_credential_refused");
}

/// Runs the plugin as the kubelet would.
fn plugin(config: &std::path::Path, request: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["credential-provider", "--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn credential_provider_exchanges_the_node_credential() {
    let f = server();
    let host = f.server.addr.clone();
    Api::with_credentials(&f.server, "root", "root-pw")
        .push_image("team/app", "v1", 3)
        .await;
    // The node's long-lived credential: a pull-only robot.
    let (robot, secret) = create_robot(&[
        "node",
        "--repo",
        "team/*",
        "--data-dir",
        f.server.data_dir.to_str().unwrap(),
    ]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("node.cred"), format!("{robot}:{secret}\n")).unwrap();
    let config = dir.path().join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "[[registry]]\nmatch = [\"{host}\"]\nsource = \"berth-registry\"\nurl = \"{}\"\n\
             node_credentials_file = \"node.cred\"\n",
            f.server.base
        ),
    )
    .unwrap();

    let image = format!("{host}/team/app");
    for extra in [
        "",
        r#","serviceAccountToken":"eyJhbGciOi.token","serviceAccountAnnotations":{"example.com/role":"puller"}"#,
    ] {
        let request = format!(
            r#"{{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"{image}"{extra}}}"#
        );
        let out = plugin(&config, &request);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        // Decoded strictly, as the kubelet does.
        let response =
            CredentialProviderResponse::from_plugin_output(&text, ApiVersion::V1).unwrap();
        assert_eq!(response.cache_key_type, CacheKeyType::Registry);
        // Half of the one-hour life, give or take the second it took.
        let cache = response.cache_duration.unwrap().to_std().unwrap().as_secs();
        assert!((1798..=1800).contains(&cache), "{text}");
        let auth = &response.auth[&host];
        assert_eq!(auth.username, robot);
        assert_ne!(auth.password, secret);

        // The returned credential pulls with a real client.
        let creds = format!("{}:{}", auth.username, auth.password);
        let inspect = run_tool(
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                "--creds",
                &creds,
                &format!("docker://{image}:v1"),
            ],
        );
        assert!(inspect.contains("\"Digest\""), "{inspect}");
        // And nothing more: a push is refused.
        let work = tempfile::tempdir().unwrap();
        let source = work.path().join("copy");
        run_tool(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                &creds,
                &format!("docker://{image}:v1"),
                &format!("oci:{}:v1", source.display()),
            ],
        );
        let err = run_tool_failing(
            "skopeo",
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                &creds,
                &format!("oci:{}:v1", source.display()),
                &format!("docker://{image}:v2"),
            ],
        );
        assert!(err.to_lowercase().contains("denied"), "{err}");
    }

    // A wrong node credential: a message on stderr, nothing on stdout.
    std::fs::write(dir.path().join("node.cred"), format!("{robot}:wrong\n")).unwrap();
    let request = format!(
        r#"{{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"{image}"}}"#
    );
    let out = plugin(&config, &request);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") && err.contains("check the node credential"),
        "{err}"
    );
    // An unreachable registry: the same.
    drop(f);
    std::fs::write(dir.path().join("node.cred"), format!("{robot}:{secret}\n")).unwrap();
    let out = plugin(&config, &request);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot exchange"));
}
