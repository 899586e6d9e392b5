//! Running the node's credential provider plugins as the kubelet does, so the
//! probe can try the credentials they hand out instead of only naming them.
//!
//! Only with `--credential-provider-bin-dir`: the plugin executables usually
//! live on the nodes, not where doctor runs.

use std::collections::HashMap;
use std::io::Write as _;
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
    // A plugin that exits without reading its request closes the pipe early;
    // its exit status then tells what happened.
    let _ = child.stdin.take().expect("piped").write_all(&request);
    let deadline = Instant::now() + timeout;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} gave no answer within {timeout:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
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
