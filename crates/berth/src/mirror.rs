//! `berth mirror`: the node side of the pull-through cache. `hosts-toml`
//! writes the containerd configuration that makes nodes pull through
//! berth's cache without changing a single image reference; `daemonset`
//! prints a DaemonSet that keeps that configuration (and berth's CA) on
//! every node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_cache::hosts_toml::{HostsToml, Mirror, hosts_toml, registry_directory};
use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Debug, Args)]
pub struct MirrorArgs {
    #[command(subcommand)]
    command: MirrorCommand,
}

#[derive(Debug, Subcommand)]
enum MirrorCommand {
    /// Write containerd hosts.toml files that send pulls of the given
    /// registries through berth (mirror mode, `?ns=`); containerd reads them
    /// from its config_path (/etc/containerd/certs.d) without a restart
    HostsToml(HostsTomlArgs),
    /// Print a DaemonSet (for `kubectl apply -f -`) that keeps those
    /// hosts.toml files, and berth's CA, on every node
    Daemonset(DaemonsetArgs),
}

/// What the mirror configuration says.
#[derive(Debug, Args)]
struct MirrorOptions {
    /// berth's URL as the nodes reach it, e.g. https://berth.internal:5000
    #[arg(long, value_name = "URL")]
    mirror: String,

    /// A registry to pull through berth (repeatable): docker.io, ghcr.io,
    /// registry.example:5000, or _default for every registry; each needs an
    /// [[upstream]] with that host in berth's configuration
    #[arg(long = "registry", value_name = "HOST", required = true)]
    registries: Vec<String>,

    /// Do not verify berth's certificate (for trying things out only)
    #[arg(long)]
    skip_verify: bool,
}

#[derive(Debug, Args)]
struct HostsTomlArgs {
    #[command(flatten)]
    mirror: MirrorOptions,

    /// Path, on the nodes, of the CA certificate that signed berth's certificate
    #[arg(long, value_name = "FILE", conflicts_with = "ca_from")]
    ca: Option<String>,

    /// A CA certificate to copy beside each hosts.toml (as berth-ca.crt),
    /// which then names it; needs --out
    #[arg(long, value_name = "FILE", requires = "out")]
    ca_from: Option<PathBuf>,

    /// Write <DIR>/<registry>/hosts.toml files instead of printing them
    /// (e.g. /etc/containerd/certs.d)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// The directory containerd reads, when --out writes it under another
    /// path (a node's directory mounted into a pod) [default: --out]
    #[arg(long, value_name = "DIR", requires = "out")]
    node_dir: Option<PathBuf>,

    /// Keep running, writing the files again this often, e.g. 5m: a
    /// DaemonSet's way to keep them in place
    #[arg(long, value_name = "DURATION", requires = "out", value_parser = humantime::parse_duration)]
    every: Option<Duration>,
}

#[derive(Debug, Args)]
struct DaemonsetArgs {
    #[command(flatten)]
    mirror: MirrorOptions,

    /// berth's image, which the DaemonSet runs (it writes the files)
    #[arg(long, value_name = "IMAGE")]
    image: String,

    /// Namespace of the DaemonSet (and of the CA's Secret)
    #[arg(long, short = 'n', default_value = "docker-registry")]
    namespace: String,

    /// A Secret holding berth's CA as ca.crt, copied to every node beside
    /// the hosts.toml files
    #[arg(long, value_name = "NAME")]
    ca_secret: Option<String>,

    /// containerd's config_path on the nodes
    #[arg(long, value_name = "DIR", default_value = "/etc/containerd/certs.d")]
    certs_dir: String,
}

pub fn run(args: MirrorArgs) -> Result<()> {
    match args.command {
        MirrorCommand::HostsToml(args) => write_hosts_toml(args),
        MirrorCommand::Daemonset(args) => {
            checked_mirror(&args.mirror)?;
            println!("{}", daemonset(&args)?);
            Ok(())
        }
    }
}

/// The options, checked: berth's URL has a scheme, each registry is a host.
fn checked_mirror(options: &MirrorOptions) -> Result<&str> {
    let url = options.mirror.trim_end_matches('/');
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        anyhow::bail!(
            "--mirror {:?} is not a URL: give berth's address with its scheme, e.g. \
             https://berth.internal:5000",
            options.mirror
        );
    }
    for registry in &options.registries {
        let host_like = |r: &str| {
            r == "_default"
                || (!r.starts_with('.')
                    && !r.contains("..")
                    && r.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    }))
        };
        if registry.is_empty() || !host_like(registry) {
            anyhow::bail!(
                "--registry {registry:?} is not a registry host: give e.g. docker.io, \
                 registry.example:5000 or _default"
            );
        }
    }
    Ok(url)
}

/// The CA file's name beside each hosts.toml.
const CA_FILE: &str = "berth-ca.crt";

fn write_hosts_toml(args: HostsTomlArgs) -> Result<()> {
    let url = checked_mirror(&args.mirror)?;
    let Some(out) = &args.out else {
        let mirror = Mirror {
            url: url.to_owned(),
            ca: args.ca.clone(),
            skip_verify: args.mirror.skip_verify,
        };
        for registry in &args.mirror.registries {
            let file = hosts_toml(registry, &mirror);
            println!(
                "# /etc/containerd/certs.d/{}/hosts.toml\n{}",
                file.directory, file.content
            );
        }
        return Ok(());
    };
    // containerd resolves nothing relative: the CA is named by an absolute
    // path, on the node.
    let node_dir = match &args.node_dir {
        Some(dir) => dir.clone(),
        None => {
            std::path::absolute(out).with_context(|| format!("cannot resolve {}", out.display()))?
        }
    };
    loop {
        // Read at each round: a rotated CA Secret reaches the nodes.
        let ca =
            match &args.ca_from {
                Some(path) => Some(std::fs::read(path).with_context(|| {
                    format!("cannot read the CA certificate {}", path.display())
                })?),
                None => None,
            };
        for registry in &args.mirror.registries {
            let directory = registry_directory(registry);
            let mirror = Mirror {
                url: url.to_owned(),
                ca: match &ca {
                    Some(_) => Some(
                        node_dir
                            .join(&directory)
                            .join(CA_FILE)
                            .display()
                            .to_string(),
                    ),
                    None => args.ca.clone(),
                },
                skip_verify: args.mirror.skip_verify,
            };
            let file = hosts_toml(registry, &mirror);
            let written = write_files(out, &file, ca.as_deref())?;
            if args.every.is_none() {
                println!("{}", written.display());
            }
        }
        let Some(every) = args.every else {
            return Ok(());
        };
        std::thread::sleep(every);
    }
}

/// Writes one registry's hosts.toml (and the CA beside it) under `out`,
/// each file replaced whole, so containerd never reads half of one.
fn write_files(out: &Path, file: &HostsToml, ca: Option<&[u8]>) -> Result<PathBuf> {
    let dir = out.join(&file.directory);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let replace = |name: &str, content: &[u8]| -> Result<PathBuf> {
        let path = dir.join(name);
        let temporary = dir.join(format!(".{name}.new"));
        std::fs::write(&temporary, content)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    };
    if let Some(ca) = ca {
        replace(CA_FILE, ca)?;
    }
    replace("hosts.toml", file.content.as_bytes())
}

/// The DaemonSet: on every node, berth itself keeps the hosts.toml files
/// (and the CA) in containerd's config_path, rewriting them every few
/// minutes. It runs as root (the directory is root's) with no capability
/// and a read-only root file system.
fn daemonset(args: &DaemonsetArgs) -> Result<String> {
    let options = &args.mirror;
    let mut command = vec![
        "mirror".to_owned(),
        "hosts-toml".to_owned(),
        format!("--mirror={}", options.mirror.trim_end_matches('/')),
    ];
    command.extend(options.registries.iter().map(|r| format!("--registry={r}")));
    if options.skip_verify {
        command.push("--skip-verify".to_owned());
    }
    command.extend([
        "--out=/host/certs.d".to_owned(),
        format!("--node-dir={}", args.certs_dir),
        "--every=5m".to_owned(),
    ]);
    let mut mounts = vec![json!({"name": "certs", "mountPath": "/host/certs.d"})];
    let mut volumes = vec![json!({
        "name": "certs",
        "hostPath": {"path": args.certs_dir, "type": "DirectoryOrCreate"},
    })];
    if let Some(secret) = &args.ca_secret {
        command.push("--ca-from=/etc/berth-ca/ca.crt".to_owned());
        mounts.push(json!({"name": "ca", "mountPath": "/etc/berth-ca", "readOnly": true}));
        volumes.push(json!({"name": "ca", "secret": {"secretName": secret}}));
    }
    let labels =
        json!({"app.kubernetes.io/name": "berth", "app.kubernetes.io/component": "node-mirror"});
    let manifest = json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "berth-node-mirror", "namespace": args.namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "tolerations": [{"operator": "Exists"}],
                    // It only sleeps between rounds: nothing to finish.
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "hosts-toml",
                        "image": args.image,
                        "args": command,
                        "resources": {
                            "requests": {"cpu": "5m", "memory": "16Mi"},
                            "limits": {"memory": "64Mi"},
                        },
                        "securityContext": {
                            "runAsUser": 0,
                            "runAsGroup": 0,
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    });
    serde_norway::to_string(&manifest).context("cannot write the DaemonSet")
}
