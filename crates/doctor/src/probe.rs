//! The probe: for each pull plan, a manifest HEAD with every credential the
//! kubelet would try, in its order, through the token flow. The kubelet
//! stops at the first credential that works, so one success makes the
//! other failures warnings; a credential the input lacks might work, so
//! without the pod's pull secrets a failure is a warning too.

use std::collections::HashMap;

use berth_client::{Credentials, Outcome, Probe, RegistryClient};

use crate::analyze::PullPlan;
use crate::report::{Finding, Reason, Severity, Subject};

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
            } else if any_ok || !skipped_plugins.is_empty() || !plan.untried.is_empty() {
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
            if !p.outcome.is_success() && !plan.untried.is_empty() {
                f = f.evidence(format!(
                    "not tried: the pod's pull secrets {}, which the input does not hold",
                    plan.untried.join(", ")
                ));
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

/// Adds the probe's findings to the offline ones. A registry that serves an
/// image anonymously needs no credential for it, so a mismatch that
/// withholds one (the plan offers none) does not fail the pull.
pub fn merge(findings: &mut Vec<Finding>, plans: &[PullPlan], probed: Vec<Finding>) {
    let anonymous: Vec<&Subject> = plans
        .iter()
        .filter(|p| p.credentials.is_empty())
        .map(|p| &p.subject)
        .filter(|s| {
            probed
                .iter()
                .any(|f| &f.subject == *s && f.reason == Reason::Probe(Outcome::Pullable))
        })
        .collect();
    for f in findings.iter_mut().filter(|f| {
        f.reason == Reason::RegistryHostMismatch
            && f.severity == Severity::Error
            && anonymous.contains(&&f.subject)
    }) {
        f.severity = Severity::Info;
        f.evidence.push(
            "the probe read the manifest anonymously: the registry allows anonymous pulls of \
             this image, so the pull works without the credential"
                .into(),
        );
    }
    findings.extend(probed);
}

#[cfg(test)]
mod tests {
    use berth_kube::image_ref::ImageRef;

    use super::*;
    use crate::analyze::PlannedCredential;

    fn subject(container: &str) -> Subject {
        Subject {
            namespace: "prod".into(),
            kind: "Deployment".into(),
            name: "api".into(),
            container: container.into(),
            image: format!("registry.example.com/team/{container}:1.0"),
        }
    }

    fn plan(container: &str, credentials: Vec<PlannedCredential>) -> PullPlan {
        let subject = subject(container);
        PullPlan {
            image: ImageRef::parse(&subject.image).unwrap(),
            subject,
            credentials,
            untried: Vec::new(),
        }
    }

    fn finding(container: &str, severity: Severity, reason: Reason) -> Finding {
        Finding::new(&subject(container), severity, reason, String::new())
    }

    #[test]
    fn an_anonymous_pull_downgrades_only_its_own_mismatch() {
        let mut findings = vec![
            finding("public", Severity::Error, Reason::RegistryHostMismatch),
            finding("private", Severity::Error, Reason::RegistryHostMismatch),
            finding("public", Severity::Warning, Reason::MutableTag),
        ];
        let plans = [plan("public", Vec::new()), plan("private", Vec::new())];
        let probed = vec![
            finding("public", Severity::Info, Reason::Probe(Outcome::Pullable)),
            finding(
                "private",
                Severity::Error,
                Reason::Probe(Outcome::AuthRequired),
            ),
        ];
        merge(&mut findings, &plans, probed);
        let got: Vec<(&str, Severity, &str)> = findings
            .iter()
            .map(|f| (f.subject.container.as_str(), f.severity, f.reason.code()))
            .collect();
        assert_eq!(
            got,
            [
                ("public", Severity::Info, "RegistryHostMismatch"),
                ("private", Severity::Error, "RegistryHostMismatch"),
                ("public", Severity::Warning, "MutableTag"),
                ("public", Severity::Info, "Pullable"),
                ("private", Severity::Error, "AuthRequired"),
            ]
        );
        assert!(findings[0].evidence[0].contains("anonymously"));
    }

    /// A plan that offers credentials was not probed anonymously: its
    /// success says nothing about an anonymous pull.
    #[test]
    fn a_pull_with_credentials_is_no_anonymous_pull() {
        let mut findings = vec![finding(
            "app",
            Severity::Error,
            Reason::RegistryHostMismatch,
        )];
        let offered = PlannedCredential {
            source: "node config /var/lib/kubelet/config.json".into(),
            credentials: Some(Credentials::new("robot", "pw")),
            provider: None,
        };
        let plans = [plan("app", vec![offered])];
        let probed = vec![finding(
            "app",
            Severity::Info,
            Reason::Probe(Outcome::Pullable),
        )];
        merge(&mut findings, &plans, probed);
        assert_eq!(findings[0].severity, Severity::Error);
    }
}
