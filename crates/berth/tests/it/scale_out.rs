//! berth on shared stores: metadata in PostgreSQL (the test process's own
//! server, from Debian's packages) and blobs in S3 (the test process's own
//! Garage), several processes serving one registry.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::common::daemons::Containerd;
use crate::common::image::{Layout, layout_digest};
use crate::common::*;

/// An unreachable or misnamed database stops the start with the setting
/// to check, instead of falling back to the embedded one.
#[test]
fn an_unreachable_database_stops_the_start_and_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in [
        format!("postgres://berth@127.0.0.1:{port}/berth?connect_timeout=5"),
        berth_testkit::postgres().url("no_such_database"),
        "mysql://berth@127.0.0.1/berth".to_owned(),
    ] {
        let started = Instant::now();
        let out = berth(
            &[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--database-url",
                &url,
            ],
            "",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(
            stderr.contains("cannot connect to the PostgreSQL database")
                && stderr.contains("--database-url"),
            "{url}: {stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    assert!(!dir.path().join("metadata.db").exists());
}

/// The metadata lives in the database: a berth started on another data
/// directory but the same database lists the same repositories and tags,
/// knows the same users and signs tokens with the same key.
#[tokio::test]
async fn the_metadata_is_the_databases() {
    let url = berth_testkit::postgres().database();
    let server = Server::start(&["--database-url", &url]);
    Api::new(&server).push_image("shared/app", "v1", 7).await;
    let key = std::fs::read_to_string(server.data_dir.join("token-signing-key.pem")).unwrap();
    let password = server.admin_password();
    drop(server);
    let other = Server::start(&["--database-url", &url]);
    // The first process's token signing key is the database's, so every
    // other process signs and checks tokens with it.
    assert_eq!(
        std::fs::read_to_string(other.data_dir.join("token-signing-key.pem")).unwrap(),
        key
    );
    // And its users: the first process's admin.
    let api = Api::with_credentials(&other, "admin", &password);
    let get = |path: &str| {
        let request = api.http.get(api.url(path));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let tags = get("/v2/shared/app/tags/list").await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    let catalog = get("/v2/_catalog").await;
    assert_eq!(catalog["repositories"], serde_json::json!(["shared/app"]));
}

/// Waits (20 s at most) until the file `name` the database keeps is copied
/// into every one of `servers`' data directories as `arrived` wants it, then
/// until their authenticators read it: only then is a login tried, since
/// failed ones are throttled.
async fn in_every_data_dir(servers: &[&Server], name: &str, arrived: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for server in servers {
        let path = server.data_dir.join(name);
        while !std::fs::read_to_string(&path).is_ok_and(|text| arrived(&text)) {
            assert!(
                Instant::now() < deadline,
                "{name} never arrived at {}",
                server.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// Replicas on one bucket of the test Garage cluster and one database,
/// each with a data directory of its own (as pods have) and the users of
/// one htpasswd file (as a mounted Secret gives them): `admin`/`admin-pw`.
struct Replicas {
    shared: tempfile::TempDir,
    bucket: String,
    database: String,
}

impl Replicas {
    fn new() -> Self {
        let shared = tempfile::tempdir().unwrap();
        add_user(&shared.path().join("htpasswd"), "admin", "admin-pw");
        Replicas {
            shared,
            bucket: berth_testkit::garage_cluster().bucket(),
            database: berth_testkit::postgres().database(),
        }
    }

    /// A replica through Garage node `node`, with `extra` in `[s3]` and
    /// `args` for `berth serve` (the bucket and the database are given by
    /// flag, which the suite's second run leaves alone).
    fn start(&self, node: usize, extra: &str, args: &[&str]) -> Server {
        let config = self.shared.path().join(format!("berth-{node}.toml"));
        std::fs::write(
            &config,
            format!(
                "[s3]\nregion = \"garage\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n{extra}",
                berth_testkit::GARAGE_KEY_ID,
                berth_testkit::GARAGE_SECRET,
            ),
        )
        .unwrap();
        let endpoint = berth_testkit::garage_cluster().endpoint_of(node);
        let htpasswd = self.shared.path().join("htpasswd");
        let mut all = vec![
            "--config",
            config.to_str().unwrap(),
            "--s3-bucket",
            &self.bucket,
            "--s3-endpoint",
            &endpoint,
            "--database-url",
            &self.database,
            "--htpasswd",
            htpasswd.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Server::start(&all)
    }
}

/// Without an htpasswd file given, berths on one database share their users
/// through it: the first one's `admin` is every berth's (the next ones keep
/// no password of their own), and `berth user` on the database, or on one
/// berth's data directory, adds, changes and removes users at all of them
/// within seconds.
#[tokio::test]
async fn users_are_the_databases() {
    install_crypto_provider();
    let url = berth_testkit::postgres().database();
    let a = Server::start(&["--database-url", &url]);
    let b = Server::start(&["--database-url", &url]);
    assert!(!b.data_dir.join("admin-password").exists());
    let status = |server: &Server, user: &str, password: &str| {
        let request = reqwest::Client::new()
            .get(server.url("/v2/"))
            .basic_auth(user, Some(password));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status(&b, "admin", &a.admin_password()).await, 200);

    let user = |args: &[&str], stdin: &str| {
        berth_ok(
            &[&["user"], args, &["--database-url", url.as_str()]].concat(),
            stdin,
        )
    };
    user(&["add", "ci", "--password-stdin"], "ci-pw\n");
    assert_eq!(user(&["list"], ""), "admin\nci\n");
    in_every_data_dir(&[&a, &b], "htpasswd", |users| users.contains("ci:")).await;
    for server in [&a, &b] {
        assert_eq!(
            status(server, "ci", "ci-pw").await,
            200,
            "at {}",
            server.addr
        );
    }
    // Changed in one berth's own file: offered to the database, so the
    // other gets it too.
    let out = berth(
        &[
            "user",
            "passwd",
            "ci",
            "--password-stdin",
            "--data-dir",
            a.data_dir.to_str().unwrap(),
        ],
        "ci-pw-2\n",
    );
    assert!(out.status.success());
    let changed = std::fs::read_to_string(a.data_dir.join("htpasswd")).unwrap();
    in_every_data_dir(&[&b], "htpasswd", |users| users == changed).await;
    assert_eq!(status(&b, "ci", "ci-pw-2").await, 200);
    user(&["del", "ci"], "");
    let deadline = Instant::now() + Duration::from_secs(20);
    for server in [&a, &b] {
        while status(server, "ci", "ci-pw-2").await != 401 {
            assert!(
                Instant::now() < deadline,
                "ci still works at {}",
                server.addr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One request writes to an upload at a time, whichever replica it
/// reached: a chunk sent to b while a's streams in is refused with where the
/// upload stands, and b's expiry (after 2 s of silence) leaves a's long chunk
/// alone; the upload then goes on and closes at b.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_has_one_writer_across_replicas() {
    let replicas = Replicas::new();
    let a = replicas.start(0, "", &[]);
    let b = replicas.start(1, "", &["--upload-ttl", "2s"]);
    let api_a = Api::with_credentials(&a, "admin", "admin-pw");
    let api_b = Api::with_credentials(&b, "admin", "admin-pw");
    let (location, tx, patch) = streamed_patch(&api_a, "team/app").await;
    let mut content = noise(1 << 20, 1);
    tx.send(Ok(content.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = api_b
        .http
        .patch(api_b.url(&location))
        .header("content-range", "0-9")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 416);
    assert_eq!(header(&refused, "location"), location);
    assert!(
        error_code(refused).await == "BLOB_UPLOAD_INVALID",
        "a chunk at b while a's streams in"
    );
    // Longer than b's upload time to live, a's chunk still streaming.
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let more = noise(1000, i + 2);
        content.extend_from_slice(&more);
        tx.send(Ok(more)).await.unwrap();
    }
    drop(tx);
    let r = patch.await.unwrap().unwrap();
    assert_eq!(r.status(), 202, "the upload was expired mid-stream");
    let status = api_b.http.get(api_b.url(&location)).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(header(&status, "range"), format!("0-{}", content.len() - 1));
    let digest = sha256(&content);
    let r = api_b.close_upload(&location, &digest).await;
    assert_eq!(r.status(), 201);
    let pulled = api_a
        .http
        .get(api_a.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256(&pulled.bytes().await.unwrap()), digest);
}

/// Two berth processes on one bucket of a three-node Garage cluster (each
/// through another node) and one database, each with a data directory of
/// its own (as pods have) and the users of one htpasswd file (as a mounted
/// Secret gives them), are one registry: a token one issues
/// the other accepts; a robot made in the database works at both, and
/// stops at both once revoked; skopeo pushes a multi-arch index through one and pulls
/// it through the other byte for byte, and containerd pulls it through
/// either; one upload alternates its chunks between them; a replica killed
/// mid-push leaves nothing partial, and the push redone through the other
/// completes.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_bucket_and_one_database_are_one_registry() {
    let replicas = Replicas::new();
    let a = replicas.start(0, "", &[]);
    // b sends blob downloads to Garage itself, with presigned URLs.
    let mut b = replicas.start(1, "presigned_redirect = \"5m\"\n", &[]);
    let creds = "admin:admin-pw";

    // One signing key, kept in the database: a's token is good at b.
    let api_a = Api::with_credentials(&a, "admin", "admin-pw");
    let api_b = Api::with_credentials(&b, "admin", "admin-pw");
    let r = api_a
        .http
        .get(api_a.url("/token?service=berth&scope=repository:team/app:pull,push"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token: serde_json::Value = r.json().await.unwrap();
    let r = reqwest::Client::new()
        .get(b.url("/v2/team/app/tags/list"))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "b accepted a's token: the repository is unknown yet"
    );

    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let mut layout = Layout::new(&source);
    let index = layout.index(&["amd64", "arm64"], 3);
    layout.tag(&index, "v1");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &format!("--dest-creds={creds}"),
            &format!("oci:{}:v1", source.display()),
            &format!("docker://{}/team/app:v1", a.addr),
        ],
    );
    let pulled = work.path().join("pulled");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("--src-creds={creds}"),
            &format!("docker://{}/team/app:v1", b.addr),
            &format!("oci:{}:v1", pulled.display()),
        ],
    );
    assert_eq!(layout_digest(&pulled, "v1"), index.digest);
    // What skopeo followed at b: a 307 to the Garage node, signed.
    let bytes = berth_testkit::noise(100_000, 4);
    let digest = api_a.push_blob("team/app", &bytes).await;
    let blob = format!("/v2/team/app/blobs/{digest}");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(b.url(&blob))
        .basic_auth("admin", Some("admin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&berth_testkit::garage_cluster().endpoint_of(1))
            && location.contains("X-Amz-Signature="),
        "{location}"
    );
    // A range is the store's to serve, through the redirect.
    let r = api_b
        .http
        .get(b.url(&blob))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), bytes[10..20]);
    // containerd, the kubelet's runtime, through the token flow of either.
    let containerd = Containerd::start();
    for server in [&a, &b] {
        let image = format!("{}/team/app:v1", server.addr);
        succeed(
            containerd
                .ctr(&["images", "pull", "--plain-http", "--snapshotter", "native"])
                .args(["--all-platforms", "--user", creds, &image]),
        );
        assert_eq!(containerd.image_digest(&image), index.digest);
    }

    // A robot made in the database works at both replicas, and once
    // revoked at neither, within seconds.
    let (_, password) = create_robot(&[
        "ci",
        "--repo",
        "team/**",
        "--actions",
        "pull",
        "--database-url",
        &replicas.database,
    ]);
    let robot_status = |server: &Server| {
        let url = server.url("/v2/team/app/tags/list");
        let password = password.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .basic_auth("robot.ci", Some(password))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    in_every_data_dir(&[&a, &b], "robots.json", |robots| robots.contains("\"ci\"")).await;
    for server in [&a, &b] {
        assert_eq!(
            robot_status(server).await,
            200,
            "the robot at {}",
            server.addr
        );
    }
    berth_ok(
        &[
            "robot",
            "revoke",
            "ci",
            "--database-url",
            &replicas.database,
        ],
        "",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for server in [&a, &b] {
        while robot_status(server).await != 401 {
            assert!(
                Instant::now() < deadline,
                "the robot still works at {}",
                server.addr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // One upload, its chunks alternating between the replicas, and sizes
    // on both sides of S3's 5 MiB part minimum.
    let content = berth_testkit::noise((20 << 20) + 5, 9);
    let digest = berth_testkit::sha256(&content);
    let r = api_a
        .http
        .post(api_a.url("/v2/team/big/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut location = r.headers()["location"].to_str().unwrap().to_owned();
    let cuts = [0, 1000, 6 << 20, (9 << 20) + 3, content.len()];
    for (i, window) in cuts.windows(2).enumerate() {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let r = api
            .http
            .patch(api.url(&location))
            .header("content-range", format!("{}-{}", window[0], window[1] - 1))
            .body(content[window[0]..window[1]].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        assert_eq!(
            r.headers()["range"],
            format!("0-{}", window[1] - 1).as_str()
        );
        location = r.headers()["location"].to_str().unwrap().to_owned();
    }
    let r = api_b.close_upload(&location, &digest).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = api_a
        .http
        .get(api_a.url(&format!("/v2/team/big/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.unwrap() == content,
        "the blob is the bytes sent"
    );

    // A push streaming into b when b is killed.
    let pushed = berth_testkit::noise(200 * 65536, 11);
    let pushed_digest = berth_testkit::sha256(&pushed);
    let r = api_b
        .http
        .post(api_b.url("/v2/team/killed/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let chunks: Vec<Vec<u8>> = pushed.chunks(65536).map(<[u8]>::to_vec).collect();
    let body = futures_util::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, std::io::Error>(chunk)
    });
    let upload = tokio::spawn(
        api_b
            .http
            .patch(api_b.url(&location))
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    b.kill9();
    assert!(upload.await.unwrap().is_err(), "the client saw b die");
    let blob = format!("/v2/team/killed/blobs/{pushed_digest}");
    let r = api_a.http.head(api_a.url(&blob)).send().await.unwrap();
    assert_eq!(r.status(), 404, "nothing partial is visible");
    // Redone through a, whole.
    let r = api_a
        .http
        .post(api_a.url(&format!(
            "/v2/team/killed/blobs/uploads/?digest={pushed_digest}"
        )))
        .body(pushed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = api_a.http.get(api_a.url(&blob)).send().await.unwrap();
    assert!(r.bytes().await.unwrap() == pushed);
}

/// With `sslmode=require` berth speaks TLS to PostgreSQL and verifies the
/// server's certificate, against `[database] ca_file` beside the system's
/// CAs: without that CA the start stops and says why.
#[tokio::test]
async fn the_database_over_verified_tls() {
    let postgres = berth_testkit::postgres();
    let plain = postgres.database();
    let database = plain.rsplit('/').next().unwrap().to_owned();
    let url = format!("{plain}?sslmode=require");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!("[database]\nca_file = {:?}\n", postgres.ca_file()),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap(), "--database-url", &url]);
    Api::new(&server).push_image("tls/app", "v1", 3).await;
    let encrypted = postgres.run(
        &database,
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
          WHERE ssl AND application_name = 'berth'",
    );
    assert!(encrypted.trim().parse::<u32>().unwrap() > 0, "{encrypted}");
    drop(server);

    let out = berth(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--database-url",
            &url,
        ],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot connect to the PostgreSQL database")
            && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
}
