//! Storage lifecycle on the real server: garbage collection (with skopeo
//! pushing and deleting, and with pushes going on meanwhile), deletes that
//! keep the store sound, whole repositories, retention, immutable tags,
//! quotas and unrecorded bytes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::image::Layout;
use crate::common::{
    Api, OCI_MANIFEST, Server, berth_admin, du, error_code, image_manifest, noise, sha256, skopeo,
};

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// The blob store's bytes.
fn stored(server: &Server) -> u64 {
    server.stored.blob_bytes()
}

/// The sizes of the blobs of an OCI layout, as stored: manifest, config, layers.
fn layout_bytes(dir: &Path) -> u64 {
    du(&dir.join("blobs"))
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

/// skopeo pushes a 20 MiB image and a small one, deletes the large one; a
/// dry run lists what would go, and the collection brings the store back
/// to exactly what the small image needs.
#[tokio::test]
async fn skopeo_push_delete_and_gc_bring_the_store_back_to_what_is_referenced() {
    let server = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let (big, small) = (work.path().join("big"), work.path().join("small"));
    let mut layout = Layout::new(&big);
    let image = layout.image("amd64", &[20 << 20, 50_000], 1);
    layout.tag(&image, "v1");
    let mut layout = Layout::new(&small);
    let kept = layout.image("amd64", &[100_000], 2);
    layout.tag(&kept, "v1");
    for (dir, name) in [(&big, "big"), (&small, "small")] {
        skopeo(
            &server,
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{}:v1", dir.display()),
                &format!("docker://{}/team/{name}:v1", server.addr),
            ],
        );
    }
    assert!(stored(&server) > 20 << 20);
    skopeo(
        &server,
        &[
            "delete",
            "--tls-verify=false",
            &format!("docker://{}/team/big:v1", server.addr),
        ],
    );

    let before = stored(&server);
    let dry = berth_admin(&server, &["gc", "--dry-run", "--grace", "0s"]);
    let listed = stdout(&dry);
    let layer = &serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(
            big.join("blobs/sha256")
                .join(&image.digest["sha256:".len()..]),
        )
        .unwrap(),
    )
    .unwrap()["layers"][0]["digest"];
    assert!(
        listed.contains(&format!("blob {} (20.0 MiB)", layer.as_str().unwrap())),
        "{listed}"
    );
    assert!(stderr(&dry).contains("would be freed"), "{}", stderr(&dry));
    assert_eq!(stored(&server), before, "a dry run deletes nothing");

    let run = berth_admin(&server, &["gc", "--grace", "0s"]);
    stdout(&run);
    assert!(stderr(&run).contains("freed"), "{}", stderr(&run));
    assert_eq!(
        stored(&server),
        layout_bytes(&small),
        "only what team/small:v1 needs is left"
    );
    let back = work.path().join("back");
    skopeo(
        &server,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/team/small:v1", server.addr),
            &format!("oci:{}:v1", back.display()),
        ],
    );
    server.wait_for_line("garbage collection finished");
}

/// Pushes an image's blobs, not its manifest yet.
async fn push_blobs(api: &Api, repository: &str, seed: u64) -> String {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
    let layer = noise(3000, seed);
    let config_digest = api.push_blob(repository, config.as_bytes()).await;
    let layer_digest = api.push_blob(repository, &layer).await;
    image_manifest(
        &config_digest,
        config.len(),
        &[(&layer_digest, layer.len())],
        "",
    )
}

/// The grace period is what keeps a push's blobs while its manifest is on
/// the way; a collection with none takes them, and the manifest is then
/// refused cleanly, never half-stored.
#[tokio::test]
async fn a_blob_uploaded_before_its_manifest_survives_a_collection_in_between() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let manifest = push_blobs(&api, "team/app", 1).await;
    let report = api.gc(false, None).await;
    assert_eq!(report["links"], 0, "{report}");
    let r = api
        .put_manifest("team/app", "v1", OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    for layer in serde_json::from_str::<serde_json::Value>(&manifest).unwrap()["layers"]
        .as_array()
        .unwrap()
    {
        let path = format!("/v2/team/app/blobs/{}", layer["digest"].as_str().unwrap());
        assert_eq!(status(&api, reqwest::Method::GET, &path).await, 200);
    }

    let late = push_blobs(&api, "team/app", 2).await;
    let report = api.gc(false, Some(0)).await;
    assert_eq!(report["links"], 2, "{report}");
    let r = api
        .put_manifest("team/app", "v2", OCI_MANIFEST, late.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/team/app/manifests/v2").await,
        404
    );
}

/// Four writers push and delete images while collections run one after
/// another: every push succeeds, every kept image pulls intact, and a final
/// collection leaves exactly what the kept images need.
#[tokio::test]
async fn pushes_pulls_and_deletes_go_on_while_collections_run() {
    let server = Server::start(&["--gc-grace", "3s"]);
    let api = Api::new(&server);
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let api = Api::new(&server);
            tokio::spawn(async move {
                let mut kept = Vec::new();
                for i in 0..12u64 {
                    let seed = w * 100 + i;
                    let (manifest, digest) = api
                        .push_image(&format!("load/w{w}"), &format!("t{i}"), seed)
                        .await;
                    if i % 2 == 1 {
                        let path = format!("/v2/load/w{w}/manifests/{digest}");
                        assert_eq!(status(&api, reqwest::Method::DELETE, &path).await, 202);
                    } else {
                        kept.push((format!("load/w{w}"), format!("t{i}"), manifest));
                    }
                }
                kept
            })
        })
        .collect();
    let collector = {
        let api = Api::new(&server);
        tokio::spawn(async move {
            let mut runs = 0;
            for _ in 0..40 {
                let report = api.gc(false, None).await;
                assert!(report.is_object(), "{report}");
                runs += 1;
            }
            runs
        })
    };
    let mut kept = Vec::new();
    for writer in writers {
        kept.extend(writer.await.unwrap());
    }
    assert_eq!(collector.await.unwrap(), 40);
    for (repository, tag, manifest) in &kept {
        let r = api
            .http
            .get(api.url(&format!("/v2/{repository}/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), manifest.as_slice());
        let parsed: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        let config = parsed["config"]["digest"].as_str().unwrap();
        let layer = parsed["layers"][0]["digest"].as_str().unwrap();
        for digest in [config, layer] {
            let body = api
                .http
                .get(api.url(&format!("/v2/{repository}/blobs/{digest}")))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(sha256(&body), digest, "{repository}:{tag}");
        }
    }
    // Nothing pushes now: a collection without grace leaves what is used.
    api.gc(false, Some(0)).await;
    let needed: u64 = kept
        .iter()
        .map(|(_, _, manifest)| {
            let parsed: serde_json::Value = serde_json::from_slice(manifest).unwrap();
            manifest.len() as u64
                + parsed["config"]["size"].as_u64().unwrap()
                + parsed["layers"][0]["size"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(stored(&server), needed);
}

/// Deleting keeps the store sound: a blob a manifest uses is not deleted
/// (unless an administrator forces it); a manifest's delete frees its
/// blobs for the next collection; a refused push leaves no bytes.
#[tokio::test]
async fn deletes_keep_the_store_sound() {
    // root administers; alice may delete but does not.
    let f = crate::common::fixture(
        r#"
[[policy]]
subjects = ["user:root"]
admin = true

[[policy]]
subjects = ["user:alice"]
repositories = ["team/**"]
actions = ["delete"]
"#,
        &[],
    );
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    let alice = Api::with_credentials(&f.server, "alice", "alice-pw");
    let bob = Api::with_credentials(&f.server, "bob", "bob-pw");
    let (manifest, digest) = bob.push_image("team/app", "v1", 1).await;
    let layer =
        serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
    let path = format!("/v2/team/app/blobs/{layer}");
    let r = alice.http.delete(alice.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body = r.text().await.unwrap();
    assert!(body.contains("DENIED") && body.contains(&digest), "{body}");
    // Only an administrator may force it.
    let force = format!("{path}?force=true");
    let r = alice.http.delete(alice.url(&force)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("only an administrator"));
    assert_eq!(status(&root, reqwest::Method::DELETE, &force).await, 202);
    assert_eq!(status(&root, reqwest::Method::GET, &path).await, 404);

    // A manifest whose blobs are missing is refused, and its bytes do not stay.
    let missing = image_manifest(&sha256(b"nothing"), 7, &[], "");
    let r = bob
        .put_manifest("team/app", "broken", OCI_MANIFEST, missing.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert!(
        !f.server.stored.has_blob(&sha256(missing.as_bytes())),
        "a refused manifest leaves no bytes"
    );
}

/// A repository goes whole, leaves the catalog, and its bytes follow at the
/// next collection; only administrators may do it.
#[tokio::test]
async fn a_repository_is_deleted_whole() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    api.push_image("team/gone", "v1", 1).await;
    api.push_image("team/gone", "v2", 2).await;
    let (kept, _) = api.push_image("team/kept", "v1", 3).await;
    let listed = stdout(&berth_admin(&server, &["repo", "list"]));
    assert!(listed.starts_with("REPOSITORY"), "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("team/gone") && l.contains(" 2 ")),
        "{listed}"
    );

    let deleted = berth_admin(&server, &["repo", "delete", "team/gone"]);
    stdout(&deleted);
    let catalog: serde_json::Value = api
        .http
        .get(api.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["team/kept"]));
    let r = api
        .http
        .get(api.url("/v2/team/gone/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    let again = berth_admin(&server, &["repo", "delete", "team/gone"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("NAME_UNKNOWN"),
        "{}",
        stderr(&again)
    );

    api.gc(false, Some(0)).await;
    let parsed: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    let needed = kept.len() as u64
        + parsed["config"]["size"].as_u64().unwrap()
        + parsed["layers"][0]["size"].as_u64().unwrap();
    assert_eq!(stored(&server), needed);
}

/// A config file for a server, kept alive as long as the returned guard.
fn config(text: &str) -> (tempfile::NamedTempFile, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    (file, path)
}

/// Keep the two newest `build-*` tags, and any pulled within the hour;
/// manifests no tag reaches any more go at the next collection.
#[tokio::test]
async fn retention_keeps_the_newest_tags_and_what_was_pulled() {
    let (_file, path) = config(
        r#"
[[retention]]
repositories = ["ret/**"]
tags = ["build-*"]
keep_tags = 2
untagged_after = "0s"
keep_pulled_within = "1h"
"#,
    );
    let server = Server::start(&["--config", &path, "--gc-grace", "0s"]);
    let api = Api::new(&server);
    let mut digests = Vec::new();
    for i in 1..=4 {
        let (_, digest) = api.push_image("ret/app", &format!("build-{i}"), i).await;
        digests.push(digest);
    }
    api.push_image("ret/app", "stable", 9).await;
    // Pulled: kept however old.
    assert_eq!(
        status(&api, reqwest::Method::GET, "/v2/ret/app/manifests/build-1").await,
        200
    );
    // The pull is recorded in the background; the dry run shows when.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let report = api.gc(true, None).await;
        if report["tags"] == serde_json::json!(["ret/app:build-2"]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = api.gc(false, None).await;
    assert_eq!(report["tags"], serde_json::json!(["ret/app:build-2"]));
    assert_eq!(report["manifests"][0]["digest"], digests[1].as_str());
    let tags: serde_json::Value = api
        .http
        .get(api.url("/v2/ret/app/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        tags["tags"],
        serde_json::json!(["build-1", "build-3", "build-4", "stable"])
    );
    let path = format!("/v2/ret/app/manifests/{}", digests[1]);
    assert_eq!(status(&api, reqwest::Method::GET, &path).await, 404);
}

/// Immutable tags are neither moved nor deleted, and say why.
#[tokio::test]
async fn immutable_tags_are_neither_moved_nor_deleted() {
    let (_file, path) = config(
        r#"
[[immutable]]
repositories = ["prod/**"]
tags = ["v*"]
"#,
    );
    let server = Server::start(&["--config", &path]);
    let api = Api::new(&server);
    let (first, digest) = api.push_image("prod/app", "v1", 1).await;
    let (second, _) = api.push_image("prod/app", "latest", 2).await;
    let r = api
        .put_manifest("prod/app", "v1", OCI_MANIFEST, &second)
        .await;
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("DENIED"), "{body}");
    assert!(
        body.contains("tag v1 is immutable here (rule v*)"),
        "{body}"
    );
    // The same content again is no move; a mutable tag moves freely.
    let r = api
        .put_manifest("prod/app", "v1", OCI_MANIFEST, &first)
        .await;
    assert_eq!(r.status(), 201);
    let r = api
        .put_manifest("prod/app", "latest", OCI_MANIFEST, &first)
        .await;
    assert_eq!(r.status(), 201);
    for reference in ["v1", digest.as_str()] {
        let path = format!("/v2/prod/app/manifests/{reference}");
        assert_eq!(status(&api, reqwest::Method::DELETE, &path).await, 403);
    }
    let refused = berth_admin(&server, &["repo", "delete", "prod/app"]);
    assert!(
        stderr(&refused).contains("immutable"),
        "{}",
        stderr(&refused)
    );
    let r = api
        .http
        .get(api.url("/v2/prod/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
}

/// A team's repositories share a quota: a push past it is refused with the
/// usage and the limit, before its bytes are stored when its length is
/// known, and leaving nothing behind when it is not.
#[tokio::test]
async fn quotas_refuse_pushes_past_the_limit() {
    let (_file, path) = config(
        r#"
[[quota]]
repositories = "team-a/**"
limit = "64KiB"
"#,
    );
    let server = Server::start(&["--config", &path]);
    let api = Api::new(&server);
    api.push_blob("team-a/one", &noise(40 * 1024, 1)).await;
    let refused = noise(30 * 1024, 2);
    let digest = sha256(&refused);
    let r = api
        .http
        .post(api.url(&format!("/v2/team-a/two/blobs/uploads/?digest={digest}")))
        .body(refused.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("DENIED"), "{body}");
    assert!(
        body.contains(
            "quota exceeded: the repositories team-a/** hold 40.0 KiB of their 64.0 KiB limit \
             and this push needs 30.0 KiB more"
        ),
        "{body}"
    );
    // Streamed without a length: refused when recorded, and nothing stays.
    let r = api
        .http
        .post(api.url("/v2/team-a/three/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(refused.clone())]);
    let r = api
        .http
        .patch(api.url(&location))
        .body(reqwest::Body::wrap_stream(stream))
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
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "DENIED");
    assert!(!server.stored.has_blob(&digest));
    assert_eq!(server.stored.count_under("uploads"), 0);
    // Other repositories are not bound by it.
    api.push_blob("team-b/app", &refused).await;
    let listed = stdout(&berth_admin(&server, &["repo", "list"]));
    let line = listed
        .lines()
        .find(|l| l.starts_with("team-a/one"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        line.contains("40.0 KiB of 64.0 KiB (team-a/**)"),
        "{listed}"
    );
}

/// Bytes no metadata records (a crash between storing a blob and recording
/// it) go once older than the grace period; younger ones stay.
#[tokio::test]
async fn unrecorded_bytes_are_found_and_removed() {
    // On disk: files' ages are set here, and on S3 the sweep is off by
    // default (it lists the whole bucket).
    let server = Server::start_on_disk(&[]);
    let api = Api::new(&server);
    api.push_image("team/app", "v1", 1).await;
    let before = stored(&server);
    let place = |content: &[u8], age: Duration| {
        let digest = sha256(content);
        let hex = &digest["sha256:".len()..];
        let path = server
            .data_dir
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::File::create(path).unwrap();
        use std::io::Write as _;
        (&file).write_all(content).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
        digest
    };
    let old = place(b"left by a crash", Duration::from_secs(2 * 3600));
    place(b"being published right now", Duration::ZERO);
    let report = api.gc(false, None).await;
    assert_eq!(report["orphans"][0]["digest"], old.as_str(), "{report}");
    assert_eq!(report["orphans"].as_array().unwrap().len(), 1);
    assert_eq!(
        stored(&server),
        before + b"being published right now".len() as u64
    );
}

/// A tmpfs of `size` mounted for one test (the suite runs as root, as the
/// containerd tests do), unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        crate::common::run_tool(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ],
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes, as `df` reports them.
    fn free(&self) -> u64 {
        let out = crate::common::run_tool(
            "df",
            &["--output=avail", "-B1", self.path().to_str().unwrap()],
        );
        out.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

async fn push_whole(api: &Api, repository: &str, content: Vec<u8>) -> reqwest::Response {
    api.http
        .post(api.url(&format!(
            "/v2/{repository}/blobs/uploads/?digest={}",
            sha256(&content)
        )))
        .body(content)
        .send()
        .await
        .unwrap()
}

/// The disk fills up: a push past it is refused with a clear error and its
/// bytes released at once, pulls and logins go on, a restart on the full
/// disk serves, deletes and a collection work there, and the next push
/// that fits succeeds.
#[tokio::test]
async fn a_full_disk_refuses_the_push_releases_its_space_and_recovers() {
    let tmpfs = Tmpfs::mount("96m");
    let data = tmpfs.path().join("data");
    let args = ["--reserve-space", "8MiB"];
    let mut server = Server::start_in_on_disk(&data, &args);
    let api = Api::new(&server);
    let (_, image) = api.push_image("team/app", "v1", 1).await;
    // Fill it with 10 MiB blobs until berth refuses one.
    let mut filled = 0;
    loop {
        let r = push_whole(
            &api,
            &format!("fill/f{filled}"),
            noise(10 << 20, filled + 10),
        )
        .await;
        if r.status() == 507 {
            let body = r.text().await.unwrap();
            assert!(body.contains("storage is full"), "{body}");
            break;
        }
        assert_eq!(r.status(), 201);
        filled += 1;
        assert!(filled < 12, "96 MiB never filled");
    }
    assert!(tmpfs.free() < 20 << 20);

    // A push far past the free space, streamed: refused, nothing kept.
    let free = tmpfs.free();
    let r = api
        .http
        .post(api.url("/v2/team/big/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let chunks = (0..120u64).map(|i| Ok::<_, std::io::Error>(noise(1 << 20, i)));
    let r = api
        .http
        .patch(api.url(&location))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("this upload was discarded")
    );
    assert_eq!(
        du(&data.join("uploads")),
        0,
        "the upload's bytes are released"
    );
    // All of it but what the metadata's log took for the session.
    assert!(
        tmpfs.free() + (1 << 20) >= free,
        "{} < {free}",
        tmpfs.free()
    );
    assert_eq!(
        status(&api, reqwest::Method::GET, &location).await,
        404,
        "the session is gone with its bytes"
    );

    // Pulls and logins go on, before and after a restart on the full disk.
    for restart in [false, true] {
        if restart {
            server.kill9();
            server = Server::start_in_on_disk(&data, &args);
        }
        let api = Api::new(&server);
        let path = format!("/v2/team/app/manifests/{image}");
        assert_eq!(status(&api, reqwest::Method::GET, &path).await, 200);
        let anonymous = Api::anonymous(&server);
        let token = anonymous
            .http
            .get(anonymous.url("/token?service=berth"))
            .basic_auth("admin", Some(server.admin_password()))
            .send()
            .await
            .unwrap();
        assert_eq!(token.status(), 200);
    }

    // Deletes and a collection work on the full disk and free it.
    let api = Api::new(&server);
    for i in 0..filled {
        let digest = sha256(&noise(10 << 20, i + 10));
        let path = format!("/v2/fill/f{i}/blobs/{digest}");
        assert_eq!(status(&api, reqwest::Method::DELETE, &path).await, 202);
    }
    let report = api.gc(false, Some(0)).await;
    assert_eq!(report["blobs"].as_array().unwrap().len() as u64, filled);
    assert!(tmpfs.free() > 60 << 20);
    let r = push_whole(&api, "team/next", noise(5 << 20, 99)).await;
    assert_eq!(r.status(), 201);
}

/// A collection stopped between moving a blob's bytes aside and settling
/// them: the next start puts back what is still recorded.
#[tokio::test]
async fn bytes_left_aside_by_a_stopped_collection_are_put_back_at_start() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[]);
    let api = Api::new(&server);
    let (manifest, _) = api.push_image("team/app", "v1", 1).await;
    let layer =
        serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
    let stashed_at = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 5 * 60 * 1000;
    let key = format!("sha256-{}-{stashed_at}-1.1.1", &layer["sha256:".len()..]);
    server.stored.stash_blob(&layer, &key);
    let path = format!("/v2/team/app/blobs/{layer}");
    assert_eq!(status(&api, reqwest::Method::GET, &path).await, 500);
    server.kill9();
    let server = Server::start_in(data.path(), &[]);
    let api = Api::new(&server);
    let body = api
        .http
        .get(api.url(&path))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&body), layer);
    assert_eq!(server.stored.count_under("trash"), 0);
}
