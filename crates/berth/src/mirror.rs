//! `berth mirror hosts-toml`: the containerd configuration that makes nodes
//! pull through berth's cache without changing a single image reference.

use std::path::PathBuf;

use anyhow::{Context, Result};
use berth_cache::hosts_toml::{Mirror, hosts_toml};
use clap::{Args, Subcommand};

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
}

#[derive(Debug, Args)]
struct HostsTomlArgs {
    /// berth's URL as the nodes reach it, e.g. https://berth.internal:5000
    #[arg(long, value_name = "URL")]
    mirror: String,

    /// A registry to pull through berth (repeatable): docker.io, ghcr.io,
    /// registry.example:5000, or _default for every registry; each needs an
    /// [[upstream]] with that host in berth's configuration
    #[arg(long = "registry", value_name = "HOST", required = true)]
    registries: Vec<String>,

    /// Path, on the nodes, of the CA certificate that signed berth's certificate
    #[arg(long, value_name = "FILE")]
    ca: Option<String>,

    /// Do not verify berth's certificate (for trying things out only)
    #[arg(long)]
    skip_verify: bool,

    /// Write <DIR>/<registry>/hosts.toml files instead of printing them
    /// (e.g. /etc/containerd/certs.d)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: MirrorArgs) -> Result<()> {
    let MirrorCommand::HostsToml(args) = args.command;
    let url = args.mirror.trim_end_matches('/');
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        anyhow::bail!(
            "--mirror {:?} is not a URL: give berth's address with its scheme, e.g. \
             https://berth.internal:5000",
            args.mirror
        );
    }
    let mirror = Mirror {
        url: url.to_owned(),
        ca: args.ca,
        skip_verify: args.skip_verify,
    };
    for registry in &args.registries {
        let host_like = |r: &str| {
            r == "_default"
                || (!r.starts_with('.')
                    && r.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    }))
        };
        if registry.is_empty() || !host_like(registry) || registry.contains("..") {
            anyhow::bail!(
                "--registry {registry:?} is not a registry host: give e.g. docker.io, \
                 registry.example:5000 or _default"
            );
        }
        let file = hosts_toml(registry, &mirror);
        match &args.out {
            Some(dir) => {
                let dir = dir.join(&file.directory);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let path = dir.join("hosts.toml");
                std::fs::write(&path, &file.content)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
            }
            None => println!(
                "# /etc/containerd/certs.d/{}/hosts.toml\n{}",
                file.directory, file.content
            ),
        }
    }
    Ok(())
}
