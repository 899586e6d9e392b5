//! `berth login` and `berth logout` against a running berth with
//! authentication: the docker config file is written only for accepted
//! credentials, keeps everything else, and then works for skopeo.

mod common;

use std::path::Path;
use std::process::Output;

use common::{Api, fixture, run_tool, run_tool_failing};
use serde_json::Value;

/// Runs berth with `stdin` and extra environment.
fn berth(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    common::berth_with_env(args, stdin, env)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config file with another registry, a helper map, proxies and members
/// berth knows nothing about, all of which must survive.
const EXISTING: &str = r#"{
	"auths": {
		"other.example.com": {
			"auth": "b3RoZXI6cHc=",
			"email": "o@example.com"
		},
		"https://index.docker.io/v1/": {
			"auth": "aHViOmh1Yi1wdw=="
		}
	},
	"credHelpers": {
		"helper.example.com": "none"
	},
	"proxies": {
		"default": {
			"httpProxy": "http://proxy:3128"
		}
	},
	"psFormat": "table {{.ID}}\t<&>",
	"unknownField": [1, 2.5, {"x": null}]
}"#;

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The document without the entry for `key`.
fn without(mut doc: Value, key: &str) -> Value {
    doc["auths"].as_object_mut().unwrap().remove(key);
    doc
}

fn login(host: &str, user: &str, password: &str, config: &Path) -> Output {
    berth(
        &[
            "login",
            host,
            "--insecure",
            "--username",
            user,
            "--password-stdin",
            "--config-file",
            config.to_str().unwrap(),
        ],
        &format!("{password}\n"),
        &[],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn login_writes_only_accepted_credentials_and_logout_removes_them() {
    let f = fixture("", &[]);
    let host = f.server.addr.clone();
    Api::with_credentials(&f.server, "root", "root-pw")
        .push_image("team/app", "v1", 1)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, EXISTING).unwrap();

    // A wrong password: 401 said plainly, and not one byte changes.
    let out = login(&host, "alice", "wrong", &config);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(err.contains("was not changed"), "{err}");
    assert!(err.contains("Check the user name and password"), "{err}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), EXISTING);

    // Accepted credentials: one entry added under the bare host:port, as
    // docker writes it; everything else is intact.
    let before = json(&config);
    let out = login(&host, "alice", "alice-pw", &config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Login Succeeded\n");
    let after = json(&config);
    assert_eq!(
        after["auths"][&host],
        serde_json::json!({"auth": "YWxpY2U6YWxpY2UtcHc="}),
        "base64(alice:alice-pw)"
    );
    assert_eq!(without(after.clone(), &host), before);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.starts_with("{\n\t\"auths\""),
        "docker's layout: {text}"
    );

    // The file works for a real client.
    let authfile = config.to_str().unwrap();
    let image = format!("docker://{host}/team/app:v1");
    let inspect = run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--authfile",
            authfile,
            &image,
        ],
    );
    assert!(inspect.contains("\"Digest\""), "{inspect}");

    // Logging in again replaces the entry in place (a stale password goes).
    let out = login(&format!("http://{host}/"), "bob", "bob-pw", &config);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = json(&config);
    assert_eq!(again["auths"][&host]["auth"], "Ym9iOmJvYi1wdw==");
    assert_eq!(without(again, &host), before);

    // Logout removes exactly that entry; afterwards the pull is refused.
    let out = berth(&["logout", &host, "--config-file", authfile], "", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("removed the credentials for {host}")));
    assert_eq!(json(&config), before);
    run_tool_failing(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--authfile",
            authfile,
            &image,
        ],
    );
    let bytes = std::fs::read(&config).unwrap();
    let out = berth(&["logout", &host, "--config-file", authfile], "", &[]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("nothing changed"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&config).unwrap(), bytes);
}

#[test]
fn login_creates_the_default_file_privately() {
    use std::os::unix::fs::PermissionsExt as _;
    let f = fixture("", &[]);
    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("docker");
    let env = [("DOCKER_CONFIG", docker_config.to_str().unwrap())];
    let out = berth(
        &[
            "login",
            &f.server.addr,
            "--insecure",
            "-u",
            "root",
            "--password-stdin",
        ],
        "root-pw\n",
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let path = docker_config.join("config.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        json(&path),
        serde_json::json!({"auths": {(f.server.addr.as_str()): {"auth": "cm9vdDpyb290LXB3"}}})
    );

    // A credential helper in the file: written anyway, with a warning.
    std::fs::write(&path, r#"{"auths":{},"credsStore":"none"}"#).unwrap();
    let out = berth(
        &[
            "login",
            &f.server.addr,
            "--insecure",
            "-u",
            "root",
            "--password-stdin",
        ],
        "root-pw\n",
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("docker-credential-none"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json(&path)["credsStore"], "none");
    assert_eq!(
        json(&path)["auths"][&f.server.addr]["auth"],
        "cm9vdDpyb290LXB3"
    );
}

#[test]
fn login_refusals_name_the_fix() {
    let f = fixture("", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let path = config.to_str().unwrap();
    // No terminal and no --username.
    let out = berth(&["login", &f.server.addr, "--config-file", path], "", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pass --username"), "{}", stderr(&out));
    // HTTPS to a plain HTTP registry.
    let out = berth(
        &[
            "login",
            &f.server.addr,
            "-u",
            "root",
            "--password-stdin",
            "--config-file",
            path,
        ],
        "root-pw\n",
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--insecure"), "{}", stderr(&out));
    // A broken config file is reported before anything is sent, and kept.
    std::fs::write(&config, "{not json").unwrap();
    let out = login(&f.server.addr, "root", "root-pw", &config);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a valid docker config file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "{not json");
    assert!(!dir.path().join("config.json.tmp").exists());
}
