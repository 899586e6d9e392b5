//! Findings and how they are shown: grouped text for people, a stable JSON
//! schema for machines, and the exit code.

use std::fmt::Write as _;

use serde::Serialize;

/// How bad a finding is. `Error` means a pull will fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// Stable reason codes, as documented and used in JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    InvalidImageName,
    SecretNotFound,
    SecretInOtherNamespace,
    SecretWrongType,
    SecretMalformed,
    /// The input lacks the Secrets of the pod's namespace.
    SecretsNotGiven,
    RegistryHostMismatch,
    SecretNotReferenced,
    ServiceAccountNotFound,
    ServiceAccountSecretsNotApplied,
    NoCredentials,
    NeverPolicy,
    MutableTag,
    NodeDiskFull,
    /// What a registry probe found; Events texts map onto the same codes.
    Probe(berth_client::Outcome),
}

impl Reason {
    pub fn code(self) -> &'static str {
        use Reason::*;
        match self {
            InvalidImageName => "InvalidImageName",
            SecretNotFound => "SecretNotFound",
            SecretInOtherNamespace => "SecretInOtherNamespace",
            SecretWrongType => "SecretWrongType",
            SecretMalformed => "SecretMalformed",
            SecretsNotGiven => "SecretsNotGiven",
            RegistryHostMismatch => "RegistryHostMismatch",
            SecretNotReferenced => "SecretNotReferenced",
            ServiceAccountNotFound => "ServiceAccountNotFound",
            ServiceAccountSecretsNotApplied => "ServiceAccountSecretsNotApplied",
            NoCredentials => "NoCredentials",
            NeverPolicy => "NeverPolicy",
            MutableTag => "MutableTag",
            NodeDiskFull => "NodeDiskFull",
            Probe(outcome) => outcome.code(),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// Which container of which workload a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub container: String,
    pub image: String,
}

/// One problem (or, for probes and `NoCredentials`, one observation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub subject: Subject,
    pub severity: Severity,
    pub reason: Reason,
    /// The cause, in one sentence.
    pub message: String,
    /// What shows it: which secret, which key, which HTTP status.
    pub evidence: Vec<String>,
    /// A command or edit that fixes it.
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(subject: &Subject, severity: Severity, reason: Reason, message: String) -> Self {
        Finding {
            subject: subject.clone(),
            severity,
            reason,
            message,
            evidence: Vec::new(),
            fix: None,
        }
    }

    pub fn evidence(mut self, e: impl Into<String>) -> Self {
        self.evidence.push(e.into());
        self
    }

    pub fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = Some(f.into());
        self
    }
}

/// The JSON form of a finding: the stable schema.
#[derive(Serialize)]
struct JsonFinding<'a> {
    namespace: &'a str,
    kind: &'a str,
    name: &'a str,
    container: &'a str,
    image: &'a str,
    severity: Severity,
    reason: Reason,
    message: String,
    fix: Option<&'a str>,
}

/// `{"findings":[…]}`, pretty-printed; the message carries the evidence.
pub fn to_json(findings: &[Finding]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        findings: Vec<JsonFinding<'a>>,
    }
    let doc = Doc {
        findings: findings
            .iter()
            .map(|f| JsonFinding {
                namespace: &f.subject.namespace,
                kind: &f.subject.kind,
                name: &f.subject.name,
                container: &f.subject.container,
                image: &f.subject.image,
                severity: f.severity,
                reason: f.reason,
                message: if f.evidence.is_empty() {
                    f.message.clone()
                } else {
                    format!("{}. Evidence: {}", f.message, f.evidence.join("; "))
                },
                fix: f.fix.as_deref(),
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("findings serialize");
    s.push('\n');
    s
}

/// Findings grouped by workload, then container, for a terminal.
pub fn to_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    let mut last_workload = None;
    let mut last_container = None;
    for f in findings {
        let s = &f.subject;
        let workload = (&s.namespace, &s.kind, &s.name);
        if last_workload != Some(workload) {
            if last_workload.is_some() {
                out.push('\n');
            }
            let _ = writeln!(out, "{} {}/{}", s.kind, s.namespace, s.name);
            last_workload = Some(workload);
            last_container = None;
        }
        let container = (&s.container, &s.image);
        if last_container != Some(container) {
            if s.container.is_empty() {
                let _ = writeln!(out, "  (pod)");
            } else {
                let _ = writeln!(out, "  container {} ({})", s.container, s.image);
            }
            last_container = Some(container);
        }
        let _ = writeln!(
            out,
            "    {:<7} {}: {}",
            f.severity.as_str(),
            f.reason.code(),
            f.message
        );
        for e in &f.evidence {
            let _ = writeln!(out, "            evidence: {e}");
        }
        if let Some(fix) = &f.fix {
            let mut lines = fix.lines();
            if let Some(first) = lines.next() {
                let _ = writeln!(out, "            fix: {first}");
            }
            for l in lines {
                let _ = writeln!(out, "                 {l}");
            }
        }
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    if !findings.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{errors} error{}, {warnings} warning{}",
        if errors == 1 { "" } else { "s" },
        if warnings == 1 { "" } else { "s" }
    );
    out
}

/// Sorts findings so groups are contiguous: by workload, container, severity.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (&a.subject.namespace, &a.subject.kind, &a.subject.name)
            .cmp(&(&b.subject.namespace, &b.subject.kind, &b.subject.name))
            .then_with(|| a.subject.container.cmp(&b.subject.container))
            .then_with(|| a.severity.cmp(&b.severity))
    });
}

/// 1 when a finding says a pull will fail, else 0.
pub fn exit_code(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|f| f.severity == Severity::Error))
}
