//! The offline analysis: for every container, what the API server and the
//! kubelet will do with its image reference, pull policy and pull secrets,
//! and every way that goes wrong. Pure: it reads an [`Inventory`] and the
//! node-side configuration and returns findings plus, for the probe, the
//! credentials the kubelet would try in its order.

use berth_client::Credentials;
use berth_kube::credential_provider::CredentialProviderConfig;
use berth_kube::docker_config::DockerConfigFile;
use berth_kube::image_ref::{ImageRef, parse_image_name};
use berth_kube::keyring::{
    CredentialSource, Keyring, KeyringEntry, MatchedCredential, PullSecret, SkipReason, Verdict,
    keyring_from_pull_secrets, normalize_key,
};
use berth_kube::pull_policy::{PullPolicy, effective_pull_policy};

use crate::events;
use crate::fix::{self, secret_create_fix, server_for};
use crate::model::{Event, Inventory, Secret, Workload};
use crate::report::{Finding, Reason, Severity, Subject};

/// What the node contributes: its docker config and credential providers.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// The node's `config.json` and the path it was read from.
    pub docker_config: Option<(String, DockerConfigFile)>,
    pub providers: Option<CredentialProviderConfig>,
}

/// One credential the kubelet would offer, for the probe.
#[derive(Debug, Clone)]
pub struct PlannedCredential {
    /// `secret prod/regcred`, `node config /var/lib/kubelet/config.json`, …
    pub source: String,
    /// `None` for a credential provider plugin, whose answer is not known offline.
    pub credentials: Option<Credentials>,
    /// The plugin's name, for a credential a plugin supplies.
    pub provider: Option<String>,
}

/// What the kubelet will do to pull one container's image.
#[derive(Debug, Clone)]
pub struct PullPlan {
    pub subject: Subject,
    pub image: ImageRef,
    pub credentials: Vec<PlannedCredential>,
    /// Pull secrets of the pod that the input does not hold: the kubelet may
    /// offer credentials from them that cannot be tried here.
    pub untried: Vec<String>,
}

/// The analysis result.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub findings: Vec<Finding>,
    pub plans: Vec<PullPlan>,
}

fn pull_secret(s: &Secret) -> PullSecret {
    PullSecret {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        secret_type: s.secret_type.clone(),
        data: s.data.clone(),
    }
}

/// Why one Secret gives the kubelet no usable credentials, if it does not.
enum SecretCheck {
    Usable,
    Problem(Reason, Severity, String, Vec<String>),
    /// The kubelet cannot read it, and then fails every pull of the pod.
    Unreadable(String, Vec<String>),
}

fn check_secret(s: &Secret) -> SecretCheck {
    let key = match s.secret_type.as_str() {
        "kubernetes.io/dockerconfigjson" => ".dockerconfigjson",
        "kubernetes.io/dockercfg" => ".dockercfg",
        _ => "",
    };
    if !key.is_empty() && s.undecodable.iter().any(|k| k == key) {
        return SecretCheck::Problem(
            Reason::SecretMalformed,
            Severity::Error,
            format!(
                "pull secret {} has a {key} value that is not base64",
                s.name
            ),
            vec![format!("secret {}/{}: data.{key}", s.namespace, s.name)],
        );
    }
    match keyring_from_pull_secrets(&[pull_secret(s)]) {
        Err(e) => SecretCheck::Unreadable(
            format!("pull secret {} cannot be read by the kubelet", s.name),
            vec![e.to_string()],
        ),
        Ok(out) => {
            if let Some((_, reason)) = out.skipped.first() {
                return match reason {
                    SkipReason::UnsupportedType(t) => SecretCheck::Problem(
                        Reason::SecretWrongType,
                        Severity::Error,
                        format!(
                            "pull secret {} has type {t}, which the kubelet silently ignores",
                            s.name
                        ),
                        vec![format!("secret {}/{}: {reason}", s.namespace, s.name)],
                    ),
                    SkipReason::MissingKey(k) => SecretCheck::Problem(
                        Reason::SecretMalformed,
                        Severity::Error,
                        format!(
                            "pull secret {} has no {k} data, so it holds no credentials",
                            s.name
                        ),
                        vec![format!("secret {}/{}: {reason}", s.namespace, s.name)],
                    ),
                };
            }
            // Entries without a user name or password (what a config.json
            // from a credential store holds) make the kubelet send empty
            // credentials: an anonymous pull.
            let holds_credentials = out.keyring.keys().iter().any(|key| {
                out.keyring.entries(key).iter().any(|e| {
                    !e.credentials.username.is_empty() || !e.credentials.password.is_empty()
                })
            });
            if !holds_credentials {
                let mut evidence = vec![if out.keyring.is_empty() {
                    format!(
                        "secret {}/{}: no entry under \"auths\"",
                        s.namespace, s.name
                    )
                } else {
                    format!(
                        "secret {}/{}: entries without credentials: {}",
                        s.namespace,
                        s.name,
                        out.keyring.keys().join(", ")
                    )
                }];
                for i in out.keyring.ignored() {
                    evidence.push(format!(
                        "entry {:?} is skipped by the kubelet: {}",
                        i.server, i.error
                    ));
                }
                return SecretCheck::Problem(
                    Reason::SecretMalformed,
                    Severity::Error,
                    format!(
                        "pull secret {} holds no registry credentials the kubelet can use \
                         (a config.json from a credential store has only \"credsStore\")",
                        s.name
                    ),
                    evidence,
                );
            }
            SecretCheck::Usable
        }
    }
}

/// Runs the whole offline analysis.
pub fn analyze(inv: &Inventory, node: &NodeConfig) -> Analysis {
    let mut out = Analysis::default();
    let node_keyring = node
        .docker_config
        .as_ref()
        .and_then(|(path, cfg)| {
            Keyring::from_configs([(CredentialSource::NodeConfig { path: path.clone() }, cfg)]).ok()
        })
        .unwrap_or_default();
    for w in &inv.workloads {
        analyze_workload(inv, node, &node_keyring, w, &mut out);
    }
    for w in &inv.workloads {
        for state in w
            .waiting
            .iter()
            .filter(|s| events::is_pull_waiting(&s.reason))
        {
            let subject =
                container_subject(w, &state.container, container_image(w, &state.container));
            if let Some(f) = from_text(
                subject,
                &state.message,
                "the container status",
                state.message.clone(),
            ) {
                out.findings.push(f);
            }
        }
    }
    out.findings
        .extend(inv.events.iter().filter_map(|e| event_finding(inv, e)));
    fold_controlled(inv, &mut out);
    out
}

/// The workload a finding or plan about `subject` is reported on: the
/// outermost controller of it in the input.
fn reported_on(inv: &Inventory, subject: &Subject) -> (String, String, String) {
    let root = inv
        .workload(&subject.namespace, &subject.kind, &subject.name)
        .map(|w| inv.controller_root(w));
    match root {
        Some(w) => (w.namespace.clone(), w.kind.clone(), w.name.clone()),
        None => (
            subject.namespace.clone(),
            subject.kind.clone(),
            subject.name.clone(),
        ),
    }
}

/// Says once what a controller and the pods it made share: `kubectl get
/// pods,deployments` output would otherwise repeat every finding, and every
/// probe, for each replica. A finding is kept on the controller when it has
/// it, and names the pods folded into it; a plan is probed once.
fn fold_controlled(inv: &Inventory, out: &mut Analysis) {
    use std::collections::HashMap;
    let on_root =
        |s: &Subject, root: &(String, String, String)| s.kind == root.1 && s.name == root.2;

    let mut findings: Vec<(Finding, Vec<String>)> = Vec::new();
    let mut index = HashMap::new();
    for f in std::mem::take(&mut out.findings) {
        let root = reported_on(inv, &f.subject);
        let key = (
            root.clone(),
            f.subject.container.clone(),
            f.subject.image.clone(),
            f.reason,
            f.severity,
            f.message.clone(),
        );
        match index.get(&key) {
            None => {
                index.insert(key, findings.len());
                findings.push((f, Vec::new()));
            }
            Some(&i) => {
                let (kept, folded) = &mut findings[i];
                let mut other = f;
                if on_root(&other.subject, &root) && !on_root(&kept.subject, &root) {
                    std::mem::swap(kept, &mut other);
                }
                folded.push(format!("{} {}", other.subject.kind, other.subject.name));
            }
        }
    }
    out.findings = findings
        .into_iter()
        .map(|(mut f, mut folded)| {
            if !folded.is_empty() {
                folded.sort();
                f.evidence
                    .push(format!("the same for {}", name_list(&folded)));
            }
            f
        })
        .collect();

    let mut plans: Vec<PullPlan> = Vec::new();
    let mut index = HashMap::new();
    for plan in std::mem::take(&mut out.plans) {
        let root = reported_on(inv, &plan.subject);
        let sources: Vec<String> = plan.credentials.iter().map(|c| c.source.clone()).collect();
        let key = (
            root.clone(),
            plan.subject.container.clone(),
            plan.subject.image.clone(),
            sources,
        );
        match index.get(&key) {
            None => {
                index.insert(key, plans.len());
                plans.push(plan);
            }
            Some(&i) => {
                if on_root(&plan.subject, &root) {
                    plans[i] = plan;
                }
            }
        }
    }
    out.plans = plans;
}

/// `a, b, c` for a few names, `a, b, c, d, e and 7 more` for many.
fn name_list(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

fn container_image<'a>(w: &'a Workload, container: &str) -> Option<&'a str> {
    w.spec
        .all_containers()
        .find(|(_, c)| c.name == container)
        .and_then(|(_, c)| c.image.as_deref())
}

/// `container` of `w` (`""` for the pod as a whole), running `image`.
fn container_subject(w: &Workload, container: &str, image: Option<&str>) -> Subject {
    Subject {
        namespace: w.namespace.clone(),
        kind: w.kind.clone(),
        name: w.name.clone(),
        container: container.to_owned(),
        image: image.unwrap_or_default().to_owned(),
    }
}

/// The finding for a pull-failure text about `subject` (`what` says where it
/// was read), with the fix for its cause; `None` when the text names none.
fn from_text(subject: Subject, message: &str, what: &str, evidence: String) -> Option<Finding> {
    let (reason, severity, cause) = events::classify(message)?;
    let image = ImageRef::parse(&subject.image).ok();
    let mut f = Finding::new(&subject, severity, reason, format!("{cause} (from {what})"))
        .evidence(evidence);
    f.fix = fix::for_reason(reason, image.as_ref(), &subject.namespace);
    Some(f)
}

/// The finding an Event shows, if it is about pulling an image.
fn event_finding(inv: &Inventory, e: &Event) -> Option<Finding> {
    let w = inv.workload(&e.namespace, &e.object_kind, &e.object_name);
    let evidence = format!("event {}: {}", e.reason, e.message);
    if let Some(names) = events::unretrieved_secrets(&e.reason, &e.message) {
        return Some(unretrieved_secrets_finding(e, w, &names, evidence));
    }
    if !events::is_pull_event(&e.reason, &e.message) {
        return None;
    }
    let container = e.container.clone().unwrap_or_default();
    let image = w
        .and_then(|w| container_image(w, &container))
        .or(events::image_in_message(&e.message));
    from_text(
        event_subject(e, container, image),
        &e.message,
        "an Event",
        evidence,
    )
}

/// What an Event is about: its object, which need not be in the input.
fn event_subject(e: &Event, container: String, image: Option<&str>) -> Subject {
    Subject {
        namespace: e.namespace.clone(),
        kind: e.object_kind.clone(),
        name: e.object_name.clone(),
        container,
        image: image.unwrap_or_default().to_owned(),
    }
}

/// The kubelet's `FailedToRetrieveImagePullSecret`: it could not read these
/// pull secrets of the pod `w` (a missing or misspelled one), and pulls
/// without them.
fn unretrieved_secrets_finding(
    e: &Event,
    w: Option<&Workload>,
    names: &[&str],
    evidence: String,
) -> Finding {
    let ns = &e.namespace;
    let subject = event_subject(e, String::new(), None);
    let server = w.map_or_else(|| "REGISTRY".to_owned(), fix_server);
    // A text without names still gets the command, with a placeholder.
    let to_create = if names.is_empty() { &["NAME"] } else { names };
    let fix = to_create
        .iter()
        .map(|n| secret_create_fix(n, &server, ns))
        .chain(["or correct the names in the pod's imagePullSecrets".to_owned()])
        .collect::<Vec<_>>()
        .join("\n");
    let (which, them) = match names {
        [] => ("some of the pod's pull secrets".to_owned(), "them"),
        [one] => (format!("pull secret {one}"), "it"),
        _ => (format!("pull secrets {}", names.join(", ")), "them"),
    };
    Finding::new(
        &subject,
        Severity::Error,
        Reason::SecretNotFound,
        format!(
            "the kubelet cannot retrieve {which} from namespace {ns}, so the pod's images are \
             pulled without {them}: missing there, or misspelled in imagePullSecrets (from an \
             Event)"
        ),
    )
    .evidence(evidence)
    .fix(fix)
}

/// The registry named in fixes about `w` as a whole: its first parsable
/// image's.
fn fix_server(w: &Workload) -> String {
    w.spec
        .all_containers()
        .filter_map(|(_, c)| c.image.as_deref())
        .find_map(|i| ImageRef::parse(i).ok())
        .as_ref()
        .map_or_else(|| "REGISTRY".into(), server_for)
}

fn names_json(names: &[String]) -> String {
    let items: Vec<String> = names
        .iter()
        .map(|n| format!("{{\"name\":\"{n}\"}}"))
        .collect();
    format!("[{}]", items.join(","))
}

fn analyze_workload(
    inv: &Inventory,
    node: &NodeConfig,
    node_keyring: &Keyring,
    w: &Workload,
    out: &mut Analysis,
) {
    let ns = &w.namespace;
    let pod_subject = container_subject(w, "", None);
    let fix_server = fix_server(w);

    let sa_name = w.spec.service_account();
    let sa = inv.service_account(ns, sa_name);
    if sa.is_none() && sa_name != "default" && inv.has_service_accounts_in(ns) {
        out.findings.push(
            Finding::new(
                &pod_subject,
                Severity::Error,
                Reason::ServiceAccountNotFound,
                format!(
                    "ServiceAccount {sa_name} does not exist in namespace {ns}; the API server \
                     refuses to create the pod"
                ),
            )
            .evidence(format!(
                "serviceAccountName: {sa_name}; ServiceAccounts in {ns}: {}",
                inv.service_accounts
                    .iter()
                    .filter(|s| &s.namespace == ns)
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .fix(format!(
                "kubectl create serviceaccount {sa_name} --namespace {ns}"
            )),
        );
    }
    let own: Vec<String> = w
        .spec
        .image_pull_secrets
        .iter()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    let sa_secrets: Vec<String> = sa.map(|s| s.image_pull_secrets.clone()).unwrap_or_default();
    // A live pod whose controller's template lists no secrets got its list
    // from the ServiceAccount at admission: one the ServiceAccount gained
    // since is missing because the pod is older, not because it was left out.
    let root = inv.controller_root(w);
    let copied_from_sa =
        w.live && !std::ptr::eq(root, w) && root.spec.image_pull_secrets.is_empty();
    let effective: Vec<String> = if !own.is_empty() {
        let ignored: Vec<&String> = sa_secrets.iter().filter(|s| !own.contains(s)).collect();
        if !ignored.is_empty() {
            let (severity, message, fix) = if copied_from_sa {
                (
                    Severity::Error,
                    format!(
                        "ServiceAccount {sa_name} lists pull secrets this pod lacks: it got the \
                         ServiceAccount's list when it was created, before they were added"
                    ),
                    restart_hint(inv, w),
                )
            } else {
                (
                    Severity::Warning,
                    format!(
                        "the pod lists its own imagePullSecrets, so those of ServiceAccount \
                         {sa_name} are not added to it"
                    ),
                    "add the ServiceAccount's secrets to the pod's imagePullSecrets too".to_owned(),
                )
            };
            out.findings.push(
                Finding::new(
                    &pod_subject,
                    severity,
                    Reason::ServiceAccountSecretsNotApplied,
                    message,
                )
                .evidence(format!(
                    "pod {ns}/{} imagePullSecrets: {}; ServiceAccount {sa_name} lists: {}",
                    w.name,
                    own.join(", "),
                    sa_secrets.join(", ")
                ))
                .fix(fix),
            );
        }
        own.clone()
    } else if w.live {
        if !sa_secrets.is_empty() {
            out.findings.push(
                Finding::new(
                    &pod_subject,
                    Severity::Error,
                    Reason::ServiceAccountSecretsNotApplied,
                    format!(
                        "ServiceAccount {sa_name} lists pull secrets but this pod has none: it \
                         was created before they were added, and a pod gets them only when it \
                         is created"
                    ),
                )
                .evidence(format!(
                    "pod {}/{} imagePullSecrets: none; ServiceAccount {sa_name} lists: {}",
                    ns,
                    w.name,
                    sa_secrets.join(", ")
                ))
                .fix(restart_hint(inv, w)),
            );
        }
        Vec::new()
    } else {
        sa_secrets.clone()
    };

    // Resolve every referenced secret.
    let mut usable: Vec<PullSecret> = Vec::new();
    let mut not_given: Vec<String> = Vec::new();
    let mut pulls_fail = false;
    for name in &effective {
        let via = if own.contains(name) {
            String::new()
        } else {
            format!(" (from ServiceAccount {sa_name})")
        };
        match inv.secret(ns, name) {
            Some(s) => {
                let (reason, severity, message, evidence) = match check_secret(s) {
                    SecretCheck::Usable => {
                        usable.push(pull_secret(s));
                        continue;
                    }
                    SecretCheck::Problem(reason, severity, message, evidence) => {
                        (reason, severity, message, evidence)
                    }
                    SecretCheck::Unreadable(message, mut evidence) => {
                        pulls_fail = true;
                        evidence
                            .push("the kubelet then fails every image pull of the pod".to_owned());
                        (Reason::SecretMalformed, Severity::Error, message, evidence)
                    }
                };
                // A Secret's type cannot change; its data can, in place.
                let replace = if reason == Reason::SecretWrongType {
                    format!("kubectl delete secret {name} --namespace {ns} && ")
                } else {
                    String::new()
                };
                let mut f = Finding::new(&pod_subject, severity, reason, message);
                f.evidence = evidence;
                out.findings.push(f.fix(format!(
                    "{replace}{}",
                    secret_create_fix(name, &fix_server, ns)
                )));
            }
            None => {
                let elsewhere: Vec<&Secret> = inv
                    .secrets
                    .iter()
                    .filter(|s| &s.name == name && &s.namespace != ns)
                    .collect();
                if let Some(other) = elsewhere.first() {
                    // Said as seen: without the pod namespace's secrets in
                    // the input, its absence there is not known.
                    let where_ = if inv.has_secrets_in(ns) {
                        "exists only in namespace"
                    } else {
                        "is not in the input for its namespace, but exists in namespace"
                    };
                    out.findings.push(
                        Finding::new(
                            &pod_subject,
                            Severity::Error,
                            Reason::SecretInOtherNamespace,
                            format!(
                                "pull secret {name}{via} {where_} {}, and a pod can use secrets \
                                 of its own namespace {ns} only",
                                other.namespace
                            ),
                        )
                        .evidence(format!(
                            "found {}; not found in {ns}",
                            elsewhere
                                .iter()
                                .map(|s| format!("{}/{}", s.namespace, s.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                        .fix(secret_create_fix(name, &fix_server, ns)),
                    );
                } else if inv.has_secrets_in(ns) {
                    out.findings.push(
                        Finding::new(
                            &pod_subject,
                            Severity::Error,
                            Reason::SecretNotFound,
                            format!(
                                "pull secret {name}{via} does not exist in namespace {ns}; the \
                                 kubelet skips it and pulls without it"
                            ),
                        )
                        .evidence(format!(
                            "secrets in {ns}: {}",
                            inv.secrets
                                .iter()
                                .filter(|s| &s.namespace == ns)
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                        .fix(secret_create_fix(name, &fix_server, ns)),
                    );
                } else {
                    not_given.push(format!("{name}{via}"));
                }
            }
        }
    }
    if !not_given.is_empty() {
        out.findings.push(
            Finding::new(
                &pod_subject,
                Severity::Warning,
                Reason::SecretsNotGiven,
                format!(
                    "the input holds no Secret of namespace {ns}, so the pod's pull secrets \
                     cannot be checked: whether they exist and which registries they serve is \
                     not known"
                ),
            )
            .evidence(format!("not in the input: {}", not_given.join(", ")))
            .fix(format!(
                "pass the namespace's secrets too: kubectl get \
                 pods,deployments,serviceaccounts,secrets,events --namespace {ns} -o yaml | \
                 berth doctor -f -"
            )),
        );
    }
    let pod_keyring = keyring_from_pull_secrets(&usable)
        .map(|k| k.keyring)
        .unwrap_or_default();
    let chosen = chosen_secrets(inv, w, sa);
    let chosen: Vec<PullSecret> = usable
        .into_iter()
        .filter(|s| chosen.contains(&s.name))
        .collect();

    let pod = PodPulls {
        keyring: pod_keyring,
        idle: idle_secrets(&chosen, w),
        // Without the namespace's Secrets, none of the pod's can be read.
        untried: if inv.has_secrets_in(ns) {
            Vec::new()
        } else {
            effective.clone()
        },
        effective,
        own,
        sa_name,
        sa_secrets,
        fails: pulls_fail,
    };
    for (_, c) in w.spec.all_containers() {
        analyze_container(inv, node, node_keyring, w, c, &pod, out);
    }
}

/// The pull secrets the pod's author listed for it. A ServiceAccount's
/// serve the whole namespace (admission copies them into every new pod that
/// lists none), so one of them serving no image of this pod says nothing
/// about the pod. A live pod's list is its author's where its controller's
/// template lists the secret, or where its ServiceAccount (in the input)
/// does not.
fn chosen_secrets(
    inv: &Inventory,
    w: &Workload,
    sa: Option<&crate::model::ServiceAccount>,
) -> Vec<String> {
    let root = inv.controller_root(w);
    w.spec
        .image_pull_secrets
        .iter()
        .map(|r| &r.name)
        .filter(|name| {
            !w.live
                || (!std::ptr::eq(root, w)
                    && root
                        .spec
                        .image_pull_secrets
                        .iter()
                        .any(|r| &r.name == *name))
                || sa.is_some_and(|sa| !sa.image_pull_secrets.contains(name))
        })
        .cloned()
        .collect()
}

/// A pull secret that serves no image of its pod.
struct IdleSecret {
    name: String,
    /// Its registry keys as written in it.
    servers: Vec<String>,
}

/// The `secrets` that serve none of the images of `w` (init and ephemeral
/// containers' included). One serving an image under `imagePullPolicy:
/// Never` still shows what it was meant for.
fn idle_secrets(secrets: &[PullSecret], w: &Workload) -> Vec<IdleSecret> {
    let images: Vec<ImageRef> = w
        .spec
        .all_containers()
        .filter_map(|(_, c)| ImageRef::parse(c.image.as_deref()?).ok())
        .collect();
    secrets
        .iter()
        .filter_map(|s| {
            let keyring = keyring_from_pull_secrets(std::slice::from_ref(s))
                .ok()?
                .keyring;
            if images.iter().any(|i| !keyring.lookup(i).is_empty()) {
                return None;
            }
            let servers = keyring
                .keys()
                .iter()
                .flat_map(|k| keyring.entries(k))
                .map(|e| e.server.clone())
                .collect();
            Some(IdleSecret {
                name: s.name.clone(),
                servers,
            })
        })
        .collect()
}

/// What a pod offers the kubelet for its pulls, worked out once per pod.
struct PodPulls<'a> {
    keyring: Keyring,
    /// The pod's own pull secrets that serve none of its images.
    idle: Vec<IdleSecret>,
    /// Pull secrets the kubelet may offer that the input does not hold.
    untried: Vec<String>,
    /// The pull secrets the pod has: its own, else its ServiceAccount's.
    effective: Vec<String>,
    own: Vec<String>,
    sa_name: &'a str,
    sa_secrets: Vec<String>,
    /// A pull secret the kubelet cannot read: every pull of the pod fails.
    fails: bool,
}

fn analyze_container(
    inv: &Inventory,
    node: &NodeConfig,
    node_keyring: &Keyring,
    w: &Workload,
    c: &crate::model::Container,
    pod: &PodPulls<'_>,
    out: &mut Analysis,
) {
    let PodPulls {
        keyring: pod_keyring,
        idle,
        untried,
        effective,
        own,
        sa_name,
        sa_secrets,
        fails,
    } = pod;
    let sa_name = *sa_name;
    let ns = &w.namespace;
    let image_text = c.image.clone().unwrap_or_default();
    let subject = Subject {
        namespace: ns.clone(),
        kind: w.kind.clone(),
        name: w.name.clone(),
        container: c.name.clone(),
        image: image_text.clone(),
    };
    if let Err(e) = parse_image_name(&image_text) {
        out.findings.push(
            Finding::new(
                &subject,
                Severity::Error,
                Reason::InvalidImageName,
                "the image reference does not parse; the kubelet reports InvalidImageName and \
                 never pulls"
                    .into(),
            )
            .evidence(e.to_string())
            .fix(fix::INVALID_IMAGE_NAME),
        );
        return;
    }
    let image = ImageRef::parse(&image_text).expect("parsed above");
    let explicit = c.image_pull_policy.as_deref().and_then(|p| p.parse().ok());
    let policy = effective_pull_policy(&image_text, explicit);
    if policy == PullPolicy::Never {
        out.findings.push(
            Finding::new(
                &subject,
                Severity::Warning,
                Reason::NeverPolicy,
                "imagePullPolicy is Never: the kubelet never pulls, so the image must already be \
                 on every node the pod can run on (else ErrImageNeverPull)"
                    .into(),
            )
            .fix(fix::NEVER_POLICY),
        );
        return;
    }
    if image.digest().is_none() {
        let tag = image.kubelet_tag().unwrap_or("latest");
        let untagged = image.tag().is_none();
        let floating = tag == "latest" || !tag.bytes().any(|b| b.is_ascii_digit());
        if floating {
            let what = if untagged {
                "has no tag, so it means :latest".to_owned()
            } else {
                format!("uses the tag {tag:?}, which is usually moved")
            };
            out.findings.push(
                Finding::new(
                    &subject,
                    Severity::Warning,
                    Reason::MutableTag,
                    format!(
                        "the image {what}: nodes resolve it when they pull, so pods may run \
                         different images"
                    ),
                )
                .evidence(format!("imagePullPolicy: {policy}"))
                .fix(format!(
                    "pin a versioned tag or a digest, e.g. image: {}@sha256:<digest>",
                    image.familiar_name()
                )),
            );
        }
    }

    if *fails {
        // The unreadable secret, reported for the pod, fails this pull before
        // any registry is asked: nothing to probe, no credential to discuss.
        return;
    }
    let pod_matches = pod_keyring.lookup(&image);
    let node_matches = node_keyring.lookup(&image);
    let providers: Vec<String> = node
        .providers
        .iter()
        .flat_map(|p| &p.providers)
        .filter(|p| p.matches(&image))
        .map(|p| p.name.clone())
        .collect();
    let mut planned: Vec<PlannedCredential> = pod_matches
        .iter()
        .chain(node_matches.iter())
        .map(planned)
        .collect();
    planned.extend(providers.iter().map(|p| PlannedCredential {
        source: format!("credential provider {p}"),
        credentials: None,
        provider: Some(p.clone()),
    }));
    out.plans.push(PullPlan {
        subject: subject.clone(),
        image: image.clone(),
        credentials: planned,
        untried: untried.clone(),
    });
    passwordless_credentials(
        &subject,
        &image,
        &pod_matches,
        &node_matches,
        &providers,
        out,
    );
    let node_has = !node_matches.is_empty() || !providers.is_empty();
    // Secrets for other registries only are no mismatch: the kubelet pulls
    // this image anonymously, as for a pod without secrets.
    let meant_for_image = pod_keyring
        .explain(&image)
        .iter()
        .any(|ex| meant_for(ex.key, &image));

    if pod_matches.is_empty() && meant_for_image {
        out.findings
            .push(host_mismatch(inv, w, &subject, &image, pod, node_has, &[]));
        return;
    }
    // The ServiceAccount holds the credentials for this image, but the pod's
    // own list keeps them out.
    let ignored_match = (!own.is_empty() && pod_matches.is_empty() && !node_has)
        .then(|| {
            sa_secrets
                .iter()
                .filter(|n| !own.contains(n))
                .find_map(|name| {
                    let secret = inv.secret(ns, name)?;
                    let usable = matches!(check_secret(secret), SecretCheck::Usable)
                        && keyring_from_pull_secrets(&[pull_secret(secret)])
                            .is_ok_and(|k| !k.keyring.lookup(&image).is_empty());
                    usable.then_some(name)
                })
        })
        .flatten();
    if let Some(name) = ignored_match {
        out.findings.push(
            Finding::new(
                &subject,
                Severity::Error,
                Reason::ServiceAccountSecretsNotApplied,
                format!(
                    "ServiceAccount {sa_name}'s pull secret {name} holds the credentials for {}, \
                     but the pod lists its own imagePullSecrets, so it is not used and none is \
                     offered",
                    image.domain()
                ),
            )
            .evidence(format!("pod imagePullSecrets: {}", own.join(", ")))
            .fix(add_pull_secret_fix(inv.controller_root(w), name)),
        );
        return;
    }
    if pod_matches.is_empty() && !node_has {
        // A secret that would match sits unused in the namespace?
        let candidates: Vec<&Secret> = inv
            .secrets
            .iter()
            .filter(|s| {
                &s.namespace == ns && !effective.contains(&s.name) && !sa_secrets.contains(&s.name)
            })
            .filter(|s| {
                matches!(check_secret(s), SecretCheck::Usable)
                    && keyring_from_pull_secrets(&[pull_secret(s)])
                        .map(|k| !k.keyring.lookup(&image).is_empty())
                        .unwrap_or(false)
            })
            .collect();
        if let Some(s) = candidates.first() {
            let fix = reference_fix(inv, w, sa_name, &s.name);
            let holders = if inv.service_account(ns, sa_name).is_some() {
                format!("neither the pod nor ServiceAccount {sa_name} references it")
            } else {
                format!(
                    "the pod does not reference it (ServiceAccount {sa_name} is not in the input)"
                )
            };
            out.findings.push(
                Finding::new(
                    &subject,
                    Severity::Error,
                    Reason::SecretNotReferenced,
                    format!(
                        "pull secret {} in namespace {ns} matches {}, but {holders}, so no \
                         credential is offered",
                        s.name,
                        image.domain()
                    ),
                )
                .evidence(format!(
                    "secret {}/{} ({}); pod imagePullSecrets: {}",
                    ns,
                    s.name,
                    s.secret_type,
                    if effective.is_empty() {
                        "none".to_owned()
                    } else {
                        effective.join(", ")
                    }
                ))
                .fix(fix),
            );
        } else if !idle.is_empty() {
            // The pod's author gave it credentials that serve none of its
            // images: taken as meant for this one, written for another host.
            out.findings
                .push(host_mismatch(inv, w, &subject, &image, pod, false, idle));
        } else if untried.is_empty() && !(w.live && own.is_empty() && !sa_secrets.is_empty()) {
            let others = if pod_keyring.is_empty() {
                String::new()
            } else {
                " (the pod's pull secrets are for other registries)".to_owned()
            };
            out.findings.push(
                Finding::new(
                    &subject,
                    Severity::Info,
                    Reason::NoCredentials,
                    format!(
                        "no credential will be offered for {}{others}: the pull is anonymous, \
                         which works only for public images",
                        image.domain()
                    ),
                )
                .fix(format!(
                    "if the image is private: {}",
                    secret_create_fix("regcred", &server_for(&image), ns)
                )),
            );
        }
    }
}

/// The finding that the pod's pull secrets offer nothing for `image`: a key
/// meant for its registry misses it under the kubelet's rules, or the
/// `idle` secrets serve no image of the pod at all. With `node_has`, the
/// node's credentials are offered instead.
fn host_mismatch(
    inv: &Inventory,
    w: &Workload,
    subject: &Subject,
    image: &ImageRef,
    pod: &PodPulls<'_>,
    node_has: bool,
    idle: &[IdleSecret],
) -> Finding {
    let ns = &w.namespace;
    let host = image.domain();
    let message = if idle.is_empty() {
        format!(
            "the pod's pull secrets hold credentials, but no key matches {} under the \
             kubelet's rules, so none is offered for this image{}",
            image.name(),
            if node_has {
                " (the node's credentials are used instead)"
            } else {
                ""
            }
        )
    } else {
        let secrets: Vec<String> = idle
            .iter()
            .map(|s| {
                let servers: Vec<String> = s.servers.iter().map(|k| format!("{k:?}")).collect();
                format!("{} (for {})", s.name, servers.join(", "))
            })
            .collect();
        let (which, serve) = if idle.len() == 1 {
            ("pull secret", "serves")
        } else {
            ("pull secrets", "serve")
        };
        format!(
            "{which} {} {serve} no image of this pod, and no key matches {host}, so \
             no credential is offered for this image: the kubelet pulls it anonymously, which \
             fails for a private image (401 Unauthorized)",
            secrets.join(", ")
        )
    };
    let mut f = Finding::new(
        subject,
        if node_has {
            Severity::Warning
        } else {
            Severity::Error
        },
        Reason::RegistryHostMismatch,
        message,
    );
    f.evidence = key_evidence(&pod.keyring, image);
    let name = idle
        .first()
        .map(|s| &s.name)
        .or(pod.effective.first())
        .map_or("regcred", String::as_str);
    let new_secret = format!("{name}-{}", slug(host));
    f.fix(format!(
        "{}   # or change the secret's server to {}\nthen reference it: {}",
        secret_create_fix(&new_secret, &server_for(image), ns),
        server_for(image),
        reference_fix(inv, w, pod.sa_name, &new_secret)
    ))
}

/// Why each key of the pod's secrets is not offered for `image`: in detail
/// for a key meant for its registry (a near miss to correct), in a word for
/// a key of another registry.
fn key_evidence(keyring: &Keyring, image: &ImageRef) -> Vec<String> {
    let mut out = Vec::new();
    for ex in keyring.explain(image) {
        let Verdict::NoMatch(reasons) = &ex.verdict else {
            continue;
        };
        for entry in ex.entries {
            let mut e = format!("{} key {:?}", entry.source, entry.server);
            if !meant_for(ex.key, image) {
                e.push_str(&format!(": for another registry than {}", image.domain()));
                if entry.server == "https://index.docker.io/v1/" {
                    e.push_str(
                        " (Docker Hub's key, which kubectl create secret docker-registry \
                         writes when --docker-server is not given)",
                    );
                }
                out.push(e);
                continue;
            }
            let mut why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            if let Some(h) = hub_hint(ex.key, image) {
                why.insert(0, h);
            }
            if let Ok(n) = normalize_key(&entry.server)
                && n.key != entry.server
            {
                e.push_str(&format!(" (read as {:?}", n.key));
                if let Some(s) = &n.scheme {
                    e.push_str(&format!("; the {s}:// scheme never matters"));
                }
                e.push(')');
            }
            e.push_str(": ");
            e.push_str(&why.join("; "));
            out.push(e);
        }
    }
    out
}

/// Reports when the first credentials the kubelet offers for `image` have no
/// password: containerd and CRI-O then send none, so the pull is anonymous.
/// `docker login` against a token server that grants refresh tokens (berth,
/// Docker Hub with SSO, `az acr login`) keeps only "user:" in `auth` beside an
/// `identitytoken`, which the kubelet ignores.
fn passwordless_credentials(
    subject: &Subject,
    image: &ImageRef,
    pod_matches: &[MatchedCredential],
    node_matches: &[MatchedCredential],
    providers: &[String],
    out: &mut Analysis,
) {
    // Only what is tried first decides: after a complete credential, these
    // are reached only if it fails.
    let entries: Vec<&KeyringEntry> = pod_matches
        .iter()
        .chain(node_matches)
        .map(|m| &m.entry)
        .collect();
    let passwordless: Vec<&KeyringEntry> = entries
        .iter()
        .take_while(|e| e.credentials.password.is_empty())
        .copied()
        .collect();
    let Some(first) = passwordless.first() else {
        return;
    };
    let more_follow = entries.len() > passwordless.len() || !providers.is_empty();
    let (severity, then) = if more_follow {
        (
            Severity::Info,
            "; for a private image the kubelet then tries the next credential",
        )
    } else {
        (
            Severity::Error,
            ": a private image then fails to pull (a public one is served anonymously)",
        )
    };
    let what = if first.credentials.username.is_empty() {
        "no user name and no password".to_owned()
    } else {
        format!("user {:?} but no password", first.credentials.username)
    };
    let mut finding = Finding::new(
        subject,
        severity,
        Reason::SecretMalformed,
        format!(
            "the first credential for {} has {what}, so the node's runtime pulls anonymously \
             (containerd and CRI-O send credentials only with a password){then}",
            image.domain(),
        ),
    );
    for entry in &passwordless {
        finding = finding.evidence(format!(
            "{} key {:?}: user {:?}, empty password",
            entry.source, entry.server, entry.credentials.username
        ));
    }
    let cause = if first.credentials.username.is_empty() {
        "the entry comes from a docker config whose passwords live in a credential store"
    } else {
        "if it was copied from `docker login`, which kept an identity token instead of the \
         password"
    };
    let fix = match &first.source {
        CredentialSource::PullSecret { namespace, name } => format!(
            "{cause}, recreate the secret with a password or access token (e.g. a robot's): {}",
            secret_create_fix(name, &server_for(image), namespace.as_str())
        ),
        _ => format!(
            "{cause}, write a password or access token into the node's entry \
             (auth = base64(user:password))"
        ),
    };
    out.findings.push(finding.fix(fix));
}

/// The command adding `secret` to `w`'s pod template's imagePullSecrets. A
/// strategic merge patch: the API server merges that list by name, so the
/// entries already there stay, and a missing list is created. A Pod's and a
/// Job's template are immutable: those are edited in their manifest.
fn add_pull_secret_fix(w: &Workload, secret: &str) -> String {
    let entry = format!(r#"{{"imagePullSecrets":[{{"name":"{secret}"}}]}}"#);
    let patch = match w.kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" => {
            format!(r#"{{"spec":{{"template":{{"spec":{entry}}}}}}}"#)
        }
        "CronJob" => {
            format!(r#"{{"spec":{{"jobTemplate":{{"spec":{{"template":{{"spec":{entry}}}}}}}}}}}"#)
        }
        kind => {
            return format!(
                "add {{name: {secret}}} to the {kind}'s imagePullSecrets in its manifest and \
                 recreate it"
            );
        }
    };
    format!(
        "kubectl patch {} {} --namespace {} -p '{patch}'",
        w.kind.to_lowercase(),
        w.name,
        w.namespace
    )
}

/// How to make the pods of `w` offer `secret`: through the pod template's
/// own list when it has one (then the ServiceAccount's are not used), else
/// through the ServiceAccount, whose list is replaced whole (so it needs the
/// current list: without the ServiceAccount in the input, an edit it is).
fn reference_fix(inv: &Inventory, w: &Workload, sa_name: &str, secret: &str) -> String {
    let root = inv.controller_root(w);
    let ns = &w.namespace;
    if !root.spec.image_pull_secrets.is_empty() {
        return add_pull_secret_fix(root, secret);
    }
    let Some(sa) = inv.service_account(ns, sa_name) else {
        return format!(
            "add {{name: {secret}}} to ServiceAccount {sa_name}'s imagePullSecrets (kubectl edit \
             serviceaccount {sa_name} --namespace {ns}), then recreate the pods: {}",
            restart_hint(inv, w)
        );
    };
    let mut list = sa.image_pull_secrets.clone();
    list.push(secret.to_owned());
    let mut fix = format!(
        "kubectl patch serviceaccount {sa_name} --namespace {ns} -p '{{\"imagePullSecrets\":{}}}'",
        names_json(&list)
    );
    if w.live || w.kind != "Pod" {
        fix.push_str(&format!(
            "\nthen recreate the pods: {}",
            restart_hint(inv, w)
        ));
    }
    fix
}

/// How to recreate `w`'s pods so that admission gives them the
/// ServiceAccount's current pull secrets: a rollout restart of its outermost
/// controller in the input, else deleting the pod (its controller, if any,
/// makes a new one).
fn restart_hint(inv: &Inventory, w: &Workload) -> String {
    let root = inv.controller_root(w);
    let ns = &w.namespace;
    match root.kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" => format!(
            "kubectl rollout restart {}/{} --namespace {ns}   # new pods get the secrets",
            root.kind.to_lowercase(),
            root.name
        ),
        _ if w.kind == "Pod" => format!(
            "kubectl delete pod {} --namespace {ns}   # its controller recreates it with the secrets",
            w.name
        ),
        _ => format!("delete the {}'s pods in namespace {ns}", w.kind),
    }
}

fn slug(domain: &str) -> String {
    domain
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_owned()
}

/// Whether a keyring key that does not match `image` was meant for its
/// registry: the Docker Hub confusion, or a host with the same last two
/// labels (a different port, path, subdomain or glob depth of the same
/// registry), as opposed to a key for another registry altogether.
fn meant_for(key: &str, image: &ImageRef) -> bool {
    if hub_hint(key, image).is_some() {
        return true;
    }
    let host = |text: &str| {
        let text = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .unwrap_or(text);
        let host = text.split('/').next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        host.to_ascii_lowercase()
    };
    let suffix =
        |host: &str| -> Vec<String> { host.rsplit('.').take(2).map(str::to_owned).collect() };
    suffix(&host(key)) == suffix(&host(image.domain()))
}

/// The Docker Hub name confusion, spelled out.
fn hub_hint(key: &str, image: &ImageRef) -> Option<String> {
    let host = key.split('/').next().unwrap_or_default();
    if image.domain() == "docker.io" && host == "registry-1.docker.io" {
        Some(
            "registry-1.docker.io is the host containerd connects to, but the kubelet matches \
             keys against the image name's registry, docker.io; use https://index.docker.io/v1/ \
             (what docker login writes) or docker.io"
                .into(),
        )
    } else if image.domain() == "registry-1.docker.io"
        && (host == "docker.io" || host == "index.docker.io")
    {
        Some(
            "the image names registry-1.docker.io, which the kubelet does not treat as Docker \
             Hub; write the image as docker.io/… instead"
                .into(),
        )
    } else {
        None
    }
}

/// A keyring match as the credential the kubelet offers.
pub(crate) fn planned(m: &MatchedCredential) -> PlannedCredential {
    PlannedCredential {
        source: format!("{} key {:?}", m.entry.source, m.entry.server),
        credentials: Some(Credentials::new(
            m.entry.credentials.username.clone(),
            m.entry.credentials.password.clone(),
        )),
        provider: None,
    }
}
