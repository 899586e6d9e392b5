//! Runs the offline analysis on every directory under `tests/scenarios/` and
//! compares the findings with the directory's `expected` file.
//!
//! `expected` has one line per finding: `SEVERITY REASON NS/KIND/NAME
//! CONTAINER [| TEXT]...`, with `-` for a pod-level finding and each TEXT a
//! piece the message, evidence or fix must contain. An optional `args` file holds
//! `--namespace`, `--node-docker-config` and `--credential-provider-config`
//! lines (paths relative to the scenario).

use std::path::{Path, PathBuf};

use berth_doctor::NodeConfig;

struct Expected {
    key: String,
    texts: Vec<String>,
}

fn parse_expected(text: &str) -> Vec<Expected> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split('|');
            let key = parts.next().unwrap_or_default();
            Expected {
                key: key.split_whitespace().collect::<Vec<_>>().join(" "),
                texts: parts.map(|t| t.trim().to_owned()).collect(),
            }
        })
        .collect()
}

/// The offline analysis of a scenario directory, with its `args`.
fn analyze_dir(dir: &Path) -> Result<berth_doctor::Analysis, String> {
    let mut namespace = "default".to_owned();
    let mut node = NodeConfig::default();
    if let Ok(args) = std::fs::read_to_string(dir.join("args")) {
        for line in args.lines().filter(|l| !l.trim().is_empty()) {
            let (flag, value) = line.split_once(' ').expect("flag value");
            match flag {
                "--namespace" => namespace = value.to_owned(),
                "--node-docker-config" => {
                    node.docker_config =
                        Some(berth_doctor::read_node_docker_config(&dir.join(value)).unwrap());
                }
                "--credential-provider-config" => {
                    node.providers =
                        Some(berth_doctor::read_provider_config(&dir.join(value)).unwrap());
                }
                other => panic!("unknown flag {other} in {}", dir.display()),
            }
        }
    }
    berth_doctor::check(
        &[dir.to_path_buf()],
        &mut std::io::empty(),
        &namespace,
        &node,
    )
    .map_err(|e| format!("input unusable: {e}"))
}

fn run(dir: &Path) -> Result<(), String> {
    let analysis = analyze_dir(dir)?;
    let expected = parse_expected(&std::fs::read_to_string(dir.join("expected")).unwrap());
    let got: Vec<(String, String)> = analysis
        .findings
        .iter()
        .map(|f| {
            let s = &f.subject;
            let key = format!(
                "{} {} {}/{}/{} {}",
                f.severity.as_str(),
                f.reason.code(),
                s.namespace,
                s.kind,
                s.name,
                if s.container.is_empty() {
                    "-"
                } else {
                    &s.container
                }
            );
            let all = format!(
                "{} {} {}",
                f.message,
                f.evidence.join(" "),
                f.fix.clone().unwrap_or_default()
            );
            (key, all)
        })
        .collect();
    let mut got_keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let mut want_keys: Vec<&str> = expected.iter().map(|e| e.key.as_str()).collect();
    got_keys.sort();
    want_keys.sort();
    let report = || berth_doctor::report::to_text(&analysis.findings);
    if got_keys != want_keys {
        return Err(format!(
            "findings differ\n  want: {want_keys:#?}\n  got:  {got_keys:#?}\n{}",
            report()
        ));
    }
    for e in &expected {
        if let Some(t) = e.texts.iter().find(|t| {
            !got.iter()
                .any(|(k, all)| k == &e.key && all.contains(t.as_str()))
        }) {
            return Err(format!(
                "finding {} does not mention {t:?}\n{}",
                e.key,
                report()
            ));
        }
    }
    Ok(())
}

fn scenario_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 20, "the corpus went missing");
    dirs
}

#[test]
fn every_scenario_matches_its_expected_findings() {
    let dirs = scenario_dirs();
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| {
            run(d)
                .err()
                .map(|e| format!("scenario {}: {e}", d.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

/// What the kubelet and containerd wrote (Events, container statuses) is
/// only worth showing with what to do about it.
#[test]
fn findings_read_from_failure_texts_carry_a_fix() {
    let mut read = 0;
    for dir in scenario_dirs() {
        let analysis = analyze_dir(&dir).unwrap();
        for f in analysis.findings.iter().filter(|f| {
            f.message.ends_with("(from an Event)")
                || f.message.ends_with("(from the container status)")
        }) {
            read += 1;
            assert!(
                f.fix.is_some(),
                "{}: {} {} has no fix",
                dir.display(),
                f.reason.code(),
                f.message
            );
        }
    }
    assert!(read >= 6, "the corpus lost its Events");
}

#[test]
fn every_offline_reason_code_has_a_scenario() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut all = String::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path().join("expected");
        all.push_str(&std::fs::read_to_string(p).unwrap_or_default());
    }
    for code in [
        "InvalidImageName",
        "SecretNotFound",
        "SecretInOtherNamespace",
        "SecretWrongType",
        "SecretMalformed",
        "SecretsNotGiven",
        "RegistryHostMismatch",
        "SecretNotReferenced",
        "ServiceAccountNotFound",
        "ServiceAccountSecretsNotApplied",
        "NoCredentials",
        "NeverPolicy",
        "MutableTag",
        "NodeDiskFull",
    ] {
        assert!(all.contains(&format!(" {code} ")), "no scenario for {code}");
    }
}

/// A Deployment and the pods it made are probed once, unless a pod would
/// offer other credentials than its template (a pod older than its
/// ServiceAccount's secrets).
#[test]
fn pods_are_probed_once_per_controller() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/controller-and-its-pods");
    let analysis = berth_doctor::check(
        &[dir],
        &mut std::io::empty(),
        "default",
        &NodeConfig::default(),
    )
    .unwrap();
    let mut plans: Vec<String> = analysis
        .plans
        .iter()
        .map(|p| {
            let sources: Vec<&str> = p.credentials.iter().map(|c| c.source.as_str()).collect();
            format!(
                "{}/{} {} [{}]",
                p.subject.kind,
                p.subject.name,
                p.subject.image,
                sources.join(", ")
            )
        })
        .collect();
    plans.sort();
    assert_eq!(
        plans,
        [
            r#"Deployment/api registry.example.com/team/api:3.0.1 [secret prod/apicred key "registry.example.com"]"#,
            r#"Deployment/db registry.example.com/team/db:5.0.1 [secret prod/apicred key "registry.example.com"]"#,
            "Deployment/web registry.example.com/team/web:2.1.0 []",
            "Pod/api-5d4f8c9b7-one registry.example.com/team/api:3.0.1 []",
        ]
    );
}
