//! berth-testkit: what the test suites (and benchmarks) of several crates
//! share, so each runs the real tools the same way and makes its data the
//! same way. Only ever a dev-dependency.

use std::path::PathBuf;
use std::process::Command;

mod garage;
mod postgres;
mod watchdog;
pub use garage::{GARAGE_KEY_ID, GARAGE_SECRET, GarageServer, garage, garage_cluster};
pub use postgres::{PostgresServer, postgres};

use sha2::Digest as _;

/// The OCI digest of `bytes`, `sha256:<hex>`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The machine's real `kubectl` (or `$KUBECTL`), with an empty kubeconfig of
/// its own so no context namespace leaks into what it prints, and a
/// temporary directory for the files its commands read.
pub struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    /// Fails the test, never skips it, when kubectl cannot be run.
    pub fn new() -> Self {
        let bin = std::env::var_os("KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
                    .unwrap_or_else(|| PathBuf::from("kubectl"))
            });
        match Command::new(&bin).args(["version", "--client"]).output() {
            Ok(out) if out.status.success() => {}
            _ => panic!(
                "kubectl is required for these tests but {bin:?} could not be run: install \
                 kubectl (scripts/test does) or point KUBECTL at it"
            ),
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("kubeconfig"), "").expect("kubeconfig");
        Kubectl { bin, dir }
    }

    /// Runs kubectl with `args`; its output, or the test fails with its
    /// error.
    pub fn run(&self, args: &[String]) -> String {
        let out = Command::new(&self.bin)
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
    }

    /// Writes a file for a kubectl command to read; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write a file for kubectl");
        path
    }
}

impl Default for Kubectl {
    fn default() -> Self {
        Kubectl::new()
    }
}
