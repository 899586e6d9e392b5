//! What to tell the user to do: the fixes that depend only on a reason code
//! and the image, shared by the offline analysis, the Events classifier and
//! the probe.

use berth_client::Outcome;
use berth_kube::image_ref::ImageRef;

use crate::report::Reason;

/// The fix for an image reference that does not parse.
pub const INVALID_IMAGE_NAME: &str = "write the image as \
     [registry[:port]/]repository[:tag][@sha256:digest] with a lowercase repository, e.g. \
     registry.example.com:5000/team/app:1.4.2";

/// The fix for `imagePullPolicy: Never`.
pub const NEVER_POLICY: &str =
    "set imagePullPolicy: IfNotPresent, or preload the image on every node";

/// The fix for a node whose disk filled up while unpacking.
pub const NODE_DISK_FULL: &str = "free space on the node's image filesystem (df -h \
     /var/lib/containerd; crictl rmi --prune removes images no container uses) or give it a \
     larger disk; the kubelet collects unused images only above imageGCHighThresholdPercent \
     (85% by default)";

/// The fix command that creates a pull secret for `server` in `namespace`.
pub fn secret_create_fix(name: &str, server: &str, namespace: &str) -> String {
    format!(
        "berth secret create {name} --server {server} --username USER --password-stdin \
         --namespace {namespace} | kubectl apply -f -"
    )
}

/// The server to write in a secret so the kubelet matches `image`.
pub fn server_for(image: &ImageRef) -> String {
    if image.domain() == "docker.io" {
        // What `docker login` writes and the kubelet's Docker Hub fallback serves.
        "https://index.docker.io/v1/".to_owned()
    } else {
        image.domain().to_owned()
    }
}

/// The fix for `reason` about `image` in `namespace`. A registry's answer
/// needs the image to name its host; without one only the fixes that do not
/// need it are known.
pub fn for_reason(reason: Reason, image: Option<&ImageRef>, namespace: &str) -> Option<String> {
    let outcome = match reason {
        Reason::InvalidImageName => return Some(INVALID_IMAGE_NAME.into()),
        Reason::NeverPolicy => return Some(NEVER_POLICY.into()),
        Reason::NodeDiskFull => return Some(NODE_DISK_FULL.into()),
        Reason::Probe(outcome) => outcome,
        _ => return None,
    };
    let image = image?;
    let host = image.domain();
    let ns = namespace;
    Some(match outcome {
        Outcome::AuthRequired => secret_create_fix("regcred", &server_for(image), ns),
        Outcome::Unauthorized => format!(
            "renew the credentials (berth secret create … --server {host} --namespace {ns}) and \
             replace the secret"
        ),
        Outcome::Forbidden => {
            "grant the account pull access to the repository, or use an account that has it".into()
        }
        Outcome::ManifestUnknown => format!(
            "push the tag, or fix it in the manifest (list the tags: skopeo list-tags \
             docker://{host}/{})",
            image.path()
        ),
        Outcome::RepositoryUnknown => {
            "check the repository path in the image name, or push the image".into()
        }
        Outcome::RateLimited => "wait for Retry-After, authenticate the pulls, or pull through \
             a cache: an [[upstream]] for the registry in berth's configuration, and `berth mirror \
             hosts-toml` for the nodes' containerd"
            .into(),
        Outcome::DnsFailure => {
            format!("make {host} resolvable from the nodes, or fix the host name")
        }
        Outcome::ConnectionRefused => format!("start the registry, or fix the port in {host}"),
        Outcome::Timeout => "check firewalls and that the registry is up".into(),
        Outcome::TlsUnknownAuthority => format!(
            "install the registry's CA on every node (/etc/containerd/certs.d/{host}/ca.crt) and \
             pass it here with --ca-file"
        ),
        Outcome::TlsError => "fix the registry's certificate (host name, validity)".into(),
        Outcome::HttpResponseToHttps => format!(
            "configure the nodes for plain HTTP to {host} (containerd hosts.toml: server = \"http://{host}\") and pass --insecure-registry {host} here, or serve TLS"
        ),
        Outcome::HttpRequestToHttps => format!(
            "configure the nodes for HTTPS to {host} (containerd hosts.toml: server = \"https://{host}\", with ca = the registry's CA) and drop --insecure-registry {host} here"
        ),
        Outcome::RegistryError => "the registry failed; check its logs".into(),
        Outcome::Pullable | Outcome::ConnectionFailed => return None,
    })
}
