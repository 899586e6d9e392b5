//! The OCI Distribution API over real HTTP: every endpoint and error path.

use crate::common::{
    Api, OCI_INDEX, OCI_MANIFEST, Server, error_code, header, image_manifest, noise, sha256,
    streamed_patch,
};
use reqwest::StatusCode;

#[tokio::test]
async fn base_endpoint_and_health() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let r = api.http.get(api.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(r.text().await.unwrap(), "{}");
    assert_eq!(
        api.http
            .get(api.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        api.http
            .get(api.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn unknown_endpoints_and_methods_get_spec_errors() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let r = api.http.get(api.url("/v2/foo")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    let r = api
        .http
        .post(api.url("/v2/foo/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

#[tokio::test]
async fn invalid_names_tags_and_digests() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    for path in [
        "/v2/UPPER/tags/list",
        "/v2/a..b/manifests/latest",
        "/v2/a__-b/blobs/uploads/",
    ] {
        let r = api.http.get(api.url(path)).send().await.unwrap();
        let r = if path.ends_with("uploads/") {
            api.http.post(api.url(path)).send().await.unwrap()
        } else {
            r
        };
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(error_code(r).await, "NAME_INVALID", "{path}");
    }
    // A reference that is neither a tag nor a digest names no manifest:
    // reading or deleting it is 404 (as Distribution answers and the
    // conformance suite requires), only pushing to it is invalid.
    for reference in ["-bad-tag", ".INVALID_MANIFEST_NAME", "sha256:zz"] {
        let path = format!("/v2/a/manifests/{reference}");
        for method in [
            reqwest::Method::GET,
            reqwest::Method::HEAD,
            reqwest::Method::DELETE,
        ] {
            let r = api
                .http
                .request(method.clone(), api.url(&path))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{method} {path}");
            if method != reqwest::Method::HEAD {
                assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN", "{method} {path}");
            }
        }
    }
    for (reference, code) in [
        ("-bad-tag", "MANIFEST_INVALID"),
        ("sha256:zz", "DIGEST_INVALID"),
    ] {
        let r = api.put_manifest("a", reference, OCI_MANIFEST, b"{}").await;
        assert_eq!(r.status(), 400, "PUT {reference}");
        assert_eq!(error_code(r).await, code, "PUT {reference}");
    }
    for digest in [
        "sha256:abc",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nocolon",
    ] {
        let r = api
            .http
            .get(api.url(&format!("/v2/a/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{digest}");
        assert_eq!(error_code(r).await, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn monolithic_upload_then_head_get_and_ranges() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let content = noise(100_000, 1);
    let digest = sha256(&content);
    let r = api
        .http
        .post(api.url(&format!("/v2/team/app/blobs/uploads/?digest={digest}")))
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/team/app/blobs/{digest}")
    );
    assert_eq!(header(&r, "docker-content-digest"), digest);

    let r = api
        .http
        .head(api.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), "100000");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert!(r.bytes().await.unwrap().is_empty());

    let r = api
        .http
        .get(api.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap(), content);

    let r = api
        .http
        .get(api.url(&format!("/v2/team/app/blobs/{digest}")))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 10-19/100000");
    assert_eq!(r.bytes().await.unwrap(), content[10..20]);

    let r = api
        .http
        .get(api.url(&format!("/v2/team/app/blobs/{digest}")))
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), content[99_995..]);

    let r = api
        .http
        .get(api.url(&format!("/v2/team/app/blobs/{digest}")))
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */100000");
    assert_eq!(error_code(r).await, "SIZE_INVALID");

    // Another repository cannot read it without a mount.
    let r = api
        .http
        .get(api.url(&format!("/v2/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = api
        .http
        .head(api.url(&format!("/v2/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn monolithic_upload_with_wrong_digest_is_refused() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let claimed = sha256(b"something else");
    let r = api
        .http
        .post(api.url(&format!("/v2/a/blobs/uploads/?digest={claimed}")))
        .body("content")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = api
        .http
        .head(api.url(&format!("/v2/a/blobs/{claimed}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        server.stored.count_under("uploads"),
        0,
        "a refused upload leaves no temporary data"
    );
}

#[tokio::test]
async fn chunked_upload_session() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let content = noise(3000, 2);
    let digest = sha256(&content);

    let r = api
        .http
        .post(api.url("/v2/a/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_owned();
    assert!(location.starts_with("/v2/a/blobs/uploads/"));
    assert_eq!(header(&r, "range"), "0-0");
    assert!(!header(&r, "docker-upload-uuid").is_empty());

    let r = api
        .http
        .patch(api.url(&location))
        .header("content-range", "0-999")
        .header("content-type", "application/octet-stream")
        .body(content[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-999");
    let location = header(&r, "location").to_owned();

    // A chunk that does not continue the upload: 416 with the current range.
    let r = api
        .http
        .patch(api.url(&location))
        .header("content-range", "500-599")
        .body(content[500..600].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range"), "0-999");
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");

    // Content-Range and Content-Length must agree.
    let r = api
        .http
        .patch(api.url(&location))
        .header("content-range", "1000-1099")
        .body(content[1000..1050].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "SIZE_INVALID");

    let r = api
        .http
        .patch(api.url(&location))
        .header("content-range", "bytes 1000-1099")
        .body(content[1000..1100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");

    // A streamed chunk, without Content-Range.
    let r = api
        .http
        .patch(api.url(&location))
        .body(content[1000..2000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-1999");

    let r = api.http.get(api.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range"), "0-1999");
    assert_eq!(header(&r, "location"), location);

    // The last chunk rides on the closing PUT.
    let r = api
        .http
        .put(api.url(&format!("{location}?digest={digest}")))
        .header("content-range", "2000-2999")
        .body(content[2000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let r = api
        .http
        .get(api.url(&format!("/v2/a/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), content);

    // The session is gone.
    let r = api.http.get(api.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn upload_put_errors_and_cancel() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let r = api
        .http
        .post(api.url("/v2/a/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = header(&r, "location").to_owned();
    api.http
        .patch(api.url(&location))
        .body("abc")
        .send()
        .await
        .unwrap();

    // No digest.
    let r = api.http.put(api.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    // The session belongs to repository a, not b.
    let id = location.rsplit('/').next().unwrap();
    let r = api
        .http
        .get(api.url(&format!("/v2/b/blobs/uploads/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    let r = api.http.delete(api.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = api.http.get(api.url(&location)).send().await.unwrap();
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    // Wrong digest on close: refused, nothing published, session gone.
    let r = api
        .http
        .post(api.url("/v2/a/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = header(&r, "location").to_owned();
    let wrong = sha256(b"xyz");
    let r = api
        .http
        .put(api.url(&format!("{location}?digest={wrong}")))
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = api
        .http
        .head(api.url(&format!("/v2/a/blobs/{wrong}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = api.http.get(api.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let r = api
        .http
        .patch(api.url("/v2/a/blobs/uploads/00000000-0000-0000-0000-000000000000"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn cross_repository_mount() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let digest = api.push_blob("source", b"shared layer").await;

    let r = api
        .http
        .post(api.url(&format!(
            "/v2/target/blobs/uploads/?mount={digest}&from=source"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/target/blobs/{digest}"));
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let r = api
        .http
        .get(api.url(&format!("/v2/target/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"shared layer"[..]);

    // Not in the source, or no source: an upload session instead.
    let absent = sha256(b"absent");
    for query in [
        format!("mount={absent}&from=source"),
        format!("mount={digest}"),
        format!("mount={digest}&from=nowhere"),
    ] {
        let r = api
            .http
            .post(api.url(&format!("/v2/third/blobs/uploads/?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{query}");
        assert!(header(&r, "location").starts_with("/v2/third/blobs/uploads/"));
    }
}

#[tokio::test]
async fn manifest_push_pull_and_reference_checks() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = noise(500, 3);
    let config_digest = sha256(config);
    let layer_digest = sha256(&layer);
    let manifest = image_manifest(
        &config_digest,
        config.len(),
        &[(&layer_digest, layer.len())],
        "",
    );
    let manifest_digest = sha256(manifest.as_bytes());

    // Blobs not pushed yet.
    let r = api
        .put_manifest("app", "v1", OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");

    api.push_blob("app", config).await;
    api.push_blob("app", &layer).await;
    let r = api
        .put_manifest("app", "v1", OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), manifest_digest);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/app/manifests/{manifest_digest}")
    );
    assert!(r.headers().get("oci-subject").is_none());

    for reference in ["v1", manifest_digest.as_str()] {
        let r = api
            .http
            .get(api.url(&format!("/v2/app/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), manifest_digest);
        assert_eq!(
            r.bytes().await.unwrap(),
            manifest.as_bytes(),
            "exact bytes are served"
        );
        let r = api
            .http
            .head(api.url(&format!("/v2/app/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-length"), manifest.len().to_string());
        assert_eq!(header(&r, "docker-content-digest"), manifest_digest);
        assert!(r.bytes().await.unwrap().is_empty());
    }

    let r = api
        .http
        .get(api.url("/v2/app/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = api
        .http
        .head(api.url("/v2/app/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Pushing by digest: the digest must be the content's.
    let r = api
        .put_manifest("app", &manifest_digest, OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    let r = api
        .put_manifest("app", &sha256(b"other"), OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    // The same blobs are unknown in another repository.
    let r = api
        .put_manifest("elsewhere", "v1", OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn manifest_validation() {
    let server = Server::start(&["--max-manifest-bytes", "2000"]);
    let api = Api::new(&server);
    let r = api
        .put_manifest("app", "v1", OCI_MANIFEST, b"not json")
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let docker_v1 = br#"{"schemaVersion":1,"name":"app","tag":"v1","fsLayers":[]}"#;
    let r = api
        .put_manifest(
            "app",
            "v1",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            docker_v1,
        )
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // Content-Type contradicting the document's mediaType.
    let body = image_manifest(&sha256(b"c"), 1, &[], "");
    let r = api
        .put_manifest(
            "app",
            "v1",
            "application/vnd.docker.distribution.manifest.v2+json",
            body.as_bytes(),
        )
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // Over the configured size limit.
    let big = format!(r#"{{"schemaVersion":2,"pad":"{}"}}"#, "x".repeat(3000));
    let r = api
        .put_manifest("app", "v1", OCI_MANIFEST, big.as_bytes())
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
}

#[tokio::test]
async fn all_manifest_formats_are_stored_unconverted() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let (_, image_digest) = api.push_image("multi", "amd64", 10).await;
    let (image, _) = api.push_image("multi", "arm64", 11).await;
    let image_size = image.len();
    let arm_digest = sha256(&image);

    // OCI index whose child is missing.
    let missing = sha256(b"missing");
    let index = |children: &[(&str, usize)], media_type: &str, child_type: &str| {
        let entries: Vec<String> = children
            .iter()
            .map(|(d, s)| format!(r#"{{"mediaType":"{child_type}","digest":"{d}","size":{s},"platform":{{"architecture":"amd64","os":"linux"}}}}"#))
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{}]}}"#,
            entries.join(",")
        )
    };
    let bad = index(&[(&missing, 10)], OCI_INDEX, OCI_MANIFEST);
    let r = api
        .put_manifest("multi", "all", OCI_INDEX, bad.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");

    let good = index(
        &[(&image_digest, image_size), (&arm_digest, image_size)],
        OCI_INDEX,
        OCI_MANIFEST,
    );
    let r = api
        .put_manifest("multi", "all", OCI_INDEX, good.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    let r = api
        .http
        .get(api.url("/v2/multi/manifests/all"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(r.bytes().await.unwrap(), good.as_bytes());

    // BuildKit's registry cache (`--cache-to type=registry`): an index whose
    // entries are layer blobs and a cache config blob, not manifests.
    let layer = api.push_blob("multi", &noise(300, 12)).await;
    let cache_config = api.push_blob("multi", br#"{"layers":[]}"#).await;
    let cache = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":300}},{{"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":"{cache_config}","size":13}}]}}"#
    );
    let r = api
        .put_manifest("multi", "buildcache", OCI_INDEX, cache.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    // A blob of another repository is still no entry of this one.
    let elsewhere = api.push_blob("other", b"elsewhere").await;
    let foreign = index(&[(&elsewhere, 9)], OCI_INDEX, OCI_MANIFEST);
    let r = api
        .put_manifest("multi", "foreign", OCI_INDEX, foreign.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");

    // Docker schema 2 manifest and manifest list, with odd whitespace kept.
    const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    let config = api.push_blob("docker", br#"{"os":"linux"}"#).await;
    let layer = api.push_blob("docker", &noise(64, 4)).await;
    let docker = format!(
        "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{DOCKER}\",\n   \"config\": {{\"mediaType\": \"application/vnd.docker.container.image.v1+json\", \"size\": 14, \"digest\": \"{config}\"}},\n   \"layers\": [{{\"mediaType\": \"application/vnd.docker.image.rootfs.diff.tar.gzip\", \"size\": 64, \"digest\": \"{layer}\"}}]\n}}"
    );
    let r = api
        .put_manifest("docker", "v2", DOCKER, docker.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    let docker_digest = sha256(docker.as_bytes());
    let list = index(&[(&docker_digest, docker.len())], DOCKER_LIST, DOCKER);
    let r = api
        .put_manifest("docker", "list", DOCKER_LIST, list.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    for (tag, media_type, body) in [("v2", DOCKER, &docker), ("list", DOCKER_LIST, &list)] {
        let r = api
            .http
            .get(api.url(&format!("/v2/docker/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-type"), media_type);
        assert_eq!(r.bytes().await.unwrap(), body.as_bytes());
    }
}

#[tokio::test]
async fn artifacts_subjects_and_referrers() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let empty = api.push_blob("app", b"{}").await;
    let sbom = api.push_blob("app", b"sbom document").await;
    let sig = api.push_blob("app", b"signature").await;

    // The subject does not exist yet: still accepted, with OCI-Subject.
    let subject = sha256(b"future image");
    let artifact = |artifact_type: &str, layer: &str, annotation: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact_type}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{layer}","size":1}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":100}},"annotations":{{"note":"{annotation}"}}}}"#
        )
    };
    let sbom_manifest = artifact("application/vnd.example.sbom", &sbom, "s");
    let sig_manifest = artifact("application/vnd.example.signature", &sig, "g");
    for body in [&sbom_manifest, &sig_manifest] {
        let digest = sha256(body.as_bytes());
        let r = api
            .put_manifest("app", &digest, OCI_MANIFEST, body.as_bytes())
            .await;
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "oci-subject"), subject);
    }

    let r = api
        .http
        .get(api.url(&format!("/v2/app/referrers/{subject}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let index: serde_json::Value = r.json().await.unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let sbom_entry = manifests
        .iter()
        .find(|m| m["digest"] == sha256(sbom_manifest.as_bytes()))
        .unwrap();
    assert_eq!(sbom_entry["artifactType"], "application/vnd.example.sbom");
    assert_eq!(sbom_entry["size"], sbom_manifest.len());
    assert_eq!(sbom_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(sbom_entry["annotations"]["note"], "s");

    let r = api
        .http
        .get(api.url(&format!(
            "/v2/app/referrers/{subject}?artifactType=application/vnd.example.signature"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let index: serde_json::Value = r.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.signature"
    );

    // No referrers, or no repository: an empty index, never 404.
    for path in [
        format!("/v2/app/referrers/{}", sha256(b"none")),
        format!("/v2/nothing/referrers/{subject}"),
    ] {
        let r = api.http.get(api.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let index: serde_json::Value = r.json().await.unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 0);
    }
    let r = api
        .http
        .get(api.url("/v2/app/referrers/sha256:nothex"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

/// More referrers than fit in one manifest-sized index: pages linked with
/// `Link: <…>; rel="next"`, each within the manifest size limit, together
/// every referrer exactly once, the filter kept from page to page.
#[tokio::test]
async fn referrers_beyond_one_index_are_paginated() {
    const LIMIT: usize = 2048;
    let server = Server::start(&["--max-manifest-bytes", &LIMIT.to_string()]);
    let api = Api::new(&server);
    let empty = api.push_blob("app", b"{}").await;
    let layer = api.push_blob("app", b"x").await;
    let subject = sha256(b"signed image");
    let mut pushed: Vec<(String, &str)> = Vec::new();
    // More than one batch of the metadata reads behind a page, too.
    for i in 0..40 {
        let artifact_type = if i % 2 == 0 {
            "application/vnd.example.sbom"
        } else {
            "application/vnd.example.signature"
        };
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact_type}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{layer}","size":1}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":100}},"annotations":{{"note":"{i:03}-{}"}}}}"#,
            "n".repeat(120)
        );
        let digest = sha256(body.as_bytes());
        let r = api
            .put_manifest("app", &digest, OCI_MANIFEST, body.as_bytes())
            .await;
        assert_eq!(r.status(), 201);
        pushed.push((digest, artifact_type));
    }

    // Follows the links from `first`; returns each page's digests.
    let walk = |first: String| {
        let api = &api;
        async move {
            let mut pages: Vec<Vec<String>> = Vec::new();
            let mut next = Some(first);
            while let Some(path) = next.take() {
                assert!(pages.len() < 30, "the links never end");
                let r = api.http.get(api.url(&path)).send().await.unwrap();
                assert_eq!(r.status(), 200, "{path}");
                let filtered = r.headers().contains_key("oci-filters-applied");
                assert_eq!(filtered, path.contains("artifactType="), "{path}");
                next = r.headers().get("link").map(|link| {
                    let link = link.to_str().unwrap();
                    let target = link
                        .strip_prefix('<')
                        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                        .unwrap_or_else(|| panic!("Link {link:?}"));
                    target.to_owned()
                });
                let body = r.bytes().await.unwrap();
                assert!(body.len() <= LIMIT, "a page of {} bytes", body.len());
                let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(index["mediaType"], OCI_INDEX);
                pages.push(
                    index["manifests"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m["digest"].as_str().unwrap().to_owned())
                        .collect(),
                );
            }
            pages
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    let pages = walk(format!("/v2/app/referrers/{subject}")).await;
    assert!(pages.len() > 2, "{} pages", pages.len());
    assert!(pages.iter().all(|p| !p.is_empty()));
    let all: Vec<String> = pages.concat();
    assert_eq!(all, sorted(all.clone()), "pages continue in digest order");
    assert_eq!(all, sorted(pushed.iter().map(|(d, _)| d.clone()).collect()));

    let pages = walk(format!(
        "/v2/app/referrers/{subject}?artifactType=application/vnd.example.signature"
    ))
    .await;
    assert!(pages.len() > 1);
    assert_eq!(
        pages.concat(),
        sorted(
            pushed
                .iter()
                .filter(|(_, t)| *t == "application/vnd.example.signature")
                .map(|(d, _)| d.clone())
                .collect()
        )
    );

    let r = api
        .http
        .get(api.url(&format!("/v2/app/referrers/{subject}?last=page-2")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

#[tokio::test]
async fn tags_list_is_lexical_and_paginated() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let (manifest, _) = api.push_image("app", "b", 1).await;
    for tag in ["a", "C", "1.0", "a-b", "Z", "_x"] {
        let r = api.put_manifest("app", tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status(), 201);
    }
    let all = ["1.0", "C", "Z", "_x", "a", "a-b", "b"];
    let r = api
        .http
        .get(api.url("/v2/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("link").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["name"], "app");
    assert_eq!(body["tags"], serde_json::json!(all));

    let mut collected = Vec::new();
    let mut next = "/v2/app/tags/list?n=3".to_owned();
    loop {
        let r = api.http.get(api.url(&next)).send().await.unwrap();
        let link = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let body: serde_json::Value = r.json().await.unwrap();
        let tags = body["tags"].as_array().unwrap();
        assert!(tags.len() <= 3);
        collected.extend(tags.iter().map(|t| t.as_str().unwrap().to_owned()));
        match link {
            Some(link) => {
                assert!(link.ends_with(r#">; rel="next""#), "{link}");
                next = link[1..link.find('>').unwrap()].to_owned();
            }
            None => break,
        }
    }
    assert_eq!(collected, all);

    let r = api
        .http
        .get(api.url("/v2/app/tags/list?n=2&last=Z"))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tags"], serde_json::json!(["_x", "a"]));
    let r = api
        .http
        .get(api.url("/v2/app/tags/list?n=0"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tags"], serde_json::json!([]));
    let r = api
        .http
        .get(api.url("/v2/app/tags/list?last=b"))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tags"], serde_json::json!([]));
    let r = api
        .http
        .get(api.url("/v2/app/tags/list?n=many"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "UNSUPPORTED");

    let r = api
        .http
        .get(api.url("/v2/unknown/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_is_paginated() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    for repo in ["b/x", "a", "c", "b"] {
        api.push_blob(repo, repo.as_bytes()).await;
    }
    let r = api.http.get(api.url("/v2/_catalog")).send().await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["repositories"],
        serde_json::json!(["a", "b", "b/x", "c"])
    );
    let r = api
        .http
        .get(api.url("/v2/_catalog?n=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["link"],
        r#"</v2/_catalog?n=2&last=b>; rel="next""#
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["repositories"], serde_json::json!(["a", "b"]));
    let r = api
        .http
        .get(api.url("/v2/_catalog?n=2&last=b"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["repositories"], serde_json::json!(["b/x", "c"]));
}

#[tokio::test]
async fn deleting_tags_manifests_and_blobs() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let (manifest, digest) = api.push_image("app", "v1", 5).await;
    api.put_manifest("app", "v2", OCI_MANIFEST, &manifest).await;

    // Deleting a tag leaves the manifest and other tags.
    let r = api
        .http
        .delete(api.url("/v2/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = api
        .http
        .get(api.url("/v2/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = api
        .http
        .get(api.url("/v2/app/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = api
        .http
        .delete(api.url("/v2/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    // Deleting by digest removes the manifest and its tags.
    let r = api
        .http
        .delete(api.url(&format!("/v2/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    for reference in ["v2", digest.as_str()] {
        let r = api
            .http
            .get(api.url(&format!("/v2/app/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let body: serde_json::Value = api
        .http
        .get(api.url("/v2/app/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["tags"], serde_json::json!([]));

    let blob = api.push_blob("app", b"to delete").await;
    let r = api
        .http
        .delete(api.url(&format!("/v2/app/blobs/{blob}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = api
        .http
        .get(api.url(&format!("/v2/app/blobs/{blob}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = api
        .http
        .delete(api.url(&format!("/v2/app/blobs/{blob}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    // Its bytes stay until a collection finds nothing uses them.
    assert!(server.stored.has_blob(&blob));
    let report = api.gc(false, Some(0)).await;
    assert!(
        report["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["digest"] == blob.as_str()),
        "{report}"
    );
    assert!(!server.stored.has_blob(&blob));
}

#[tokio::test]
async fn a_blob_shared_by_two_repositories_survives_one_delete() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let blob = api.push_blob("one", b"shared").await;
    api.push_blob("two", b"shared").await;
    let r = api
        .http
        .delete(api.url(&format!("/v2/one/blobs/{blob}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = api
        .http
        .get(api.url(&format!("/v2/two/blobs/{blob}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"shared"[..]);
}

#[tokio::test]
async fn deletion_can_be_disabled() {
    let server = Server::start(&["--delete-enabled", "false"]);
    let api = Api::new(&server);
    let (_, digest) = api.push_image("app", "v1", 6).await;
    for path in [
        "/v2/app/manifests/v1".to_owned(),
        format!("/v2/app/manifests/{digest}"),
        format!("/v2/app/blobs/{}", sha256(b"x")),
    ] {
        let r = api.http.delete(api.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(error_code(r).await, "UNSUPPORTED");
    }
    let r = api
        .http
        .get(api.url("/v2/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn abandoned_uploads_expire() {
    let server = Server::start(&["--upload-ttl", "2s"]);
    let api = Api::new(&server);
    let r = api
        .http
        .post(api.url("/v2/a/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = header(&r, "location").to_owned();
    api.http
        .patch(api.url(&location))
        .body(vec![0u8; 4096])
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = api.http.get(api.url(&location)).send().await.unwrap();
        if r.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "upload never expired");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(server.stored.count_under("uploads"), 0);

    // A chunk that streams in for longer than the time to live is in use,
    // not abandoned: the upload survives it and closes.
    let (_, tx, patch) = streamed_patch(&api, "a").await;
    let mut content = Vec::new();
    for i in 0..10u8 {
        let chunk = vec![i; 1000];
        content.extend_from_slice(&chunk);
        tx.send(Ok(chunk)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    drop(tx);
    let r = patch.await.unwrap().unwrap();
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_owned();
    let digest = sha256(&content);
    let r = api
        .http
        .put(api.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the upload was expired mid-stream");
}

#[tokio::test]
async fn json_access_log_has_one_line_per_request() {
    // This test's requests come as through an ingress (loopback trusted).
    let server = Server::start(&["--log-format", "json", "--trusted-proxy", "127.0.0.1"]);
    let api = Api::new(&server);
    api.http
        .get(api.url("/v2/app/tags/list"))
        .send()
        .await
        .unwrap();
    let line = server.wait_for_log(|lines| {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["path"] == "/v2/app/tags/list")
    });
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 404);
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    assert!(line["duration_ms"].is_number());
    // Who, from where, with what, under which id.
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["subject"], "admin");
    assert!(line["user_agent"].is_string());
    assert_eq!(line["request_id"].as_str().unwrap().len(), 32);

    // An ingress's plain request id is kept and sent back; pulls are
    // audited; probes log at debug level only.
    let (_, digest) = api.push_image("app", "v1", 3).await;
    let response = api
        .http
        .get(api.url("/v2/app/manifests/v1"))
        .header("x-request-id", "ingress-7f3a")
        .header("user-agent", "containerd/2.0")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-request-id"), "ingress-7f3a");
    api.http.get(api.url("/healthz")).send().await.unwrap();
    let json = |lines: &[String]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let pull = server.wait_for_log(|lines| json(lines).into_iter().find(|l| l["event"] == "pull"));
    assert_eq!(pull["repository"], "app");
    assert_eq!(pull["reference"], "v1");
    assert_eq!(pull["digest"], digest);
    let line = server.wait_for_log(|lines| {
        json(lines)
            .into_iter()
            .find(|l| l["request_id"] == "ingress-7f3a")
    });
    assert_eq!(line["user_agent"], "containerd/2.0");
    assert!(
        !json(&server.log()).iter().any(|l| l["path"] == "/healthz"),
        "probes are at debug level"
    );
}

/// `/metrics`: requests by endpoint, method and status, what the store
/// holds, collections, refused logins; on the registry's port and, with
/// `--metrics-addr`, alone on another.
#[tokio::test]
async fn metrics_count_requests_storage_collections_and_logins() {
    let metrics_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let server = Server::start(&["--metrics-addr", &metrics_addr]);
    let api = Api::new(&server);
    api.push_image("app", "v1", 4).await;
    let wrong = Api::with_credentials(&server, "admin", "wrong");
    wrong.http.get(wrong.url("/v2/")).send().await.unwrap();
    api.gc(false, Some(3600)).await;
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "berth_http_requests_total{endpoint=\"manifest\",method=\"PUT\",status=\"201\"} 1",
        "berth_http_requests_total{endpoint=\"uploads\",method=\"POST\",status=\"201\"} 2",
        "berth_storage_objects{kind=\"manifests\"} 1",
        "berth_storage_objects{kind=\"tags\"} 1",
        "berth_gc_runs_total 1",
        "berth_logins_refused_total{kind=\"credentials\"} 1",
    ] {
        assert!(text.contains(expected), "{expected} not in:\n{text}");
    }
    // Every metric the Grafana dashboard queries is one berth exports.
    let dashboard = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/grafana/berth-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let queried: std::collections::BTreeSet<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .flat_map(|target| {
            let expr = target["expr"].as_str().unwrap();
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("berth_"))
                .map(|word| {
                    ["_total", "_bucket"]
                        .iter()
                        .fold(word, |w, suffix| w.strip_suffix(suffix).unwrap_or(w))
                        .to_owned()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(queried.len() > 10, "{queried:?}");
    for family in &queried {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {family}, which /metrics does not have"
        );
    }

    // Only the metrics there; and the registry's port has them too.
    let other = reqwest::get(format!("http://{metrics_addr}/v2/"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let on_main = api.http.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(on_main.status(), 200);
    // On the registry's port, for administrators only: it would otherwise
    // go out through the ingress.
    let anonymous = Api::anonymous(&server);
    let refused = anonymous
        .http
        .get(anonymous.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

/// Whatever read berth's log is gone (a closed pipe): berth goes on
/// serving, and SIGTERM still stops it (reporting the failed write panicked
/// in the task that logged, the shutdown's too, and berth never stopped).
#[tokio::test]
async fn a_closed_log_stops_neither_requests_nor_the_shutdown() {
    let mut server = Server::start(&[]);
    let api = Api::new(&server);
    server.close_log();
    for i in 0..3 {
        // Each logs a line; the first closes the pipe, the others hit it.
        api.push_blob("team/app", format!("blob {i}").as_bytes())
            .await;
    }
    server.sigterm();
    let status = server
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("berth exits");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_then_exits() {
    // On disk: the test sees the chunk arrive in the upload's file.
    let mut server = Server::start_on_disk(&[]);
    let api = Api::new(&server);
    // A slow streamed chunk: the first half now, the rest after SIGTERM.
    // Halves of 1 MiB, so the first reaches the disk past the writer's
    // buffer and its arrival can be seen there.
    const HALF: usize = 1 << 20;
    let (location, tx, request) = streamed_patch(&api, "a").await;
    tx.send(Ok(vec![1; HALF])).await.unwrap();
    let id = location.rsplit('/').next().unwrap();
    let upload = server.data_dir.join("uploads").join(id);
    wait_until("the first half reaches the disk", || {
        std::fs::metadata(&upload).is_ok_and(|m| m.len() >= HALF as u64 / 2)
    })
    .await;
    server.sigterm();
    server.wait_for_line("shutting down: finishing requests in flight");
    tx.send(Ok(vec![2; HALF])).await.unwrap();
    drop(tx);
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(header(&response, "range"), format!("0-{}", 2 * HALF - 1));
    let status = server
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("berth exits");
    assert!(status.success(), "{status}");
    assert!(server.log().iter().any(|l| l.contains("berth stopped")));
}

/// Waits (20 s at most) until `done` says so.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A client that stops sending mid-body is cut off after the body timeout
/// instead of holding its connection open; what it sent is kept, and the
/// upload resumes from there.
#[tokio::test]
async fn a_stalled_body_is_ended_and_the_upload_resumes() {
    let server = Server::start(&["--body-timeout", "1s"]);
    let api = Api::new(&server);
    let (location, tx, patch) = streamed_patch(&api, "a").await;
    tx.send(Ok(vec![7; 1000])).await.unwrap();
    // Then nothing, for longer than the timeout; the sender stays open.
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), patch)
        .await
        .expect("the server ended the stalled request")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), 400);
    // The rest of the body may still come, so the connection is not reused.
    assert_eq!(header(&answer, "connection"), "close");
    assert_eq!(error_code(answer).await, "BLOB_UPLOAD_INVALID");
    drop(tx);

    // The session says how far it got; the client goes on from there.
    let r = api.http.get(api.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range"), "0-999");
    let r = api
        .http
        .patch(api.url(&location))
        .header("content-range", "1000-1999")
        .body(vec![8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut content = vec![7; 1000];
    content.extend_from_slice(&[8; 1000]);
    let r = api
        .http
        .put(api.url(&format!(
            "{}?digest={}",
            header(&r, "location"),
            sha256(&content)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// Answers to requests whose bodies were read to the end (or that had none)
/// keep the connection; one answered before its body was read closes it,
/// since the rest of that body is still on the way.
#[tokio::test]
async fn connections_are_kept_unless_a_body_is_left_unread() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let keeps = |r: &reqwest::Response, what: &str| {
        assert!(r.headers().get("connection").is_none(), "{what}: {r:?}");
    };
    let r = api.http.get(api.url("/v2/")).send().await.unwrap();
    keeps(&r, "GET /v2/");
    let (_, digest) = api.push_image("keep/app", "v1", 5).await;
    let manifest = api.url(&format!("/v2/keep/app/manifests/{digest}"));
    let r = api.http.head(&manifest).send().await.unwrap();
    keeps(&r, "HEAD manifest");
    let r = api.http.get(&manifest).send().await.unwrap();
    keeps(&r, "GET manifest");

    // A chunked upload: an empty POST, a streamed PATCH, an empty PUT.
    let (location, tx, patch) = streamed_patch(&api, "keep/app").await;
    tx.send(Ok(vec![4; 3000])).await.unwrap();
    drop(tx);
    let r = patch.await.unwrap().unwrap();
    assert_eq!(r.status(), 202);
    keeps(&r, "streamed PATCH");
    let r = api
        .http
        .put(api.url(&format!("{location}?digest={}", sha256(&[4; 3000]))))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    keeps(&r, "closing PUT");
    let r = api
        .http
        .get(api.url("/token?service=berth&scope=repository:keep/app:pull"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    keeps(&r, "GET /token");

    // Refused before the body is read: the connection is not reused.
    let anonymous = Api::anonymous(&server);
    let r = anonymous
        .http
        .put(api.url("/v2/keep/app/manifests/v2"))
        .header("content-type", OCI_MANIFEST)
        .body(vec![b' '; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "connection"), "close");
}

/// Connections that send no request head for the idle timeout are closed,
/// whether silent from the start, idle after a request or trickling a head
/// in; a request whose body takes longer than that is not cut.
#[tokio::test]
async fn idle_and_trickling_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&["--idle-timeout", "2s"]);
    let silent = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let mut trickling = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    trickling
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    // Meanwhile an upload slower than the idle timeout goes on.
    let api = Api::new(&server);
    let (_, tx, patch) = streamed_patch(&api, "slow").await;
    for _ in 0..5 {
        tx.send(Ok(vec![1; 100])).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    drop(tx);
    let r = patch.await.unwrap().unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-499");

    let connections = [("silent", silent), ("trickling", trickling), ("idle", idle)];
    for (what, mut connection) in connections {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            connection.read_to_end(&mut rest),
        )
        .await;
        assert!(closed.is_ok(), "the {what} connection is still open");
    }
}

/// A chunk to feed a [`streamed_patch`].
#[tokio::test]
async fn a_second_server_on_the_same_directory_is_refused() {
    // Replicas on shared stores take no lock: the data directory's is for
    // the embedded ones.
    let server = Server::start_on_disk(&[]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another berth is already serving"),
        "{stderr}"
    );
}
