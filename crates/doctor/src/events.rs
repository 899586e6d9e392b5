//! Recognising the kubelet's and containerd's pull-failure texts (Events'
//! `Failed to pull image …` messages and container waiting messages) and
//! naming their cause with the same reason codes as the offline analysis
//! and the probe.

use crate::report::{Reason, Severity};

/// Whether an Event is about pulling an image. Only these are classified:
/// the same words ("connection refused", "i/o timeout") fill readiness-probe
/// and sandbox events that have nothing to do with the registry.
pub fn is_pull_event(reason: &str, message: &str) -> bool {
    match reason {
        // A reference that does not parse; an image missing under `Never`.
        "InspectFailed" | "ErrImageNeverPull" => true,
        "Failed" | "BackOff" => [
            "pull image",
            "pulling image",
            "ErrImagePull",
            "ImagePullBackOff",
        ]
        .iter()
        .any(|s| message.contains(s)),
        _ => false,
    }
}

/// The pull secrets named by the kubelet's `FailedToRetrieveImagePullSecret`
/// Event, which it records on the pod when a secret of its imagePullSecrets
/// cannot be read, and then pulls without it: `Unable to retrieve some image
/// pull secrets (regcred, hubcred); attempting to pull the image may not
/// succeed.` `None` for any other Event; no names when the text differs.
pub fn unretrieved_secrets<'a>(reason: &str, message: &'a str) -> Option<Vec<&'a str>> {
    if reason != "FailedToRetrieveImagePullSecret" {
        return None;
    }
    let names = message
        .split_once("secrets (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map_or("", |(names, _)| names);
    Some(
        names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect(),
    )
}

/// Whether a container's waiting reason is about its image.
pub fn is_pull_waiting(reason: &str) -> bool {
    matches!(
        reason,
        "ErrImagePull"
            | "ImagePullBackOff"
            | "InvalidImageName"
            | "ErrImageNeverPull"
            | "ImageInspectError"
            | "RegistryUnavailable"
            | "SignatureValidationFailed"
    )
}

/// The cause named by a pull-failure text, or `None` for a text that is not
/// about a failed pull (`Pulling image`, `Back-off pulling image` alone).
pub fn classify(message: &str) -> Option<(Reason, Severity, &'static str)> {
    let m = message;
    let has = |s: &str| m.contains(s);
    // Ordered from the most specific text to the most generic: a DNS error
    // text also contains "dial tcp", a TLS error "failed to do request".
    let found = if has("no space left on device") {
        (
            Reason::NodeDiskFull,
            "the node's disk is full while unpacking the image",
        )
    } else if has("couldn't parse image name")
        || has("Failed to apply default image tag")
        || has("InvalidImageName")
        || has("invalid reference format")
    {
        (
            Reason::InvalidImageName,
            "the image reference does not parse",
        )
    } else if has("not present with pull policy of Never") || has("ErrImageNeverPull") {
        (
            Reason::NeverPolicy,
            "imagePullPolicy is Never and the image is not on the node",
        )
    } else if has("server gave HTTP response to HTTPS client") {
        (
            Reason::Probe(berth_client::Outcome::HttpResponseToHttps),
            "the registry speaks plain HTTP but the node uses HTTPS for it",
        )
    } else if has(r#"malformed HTTP response "\x15\x03"#) {
        // A TLS alert record (0x15 0x03 …) read as an HTTP response.
        (
            Reason::Probe(berth_client::Outcome::HttpRequestToHttps),
            "the registry serves HTTPS but the node speaks plain HTTP to it",
        )
    } else if has("certificate signed by unknown authority")
        || has("certificate is not trusted")
        || has("unable to get local issuer certificate")
    {
        (
            Reason::Probe(berth_client::Outcome::TlsUnknownAuthority),
            "the node does not trust the CA that signed the registry's certificate",
        )
    } else if has("x509:") || has("tls:") || has("remote error: tls") {
        (
            Reason::Probe(berth_client::Outcome::TlsError),
            "the TLS handshake with the registry failed",
        )
    } else if has("no such host") || has("server misbehaving") || has("dial tcp: lookup") {
        (
            Reason::Probe(berth_client::Outcome::DnsFailure),
            "the node cannot resolve the registry's host name",
        )
    } else if has("connection refused") {
        (
            Reason::Probe(berth_client::Outcome::ConnectionRefused),
            "nothing listens on the registry's address as the node sees it",
        )
    } else if has("i/o timeout")
        || has("context deadline exceeded")
        || has("Client.Timeout")
        || has("TLS handshake timeout")
        || has("because of no progress")
    {
        (
            Reason::Probe(berth_client::Outcome::Timeout),
            "the registry did not answer in time",
        )
    } else if has("429 Too Many Requests") || has("toomanyrequests") {
        (
            Reason::Probe(berth_client::Outcome::RateLimited),
            "the registry is rate limiting pulls",
        )
    } else if has("403 Forbidden") || has("denied: requested access") {
        (
            Reason::Probe(berth_client::Outcome::Forbidden),
            "the credentials are valid but may not pull this repository",
        )
    } else if has("failed to fetch anonymous token") || has("no basic auth credentials") {
        (
            Reason::Probe(berth_client::Outcome::AuthRequired),
            "the registry requires credentials and the node offered none",
        )
    } else if has("failed to fetch oauth token") || has("401 Unauthorized") {
        (
            Reason::Probe(berth_client::Outcome::Unauthorized),
            "the registry refused the credentials (wrong, expired, or none sent)",
        )
    } else if has("pull access denied") || has("insufficient_scope") {
        (
            Reason::Probe(berth_client::Outcome::AuthRequired),
            "the repository does not exist or needs credentials the pull did not have",
        )
    } else if has("repository name not known") || has("NAME_UNKNOWN") || has("name unknown") {
        (
            Reason::Probe(berth_client::Outcome::RepositoryUnknown),
            "the repository does not exist",
        )
    } else if has(": not found")
        || has("code = NotFound")
        || has("manifest unknown")
        || has("MANIFEST_UNKNOWN")
    {
        (
            Reason::Probe(berth_client::Outcome::ManifestUnknown),
            "the tag or digest does not exist in the repository",
        )
    } else if has("500 Internal Server Error")
        || has("502 Bad Gateway")
        || has("503 Service Unavailable")
        || has("504 Gateway Timeout")
    {
        (
            Reason::Probe(berth_client::Outcome::RegistryError),
            "the registry failed with a 5xx error",
        )
    } else {
        return None;
    };
    Some((found.0, Severity::Error, found.1))
}

/// The image named in `Failed to pull image "X": …`.
pub fn image_in_message(message: &str) -> Option<&str> {
    let rest = message.split("image \"").nth(1)?;
    rest.split('"').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pull_events_count() {
        assert!(is_pull_event(
            "Failed",
            r#"Failed to pull image "r/a:1": failed to do request: dial tcp 10.0.0.1:443: connect: connection refused"#
        ));
        assert!(is_pull_event("Failed", "Error: ErrImagePull"));
        assert!(is_pull_event(
            "BackOff",
            r#"Back-off pulling image "r/a:1""#
        ));
        assert!(is_pull_event(
            "InspectFailed",
            r#"Failed to apply default image tag "Bad": couldn't parse image name"#
        ));
        for (reason, message) in [
            (
                "Unhealthy",
                r#"Readiness probe failed: Get "http://10.1.0.5:8080/ready": dial tcp 10.1.0.5:8080: connect: connection refused"#,
            ),
            (
                "FailedCreatePodSandBox",
                "Failed to create pod sandbox: plugin type=\"calico\" failed: dial tcp 10.96.0.1:443: i/o timeout",
            ),
            (
                "BackOff",
                "Back-off restarting failed container app in pod web",
            ),
            (
                "Failed",
                "Error: failed to create containerd task: context deadline exceeded",
            ),
        ] {
            assert!(!is_pull_event(reason, message), "{reason}: {message}");
        }
        assert!(is_pull_waiting("ImagePullBackOff"));
        assert!(!is_pull_waiting("CrashLoopBackOff"));
        assert!(!is_pull_waiting("CreateContainerConfigError"));
    }

    #[test]
    fn containerd_and_kubelet_texts() {
        let cases = [
            (
                r#"Failed to pull image "docker.io/substratusai/controller-manager:v0.0.2-alpha": rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/substratusai/controller-manager:v0.0.2-alpha": failed to resolve reference "docker.io/substratusai/controller-manager:v0.0.2-alpha": docker.io/substratusai/controller-manager:v0.0.2-alpha: not found"#,
                Reason::Probe(berth_client::Outcome::ManifestUnknown),
            ),
            (
                r#"Failed to pull image "x/y:1": failed to pull and unpack image "docker.io/x/y:1": failed to resolve reference "docker.io/x/y:1": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed"#,
                Reason::Probe(berth_client::Outcome::AuthRequired),
            ),
            (
                r#"Failed to pull image "r.io/a:1": rpc error: code = Unknown desc = failed to pull and unpack image "r.io/a:1": failed to resolve reference "r.io/a:1": failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://r.io/token?scope=repository%3Aa%3Apull&service=r: 401 Unauthorized"#,
                Reason::Probe(berth_client::Outcome::AuthRequired),
            ),
            (
                r#"Failed to pull image "r.io/a:1": failed to resolve reference "r.io/a:1": failed to authorize: failed to fetch oauth token: unexpected status from GET request to https://r.io/token: 401 Unauthorized"#,
                Reason::Probe(berth_client::Outcome::Unauthorized),
            ),
            (
                r#"Failed to pull image "r.io/a:1": failed to resolve reference "r.io/a:1": unexpected status from HEAD request to https://r.io/v2/a/manifests/1: 403 Forbidden"#,
                Reason::Probe(berth_client::Outcome::Forbidden),
            ),
            (
                r#"Failed to pull image "r.io/a:1": failed to resolve reference "r.io/a:1": unexpected status from HEAD request to https://r.io/v2/a/manifests/1: 429 Too Many Requests"#,
                Reason::Probe(berth_client::Outcome::RateLimited),
            ),
            (
                r#"Failed to pull image "reg.corp/a:1": failed to resolve reference "reg.corp/a:1": failed to do request: Head "https://reg.corp/v2/a/manifests/1": dial tcp: lookup reg.corp on 10.0.0.10:53: no such host"#,
                Reason::Probe(berth_client::Outcome::DnsFailure),
            ),
            (
                r#"Failed to pull image "reg:5000/a:1": failed to do request: Head "https://reg:5000/v2/a/manifests/1": tls: failed to verify certificate: x509: certificate signed by unknown authority"#,
                Reason::Probe(berth_client::Outcome::TlsUnknownAuthority),
            ),
            (
                r#"Failed to pull image "reg:5000/a:1": failed to do request: Head "https://reg:5000/v2/a/manifests/1": http: server gave HTTP response to HTTPS client"#,
                Reason::Probe(berth_client::Outcome::HttpResponseToHttps),
            ),
            (
                r#"Failed to pull image "localhost:5000/a:1": rpc error: code = Unknown desc = failed to pull and unpack image "localhost:5000/a:1": failed to resolve reference "localhost:5000/a:1": failed to do request: Head "http://localhost:5000/v2/a/manifests/1": net/http: HTTP/1.x transport connection broken: malformed HTTP response "\x15\x03\x03\x00\x02\x022""#,
                Reason::Probe(berth_client::Outcome::HttpRequestToHttps),
            ),
            (
                r#"Failed to pull image "reg:5000/a:1": failed to do request: Head "https://reg:5000/v2/a/manifests/1": dial tcp 10.1.2.3:5000: connect: connection refused"#,
                Reason::Probe(berth_client::Outcome::ConnectionRefused),
            ),
            (
                r#"Failed to pull image "reg:5000/a:1": failed to do request: Head "https://reg:5000/v2/a/manifests/1": dial tcp 10.1.2.3:5000: i/o timeout"#,
                Reason::Probe(berth_client::Outcome::Timeout),
            ),
            (
                r#"Failed to pull image "big:1": failed to pull and unpack image "docker.io/library/big:1": failed to extract layer (application/vnd.oci.image.layer.v1.tar+gzip sha256:abc) to overlayfs as "extract-1": write /var/lib/containerd/tmp: no space left on device"#,
                Reason::NodeDiskFull,
            ),
            (
                r#"Container image "app:1" is not present with pull policy of Never"#,
                Reason::NeverPolicy,
            ),
            (
                r#"Failed to apply default image tag "Bad/Name": couldn't parse image name "Bad/Name": invalid reference format: repository name (Bad/Name) must be lowercase"#,
                Reason::InvalidImageName,
            ),
            (
                r#"Failed to pull image "r/a:1": unexpected status from HEAD request to https://r/v2/a/manifests/1: 503 Service Unavailable"#,
                Reason::Probe(berth_client::Outcome::RegistryError),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(classify(text).map(|c| c.0), Some(want), "{text}");
        }
        assert!(classify(r#"Pulling image "nginx""#).is_none());
        // Every text names a cause with a fix.
        let image = berth_kube::image_ref::ImageRef::parse("r.io/a:1").unwrap();
        for (text, _) in cases {
            let reason = classify(text).unwrap().0;
            assert!(
                crate::fix::for_reason(reason, Some(&image), "prod").is_some(),
                "{text}"
            );
        }
        assert_eq!(
            image_in_message(r#"Failed to pull image "a/b:1": x"#),
            Some("a/b:1")
        );
    }

    /// The kubelet's text (pkg/kubelet/kubelet_pods.go, getPullSecretsForPod):
    /// `Unable to retrieve some image pull secrets (%s); attempting to pull
    /// the image may not succeed.`, the names joined with ", ".
    #[test]
    fn unretrieved_pull_secrets_are_named() {
        let one = "Unable to retrieve some image pull secrets (regcred); attempting to pull the \
                   image may not succeed.";
        assert_eq!(
            unretrieved_secrets("FailedToRetrieveImagePullSecret", one),
            Some(vec!["regcred"])
        );
        let two = "Unable to retrieve some image pull secrets (regcred, hubcred); attempting to \
                   pull the image may not succeed.";
        assert_eq!(
            unretrieved_secrets("FailedToRetrieveImagePullSecret", two),
            Some(vec!["regcred", "hubcred"])
        );
        assert_eq!(
            unretrieved_secrets("FailedToRetrieveImagePullSecret", "something else"),
            Some(vec![])
        );
        assert_eq!(unretrieved_secrets("Failed", one), None);
    }
}
