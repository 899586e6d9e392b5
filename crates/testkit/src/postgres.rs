//! A real PostgreSQL server for the tests, from the machine's packages.
//!
//! One server per test process, started on first use in a temporary
//! directory on a loopback port; each test takes a fresh database of its
//! own. A watchdog stops the server and removes its directory once the
//! test process is gone, however it ends (statics are never dropped).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct PostgresServer {
    port: u16,
    bin: PathBuf,
    /// The CA of the server's TLS certificate (for 127.0.0.1 and localhost).
    ca_file: PathBuf,
    databases: AtomicU32,
}

/// The test process's PostgreSQL server, started on first use. Fails the
/// test, never skips it, when PostgreSQL is not installed.
pub fn postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

/// The directory of the newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is required for these tests but /usr/lib/postgresql/*/bin/initdb is \
             missing: install the postgresql package (scripts/test does)"
        )
    })
}

fn succeed(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and a server certificate it signed for 127.0.0.1 and localhost, in
/// `dir` (`ca.crt`, `server.crt`, `server.key`), made with openssl: the
/// server's key belongs to the user PostgreSQL runs as, readable by it alone.
fn make_certificates(dir: &Path, as_root: bool) {
    let openssl = |args: &[&str]| {
        succeed(Command::new("openssl").current_dir(dir).args(args));
    };
    // A P-256 key, and a request for it (with -x509, a certificate it signs).
    let request = |more: &[&str]| {
        let mut args = vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ];
        args.push("-nodes");
        args.extend(more);
        openssl(&args);
    };
    request(&[
        "-x509",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
    ]);
    request(&[
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n\
         basicConstraints=CA:FALSE\n",
    )
    .expect("certificate extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    if as_root {
        succeed(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.join("server.key")),
        );
    }
    std::fs::set_permissions(
        dir.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("the key's mode");
}

impl PostgresServer {
    fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("berth-postgres-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        // PostgreSQL refuses to run as root: run it as the postgres user
        // the package creates.
        let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let run_as = |program: &Path| {
            let mut command = if as_root {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(program);
                c
            } else {
                Command::new(program)
            };
            command.env("LC_ALL", "C.UTF-8");
            command
        };
        if as_root {
            succeed(Command::new("chown").arg("postgres:postgres").arg(&dir));
        }
        make_certificates(&dir, as_root);
        let data = dir.join("data");
        succeed(run_as(&bin.join("initdb")).arg("-D").arg(&data).args([
            "-U",
            "berth",
            "--auth=trust",
            "-E",
            "UTF8",
        ]));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut postgres = run_as(&bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            // Durability is not what the tests check; speed is welcome.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300"])
            // TLS for clients that ask (sslmode=require), plain for others.
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("server.crt").display()
            ))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display()));
        // SIGINT: PostgreSQL's fast shutdown.
        crate::watchdog::spawn_watched(&postgres, &dir, "INT");
        let server = PostgresServer {
            port,
            bin,
            ca_file: dir.join("ca.crt"),
            databases: AtomicU32::new(0),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.psql("postgres", "SELECT 1").status.success() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn psql(&self, database: &str, sql: &str) -> std::process::Output {
        Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "berth",
            ])
            .args([
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-t",
                "-A",
                "-c",
                sql,
            ])
            .output()
            .expect("cannot run psql")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA (PEM) the server's TLS certificate chains to.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A new, empty database; returns its connection URL.
    pub fn database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            self.databases.fetch_add(1, Ordering::Relaxed)
        );
        let out = self.psql("postgres", &format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "cannot create a database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// The connection URL of `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://berth@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `sql` in `database` as the superuser; returns what it printed.
    pub fn run(&self, database: &str, sql: &str) -> String {
        let out = self.psql(database, sql);
        assert!(
            out.status.success(),
            "{sql} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
