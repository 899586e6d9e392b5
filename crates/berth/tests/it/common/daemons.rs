//! Daemons run by tests (containerd, dockerd), each on files of its own in a
//! temporary directory, so nothing of the machine's daemons is touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::succeed;

/// A daemon run by a test (containerd, dockerd): its files live in a
/// temporary directory of its own, its output goes to a log file there, and
/// it is stopped with SIGTERM (SIGKILL after 10 s) when dropped.
pub struct Daemon {
    child: Child,
    name: String,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `command`, logging to `dir/<program>.log`.
    pub fn start(mut command: Command, dir: tempfile::TempDir) -> Self {
        let name = command.get_program().to_string_lossy().into_owned();
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {name} ({e}): install it (scripts/test installs every test tool)"
                )
            });
        Daemon { child, name, dir }
    }

    /// Waits (30 s at most) until `ready` says the daemon answers.
    pub fn wait_ready(&self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "{} did not start; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        let path = self.dir.path().join(format!("{}.log", self.name));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Stops the daemon (idempotent).
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A containerd daemon of the test's own: its root, state, socket and plugin
/// directories all live in the daemon's temporary directory, so nothing of
/// the machine's containerd is touched.
pub struct Containerd {
    daemon: Daemon,
    socket: PathBuf,
}

impl Containerd {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}/root"
state = "{root}/state"
# The kubelet-facing CRI plugin is not needed to pull and push.
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#
            ),
        )
        .unwrap();
        let mut command = Command::new("containerd");
        command.arg("--config").arg(&config);
        let containerd = Containerd {
            daemon: Daemon::start(command, dir),
            socket,
        };
        containerd.daemon.wait_ready(|| {
            containerd
                .ctr(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        containerd
    }

    /// The daemon's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ctr` talking to this daemon, in a namespace of its own.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "berth-test"])
            .args(args);
        command
    }

    /// The digest `ctr images ls` records for `reference`.
    pub fn image_digest(&self, reference: &str) -> String {
        let listing = succeed(&mut self.ctr(&["images", "ls"]));
        listing
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&reference))
            .unwrap_or_else(|| panic!("{reference} not in:\n{listing}"))[2]
            .to_owned()
    }
}
