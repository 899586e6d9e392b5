//! Which upstream serves a request, and under which names: the
//! repository berth keeps the cached content in, and the repository the
//! upstream knows.
//!
//! Two ways in lead to the same cached repository:
//! * path mode: `<berth>/<prefix>/<repository>` (`berth:5000/hub/library/nginx`);
//! * mirror mode: a node's containerd, told by `hosts.toml` that berth
//!   mirrors a registry, sends the unprefixed path and names the registry in
//!   `?ns=` (`/v2/library/nginx/manifests/1?ns=docker.io`), so no image
//!   reference changes.

/// Where a cached repository's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRoute {
    /// Index of the upstream in the cache's list.
    pub upstream: usize,
    /// The name access rules apply to: the one the client asked for, whose
    /// token scope it requests (`hub/nginx`), or in mirror mode the cached
    /// repository's.
    pub access: String,
    /// The repository berth keeps it in, the same however it is asked for
    /// (`hub/library/nginx`); storage rules apply to this name.
    pub local: String,
    /// The repository on the upstream (`library/nginx`).
    pub remote: String,
}

/// A request for a registry berth does not mirror.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "berth mirrors no registry {0:?} (the request's ?ns=): add an [[upstream]] with hosts = \
     [\"{0}\"] to its configuration, or remove berth from that registry's hosts.toml"
)]
pub struct UnknownNamespace(pub String);

/// What routing needs to know of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// First segments of its cached repositories' names (`hub`).
    pub prefix: String,
    /// Registry hosts it serves in mirror mode, as `ns=` names them.
    pub hosts: Vec<String>,
    /// The namespace a one-segment name has upstream (`library` on Docker Hub).
    pub default_namespace: Option<String>,
}

/// The one name Docker Hub goes by in `ns=` (containerd sends `docker.io`;
/// people write the others).
pub fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

impl RouteRule {
    fn remote(&self, name: &str) -> String {
        match &self.default_namespace {
            Some(namespace) if !name.contains('/') => format!("{namespace}/{name}"),
            _ => name.to_owned(),
        }
    }
}

/// The route of a request for repository `name` (as the URL has it) with
/// the query's `ns`, if the cache serves it; `Ok(None)` for berth's own
/// repositories.
pub fn route(
    rules: &[RouteRule],
    name: &str,
    ns: Option<&str>,
) -> Result<Option<CacheRoute>, UnknownNamespace> {
    if let Some(ns) = ns {
        let host = canonical_host(ns);
        let Some((index, rule)) = rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.hosts.iter().any(|h| canonical_host(h) == host))
        else {
            return Err(UnknownNamespace(ns.to_owned()));
        };
        let remote = rule.remote(name);
        let local = format!("{}/{remote}", rule.prefix);
        return Ok(Some(CacheRoute {
            upstream: index,
            access: local.clone(),
            local,
            remote,
        }));
    }
    // Prefixes do not nest (the configuration refuses it): one matches at most.
    let found = rules.iter().enumerate().find_map(|(index, rule)| {
        let rest = name.strip_prefix(rule.prefix.as_str())?.strip_prefix('/')?;
        (!rest.is_empty()).then_some((index, rule, rest))
    });
    Ok(found.map(|(index, rule, rest)| {
        let remote = rule.remote(rest);
        CacheRoute {
            upstream: index,
            access: name.to_owned(),
            local: format!("{}/{remote}", rule.prefix),
            remote,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<RouteRule> {
        vec![
            RouteRule {
                prefix: "hub".into(),
                hosts: vec!["docker.io".into()],
                default_namespace: Some("library".into()),
            },
            RouteRule {
                prefix: "ghcr".into(),
                hosts: vec!["ghcr.io".into(), "127.0.0.1:5001".into()],
                default_namespace: None,
            },
            RouteRule {
                prefix: "mirrors/quay".into(),
                hosts: vec![],
                default_namespace: None,
            },
        ]
    }

    fn to(upstream: usize, access: &str, local: &str, remote: &str) -> Option<CacheRoute> {
        Some(CacheRoute {
            upstream,
            access: access.into(),
            local: local.into(),
            remote: remote.into(),
        })
    }

    #[test]
    fn path_mode_takes_the_prefix() {
        let r = |name| route(&rules(), name, None).unwrap();
        // Both names of an official image share one cached repository.
        assert_eq!(
            r("hub/nginx"),
            to(0, "hub/nginx", "hub/library/nginx", "library/nginx")
        );
        assert_eq!(
            r("hub/library/nginx"),
            to(0, "hub/library/nginx", "hub/library/nginx", "library/nginx")
        );
        assert_eq!(
            r("mirrors/quay/x"),
            to(2, "mirrors/quay/x", "mirrors/quay/x", "x")
        );
        assert_eq!(
            r("ghcr/org/app"),
            to(1, "ghcr/org/app", "ghcr/org/app", "org/app")
        );
        // Berth's own repositories.
        for own in ["team/app", "hub", "hubx/app", "ghcr", "mirrors/x"] {
            assert_eq!(r(own), None, "{own}");
        }
    }

    #[test]
    fn mirror_mode_maps_the_registry_host() {
        let r = |name, ns| route(&rules(), name, Some(ns));
        assert_eq!(
            r("library/nginx", "docker.io"),
            Ok(to(
                0,
                "hub/library/nginx",
                "hub/library/nginx",
                "library/nginx"
            ))
        );
        assert_eq!(
            r("nginx", "registry-1.docker.io"),
            Ok(to(
                0,
                "hub/library/nginx",
                "hub/library/nginx",
                "library/nginx"
            ))
        );
        assert_eq!(
            r("org/app", "127.0.0.1:5001"),
            Ok(to(1, "ghcr/org/app", "ghcr/org/app", "org/app"))
        );
        assert_eq!(
            r("org/app", "quay.io"),
            Err(UnknownNamespace("quay.io".into()))
        );
    }
}
