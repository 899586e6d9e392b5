//! `berth login` and `berth logout` against a running berth with
//! authentication: the docker config file is written only for accepted
//! credentials, keeps everything else, and then works for skopeo.

use std::path::Path;
use std::process::Output;

use crate::common::{Api, fixture, run_tool, run_tool_failing};
use serde_json::Value;

/// Runs berth with `stdin` and extra environment.
fn berth(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    crate::common::berth_with_env(args, stdin, env)
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
    let inspect_args = [
        "inspect",
        "--tls-verify=false",
        "--authfile",
        authfile,
        &image,
    ];
    let inspect = run_tool("skopeo", &inspect_args);
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
    run_tool_failing("skopeo", &inspect_args);
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
}

/// A credential helper keeping one file per server next to itself, as
/// docker-credential-pass keeps one per server in its password store.
const FILE_HELPER: &str = r#"#!/bin/sh
dir="$(dirname "$0")/store"
mkdir -p "$dir"
input=$(cat)
file() { echo "$dir/$(printf '%s' "$1" | sha256sum | cut -c1-64)"; }
echo "$1" >> "$(dirname "$0")/actions.log"
case "$1" in
  store)
    server=$(printf '%s' "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p')
    [ -n "$server" ] || { echo "no ServerURL in the input"; exit 1; }
    printf '%s' "$input" > "$(file "$server")" ;;
  get)
    f=$(file "$input")
    [ -f "$f" ] && cat "$f" || { echo "credentials not found in native keychain"; exit 1; } ;;
  erase)
    f=$(file "$input")
    [ -f "$f" ] && rm "$f" || { echo "credentials not found in native keychain"; exit 1; } ;;
  *) echo "unknown action $1"; exit 1 ;;
esac
"#;

#[test]
fn login_and_logout_go_through_the_configured_credential_helper() {
    let f = fixture("", &[]);
    let host = f.server.addr.as_str();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let path_var =
        crate::common::path_with_script(&bin, "docker-credential-berthfile", FILE_HELPER);
    let env = [("PATH", path_var.as_str())];
    let config = dir.path().join("config.json");
    let login_args = [
        "login",
        host,
        "--insecure",
        "-u",
        "root",
        "--password-stdin",
        "--config-file",
        config.to_str().unwrap(),
    ];

    // A helper that is not installed: docker's classic trap
    // (docker-credential-desktop on a server). Nothing changes.
    let missing = r#"{"auths":{},"credsStore":"desktop"}"#;
    std::fs::write(&config, missing).unwrap();
    let out = berth(&login_args, "root-pw\n", &env);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("docker-credential-desktop, which is not on PATH")
            && err.contains("remove credsStore"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), missing);

    // With the helper installed, it keeps the password; the file records
    // only the login, everything else intact.
    std::fs::write(
        &config,
        r#"{"auths":{"other.example.com":{"auth":"b3RoZXI6cHc="}},"credsStore":"berthfile"}"#,
    )
    .unwrap();
    let out = berth(&login_args, "root-pw\n", &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("docker-credential-berthfile"));
    assert_eq!(
        json(&config),
        serde_json::json!({
            "auths": {"other.example.com": {"auth": "b3RoZXI6cHc="}, (host): {}},
            "credsStore": "berthfile"
        })
    );
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains("root-pw")
    );
    // What the helper now holds is what a pull secret made from this
    // config carries.
    let out = berth(
        &[
            "secret",
            "create",
            "pull",
            "-o",
            "json",
            &format!("--from-docker-config={}", config.display()),
            "--server",
            host,
        ],
        "",
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let secret: Value = serde_json::from_slice(&out.stdout).unwrap();
    let docker_config = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        secret["data"][".dockerconfigjson"].as_str().unwrap(),
    )
    .unwrap();
    let docker_config: Value = serde_json::from_slice(&docker_config).unwrap();
    assert_eq!(docker_config["auths"][host]["username"], "root");
    assert_eq!(docker_config["auths"][host]["password"], "root-pw");

    // Logout erases it from the helper and the file.
    let out = berth(
        &["logout", host, "--config-file", config.to_str().unwrap()],
        "",
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json(&config),
        serde_json::json!({
            "auths": {"other.example.com": {"auth": "b3RoZXI6cHc="}},
            "credsStore": "berthfile"
        })
    );
    assert_eq!(
        std::fs::read_dir(bin.join("store")).unwrap().count(),
        0,
        "the helper still holds credentials"
    );
    assert_eq!(
        std::fs::read_to_string(bin.join("actions.log")).unwrap(),
        "store\nget\nerase\n"
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
