//! `berth credential-provider`: a kubelet credential provider exec plugin.
//!
//! The kubelet writes a `CredentialProviderRequest` on stdin and reads a
//! `CredentialProviderResponse` from stdout, decoding it strictly; on a
//! non-zero exit it logs stderr and uses no credential from the plugin. So
//! the response is rendered completely before anything is printed, and every
//! failure is a message on stderr with an empty stdout.
//!
//! Which credential answers which image comes from berth's own TOML file
//! (`--config`, see berth-credential-provider.example.toml): TOML like
//! `berth serve`'s configuration, so one syntax covers berth and comments are
//! allowed; the kubelet's own file stays YAML/JSON.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use berth_api::pull_credentials::{IssuedPullCredential, PullCredentialRequest};
use berth_client::{ClientConfig, Credentials, RegistryClient};
use berth_kube::credential_provider::{
    CredentialProviderConfig, CredentialProviderRequest, CredentialProviderResponse, GoDuration,
    cache_key_type_for,
};
use berth_kube::keyring::urls_match;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;

/// Where the example kubelet configuration points the plugin by default.
const DEFAULT_CONFIG_PATH: &str = "/etc/berth/credential-provider.toml";

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CredentialProviderArgs {
    #[command(subcommand)]
    command: Option<ProviderCommand>,

    /// berth's credential-provider configuration (TOML; see
    /// berth-credential-provider.example.toml)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ProviderCommand {
    /// Print a kubelet CredentialProviderConfig (kubelet.config.k8s.io/v1)
    /// that runs this plugin
    ExampleConfig(ExampleArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Yaml,
    Json,
}

#[derive(Args)]
struct ExampleArgs {
    /// berth's plugin configuration: its patterns become matchImages and its
    /// path the plugin's --config [default: /etc/berth/credential-provider.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Registry to match when no --config is given (it and its subdomains)
    #[arg(
        long,
        default_value = "registry.example.com",
        conflicts_with = "config"
    )]
    registry: String,

    /// File name of the berth binary in the kubelet's
    /// --image-credential-provider-bin-dir
    #[arg(long, default_value = "berth")]
    name: String,

    #[arg(short, long, value_enum, default_value = "yaml")]
    output: Output,
}

pub fn run(args: CredentialProviderArgs) -> anyhow::Result<ExitCode> {
    let out = match args.command {
        Some(ProviderCommand::ExampleConfig(a)) => example_config(a)?,
        None => {
            let path = args.config.context(
                "pass --config FILE, berth's credential-provider configuration (see \
                 berth-credential-provider.example.toml); the kubelet passes it through the \
                 provider's `args`",
            )?;
            let mut request = String::new();
            std::io::stdin()
                .read_to_string(&mut request)
                .context("cannot read the CredentialProviderRequest from stdin")?;
            let config = ProviderConfig::load(&path)?;
            answer(&config, &request)?
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The response for one request, as the line to print.
fn answer(config: &ProviderConfig, request: &str) -> anyhow::Result<String> {
    let req = CredentialProviderRequest::from_json(request).context(
        "stdin is not a CredentialProviderRequest; this command is run by the kubelet (see \
         `berth credential-provider example-config`)",
    )?;
    if req.image.is_empty() {
        bail!("the CredentialProviderRequest has an empty image");
    }
    let Some(registry) = config
        .registries
        .iter()
        .find(|r| r.patterns.iter().any(|p| urls_match(p, &req.image)))
    else {
        // The kubelet's matchImages are wider than berth's configuration. No
        // credential is a valid answer; an error would only add log noise.
        eprintln!(
            "berth: no [[registry]] in {} matches {:?}; answering without credentials",
            config.path.display(),
            req.image
        );
        return Ok(CredentialProviderResponse::no_credentials(req.api_version).to_json() + "\n");
    };
    let (username, password, cache_duration) = match &registry.source {
        Source::Static { credentials_file } => {
            let (username, password) = read_credentials_file(credentials_file)?;
            (username, password, registry.cache_duration)
        }
        Source::BerthRegistry(source) => {
            let issued = exchange(source)?;
            let renew_after = half_life(issued.expires_in);
            (issued.username, issued.password, Some(renew_after))
        }
    };
    let response = CredentialProviderResponse::single_credential(
        req.api_version,
        &req.image,
        config.cache_key_type,
        cache_duration,
        &username,
        &password,
    );
    Ok(response.to_json() + "\n")
}

/// The kubelet's cache duration for a credential living `expires_in` more
/// seconds: half of it, so the kubelet asks again while the cached one still
/// has half its life left (for clock skew and pulls already under way).
fn half_life(expires_in: u64) -> GoDuration {
    GoDuration::from_secs(i64::try_from(expires_in / 2).unwrap_or(i64::MAX / 1_000_000_000))
}

/// Exchanges the node credential at the berth registry.
fn exchange(source: &BerthRegistrySource) -> anyhow::Result<IssuedPullCredential> {
    let (username, password) = read_credentials_file(&source.node_credentials_file)?;
    let client = RegistryClient::new(ClientConfig {
        ca_files: source.ca_file.iter().cloned().collect(),
        ..ClientConfig::default()
    })?;
    let request = PullCredentialRequest {
        repositories: Vec::new(),
        ttl_seconds: source.lifetime.map(|d| d.as_secs().max(1)),
    };
    crate::block_on(client.exchange_pull_credential(
        &source.url,
        &Credentials::new(username, password),
        &request,
    ))
    .context("cannot start the async runtime")?
    .with_context(|| {
        format!(
            "cannot exchange the node credential in {} for a pull credential at {}",
            source.node_credentials_file.display(),
            source.url
        )
    })
}

/// A static credentials file: one line `username:password`, split at the
/// first ':' (usernames cannot hold one; passwords may).
fn read_credentials_file(path: &Path) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the credentials file {}", path.display()))?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let fix = "it must hold one line `username:password`";
    let Some((user, password)) = line.split_once(':') else {
        bail!("the credentials file {} has no ':'; {fix}", path.display());
    };
    if line.contains('\n') {
        bail!(
            "the credentials file {} has more than one line; {fix}",
            path.display()
        );
    }
    if user.is_empty() || password.is_empty() {
        bail!(
            "the credentials file {} has an empty username or password; {fix}",
            path.display()
        );
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// berth's plugin configuration, checked.
#[derive(Debug)]
struct ProviderConfig {
    path: PathBuf,
    registries: Vec<Registry>,
    /// One key type for all answers: a cached answer must be right for every
    /// image the cache entry covers.
    cache_key_type: berth_kube::credential_provider::CacheKeyType,
}

#[derive(Debug)]
struct Registry {
    patterns: Vec<String>,
    cache_duration: Option<GoDuration>,
    source: Source,
}

/// Where a registry's credential comes from.
#[derive(Debug)]
enum Source {
    /// A username and password in a file on the node.
    Static { credentials_file: PathBuf },
    /// A short-lived pull credential from a berth registry, obtained with
    /// the node's long-lived credential.
    BerthRegistry(BerthRegistrySource),
}

#[derive(Debug)]
struct BerthRegistrySource {
    /// The registry's base URL, `https://host[:port]`.
    url: String,
    node_credentials_file: PathBuf,
    ca_file: Option<PathBuf>,
    /// Requested life of each credential; the registry caps it.
    lifetime: Option<std::time::Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    registry: Vec<FileRegistry>,
}

#[derive(Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
enum FileRegistry {
    Static(StaticRegistry),
    BerthRegistry(BerthRegistryEntry),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BerthRegistryEntry {
    #[serde(rename = "match")]
    patterns: Vec<String>,
    url: String,
    node_credentials_file: PathBuf,
    ca_file: Option<PathBuf>,
    lifetime: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticRegistry {
    #[serde(rename = "match")]
    patterns: Vec<String>,
    credentials_file: PathBuf,
    cache_duration: Option<String>,
}

impl ProviderConfig {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(path, &text).with_context(|| format!("in {}", path.display()))
    }

    fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let file: FileConfig = toml::from_str(text)?;
        if file.registry.is_empty() {
            bail!(
                "there is no [[registry]] table; add one (see berth-credential-provider.example.toml)"
            );
        }
        // Relative credential files are found beside the config, whatever
        // directory the kubelet runs the plugin from.
        let base = path.parent().unwrap_or(Path::new("."));
        let mut registries = Vec::new();
        for (i, entry) in file.registry.into_iter().enumerate() {
            let n = i + 1;
            let r = match entry {
                FileRegistry::BerthRegistry(b) => {
                    let url =
                        check_url(&b.url).with_context(|| format!("[[registry]] #{n}: url"))?;
                    let lifetime = b
                        .lifetime
                        .map(|t| parse_lifetime(&t))
                        .transpose()
                        .with_context(|| format!("[[registry]] #{n}: lifetime"))?;
                    Registry {
                        patterns: b.patterns,
                        // Set from each credential's remaining life.
                        cache_duration: None,
                        source: Source::BerthRegistry(BerthRegistrySource {
                            url,
                            node_credentials_file: base.join(b.node_credentials_file),
                            ca_file: b.ca_file.map(|f| base.join(f)),
                            lifetime,
                        }),
                    }
                }
                FileRegistry::Static(s) => {
                    let cache_duration = s
                        .cache_duration
                        .map(|d| parse_cache_duration(&d))
                        .transpose()
                        .with_context(|| format!("[[registry]] #{n}: cache_duration"))?;
                    Registry {
                        patterns: s.patterns,
                        cache_duration,
                        source: Source::Static {
                            credentials_file: base.join(s.credentials_file),
                        },
                    }
                }
            };
            check_patterns(n, &r.patterns)?;
            registries.push(r);
        }
        let cache_key_type = cache_key_type_for(
            registries
                .iter()
                .flat_map(|r| r.patterns.iter().map(String::as_str)),
        );
        Ok(ProviderConfig {
            path: path.to_owned(),
            registries,
            cache_key_type,
        })
    }

    fn patterns(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.registries.iter().flat_map(|r| &r.patterns) {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

/// A registry base URL: `https://host[:port]` (or `http://` for a registry
/// serving plain HTTP), without a path.
fn check_url(text: &str) -> anyhow::Result<String> {
    let fix = "write it like https://registry.example.com or https://registry.example.com:5000";
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        bail!("{text:?} has no https:// or http:// scheme; {fix}");
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        bail!("{text:?} is not a registry base URL; {fix}");
    }
    Ok(text.trim_end_matches('/').to_owned())
}

fn parse_lifetime(text: &str) -> anyhow::Result<std::time::Duration> {
    let d = GoDuration::parse(text).context("write it like 12h, 30m or 1h30m")?;
    d.to_std()
        .filter(|d| d.as_secs() > 0)
        .with_context(|| format!("{text:?} is shorter than 1s"))
}

fn parse_cache_duration(text: &str) -> anyhow::Result<GoDuration> {
    let d = GoDuration::parse(text).context("write it like 12h, 30m or 1h30m")?;
    if d.is_negative() {
        bail!("{text:?} is negative; use 0s to disable caching");
    }
    Ok(d)
}

/// Patterns follow the kubelet's `matchImages` rules; the kubelet's own
/// checks (and lints for patterns that parse but never match) apply.
fn check_patterns(n: usize, patterns: &[String]) -> anyhow::Result<()> {
    if patterns.is_empty() {
        bail!(
            "[[registry]] #{n}: `match` is empty; list the registries it answers for, e.g. \
             [\"registry.example.com\"]"
        );
    }
    let probe = kubelet_config("berth", patterns.to_vec(), Path::new(DEFAULT_CONFIG_PATH));
    let problems: Vec<String> = probe
        .validate(false)
        .into_iter()
        .chain(probe.lint())
        .collect();
    if !problems.is_empty() {
        bail!("[[registry]] #{n}: {}", problems.join("; "));
    }
    Ok(())
}

/// A kubelet configuration running `berth credential-provider --config FILE`
/// for `patterns`.
fn kubelet_config(name: &str, patterns: Vec<String>, config: &Path) -> CredentialProviderConfig {
    let mut cfg = CredentialProviderConfig::example(name, "registry.example.com");
    let provider = &mut cfg.providers[0];
    provider.match_images = patterns;
    provider.args = vec![
        "credential-provider".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    cfg
}

fn example_config(args: ExampleArgs) -> anyhow::Result<String> {
    let (patterns, path) = match &args.config {
        Some(path) => {
            let config = ProviderConfig::load(path)?;
            // The kubelet runs the plugin from its own directory.
            let absolute = std::path::absolute(path)
                .with_context(|| format!("cannot make {} absolute", path.display()))?;
            (config.patterns(), absolute)
        }
        None => (
            vec![args.registry.clone(), format!("*.{}", args.registry)],
            PathBuf::from(DEFAULT_CONFIG_PATH),
        ),
    };
    let cfg = kubelet_config(&args.name, patterns, &path);
    let problems = cfg.validate(false);
    if !problems.is_empty() {
        bail!(
            "the resulting configuration is invalid: {}",
            problems.join("; ")
        );
    }
    eprintln!(
        "berth: save this as the kubelet's --image-credential-provider-config file and copy the \
         berth binary as {:?} into its --image-credential-provider-bin-dir",
        args.name
    );
    Ok(match args.output {
        Output::Yaml => cfg.to_yaml(),
        Output::Json => cfg.to_json() + "\n",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ProviderConfig> {
        ProviderConfig::parse(Path::new("/etc/berth/cp.toml"), text)
    }

    #[test]
    fn static_entries() {
        let c = parse(
            r#"
            [[registry]]
            match = ["reg.io", "*.reg.io"]
            source = "static"
            credentials_file = "reg.cred"
            cache_duration = "1h30m"

            [[registry]]
            match = ["other.io:5000"]
            source = "static"
            credentials_file = "/var/lib/other.cred"
            "#,
        )
        .unwrap();
        assert_eq!(c.registries.len(), 2);
        assert_eq!(
            c.registries[0].cache_duration,
            Some(GoDuration::from_secs(5400))
        );
        let Source::Static { credentials_file } = &c.registries[0].source else {
            panic!("a static source");
        };
        assert_eq!(credentials_file, Path::new("/etc/berth/reg.cred"));
        assert_eq!(c.registries[1].cache_duration, None);
        assert_eq!(c.patterns(), ["reg.io", "*.reg.io", "other.io:5000"]);
        assert_eq!(
            c.cache_key_type,
            berth_kube::credential_provider::CacheKeyType::Registry
        );
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            ("", "no [[registry]]"),
            (
                "[[registry]]\nmatch=[\"r.io\"]\nsource=\"berth-registry\"\nurl=\"https://r.io\"",
                "missing field `node_credentials_file`",
            ),
            (
                "[[registry]]\nmatch=[\"r.io\"]\nsource=\"berth-registry\"\nurl=\"r.io\"\nnode_credentials_file=\"n\"",
                "no https:// or http:// scheme",
            ),
            (
                "[[registry]]\nmatch=[\"r.io\"]\nsource=\"berth-registry\"\nurl=\"https://r.io/v2/\"\nnode_credentials_file=\"n\"",
                "not a registry base URL",
            ),
            (
                "[[registry]]\nmatch=[\"r.io\"]\nsource=\"berth-registry\"\nurl=\"https://r.io\"\nnode_credentials_file=\"n\"\nlifetime=\"0s\"",
                "shorter than 1s",
            ),
            (
                "[[registry]]\nmatch=[\"r.io\"]\nsource=\"berth-registry\"\nurl=\"https://r.io\"\nnode_credentials_file=\"n\"\ncache_duration=\"1h\"",
                "unknown field `cache_duration`",
            ),
            (
                "[[registry]]\nmatch=[\"r.io\"]\nsource=\"vault\"",
                "unknown variant `vault`",
            ),
            (
                "[[registry]]\nmatch=[\"r.io\"]\nsource=\"static\"\ncredentials_file=\"c\"\npassword=\"x\"",
                "unknown field `password`",
            ),
            (
                "[[registry]]\nmatch=[]\nsource=\"static\"\ncredentials_file=\"c\"",
                "`match` is empty",
            ),
            (
                "[[registry]]\nmatch=[\"r.io/*\"]\nsource=\"static\"\ncredentials_file=\"c\"",
                "glob in its path",
            ),
            (
                "[[registry]]\nmatch=[\"https://r.io\"]\nsource=\"static\"\ncredentials_file=\"c\"",
                "has a scheme",
            ),
            (
                "[[registry]]\nmatch=[\"r.io:x\"]\nsource=\"static\"\ncredentials_file=\"c\"",
                "invalid port",
            ),
            (
                "[[registry]]\nmatch=[\"r.io\"]\nsource=\"static\"\ncredentials_file=\"c\"\ncache_duration=\"12 hours\"",
                "12h",
            ),
            (
                "[[registry]]\nmatch=[\"r.io\"]\nsource=\"static\"\ncredentials_file=\"c\"\ncache_duration=\"-1s\"",
                "negative",
            ),
            ("[registry]\nmatch=1", "invalid type"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../../berth-credential-provider.example.toml");
        let c = parse(text).unwrap();
        assert_eq!(
            c.patterns(),
            ["registry.example.com", "*.registry.example.com"]
        );
        assert_eq!(
            c.registries[0].cache_duration,
            Some(GoDuration::from_secs(12 * 3600))
        );
        // Its commented-out berth-registry block is valid once uncommented.
        let berth: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [[registry]]"))
            .filter(|l| !l.starts_with("# #"))
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&berth).unwrap();
        let Source::BerthRegistry(b) = &c.registries[0].source else {
            panic!("a berth-registry source");
        };
        assert_eq!(b.url, "https://registry.example.com");
        assert_eq!(b.node_credentials_file, Path::new("/etc/berth/node.cred"));
        assert_eq!(
            b.ca_file.as_deref(),
            Some(Path::new("/etc/berth/registry-ca.pem"))
        );
        assert_eq!(b.lifetime, Some(std::time::Duration::from_secs(12 * 3600)));
    }

    #[test]
    fn berth_registry_entries() {
        let c = parse(
            "[[registry]]\nmatch=[\"127.0.0.1:5000\"]\nsource=\"berth-registry\"\n\
             url=\"http://127.0.0.1:5000/\"\nnode_credentials_file=\"node.cred\"",
        )
        .unwrap();
        let Source::BerthRegistry(b) = &c.registries[0].source else {
            panic!("a berth-registry source");
        };
        assert_eq!(b.url, "http://127.0.0.1:5000");
        assert_eq!(b.node_credentials_file, Path::new("/etc/berth/node.cred"));
        assert_eq!((b.ca_file.as_deref(), b.lifetime), (None, None));
    }

    #[test]
    fn renewal_at_half_life() {
        assert_eq!(half_life(43200), GoDuration::from_secs(21600));
        assert_eq!(half_life(3), GoDuration::from_secs(1));
        assert_eq!(half_life(0), GoDuration::ZERO);
    }

    #[test]
    fn path_patterns_cache_per_image() {
        let c =
            parse("[[registry]]\nmatch=[\"r.io/team\"]\nsource=\"static\"\ncredentials_file=\"c\"")
                .unwrap();
        assert_eq!(
            c.cache_key_type,
            berth_kube::credential_provider::CacheKeyType::Image
        );
    }
}
