//! A real S3 store for the tests: Garage, a single node per test process
//! and, for the tests that want one, a three-node cluster, started on first
//! use in temporary directories on loopback ports; each test takes a fresh
//! bucket of its own. As for PostgreSQL, a watchdog
//! shell stops it and removes its directory once the test process is gone.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct GarageServer {
    bin: PathBuf,
    /// Each node's configuration file; administration goes through the first.
    configs: Vec<PathBuf>,
    /// Each node's S3 port.
    s3_ports: Vec<u16>,
    buckets: AtomicU32,
}

/// The access key every test bucket allows (Garage key ids are `GK` and 24
/// hex digits, secrets 64).
pub const GARAGE_KEY_ID: &str = "GK0123456789abcdef01234567";
pub const GARAGE_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The test process's single-node Garage, started on first use. Fails the
/// test, never skips it, when Garage is not installed.
pub fn garage() -> &'static GarageServer {
    static SERVER: OnceLock<GarageServer> = OnceLock::new();
    SERVER.get_or_init(|| GarageServer::start(1))
}

/// The test process's three-node Garage cluster, every object on all three
/// nodes (as a production cluster keeps it), started on first use.
pub fn garage_cluster() -> &'static GarageServer {
    static SERVER: OnceLock<GarageServer> = OnceLock::new();
    SERVER.get_or_init(|| GarageServer::start(3))
}

/// `$BERTH_GARAGE`, else where `scripts/test` installs it, else `garage`.
fn garage_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BERTH_GARAGE") {
        return bin.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_default();
    let installed = cache.join("berth/garage/bin/garage");
    if installed.exists() {
        installed
    } else {
        "garage".into()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl GarageServer {
    fn start(nodes: usize) -> Self {
        let bin = garage_bin();
        assert!(
            Command::new(&bin)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "Garage is required for these tests but {bin:?} could not be run: scripts/test \
             installs it (cargo install garage), or point BERTH_GARAGE at it"
        );
        let mut server = GarageServer {
            bin,
            configs: Vec::new(),
            s3_ports: Vec::new(),
            buckets: AtomicU32::new(0),
        };
        let mut ids = Vec::new();
        for _ in 0..nodes {
            let (config, s3, rpc) = server.start_node(nodes);
            server.configs.push(config);
            server.s3_ports.push(s3);
            let id = server.node_id(server.configs.len() - 1);
            ids.push(format!("{id}@127.0.0.1:{rpc}"));
        }
        for (zone, id) in ids.iter().enumerate() {
            if zone > 0 {
                server.run(&["node", "connect", id]);
            }
            let node = id.split('@').next().unwrap_or_default();
            let zone = format!("dc{zone}");
            server.run(&["layout", "assign", "-z", &zone, "-c", "1G", node]);
        }
        server.run(&["layout", "apply", "--version", "1"]);
        server.run(&[
            "key",
            "import",
            "--yes",
            "-n",
            "berth",
            GARAGE_KEY_ID,
            GARAGE_SECRET,
        ]);
        server
    }

    /// Starts one node of a cluster keeping `replicas` copies of each object;
    /// returns its configuration file and S3 and RPC ports.
    fn start_node(&self, replicas: usize) -> (PathBuf, u16, u16) {
        let dir = tempfile::Builder::new()
            .prefix("berth-garage-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = {replicas}
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
                dir = dir.display(),
                secret = GARAGE_SECRET,
            ),
        )
        .expect("Garage's configuration");
        let mut command = Command::new(&self.bin);
        command
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn");
        crate::watchdog::spawn_watched(&command, &dir, "TERM");
        (config, s3, rpc)
    }

    /// The id of node `index`, once it answers.
    fn node_id(&self, index: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.command_on(index, &["node", "id", "-q"]);
            if out.status.success() {
                let id = String::from_utf8_lossy(&out.stdout);
                return id.split('@').next().unwrap_or_default().trim().to_owned();
            }
            let log = self.configs[index].with_file_name("log");
            assert!(
                Instant::now() < deadline,
                "Garage did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command_on(&self, index: usize, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(&self.configs[index])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("cannot run garage")
    }

    /// Runs a `garage` administration command; returns what it printed.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command_on(0, args);
        assert!(
            out.status.success(),
            "garage {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first node's S3 endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.endpoint_of(0)
    }

    /// Node `index`'s S3 endpoint.
    pub fn endpoint_of(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.s3_ports[index])
    }

    /// A new, empty bucket the test key may read and write; returns its name.
    pub fn bucket(&self) -> String {
        let name = format!(
            "test-{}-{}",
            std::process::id(),
            self.buckets.fetch_add(1, Ordering::Relaxed)
        );
        self.run(&["bucket", "create", &name]);
        self.run(&[
            "bucket", "allow", "--read", "--write", "--owner", &name, "--key", "berth",
        ]);
        name
    }
}
