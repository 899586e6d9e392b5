//! The OCI distribution-spec conformance suite (v1.1.1), spec for spec.
//!
//! The suite's four workflows (pull, push, content discovery, content
//! management) run here in its order against one berth, with its data
//! shaped as it shapes it (tab-indented JSON with fields berth does not
//! know, `null`s, inline `data`, a manifest without `mediaType`) and its
//! requests sent as its Go client sends them (no body on GET, bodyless
//! closing PUTs, query strings appended to the upload `Location`). Each
//! check accepts exactly the statuses the suite accepts and reads the same
//! headers and fields, named by the suite's own spec text, so any behaviour
//! the suite would fail on fails here first.

use reqwest::{Method, Response};

use serde_json::Value;

use crate::common::{Api, OCI_INDEX, OCI_MANIFEST, Server, noise, sha256};

const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// sha256("hello world"): the suite's digest of a blob that is never pushed.
const DUMMY_DIGEST: &str =
    "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
const NONEXISTENT_MANIFEST: &str = ".INVALID_MANIFEST_NAME";
const ANNOTATION: &str = "org.opencontainers.conformance.test";
const ARTIFACT_TYPE_A: &str = "application/vnd.nhl.peanut.butter.bagel";
const ARTIFACT_TYPE_B: &str = "application/vnd.nba.strawberry.jam.croissant";
const NAMESPACE: &str = "conformance/test";
const CROSSMOUNT_NAMESPACE: &str = "conformance/crossmount";

/// A blob or manifest: its bytes and digest.
#[derive(Clone)]
struct Content {
    bytes: Vec<u8>,
    digest: String,
}

impl Content {
    fn new(bytes: Vec<u8>) -> Self {
        let digest = sha256(&bytes);
        Content { bytes, digest }
    }
}

/// A descriptor as the suite's Go types write it: `newUnspecifiedField`
/// has no `omitempty`, so it is `null` wherever nothing sets it.
fn descriptor(media_type: &str, content: &Content, extra: &[(&str, Value)]) -> Value {
    let mut fields = vec![
        ("mediaType", Value::from(media_type)),
        ("digest", Value::from(content.digest.as_str())),
        ("size", Value::from(content.bytes.len())),
    ];
    fields.extend(extra.iter().cloned());
    if !extra.iter().any(|(k, _)| *k == "newUnspecifiedField") {
        fields.push(("newUnspecifiedField", Value::Null));
    }
    object(fields)
}

/// A JSON object with its fields in the order given.
fn object(fields: Vec<(&str, Value)>) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// Go's `json.MarshalIndent(v, "", "\t")`: tab-indented, fields in order.
fn go_json(value: &Value) -> Vec<u8> {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer).unwrap();
    out
}

/// The suite's test data (setup.go), for one run.
struct Data {
    configs: Vec<Content>,
    layer: Content,
    manifests: Vec<Content>,
    empty_layer_manifest: Content,
    blob_a: Content,
    blob_b: Content,
    ref_blob_a: Content,
    ref_blob_b: Content,
    empty_json: Content,
    referrers: Referrers,
}

struct Referrers {
    a_config: Content,
    a_layer: Content,
    b_config: Content,
    b_layer: Content,
    c_layer: Content,
    index: Content,
}

impl Data {
    fn new() -> Self {
        let configs: Vec<Content> = (0..5)
            .map(|i| {
                Content::new(go_json(&object(vec![
                    ("author", Value::from(format!("conformance-{i}-author"))),
                    ("architecture", "amd64".into()),
                    ("os", "linux".into()),
                    (
                        "rootfs",
                        object(vec![
                            ("type", "layers".into()),
                            ("diff_ids", Value::Array(vec![])),
                        ]),
                    ),
                ])))
            })
            .collect();
        let layer = Content::new(noise(168, 7));
        let image = |config: &Content, layers: Vec<Value>, media_type: bool| {
            let config_descriptor = descriptor(
                CONFIG_TYPE,
                config,
                &[
                    ("data", base64(&config.bytes).into()),
                    ("newUnspecifiedField", "aGVsbG8gd29ybGQ=".into()),
                ],
            );
            let mut fields = vec![("schemaVersion", Value::from(2))];
            if media_type {
                fields.push(("mediaType", OCI_MANIFEST.into()));
            }
            fields.push(("config", config_descriptor));
            fields.push(("layers", Value::Array(layers)));
            Content::new(go_json(&object(fields)))
        };
        let manifests: Vec<Content> = configs
            .iter()
            .map(|c| image(c, vec![descriptor(LAYER_TYPE, &layer, &[])], true))
            .collect();
        let empty_layer_manifest = image(&configs[1], vec![], false);
        let empty_json = Content::new(b"{}".to_vec());
        assert_eq!(empty_json.digest, EMPTY_DIGEST);
        let ref_blob_a = Content::new(b"NHL Peanut Butter on my NHL bagel".to_vec());
        let ref_blob_b = Content::new(b"NBA Strawberry Jam on my NBA croissant".to_vec());
        let subject = |m: &Content| descriptor(OCI_MANIFEST, m, &[]);
        let annotations = |text: &str| object(vec![(ANNOTATION, Value::from(text))]);
        // An artifact whose type is its config's media type.
        let config_artifact = |artifact_type: &str, blob: &Content, note: &str| {
            Content::new(go_json(&object(vec![
                ("schemaVersion", 2.into()),
                ("mediaType", OCI_MANIFEST.into()),
                ("config", descriptor(artifact_type, blob, &[])),
                (
                    "layers",
                    Value::Array(vec![descriptor(EMPTY_TYPE, &empty_json, &[])]),
                ),
                ("subject", subject(&manifests[4])),
                ("annotations", annotations(note)),
            ])))
        };
        // An artifact with an `artifactType` and the empty config.
        let layer_artifact =
            |artifact_type: &str, blob: &Content, subject_of: &Content, note: Option<&str>| {
                let mut fields = vec![
                    ("schemaVersion", Value::from(2)),
                    ("mediaType", OCI_MANIFEST.into()),
                    ("artifactType", artifact_type.into()),
                    ("config", descriptor(EMPTY_TYPE, &empty_json, &[])),
                    (
                        "layers",
                        Value::Array(vec![descriptor(artifact_type, blob, &[])]),
                    ),
                    ("subject", subject(subject_of)),
                ];
                fields.extend(note.map(|n| ("annotations", annotations(n))));
                Content::new(go_json(&object(fields)))
            };
        let a_config = config_artifact(ARTIFACT_TYPE_A, &ref_blob_a, "test config a");
        let b_config = config_artifact(ARTIFACT_TYPE_B, &ref_blob_b, "test config b");
        let a_layer = layer_artifact(
            ARTIFACT_TYPE_A,
            &ref_blob_a,
            &manifests[4],
            Some("test layer a"),
        );
        let b_layer = layer_artifact(
            ARTIFACT_TYPE_B,
            &ref_blob_b,
            &manifests[4],
            Some("test layer b"),
        );
        let c_layer = layer_artifact(ARTIFACT_TYPE_B, &ref_blob_b, &manifests[3], None);
        let index = Content::new(go_json(&object(vec![
            ("schemaVersion", 2.into()),
            ("mediaType", OCI_INDEX.into()),
            ("artifactType", "application/vnd.food.stand".into()),
            (
                "manifests",
                Value::Array(vec![
                    descriptor(OCI_MANIFEST, &a_config, &[]),
                    descriptor(OCI_MANIFEST, &a_layer, &[]),
                ]),
            ),
            ("subject", subject(&manifests[4])),
            ("annotations", annotations("test index")),
        ])));
        Data {
            configs,
            layer,
            manifests,
            empty_layer_manifest,
            blob_a: Content::new(noise(42, 1)),
            blob_b: Content::new(noise(42, 2)),
            ref_blob_a,
            ref_blob_b,
            empty_json,
            referrers: Referrers {
                a_config,
                a_layer,
                b_config,
                b_layer,
                c_layer,
                index,
            },
        }
    }

    /// The annotation each referrer of manifests[4] carries.
    fn annotation_of(&self, digest: &str) -> Option<&'static str> {
        let r = &self.referrers;
        [
            (&r.a_config, "test config a"),
            (&r.b_config, "test config b"),
            (&r.a_layer, "test layer a"),
            (&r.b_layer, "test layer b"),
            (&r.index, "test index"),
        ]
        .into_iter()
        .find(|(content, _)| content.digest == digest)
        .map(|(_, note)| note)
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The suite's client: requests as reggie sends them.
struct Suite {
    api: Api,
}

/// A response, read whole.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    request: String,
}

impl Answer {
    async fn read(response: Response) -> Self {
        let request = format!(
            "{} {}",
            response.url().path(),
            response.url().query().unwrap_or("")
        );
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
            request,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The path and query of `Location`, as the suite follows it.
    fn location(&self) -> String {
        let value = self.header("location").expect("a Location header");
        assert!(!value.is_empty(), "an empty Location");
        match value.split_once("://") {
            Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_owned(),
            None => value.to_owned(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Fails unless `answer` has one of the `accepted` statuses.
#[track_caller]
fn expect(spec: &str, answer: &Answer, accepted: &[u16]) {
    assert!(
        accepted.contains(&answer.status),
        "{spec}: {} answered {}, the suite accepts {accepted:?}",
        answer.request,
        answer.status
    );
}

const SUCCESS: [u16; 3] = [200, 201, 202];
/// What teardowns accept.
const GONE: [u16; 6] = [200, 201, 202, 204, 404, 405];

impl Suite {
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.api.http.request(method.clone(), self.api.url(path));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        // Go sends no body on GET and HEAD, and a Content-Length of 0 for
        // bodyless PUT, POST and PATCH.
        if method != Method::GET && method != Method::HEAD {
            request = request.body(body.map(<[u8]>::to_vec).unwrap_or_default());
        }
        Answer::read(request.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None, &[]).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None, None, &[]).await
    }

    /// `loc` with `params` appended as Go's `url.Values` encodes them.
    fn with_query(loc: &str, params: &[(&str, &str)]) -> String {
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        let mut params = params.to_vec();
        params.sort();
        for (k, v) in params {
            encoded.append_pair(k, v);
        }
        let separator = if loc.contains('?') { '&' } else { '?' };
        format!("{loc}{separator}{}", encoded.finish())
    }

    /// The setup's blob push: `POST` a session, then `PUT ?digest=` with it.
    async fn push_blob(&self, spec: &str, name: &str, blob: &Content) {
        let post = self
            .send(
                Method::POST,
                &format!("/v2/{name}/blobs/uploads/"),
                None,
                None,
                &[],
            )
            .await;
        let put = self
            .send(
                Method::PUT,
                &Self::with_query(&post.location(), &[("digest", &blob.digest)]),
                Some("application/octet-stream"),
                Some(&blob.bytes),
                &[],
            )
            .await;
        expect(spec, &put, &SUCCESS);
    }

    async fn put_manifest(&self, reference: &str, media_type: &str, m: &Content) -> Answer {
        self.send(
            Method::PUT,
            &format!("/v2/{NAMESPACE}/manifests/{reference}"),
            Some(media_type),
            Some(&m.bytes),
            &[],
        )
        .await
    }

    /// `tags/list` with `query`, and its tags when it answered 200.
    async fn tags(&self, query: &str) -> (Answer, Vec<String>) {
        let answer = self.get(&format!("/v2/{NAMESPACE}/tags/list{query}")).await;
        let tags = if answer.status == 200 {
            answer.json()["tags"]
                .as_array()
                .map(|tags| {
                    tags.iter()
                        .map(|t| t.as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        (answer, tags)
    }

    /// The referrers of `digest`, after the suite's checks of the status
    /// and the exact Content-Type.
    async fn referrers(&self, spec: &str, digest: &str, query: &str) -> (Answer, Vec<Value>) {
        let answer = self
            .get(&format!("/v2/{NAMESPACE}/referrers/{digest}{query}"))
            .await;
        expect(spec, &answer, &[200]);
        assert_eq!(
            answer.header("content-type"),
            Some(OCI_INDEX),
            "{spec}: Content-Type"
        );
        let manifests = answer.json()["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (answer, manifests)
    }
}

#[tokio::test]
async fn the_v1_1_1_conformance_suite_in_its_order() {
    let server = Server::start(&[]);
    let suite = Suite {
        api: Api::new(&server),
    };
    let data = Data::new();
    pull(&suite, &data).await;
    push(&suite, &data).await;
    discovery(&suite, &data).await;
    management(&suite, &data).await;
}

async fn pull(s: &Suite, d: &Data) {
    let ns = NAMESPACE;
    let populate = "Pull: Populate registry with test blob";
    s.push_blob(populate, ns, &d.configs[0]).await;
    s.push_blob(populate, ns, &d.configs[1]).await;
    s.push_blob("Pull: Populate registry with test layer", ns, &d.layer)
        .await;
    let tag = "tagtest0";
    let r = s.put_manifest(tag, OCI_MANIFEST, &d.manifests[0]).await;
    expect("Pull: Populate registry with test manifest", &r, &SUCCESS);
    let r = s
        .put_manifest(&d.manifests[1].digest, OCI_MANIFEST, &d.manifests[1])
        .await;
    expect("Pull: Populate registry with test manifest", &r, &SUCCESS);

    let r = s
        .send(
            Method::HEAD,
            &format!("/v2/{ns}/blobs/{DUMMY_DIGEST}"),
            None,
            None,
            &[],
        )
        .await;
    expect(
        "HEAD request to nonexistent blob should result in 404 response",
        &r,
        &[404],
    );
    let r = s
        .send(
            Method::HEAD,
            &format!("/v2/{ns}/blobs/{}", d.configs[0].digest),
            None,
            None,
            &[],
        )
        .await;
    let spec = "HEAD request to existing blob should yield 200";
    expect(spec, &r, &[200]);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(d.configs[0].digest.as_str()),
        "{spec}"
    );
    let r = s.get(&format!("/v2/{ns}/blobs/{DUMMY_DIGEST}")).await;
    expect(
        "GET nonexistent blob should result in 404 response",
        &r,
        &[404],
    );
    let r = s
        .get(&format!("/v2/{ns}/blobs/{}", d.configs[0].digest))
        .await;
    expect(
        "GET request to existing blob URL should yield 200",
        &r,
        &[200],
    );

    let r = s
        .send(
            Method::HEAD,
            &format!("/v2/{ns}/manifests/{NONEXISTENT_MANIFEST}"),
            None,
            None,
            &[],
        )
        .await;
    expect(
        "HEAD request to nonexistent manifest should return 404",
        &r,
        &[404],
    );
    for (i, spec) in [
        (
            0,
            "HEAD request to manifest[0] path (digest) should yield 200 response",
        ),
        (
            1,
            "HEAD request to manifest[1] path (digest) should yield 200 response",
        ),
    ] {
        let digest = &d.manifests[i].digest;
        let r = s
            .send(
                Method::HEAD,
                &format!("/v2/{ns}/manifests/{digest}"),
                None,
                None,
                &[("accept", OCI_MANIFEST)],
            )
            .await;
        expect(spec, &r, &[200]);
        assert_eq!(
            r.header("docker-content-digest"),
            Some(digest.as_str()),
            "{spec}"
        );
    }
    let spec = "HEAD request to manifest path (tag) should yield 200 response";
    let r = s
        .send(
            Method::HEAD,
            &format!("/v2/{ns}/manifests/{tag}"),
            None,
            None,
            &[("accept", OCI_MANIFEST)],
        )
        .await;
    expect(spec, &r, &[200]);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(d.manifests[0].digest.as_str()),
        "{spec}"
    );
    let r = s
        .get(&format!("/v2/{ns}/manifests/{NONEXISTENT_MANIFEST}"))
        .await;
    expect("GET nonexistent manifest should return 404", &r, &[404]);
    for (reference, spec) in [
        (
            &d.manifests[0].digest,
            "GET request to manifest[0] path (digest) should yield 200 response",
        ),
        (
            &d.manifests[1].digest,
            "GET request to manifest[1] path (digest) should yield 200 response",
        ),
    ] {
        let r = s.get(&format!("/v2/{ns}/manifests/{reference}")).await;
        expect(spec, &r, &[200]);
    }
    let r = s.get(&format!("/v2/{ns}/manifests/{tag}")).await;
    expect(
        "GET request to manifest path (tag) should yield 200 response",
        &r,
        &[200],
    );

    let spec = "400 response body should contain OCI-conforming JSON message";
    let r = s
        .send(
            Method::GET,
            &format!("/v2/{ns}/manifests/sha256:totallywrong"),
            Some(OCI_MANIFEST),
            None,
            &[],
        )
        .await;
    expect(spec, &r, &[400, 404]);
    if r.status == 400 {
        let body = r.json();
        let code = body["errors"][0]["code"].as_str().unwrap_or("");
        assert!(
            [
                "DIGEST_INVALID",
                "MANIFEST_INVALID",
                "MANIFEST_UNKNOWN",
                "NAME_INVALID"
            ]
            .contains(&code),
            "{spec}: {code}"
        );
    }

    // Teardown, manifests before blobs (the suite's default).
    for m in &d.manifests[..2] {
        let r = s.delete(&format!("/v2/{ns}/manifests/{}", m.digest)).await;
        expect(
            "Delete manifest created in setup",
            &r,
            &[200, 201, 202, 204, 405],
        );
    }
    for blob in [&d.configs[0], &d.configs[1], &d.layer] {
        let r = s.delete(&format!("/v2/{ns}/blobs/{}", blob.digest)).await;
        expect("Delete blob created in setup", &r, &GONE);
    }
}

async fn push(s: &Suite, d: &Data) {
    let ns = NAMESPACE;
    let uploads = format!("/v2/{ns}/blobs/uploads/");
    let octets = Some("application/octet-stream");

    // Blob Upload Streamed.
    let post = s.send(Method::POST, &uploads, None, None, &[]).await;
    let r = s
        .send(
            Method::PATCH,
            &post.location(),
            octets,
            Some(&d.blob_a.bytes),
            &[],
        )
        .await;
    expect(
        "PATCH request with blob in body should yield 202 response",
        &r,
        &[202],
    );
    let put = Suite::with_query(&r.location(), &[("digest", &d.blob_a.digest)]);
    let r = s.send(Method::PUT, &put, octets, None, &[]).await;
    expect(
        "PUT request to session URL with digest should yield 201 response",
        &r,
        &[201],
    );
    r.location();

    // Blob Upload Monolithic.
    let r = s.get(&format!("/v2/{ns}/blobs/{DUMMY_DIGEST}")).await;
    expect(
        "GET nonexistent blob should result in 404 response",
        &r,
        &[404],
    );
    let config = &d.configs[1];
    let r = s
        .send(
            Method::POST,
            &Suite::with_query(&uploads, &[("digest", &config.digest)]),
            octets,
            Some(&config.bytes),
            &[],
        )
        .await;
    expect(
        "POST request with digest and blob should yield a 201 or 202",
        &r,
        &[201, 202],
    );
    r.location();
    let monolithic = r.status;
    let r = s.get(&format!("/v2/{ns}/blobs/{}", config.digest)).await;
    let spec =
        "GET request to blob URL from prior request should yield 200 or 404 based on response code";
    expect(spec, &r, if monolithic == 202 { &[404] } else { &[200] });
    let post = s.send(Method::POST, &uploads, None, None, &[]).await;
    expect("POST request should yield a session ID", &post, &[202]);
    let put = Suite::with_query(&post.location(), &[("digest", &config.digest)]);
    let r = s
        .send(Method::PUT, &put, octets, Some(&config.bytes), &[])
        .await;
    expect(
        "PUT upload of a blob should yield a 201 Response",
        &r,
        &[201],
    );
    r.location();
    let r = s.get(&format!("/v2/{ns}/blobs/{}", config.digest)).await;
    expect(
        "GET request to existing blob should yield 200 response",
        &r,
        &[200],
    );
    let post = s.send(Method::POST, &uploads, None, None, &[]).await;
    let put = Suite::with_query(&post.location(), &[("digest", &d.layer.digest)]);
    let r = s
        .send(Method::PUT, &put, octets, Some(&d.layer.bytes), &[])
        .await;
    expect(
        "PUT upload of a layer blob should yield a 201 Response",
        &r,
        &[201],
    );
    r.location();
    let r = s.get(&format!("/v2/{ns}/blobs/{}", d.layer.digest)).await;
    expect(
        "GET request to existing layer should yield 200 response",
        &r,
        &[200],
    );

    // Blob Upload Chunked: 22 + 20 bytes.
    let (chunk1, chunk2) = d.blob_b.bytes.split_at(22);
    let post = s.send(Method::POST, &uploads, None, None, &[]).await;
    assert!(
        post.header("oci-chunk-min-length").is_none(),
        "berth takes chunks of any size"
    );
    let r = s
        .send(
            Method::PATCH,
            &post.location(),
            octets,
            Some(chunk2),
            &[("content-range", "22-41")],
        )
        .await;
    expect("Out-of-order blob upload should return 416", &r, &[416]);
    let post = s.send(Method::POST, &uploads, None, None, &[]).await;
    let first = post.location();
    let r = s
        .send(
            Method::PATCH,
            &first,
            octets,
            Some(chunk1),
            &[("content-range", "0-21")],
        )
        .await;
    let spec = "PATCH request with first chunk should return 202";
    expect(spec, &r, &[202]);
    assert_eq!(r.header("range"), Some("0-21"), "{spec}");
    let r = s
        .send(
            Method::PATCH,
            &first,
            octets,
            Some(chunk1),
            &[("content-range", "0-21")],
        )
        .await;
    expect("Retry previous blob chunk should return 416", &r, &[416]);
    let r = s.get(&first).await;
    let spec = "Get on stale blob upload should return 204 with a range and location";
    expect(spec, &r, &[204]);
    assert_eq!(r.header("range"), Some("0-21"), "{spec}");
    let next = r.location();
    let r = s
        .send(
            Method::PATCH,
            &next,
            octets,
            Some(chunk2),
            &[("content-range", "22-41")],
        )
        .await;
    expect(
        "PATCH request with second chunk should return 202",
        &r,
        &[202],
    );
    let put = Suite::with_query(&r.location(), &[("digest", &d.blob_b.digest)]);
    let r = s.send(Method::PUT, &put, octets, None, &[]).await;
    expect("PUT request with digest should return 201", &r, &[201]);
    r.location();

    // Cross-Repository Blob Mount.
    let xns = CROSSMOUNT_NAMESPACE;
    let x_uploads = format!("/v2/{xns}/blobs/uploads/");
    let r = s
        .send(
            Method::POST,
            &Suite::with_query(&x_uploads, &[("mount", DUMMY_DIGEST)]),
            None,
            None,
            &[],
        )
        .await;
    expect(
        "Cross-mounting of a blob without the from argument should yield session id",
        &r,
        &[202],
    );
    r.location();
    let r = s
        .send(
            Method::POST,
            &Suite::with_query(&x_uploads, &[("mount", &d.blob_a.digest), ("from", ns)]),
            None,
            None,
            &[],
        )
        .await;
    expect(
        "POST request to mount another repository's blob should return 201 or 202",
        &r,
        &[201],
    );
    let mounted = format!("/v2/{xns}/blobs/{}", d.blob_a.digest);
    assert_eq!(r.location(), mounted, "the mounted blob's Location");
    let r = s.get(&mounted).await;
    expect(
        "GET request to test digest within cross-mount namespace should return 200",
        &r,
        &[200],
    );
    // Without `from`, berth never mounts on its own (automatic cross-mount
    // disabled): a session, though the blob is already in the repository.
    let r = s
        .send(
            Method::POST,
            &Suite::with_query(&x_uploads, &[("mount", &d.blob_a.digest)]),
            None,
            None,
            &[],
        )
        .await;
    expect(
        "Cross-mounting without from, and automatic content discovery disabled should return a 202",
        &r,
        &[202],
    );
    assert!(
        r.location()
            .starts_with(&format!("/v2/{xns}/blobs/uploads/"))
    );

    // Manifest Upload.
    let r = s
        .get(&format!("/v2/{ns}/manifests/{NONEXISTENT_MANIFEST}"))
        .await;
    expect("GET nonexistent manifest should return 404", &r, &[404]);
    for tag in ["test0", "test1", "test2", "test3"] {
        let r = s.put_manifest(tag, OCI_MANIFEST, &d.manifests[1]).await;
        expect("PUT should accept a manifest upload", &r, &[201]);
        r.location();
    }
    let r = s
        .put_manifest("emptylayer", OCI_MANIFEST, &d.empty_layer_manifest)
        .await;
    // A soft check in the suite; berth accepts it.
    expect(
        "Registry should accept a manifest upload with no layers",
        &r,
        &[201],
    );
    r.location();
    let path = format!("/v2/{ns}/manifests/{}", d.manifests[1].digest);
    let r = s
        .send(Method::GET, &path, None, None, &[("accept", OCI_MANIFEST)])
        .await;
    expect(
        "GET request to manifest URL (digest) should yield 200 response",
        &r,
        &[200],
    );

    // Teardown.
    for m in [&d.manifests[1], &d.empty_layer_manifest] {
        let r = s.delete(&format!("/v2/{ns}/manifests/{}", m.digest)).await;
        expect(
            "Delete manifest created in tests",
            &r,
            &[200, 201, 202, 204, 405],
        );
    }
    for blob in [&d.configs[1], &d.layer] {
        let r = s.delete(&format!("/v2/{ns}/blobs/{}", blob.digest)).await;
        expect("Delete blob created in tests", &r, &GONE);
    }
    // Deleting the manifest by digest took its tags with it.
    let (_, tags) = s.tags("").await;
    assert!(
        tags.is_empty(),
        "tags left after the push teardown: {tags:?}"
    );
}

async fn discovery(s: &Suite, d: &Data) {
    let ns = NAMESPACE;
    s.push_blob(
        "Discovery: Populate registry with test blob",
        ns,
        &d.configs[2],
    )
    .await;
    s.push_blob("Discovery: Populate registry with test layer", ns, &d.layer)
        .await;
    for tag in ["test0", "test1", "test2", "test3"] {
        let r = s.put_manifest(tag, OCI_MANIFEST, &d.manifests[2]).await;
        expect("Populate registry with test tags", &r, &SUCCESS);
    }

    // References setup.
    let r = &d.referrers;
    let m4 = &d.manifests[4].digest;
    s.push_blob("References setup", ns, &d.empty_json).await;
    s.push_blob("References setup", ns, &d.ref_blob_a).await;
    let with_subject = |response: &Answer, subject: &str| {
        expect("References setup", response, &SUCCESS);
        assert_eq!(response.header("oci-subject"), Some(subject), "OCI-Subject");
    };
    for m in [&r.a_config, &r.a_layer] {
        with_subject(&s.put_manifest(&m.digest, OCI_MANIFEST, m).await, m4);
    }
    with_subject(
        &s.put_manifest(&r.index.digest, OCI_INDEX, &r.index).await,
        m4,
    );
    s.push_blob("References setup", ns, &d.configs[4]).await;
    s.push_blob("References setup", ns, &d.layer).await;
    let pushed = s
        .put_manifest("tagtest0", OCI_MANIFEST, &d.manifests[4])
        .await;
    expect("References setup", &pushed, &SUCCESS);
    s.push_blob("References setup", ns, &d.ref_blob_b).await;
    for m in [&r.b_config, &r.b_layer] {
        with_subject(&s.put_manifest(&m.digest, OCI_MANIFEST, m).await, m4);
    }
    // Its subject, manifests[3], is not in the repository.
    with_subject(
        &s.put_manifest(&r.c_layer.digest, OCI_MANIFEST, &r.c_layer)
            .await,
        &d.manifests[3].digest,
    );

    // Listing tags.
    let (response, tags) = s.tags("").await;
    expect(
        "GET request to list tags should yield 200 response",
        &response,
        &[200],
    );
    assert_eq!(tags, ["tagtest0", "test0", "test1", "test2", "test3"]);
    let half = tags.len() / 2;
    let (response, page) = s.tags(&format!("?n={half}")).await;
    let spec = "GET number of tags should be limitable by `n` query parameter";
    expect(spec, &response, &[200]);
    assert_eq!(page.len(), half, "{spec}");
    let last = &page[half - 1];
    let (response, rest) = s.tags(&format!("?last={last}&n={half}")).await;
    expect(
        "GET start of tag is set by `last` query parameter",
        &response,
        &[200],
    );
    assert_eq!(rest, tags[half..2 * half], "the page after {last}");

    // Listing references.
    let (_, none) = s
        .referrers(
            "GET request to nonexistent blob should result in empty 200 response",
            DUMMY_DIGEST,
            "",
        )
        .await;
    assert!(none.is_empty());
    let check_annotations = |spec: &str, manifests: &[Value]| {
        for m in manifests {
            let digest = m["digest"].as_str().unwrap();
            let annotations = m["annotations"].as_object().expect("annotations");
            assert_eq!(annotations.len(), 1, "{spec}: {digest}");
            assert_eq!(
                annotations[ANNOTATION].as_str(),
                d.annotation_of(digest),
                "{spec}: {digest}"
            );
        }
    };
    let spec = "GET request to existing blob should yield 200";
    let (_, all) = s.referrers(spec, m4, "").await;
    assert_eq!(all.len(), 5, "{spec}");
    assert_ne!(all[0]["digest"], all[1]["digest"]);
    check_annotations(spec, &all);
    let spec = "GET request to existing blob with filter should yield 200";
    let filter = format!("?artifactType={}", ARTIFACT_TYPE_A.replace('/', "%2F"));
    let (response, filtered) = s.referrers(spec, m4, &filter).await;
    assert_eq!(
        response.header("oci-filters-applied"),
        Some("artifactType"),
        "{spec}"
    );
    assert_eq!(filtered.len(), 2, "{spec}");
    check_annotations(spec, &filtered);
    let spec = "GET request to missing manifest should yield 200";
    let (_, c) = s.referrers(spec, &d.manifests[3].digest, "").await;
    assert_eq!(c.len(), 1, "{spec}");
    assert_eq!(c[0]["digest"], r.c_layer.digest.as_str(), "{spec}");

    // Teardown.
    for m in [
        &r.index,
        &d.manifests[2],
        &d.manifests[4],
        &r.a_config,
        &r.a_layer,
        &r.b_config,
        &r.b_layer,
        &r.c_layer,
    ] {
        let response = s.delete(&format!("/v2/{ns}/manifests/{}", m.digest)).await;
        expect(
            "Delete created manifest & associated tags",
            &response,
            &GONE,
        );
    }
    for blob in [
        &d.configs[2],
        &d.layer,
        &d.configs[4],
        &d.ref_blob_a,
        &d.ref_blob_b,
        &d.empty_json,
    ] {
        let response = s.delete(&format!("/v2/{ns}/blobs/{}", blob.digest)).await;
        expect("Delete blobs created in tests", &response, &GONE);
    }
}

async fn management(s: &Suite, d: &Data) {
    let ns = NAMESPACE;
    s.push_blob(
        "Management: Populate registry with test config blob",
        ns,
        &d.configs[3],
    )
    .await;
    s.push_blob(
        "Management: Populate registry with test layer",
        ns,
        &d.layer,
    )
    .await;
    let r = s
        .put_manifest("tagtest0", OCI_MANIFEST, &d.manifests[3])
        .await;
    expect("Populate registry with test tag", &r, &SUCCESS);
    let (response, tags) = s.tags("").await;
    expect(
        "Check how many tags there are before anything gets deleted",
        &response,
        &[200],
    );
    assert_eq!(tags, ["tagtest0"]);

    let r = s.delete(&format!("/v2/{ns}/manifests/tagtest0")).await;
    expect(
        "DELETE request to manifest tag should return 202, unless tag deletion is disallowed (400/405)",
        &r,
        &[202],
    );
    let path = format!("/v2/{ns}/manifests/{}", d.manifests[3].digest);
    let r = s.delete(&path).await;
    expect(
        "DELETE request to manifest (digest) should yield 202 response unless already deleted",
        &r,
        &[202],
    );
    let r = s.get(&path).await;
    expect(
        "GET request to deleted manifest URL should yield 404 response, unless delete is disallowed",
        &r,
        &[404],
    );
    let (response, tags) = s.tags("").await;
    expect(
        "GET request to tags list should reflect manifest deletion",
        &response,
        &[200],
    );
    assert!(tags.is_empty(), "{tags:?}");

    for blob in [&d.configs[3], &d.layer] {
        let r = s.delete(&format!("/v2/{ns}/blobs/{}", blob.digest)).await;
        expect(
            "DELETE request to blob URL should yield 202 response",
            &r,
            &[202],
        );
    }
    let r = s
        .get(&format!("/v2/{ns}/blobs/{}", d.configs[3].digest))
        .await;
    expect(
        "GET request to deleted blob URL should yield 404 response",
        &r,
        &[404],
    );
}
