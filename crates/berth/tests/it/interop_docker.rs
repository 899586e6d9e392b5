//! docker against berth with authentication: `docker login` keeps berth's
//! refresh token as its identity token (never the password) and pushes and
//! pulls on it, mounting layers across repositories; a wrong password, a
//! missing permission and an anonymous pull fail as docker users see them;
//! `berth login` writes a config docker uses as it is. The test runs a
//! dockerd of its own (its own data and exec roots, socket and containerd; no
//! container networking), so it needs root. Fails (never skips) when docker
//! is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::daemons::{Containerd, Daemon};
use crate::common::{Api, berth, fail, fixture, output_with_stdin, succeed};
use base64::Engine as _;
use serde_json::Value;

/// A dockerd of the test's own, on a containerd of its own (else it would
/// use the machine's, when one runs), with no container networking.
struct Dockerd {
    // Fields drop in order: dockerd stops before its containerd.
    daemon: Daemon,
    _containerd: Containerd,
    socket: PathBuf,
    /// A PATH holding only the docker CLI, so no credential helper of the
    /// machine (secretservice, pass) takes the credentials `docker login`
    /// writes.
    path: PathBuf,
}

impl Dockerd {
    fn start() -> Self {
        let containerd = Containerd::start();
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        // Its own (empty) settings instead of the machine's /etc/docker/daemon.json.
        std::fs::write(path("daemon.json"), "{}").unwrap();
        std::fs::create_dir(path("bin")).unwrap();
        std::os::unix::fs::symlink(which("docker"), path("bin/docker")).unwrap();
        let socket = path("docker.sock");
        let mut command = Command::new("dockerd");
        command
            .arg("--config-file")
            .arg(path("daemon.json"))
            .arg("--containerd")
            .arg(containerd.socket())
            .arg("--data-root")
            .arg(path("data"))
            .arg("--exec-root")
            .arg(path("exec"))
            .arg("--pidfile")
            .arg(path("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            // Pulling and pushing need no container networking.
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .arg("--storage-driver=vfs");
        let dockerd = Dockerd {
            path: path("bin"),
            daemon: Daemon::start(command, dir),
            _containerd: containerd,
            socket,
        };
        let config = dockerd.daemon.dir.path().join("client");
        dockerd.daemon.wait_ready(|| {
            dockerd
                .cli(&config, &["version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        dockerd
    }

    /// The docker CLI talking to this daemon, with `config` as its
    /// configuration directory (where `docker login` writes).
    fn cli(&self, config: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(self.path.join("docker"));
        command
            .env("PATH", &self.path)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", config)
            .args(args);
        command
    }
}

/// Where `program` is on PATH.
fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not on PATH: install it (scripts/test installs every test tool)")
        })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `auths` entry docker keeps for `host` in `config_dir`, if any.
fn auth_entry(config_dir: &Path, host: &str) -> Option<Value> {
    let text = std::fs::read_to_string(config_dir.join("config.json")).ok()?;
    let config: Value = serde_json::from_str(&text).unwrap();
    config["auths"].get(host).cloned()
}

#[test]
fn docker_logs_in_pushes_and_pulls_on_an_identity_token() {
    let f = fixture("", &[]);
    let host = f.server.addr.clone();
    let dockerd = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let bob = work.path().join("bob");
    let alice = work.path().join("alice");
    let image = format!("{host}/team/app:v1");
    let login = |config: &Path, user: &str, password: &str| {
        let mut command = dockerd.cli(config, &["login", &host, "-u", user, "--password-stdin"]);
        output_with_stdin(&mut command, password)
    };

    // A one-layer image from a root file system tarball: nothing leaves loopback.
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::write(rootfs.join("hello.txt"), "hello from berth\n").unwrap();
    let tarball = work.path().join("rootfs.tar");
    succeed(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
    );
    succeed(&mut dockerd.cli(&bob, &["import", tarball.to_str().unwrap(), &image]));

    // A wrong password: berth's 401 reaches the user; nothing is stored.
    let out = login(&bob, "bob", "guess\n");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("unauthorized: wrong user name or password"),
        "{}",
        stderr(&out)
    );
    assert_eq!(auth_entry(&bob, &host), None);

    // docker keeps the refresh token berth grants, not the password…
    let out = login(&bob, "bob", "bob-pw\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let entry = auth_entry(&bob, &host).expect("docker login stores an entry");
    let user_only = base64::engine::general_purpose::STANDARD.encode("bob:");
    assert_eq!(entry["auth"], user_only.as_str(), "{entry}");
    let token = entry["identitytoken"].as_str().expect("an identity token");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let config_text = std::fs::read_to_string(bob.join("config.json")).unwrap();
    assert!(!config_text.contains("bob-pw"));

    // …and pushes and pulls on it alone.
    let pushed = succeed(&mut dockerd.cli(&bob, &["push", &image]));
    let root = Api::with_credentials(&f.server, "root", "root-pw");
    let digest = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let r = root.http.head(root.url("/v2/team/app/manifests/v1"));
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    });
    assert!(pushed.contains(&format!("digest: {digest}")), "{pushed}");
    succeed(&mut dockerd.cli(&bob, &["rmi", &image]));
    succeed(&mut dockerd.cli(&bob, &["pull", &image]));
    let repo_digests = succeed(&mut dockerd.cli(
        &bob,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &image,
        ],
    ));
    assert!(
        repo_digests.contains(&format!("{host}/team/app@{digest}")),
        "{repo_digests}"
    );

    // Pushed to a second repository, the layer is mounted, not sent again.
    let copy = format!("{host}/team/copy:v1");
    succeed(&mut dockerd.cli(&bob, &["tag", &image, &copy]));
    let pushed = succeed(&mut dockerd.cli(&bob, &["push", &copy]));
    assert!(pushed.contains("Mounted from team/app"), "{pushed}");
    f.server
        .wait_for_line(r#"method=POST path="/v2/team/copy/blobs/uploads/" status=201"#);

    // A pull secret cannot carry an identity token; berth says so instead of
    // writing a secret with an empty password.
    let config_file = format!("--from-docker-config={}", bob.join("config.json").display());
    let out = berth(
        &["secret", "create", "pull", &config_file, "--server", &host],
        "",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("identity token"), "{}", stderr(&out));

    // alice may pull team/*, not push: docker shows berth's 403.
    let out = login(&alice, "alice", "alice-pw\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let error = fail(&mut dockerd.cli(&alice, &["push", &image]));
    assert!(
        error.contains("denied: alice may not push team/app"),
        "{error}"
    );

    // After logout docker forgets berth, and the private repository refuses.
    succeed(&mut dockerd.cli(&alice, &["logout", &host]));
    assert_eq!(auth_entry(&alice, &host), None);
    // Both tags go, so the pulls below fetch every blob again.
    succeed(&mut dockerd.cli(&alice, &["rmi", &image, &copy]));
    let error = fail(&mut dockerd.cli(&alice, &["pull", &image]));
    assert!(error.contains("pull access denied"), "{error}");

    // What `berth login` writes, docker uses as it is.
    let config_file = alice.join("config.json");
    let out = berth(
        &[
            "login",
            &host,
            "--insecure",
            "-u",
            "alice",
            "--password-stdin",
            "--config-file",
            config_file.to_str().unwrap(),
        ],
        "alice-pw\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pulled = succeed(&mut dockerd.cli(&alice, &["pull", &image]));
    assert!(pulled.contains("Pull complete"), "{pulled}");
}
