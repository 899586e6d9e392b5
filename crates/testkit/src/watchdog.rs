//! Servers the tests start once per test process and never stop
//! themselves: a static holds them, and statics are never dropped.

use std::path::Path;
use std::process::{Command, Stdio};

/// Starts `server` under a shell that stops it with `signal` and removes
/// `dir` (where it keeps everything, its output in `dir/log`) once this test
/// process is gone, however it ended.
pub(crate) fn spawn_watched(server: &Command, dir: &Path, signal: &str) {
    let log = std::fs::File::create(dir.join("log")).expect("log file");
    let mut watchdog = Command::new("sh")
        .args([
            "-c",
            r#"watched=$1 signal=$2 dir=$3; shift 3
               "$@" & server=$!
               while kill -0 "$watched" 2>/dev/null && kill -0 "$server" 2>/dev/null; do
                   sleep 0.5
               done
               kill -s "$signal" "$server" 2>/dev/null; wait "$server"; rm -rf "$dir""#,
            "watchdog",
            &std::process::id().to_string(),
            signal,
        ])
        .arg(dir)
        .arg(server.get_program())
        .args(server.get_args())
        .envs(server.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("cannot start a test server's watchdog");
    // Reaped here if it ends first (a server that would not start);
    // otherwise it outlives this process, by design.
    std::thread::spawn(move || watchdog.wait());
}
