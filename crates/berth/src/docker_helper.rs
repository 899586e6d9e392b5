//! Runs docker credential helpers (`docker-credential-<name>`) for `berth
//! secret create --from-docker-config`, `berth login` and `berth logout`.
//! What to send them and how to read their answers is the protocol code in
//! `berth_kube::cred_helper`; this module only starts the processes.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use berth_kube::cred_helper::{self, HelperAction, HelperReply};

/// Runs `docker-credential-<helper> <action>` with `input` on stdin and
/// returns whether it succeeded and what it printed. `if_missing` finishes
/// the sentence telling the user what to do when the helper is not on PATH.
fn run(
    helper: &str,
    action: HelperAction,
    server: &str,
    input: &str,
    if_missing: &str,
) -> anyhow::Result<(bool, Vec<u8>)> {
    let program = cred_helper::helper_program(helper)?;
    let mut child = Command::new(&program)
        .arg(action.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // A helper may prompt (a GPG pinentry, a keychain unlock) on stderr.
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "the docker config keeps the credentials for {server:?} in {program}, which \
                     is not on PATH; install it, or {if_missing}"
                )
            } else {
                anyhow::anyhow!("cannot run {program}: {e}")
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its output.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("cannot read the output of {program}"))?;
    Ok((out.status.success(), out.stdout))
}

/// What the helper holds for `server`.
pub fn get(helper: &str, server: &str, if_missing: &str) -> anyhow::Result<HelperReply> {
    let (success, stdout) = run(helper, HelperAction::Get, server, server, if_missing)?;
    Ok(cred_helper::parse_get_reply(
        helper, server, success, &stdout,
    )?)
}

/// Saves credentials for `server` in the helper.
pub fn store(
    helper: &str,
    server: &str,
    username: &str,
    secret: &str,
    if_missing: &str,
) -> anyhow::Result<()> {
    let input = cred_helper::store_input(server, username, secret);
    let (success, stdout) = run(helper, HelperAction::Store, server, &input, if_missing)?;
    Ok(cred_helper::parse_change_reply(
        helper,
        HelperAction::Store,
        server,
        success,
        &stdout,
    )?)
}

/// Removes what the helper holds for `server`; nothing held is fine.
pub fn erase(helper: &str, server: &str, if_missing: &str) -> anyhow::Result<()> {
    let (success, stdout) = run(helper, HelperAction::Erase, server, server, if_missing)?;
    Ok(cred_helper::parse_change_reply(
        helper,
        HelperAction::Erase,
        server,
        success,
        &stdout,
    )?)
}
