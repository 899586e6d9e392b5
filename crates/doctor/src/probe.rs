//! The probe: for each pull plan, a manifest HEAD with every credential the
//! kubelet would try, in its order, through the token flow. The kubelet
//! stops at the first credential that works, so one success makes the
//! other failures warnings.

use std::collections::HashMap;

use berth_client::{Credentials, Probe, RegistryClient};

use crate::analyze::PullPlan;
use crate::report::{Finding, Reason, Severity};

/// Probes already made, by image, reference and credentials.
type ProbeCache = HashMap<(String, String, Option<(String, String)>), Probe>;

/// A manifest HEAD for `plan`'s image, made once per distinct image,
/// reference and credentials.
async fn probe_once(
    cache: &mut ProbeCache,
    client: &RegistryClient,
    plan: &PullPlan,
    reference: &str,
    credentials: Option<&Credentials>,
) -> Probe {
    let key = (
        plan.image.to_string(),
        reference.to_owned(),
        credentials.map(|c| (c.username.clone(), c.password.clone())),
    );
    if let Some(p) = cache.get(&key) {
        return p.clone();
    }
    let p = client
        .head_manifest(
            plan.image.domain(),
            plan.image.path(),
            reference,
            credentials,
        )
        .await;
    cache.insert(key, p.clone());
    p
}

/// Probes every plan; identical (image, credential) pairs are probed once.
pub async fn probe(client: &RegistryClient, plans: &[PullPlan]) -> Vec<Finding> {
    let mut cache = ProbeCache::new();
    let mut findings = Vec::new();
    for plan in plans {
        let reference = plan
            .image
            .digest()
            .or(plan.image.kubelet_tag())
            .unwrap_or("latest")
            .to_owned();
        let mut attempts: Vec<(String, Probe)> = Vec::new();
        let offered: Vec<_> = plan
            .credentials
            .iter()
            .filter(|c| c.credentials.is_some())
            .collect();
        let skipped_plugins: Vec<_> = plan
            .credentials
            .iter()
            .filter(|c| c.credentials.is_none())
            .collect();
        if offered.is_empty() && skipped_plugins.is_empty() {
            let p = probe_once(&mut cache, client, plan, &reference, None).await;
            attempts.push(("no credentials (anonymous)".into(), p));
        }
        for c in &offered {
            let p = probe_once(&mut cache, client, plan, &reference, c.credentials.as_ref()).await;
            attempts.push((c.source.clone(), p));
        }
        let any_ok = attempts.iter().any(|(_, p)| p.outcome.is_success());
        for (source, p) in attempts {
            let reason = Reason::Probe(p.outcome);
            let severity = if p.outcome.is_success() {
                Severity::Info
            } else if any_ok || !skipped_plugins.is_empty() {
                Severity::Warning
            } else {
                Severity::Error
            };
            let message = if p.outcome.is_success() {
                format!("the manifest is readable with {source}")
            } else {
                format!("with {source}: {}", p.detail)
            };
            let mut f = Finding::new(&plan.subject, severity, reason, message);
            if let Some(s) = p.status {
                f = f.evidence(format!("HEAD {} → {s}", p.url));
            } else {
                f = f.evidence(p.url.clone());
            }
            if let Some(d) = &p.digest {
                f = f.evidence(format!("digest {d}"));
            }
            if let Some(fix) =
                crate::fix::for_reason(reason, Some(&plan.image), &plan.subject.namespace)
            {
                f = f.fix(fix);
            }
            findings.push(f);
        }
        for c in skipped_plugins {
            findings.push(Finding::new(
                &plan.subject,
                Severity::Info,
                Reason::NoCredentials,
                format!(
                    "{} would supply credentials on the node; they cannot be probed from here",
                    c.source
                ),
            ));
        }
    }
    findings
}
