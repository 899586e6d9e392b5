//! Running the node's credential provider plugins as the kubelet does, so the
//! probe can try the credentials they hand out instead of only naming them.
//!
//! Only with `--credential-provider-bin-dir`: the plugin executables usually
//! live on the nodes, not where doctor runs.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_kube::credential_provider::{
    CredentialProvider, CredentialProviderConfig, CredentialProviderRequest,
    CredentialProviderResponse,
};
use berth_kube::image_ref::ImageRef;

use crate::analyze::PullPlan;
use crate::report::{Finding, Reason, Severity};

/// The most of a plugin's answer read: far more than any response needs.
const MAX_ANSWER: u64 = 4 << 20;
/// The most of a plugin's log kept for an error message.
const MAX_LOG: u64 = 64 << 10;

/// Reads `pipe` to its end on a thread of its own, keeping at most `limit`
/// bytes and discarding the rest.
fn drain(
    mut pipe: impl std::io::Read + Send + 'static,
    limit: u64,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut pipe).take(limit).read_to_end(&mut kept);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        kept
    })
}

/// Runs `provider` for `image` with the request the kubelet would send.
fn exec(
    provider: &CredentialProvider,
    bin_dir: &Path,
    image: &ImageRef,
    timeout: Duration,
) -> Result<CredentialProviderResponse, String> {
    let path = bin_dir.join(&provider.name);
    let request = CredentialProviderRequest::for_image(provider.api_version, image);
    let request = serde_json::to_vec(&request).expect("requests serialise");
    let mut child = Command::new(&path)
        .args(&provider.args)
        .envs(provider.env.iter().map(|e| (&e.name, &e.value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    // Both pipes are drained while the plugin runs: one that logs more than
    // a pipe holds would otherwise block, and look like a timeout.
    let stdout = drain(child.stdout.take().expect("piped"), MAX_ANSWER);
    let stderr = drain(child.stderr.take().expect("piped"), MAX_LOG);
    // A plugin that exits without reading its request closes the pipe early;
    // its exit status then tells what happened.
    let _ = child.stdin.take().expect("piped").write_all(&request);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} gave no answer within {timeout:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join(), stderr.join());
    let (stdout, stderr) = (
        stdout.map_err(|_| "reading the plugin's answer failed")?,
        stderr.map_err(|_| "reading the plugin's log failed")?,
    );
    if !status.success() {
        return Err(format!(
            "{} failed ({status}): {}",
            path.display(),
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&stdout);
    CredentialProviderResponse::from_plugin_output(&stdout, provider.api_version).map_err(|e| {
        format!(
            "{} answered something the kubelet rejects: {e}",
            path.display()
        )
    })
}

/// Replaces each plan's not-yet-known plugin credential by what the plugin
/// answers (the first key matching the image, as the kubelet's keyring picks
/// it), or drops it when the plugin fails or offers nothing for the image,
/// reporting why. Each plugin runs once per image.
pub fn run_plugins(
    plans: &mut [PullPlan],
    config: &CredentialProviderConfig,
    bin_dir: &Path,
    timeout: Duration,
) -> Vec<Finding> {
    let mut answers: HashMap<(String, String), Result<CredentialProviderResponse, String>> =
        HashMap::new();
    let mut findings = Vec::new();
    for plan in plans.iter_mut() {
        let image = plan.image.clone();
        plan.credentials.retain_mut(|planned| {
            let Some(name) = planned.provider.clone() else {
                return true;
            };
            let Some(provider) = config.providers.iter().find(|p| p.name == name) else {
                return true;
            };
            let answer = answers
                .entry((name.clone(), image.name()))
                .or_insert_with(|| exec(provider, bin_dir, &image, timeout));
            let problem = match answer {
                Ok(response) => match response.to_keyring(&name).lookup(&image).first() {
                    Some(found) => {
                        *planned = crate::analyze::planned(found);
                        return true;
                    }
                    None => format!("credential provider {name} answered with no credential for this image"),
                },
                Err(e) => format!(
                    "credential provider {name} failed, so the kubelet offers no credential from it: {e}"
                ),
            };
            findings.push(Finding::new(&plan.subject, Severity::Warning, Reason::NoCredentials, problem));
            false
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A plugin that logs more than a pipe holds before it answers is read
    /// while it runs, not mistaken for one that never answers.
    #[test]
    fn a_chatty_plugin_still_answers() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("chatty");
        std::fs::write(
            &plugin,
            r#"#!/bin/sh
cat > /dev/null
head -c 300000 /dev/zero | tr '\0' x >&2
echo '{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","auth":{"registry.example.com":{"username":"u","password":"p"}}}'
"#,
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config: CredentialProviderConfig = serde_norway::from_str(
            "apiVersion: kubelet.config.k8s.io/v1\n\
             kind: CredentialProviderConfig\n\
             providers:\n\
             - name: chatty\n\
             \x20 matchImages: [\"registry.example.com\"]\n\
             \x20 defaultCacheDuration: 1m\n\
             \x20 apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
        )
        .unwrap();
        let image = ImageRef::parse("registry.example.com/team/app:1").unwrap();
        let answer = exec(
            &config.providers[0],
            dir.path(),
            &image,
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(answer.to_keyring("chatty").lookup(&image).len(), 1);
    }
}
