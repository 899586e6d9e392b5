//! Shared test harness: runs the real `berth` binary on a loopback port.

pub mod daemons;
pub mod image;
mod stored;

pub use stored::StoredBytes;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A berth server started by a test, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    pub base: String,
    pub data_dir: PathBuf,
    /// Its blob store's bytes.
    pub stored: StoredBytes,
    /// Keeps a temporary data directory alive for the server's lifetime.
    _temp: Option<tempfile::TempDir>,
    log: Arc<Mutex<Vec<String>>>,
    /// Set to stop reading the server's log, which closes its stderr pipe.
    log_closed: Arc<AtomicBool>,
}

impl Server {
    /// A server on a fresh temporary data directory.
    pub fn start(args: &[&str]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let mut server = Server::start_in(temp.path(), args);
        server._temp = Some(temp);
        server
    }

    /// A server that keeps everything in its data directory in every run of
    /// the suite: for what only the embedded stores do (the data
    /// directory's lock, a full disk, files' ages).
    pub fn start_on_disk(args: &[&str]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let mut server = Server::start_in_on_disk(temp.path(), args);
        server._temp = Some(temp);
        server
    }

    /// [`Server::start_on_disk`] on `data_dir`.
    pub fn start_in_on_disk(data_dir: &Path, args: &[&str]) -> Self {
        Server::launch(data_dir, args, None)
    }

    /// A server on `data_dir`, listening on a free loopback port.
    ///
    /// In the suite's second run its metadata and blobs go to the
    /// [`SharedStores`] of `data_dir`, unless `args` choose a database
    /// (`--database-url`) or a bucket (`--s3-bucket`) themselves.
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Self {
        Server::launch(data_dir, args, SharedStores::of(data_dir))
    }

    fn launch(data_dir: &Path, args: &[&str], shared: Option<SharedStores>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args);
        let mut in_bucket = None;
        if let Some(stores) = shared {
            if !args.contains(&"--database-url") {
                command.args(["--database-url", &stores.database_url]);
            }
            if !args.contains(&"--s3-bucket") {
                command.envs(stores.s3_environment());
                in_bucket = Some(stores);
            }
        }
        // Before the server starts, so that nothing can fail between its
        // start and the `Server` that stops it.
        let stored = StoredBytes::of(data_dir, in_bucket.as_ref());
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let log_closed = Arc::new(AtomicBool::new(false));
        let closed = log_closed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if closed.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(url);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "berth did not start; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let Some(addr) = base.split("://").nth(1).map(str::to_owned) else {
            // Never leave a started server behind when the harness gives up.
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth announced {base:?}, not scheme://address");
        };
        Server {
            child,
            base,
            addr,
            data_dir: data_dir.to_owned(),
            stored,
            _temp: None,
            log,
            log_closed,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The password of the `admin` user berth created on first start.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-password"))
            .expect("berth wrote the admin password")
            .trim()
            .to_owned()
    }

    /// `admin:<password>`, as skopeo's --creds wants it.
    pub fn admin_creds(&self) -> String {
        format!("admin:{}", self.admin_password())
    }

    /// Stops reading the server's log: the pipe closes at its next line,
    /// as when whatever read berth's stderr has gone.
    pub fn close_log(&self) {
        self.log_closed.store(true, Ordering::Relaxed);
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (20 s at most) until `found` finds what it looks for in the
    /// log, which is read as the server writes it, and returns that.
    pub fn wait_for_log<T>(&self, found: impl Fn(&[String]) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.log();
            if let Some(result) = found(&lines) {
                return result;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not found in the log:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a log line contains `text`.
    pub fn wait_for_line(&self, text: &str) {
        self.wait_for_log(|lines| lines.iter().any(|l| l.contains(text)).then_some(()));
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM, as Kubernetes does on pod deletion.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Where the suite's second run (`BERTH_TEST_STORES=s3+postgres`) keeps a
/// data directory's metadata and blobs: a database of the test PostgreSQL
/// and a prefix of one bucket of the test Garage, the same ones whenever
/// the data directory is the same (a restarted server finds its data).
/// The default run keeps both in the data directory.
#[derive(Clone)]
pub struct SharedStores {
    pub database_url: String,
    pub bucket: String,
    pub s3_prefix: String,
}

impl SharedStores {
    /// `data_dir`'s stores in the second run; `None` in the default run.
    pub fn of(data_dir: &Path) -> Option<Self> {
        static BUCKET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        static STORES: Mutex<Vec<(PathBuf, SharedStores)>> = Mutex::new(Vec::new());
        match std::env::var("BERTH_TEST_STORES").as_deref() {
            Ok("s3+postgres") => {}
            Ok("" | "embedded") | Err(_) => return None,
            Ok(other) => panic!("BERTH_TEST_STORES={other}: use s3+postgres or embedded"),
        }
        let mut stores = STORES.lock().unwrap();
        if let Some((_, found)) = stores.iter().find(|(dir, _)| dir == data_dir) {
            return Some(found.clone());
        }
        let found = SharedStores {
            database_url: berth_testkit::postgres().database(),
            bucket: BUCKET
                .get_or_init(|| berth_testkit::garage().bucket())
                .clone(),
            s3_prefix: format!("server-{}/", stores.len()),
        };
        stores.push((data_dir.to_owned(), found.clone()));
        Some(found)
    }

    /// The variables that point `berth serve` at the bucket.
    pub fn s3_environment(&self) -> [(&'static str, String); 6] {
        [
            ("BERTH_S3_BUCKET", self.bucket.clone()),
            ("BERTH_S3_ENDPOINT", berth_testkit::garage().endpoint()),
            ("BERTH_S3_REGION", "garage".into()),
            ("BERTH_S3_PREFIX", self.s3_prefix.clone()),
            ("AWS_ACCESS_KEY_ID", berth_testkit::GARAGE_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", berth_testkit::GARAGE_SECRET.into()),
        ]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use berth_testkit::{hex, noise, sha256};

/// Runs an external tool, failing the test with its output when it fails, and
/// with an install hint when it is missing.
pub fn run_tool(program: &str, args: &[&str]) -> String {
    succeed(Command::new(program).args(args))
}

/// A podman with a private store under `dir` (vfs, no systemd), so tests touch
/// nothing of the machine's own containers; credentials it logs in with go to
/// `dir/auth.json`.
pub fn podman(dir: &Path) -> Command {
    let auth_file = dir.join("auth.json");
    if !auth_file.exists() {
        // podman refuses a REGISTRY_AUTH_FILE that does not exist.
        std::fs::write(&auth_file, "{}").unwrap();
    }
    let mut command = Command::new("podman");
    command
        .arg("--root")
        .arg(dir.join("podman-root"))
        .arg("--runroot")
        .arg(dir.join("podman-run"))
        .args([
            "--storage-driver",
            "vfs",
            "--events-backend",
            "file",
            "--cgroup-manager",
            "cgroupfs",
        ])
        .env("REGISTRY_AUTH_FILE", auth_file);
    command
}

/// Runs `command`, failing the test with its output unless it succeeds.
pub fn succeed(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run {command:?} ({e}): install it (scripts/test installs every test tool)")
    });
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Like [`run_tool`] but expects failure and returns stderr.
pub fn run_tool_failing(program: &str, args: &[&str]) -> String {
    fail(Command::new(program).args(args))
}

/// Runs `command`, failing the test if it succeeds; returns its stderr.
pub fn fail(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?} ({e}): install it"));
    assert!(
        !output.status.success(),
        "{command:?} unexpectedly succeeded"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs skopeo logged in to `server` as admin: every skopeo subcommand used here
/// takes `--creds`, except copy, which takes `--src-creds`/`--dest-creds`.
pub fn skopeo(server: &Server, args: &[&str]) -> String {
    let creds = server.admin_creds();
    let mut all: Vec<&str> = args.to_vec();
    let flags = match args[0] {
        "copy" => vec![
            format!("--src-creds={creds}"),
            format!("--dest-creds={creds}"),
        ],
        _ => vec![format!("--creds={creds}")],
    };
    for flag in &flags {
        all.insert(1, flag);
    }
    run_tool("skopeo", &all)
}

/// What the files under `dir` hold, in bytes.
pub fn du(dir: &Path) -> u64 {
    file_sizes(dir).iter().sum()
}

/// The sizes of the files under `dir`, at any depth; none if it is absent.
pub fn file_sizes(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes = Vec::new();
    for entry in entries.map(Result::unwrap) {
        let metadata = entry.metadata().unwrap();
        if metadata.is_dir() {
            sizes.extend(file_sizes(&entry.path()));
        } else {
            sizes.push(metadata.len());
        }
    }
    sizes
}

/// Runs `berth ARGS --registry BASE -u admin --password-stdin` against `server`.
pub fn berth_admin(server: &Server, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend([
        "--registry",
        &server.base,
        "-u",
        "admin",
        "--password-stdin",
    ]);
    berth(&all, &format!("{}\n", server.admin_password()))
}

/// A registry HTTP client for tests.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

/// Installs the process-wide rustls crypto provider (ring) that berth uses;
/// reqwest is built without one of its own.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Api {
    /// A client logged in as the admin user (Basic credentials on every request).
    pub fn new(server: &Server) -> Self {
        Api::with_credentials(server, "admin", &server.admin_password())
    }

    pub fn with_credentials(server: &Server, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        install_crypto_provider();
        Api {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            base: server.base.clone(),
        }
    }

    pub fn anonymous(server: &Server) -> Self {
        install_crypto_provider();
        Api {
            http: reqwest::Client::new(),
            base: server.base.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads a blob in one request and returns its digest.
    /// Opens an upload in `repository`; returns its location.
    pub async fn open_upload(&self, repository: &str) -> String {
        let r = self
            .http
            .post(self.url(&format!("/v2/{repository}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        header(&r, "location").to_owned()
    }

    /// Closes the upload at `location` as the blob `digest` (`PUT ?digest=`).
    pub async fn close_upload(&self, location: &str, digest: &str) -> reqwest::Response {
        self.http
            .put(self.url(&format!("{location}?digest={digest}")))
            .send()
            .await
            .unwrap()
    }

    pub async fn push_blob(&self, repo: &str, content: &[u8]) -> String {
        let digest = sha256(content);
        let response = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .body(content.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "blob push of {digest}");
        digest
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> reqwest::Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Runs a garbage collection through the API and returns its report.
    pub async fn gc(&self, dry_run: bool, grace_seconds: Option<u64>) -> serde_json::Value {
        let mut request = serde_json::json!({ "dry_run": dry_run });
        if let Some(grace) = grace_seconds {
            request["grace_seconds"] = grace.into();
        }
        let response = self
            .http
            .post(self.url("/berth/v1/gc"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let last: serde_json::Value =
            serde_json::from_str(text.lines().last().expect("a report line")).unwrap();
        last["report"].clone()
    }

    /// Pushes a small image (config + one layer) and tags it; returns the
    /// manifest bytes and digest.
    pub async fn push_image(&self, repo: &str, tag: &str, seed: u64) -> (Vec<u8>, String) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
        let layer = noise(1000, seed);
        let config_digest = self.push_blob(repo, config.as_bytes()).await;
        let layer_digest = self.push_blob(repo, &layer).await;
        let manifest = image_manifest(
            &config_digest,
            config.len(),
            &[(&layer_digest, layer.len())],
            "",
        );
        let response = self
            .put_manifest(repo, tag, OCI_MANIFEST, manifest.as_bytes())
            .await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let digest = sha256(manifest.as_bytes());
        (manifest.into_bytes(), digest)
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An OCI image manifest; `extra` is spliced in as more top-level fields.
pub fn image_manifest(
    config: &str,
    config_size: usize,
    layers: &[(&str, usize)],
    extra: &str,
) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{s}}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{}]{extra}}}"#,
        layers.join(",")
    )
}

/// Reads a spec error body and returns its first code.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    body["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_owned()
}

// ----- authentication fixtures ---------------------------------------------

/// Runs the berth binary with `args`, feeding `stdin`.
pub fn berth(args: &[&str], stdin: &str) -> std::process::Output {
    berth_with_env(args, stdin, &[])
}

/// [`berth`], which must succeed; returns what it printed.
pub fn berth_ok(args: &[&str], stdin: &str) -> String {
    let out = berth(args, stdin);
    assert!(
        out.status.success(),
        "berth {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `berth robot create` with `args`; returns the robot's user name and
/// password, as it printed them.
pub fn create_robot(args: &[&str]) -> (String, String) {
    let printed = berth_ok(&[&["robot", "create"], args].concat(), "");
    let field = |name: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {printed}"))
            .trim()
            .to_owned()
    };
    (field("username:"), field("password:"))
}

/// [`berth`] with extra environment variables.
pub fn berth_with_env(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    output_with_stdin(command.args(args).envs(env.iter().copied()), stdin)
}

/// Runs `command` to its end, feeding it `stdin`.
pub fn output_with_stdin(command: &mut Command, stdin: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {command:?} ({e}): install it (scripts/test installs every test tool)"
            )
        });
    // The program may exit without reading stdin (a refused command line).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// Writes an executable `script` named `name` into `bin` (created if
/// needed) and returns a `PATH` value that finds it first.
pub fn path_with_script(bin: &Path, name: &str, script: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(bin).unwrap();
    let file = bin.join(name);
    std::fs::write(&file, script).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

pub fn add_user(htpasswd: &Path, name: &str, password: &str) {
    let out = berth(
        &[
            "user",
            "add",
            "--htpasswd",
            htpasswd.to_str().unwrap(),
            name,
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server with users alice (pull on team/*), bob (pull and push on team/**),
/// root (everything, catalog included) and anonymous pull on public/*.
pub struct Fixture {
    pub server: Server,
    _dir: tempfile::TempDir,
    pub htpasswd: std::path::PathBuf,
}

pub fn fixture(extra_config: &str, args: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    add_user(&htpasswd, "alice", "alice-pw");
    add_user(&htpasswd, "bob", "bob-pw");
    add_user(&htpasswd, "root", "root-pw");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"
{extra_config}
[groups]
writers = ["bob"]

[[policy]]
subjects = ["user:alice"]
repositories = ["team/*"]
actions = ["pull"]

[[policy]]
subjects = ["group:writers"]
repositories = ["team/**"]
actions = ["pull", "push"]

[[policy]]
subjects = ["user:root"]
repositories = ["**"]
actions = ["*"]
catalog = true

[[policy]]
subjects = ["anonymous"]
repositories = ["public/*"]
actions = ["pull"]
"#
        ),
    )
    .unwrap();
    let mut all = vec![
        "--config",
        config.to_str().unwrap(),
        "--htpasswd",
        htpasswd.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    Fixture {
        server,
        _dir: dir,
        htpasswd,
    }
}

/// A response header, which the test requires.
pub fn header<'r>(response: &'r reqwest::Response, name: &str) -> &'r str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

pub type ChunkSender = tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

/// Opens an upload in `repository` and starts one streamed `PATCH` whose
/// body is whatever is sent on the returned channel until it is dropped;
/// returns the upload's location too.
pub async fn streamed_patch(
    api: &Api,
    repository: &str,
) -> (
    String,
    ChunkSender,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let location = api.open_upload(repository).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let patch = api
        .http
        .patch(api.url(&location))
        .body(reqwest::Body::wrap_stream(body));
    (location, tx, tokio::spawn(patch.send()))
}
