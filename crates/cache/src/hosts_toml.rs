//! containerd's `hosts.toml` (`/etc/containerd/certs.d/<registry>/hosts.toml`)
//! that makes a node pull a registry's images through berth in mirror mode.
//!
//! containerd tries the `[host."…"]` mirrors in order, then `server`; it
//! sends a mirror the request's registry in `?ns=`, which is how berth knows
//! which upstream to fill from. Only `pull` and `resolve` are given to the
//! mirror: pushes go to the registry itself. Without `resolve` containerd
//! would ask the registry for every tag, which is what the cache is there to
//! spare.

use std::fmt::Write as _;

/// One registry's mirror configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsToml {
    /// The directory under containerd's `config_path` (`docker.io`,
    /// `registry.example:5000`, `_default`).
    pub directory: String,
    pub content: String,
}

/// How nodes reach berth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// berth's URL as nodes reach it (`https://berth.internal:5000`).
    pub url: String,
    /// Path on the node of the CA that signed berth's certificate.
    pub ca: Option<String>,
    /// Skip TLS verification (for trying things out only).
    pub skip_verify: bool,
}

/// Where containerd goes for `registry` when no mirror answers.
fn server(registry: &str) -> Option<String> {
    match registry {
        "_default" => None,
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            Some("https://registry-1.docker.io".to_owned())
        }
        other => Some(format!("https://{other}")),
    }
}

/// TOML's basic string, quoted.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `hosts.toml` that sends pulls from `registry` (`docker.io`,
/// `_default` for every registry) through `mirror`.
pub fn hosts_toml(registry: &str, mirror: &Mirror) -> HostsToml {
    let mut content = format!(
        "# containerd: pull {} through berth, falling back to the registry itself.\n",
        if registry == "_default" {
            "every registry"
        } else {
            registry
        }
    );
    if let Some(server) = server(registry) {
        let _ = writeln!(content, "server = {}", quoted(&server));
    }
    let _ = writeln!(
        content,
        "\n[host.{}]",
        quoted(mirror.url.trim_end_matches('/'))
    );
    content.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
    if let Some(ca) = &mirror.ca {
        let _ = writeln!(content, "  ca = {}", quoted(ca));
    }
    if mirror.skip_verify {
        content.push_str("  skip_verify = true\n");
    }
    HostsToml {
        directory: registry_directory(registry),
        content,
    }
}

/// The directory under containerd's `config_path` that configures
/// `registry` (Docker Hub's names are all `docker.io`).
pub fn registry_directory(registry: &str) -> String {
    match registry {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_through_berth() {
        let mirror = Mirror {
            url: "https://berth.internal:5000/".into(),
            ca: Some("/etc/containerd/certs.d/docker.io/berth-ca.crt".into()),
            skip_verify: false,
        };
        let file = hosts_toml("index.docker.io", &mirror);
        assert_eq!(file.directory, "docker.io");
        assert_eq!(
            file.content,
            "# containerd: pull index.docker.io through berth, falling back to the registry itself.\n\
             server = \"https://registry-1.docker.io\"\n\
             \n\
             [host.\"https://berth.internal:5000\"]\n  \
             capabilities = [\"pull\", \"resolve\"]\n  \
             ca = \"/etc/containerd/certs.d/docker.io/berth-ca.crt\"\n"
        );
    }

    #[test]
    fn every_registry_has_no_server() {
        let mirror = Mirror {
            url: "http://10.0.0.5:30500".into(),
            ca: None,
            skip_verify: true,
        };
        let file = hosts_toml("_default", &mirror);
        assert_eq!(file.directory, "_default");
        assert!(!file.content.contains("server ="), "{}", file.content);
        assert!(file.content.contains("[host.\"http://10.0.0.5:30500\"]\n"));
        assert!(file.content.ends_with("  skip_verify = true\n"));
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
