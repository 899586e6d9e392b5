//! berth on shared stores: metadata in PostgreSQL (the test process's own
//! server, from Debian's packages).

use std::time::{Duration, Instant};

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
/// directory but the same database lists the same repositories and tags.
#[tokio::test]
async fn the_metadata_is_the_databases() {
    let url = berth_testkit::postgres().database();
    let server = Server::start(&["--database-url", &url]);
    Api::new(&server).push_image("shared/app", "v1", 7).await;
    drop(server);
    let other = Server::start(&["--database-url", &url]);
    let api = Api::new(&other);
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
