//! `berth gc` and `berth repo`: administering a running berth through its
//! API, with an administrator's credentials.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use berth_api::admin::{BlobGone, GcEvent, GcReport, GcRequest, Repository};
use berth_client::{ClientConfig, Credentials, RegistryClient};
use bytesize::ByteSize;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// Where the registry is, and who administers it.
#[derive(Args)]
pub struct RegistryArgs {
    /// The berth registry's URL
    #[arg(
        long,
        env = "BERTH_REGISTRY",
        value_name = "URL",
        default_value = "http://127.0.0.1:5000"
    )]
    registry: String,

    /// An administrator's user name (a user a policy rule with admin = true
    /// names; any user when there is no policy)
    #[arg(short, long, env = "BERTH_USERNAME")]
    username: String,

    /// Read the password from the first line of standard input; else it is
    /// asked for on the terminal
    #[arg(long)]
    password_stdin: bool,

    /// PEM file of a CA to trust besides the system's (repeatable), e.g. the
    /// CA of `berth serve --tls-self-signed`
    #[arg(long, value_name = "FILE")]
    ca_file: Vec<PathBuf>,
}

impl RegistryArgs {
    /// A client for calls that may take as long as a collection does.
    fn connect(&self) -> anyhow::Result<(RegistryClient, Credentials)> {
        if !self.registry.starts_with("http://") && !self.registry.starts_with("https://") {
            bail!(
                "--registry {:?} is not a URL: write e.g. http://127.0.0.1:5000 or \
                 https://registry.example.com",
                self.registry
            );
        }
        let client = RegistryClient::new(ClientConfig {
            ca_files: self.ca_file.clone(),
            timeout: Duration::from_secs(24 * 3600),
            ..ClientConfig::default()
        })?;
        let password = crate::login::read_password(self.password_stdin)?;
        Ok((client, Credentials::new(self.username.clone(), password)))
    }
}

#[derive(Args)]
pub struct GcArgs {
    /// Only list what would go, and how many bytes it holds
    #[arg(long)]
    dry_run: bool,

    /// Collect what is younger than the registry's grace period too, down to
    /// this age, e.g. 0s; only safe while nothing is being pushed
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    grace: Option<Duration>,

    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct RepoArgs {
    #[command(subcommand)]
    command: RepoCommand,
}

#[derive(Subcommand)]
enum RepoCommand {
    /// List repositories with the bytes, manifests and tags they hold, and
    /// their quota
    List {
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Delete a repository whole: tags, manifests, blob links, uploads (the
    /// next garbage collection reclaims its bytes)
    Delete {
        name: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

fn size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// Shows a collection's progress: a bar per phase on a terminal, nothing
/// otherwise (the summary line says what happened).
struct Progress {
    bar: Option<ProgressBar>,
    phase: String,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            phase: String::new(),
        }
    }

    fn show(&mut self, event: &GcEvent) {
        let (Some(bar), GcEvent::Progress { phase, done, total }) = (&self.bar, event) else {
            return;
        };
        if *phase != self.phase {
            self.phase.clone_from(phase);
            bar.reset();
            bar.set_message(phase.clone());
        }
        bar.set_length(*total);
        bar.set_position(*done);
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

pub fn gc(args: GcArgs) -> anyhow::Result<()> {
    let (client, credentials) = args.registry.connect()?;
    let request = GcRequest {
        dry_run: args.dry_run,
        grace_seconds: args.grace.map(|g| g.as_secs()),
    };
    let mut progress = Progress::new();
    let report = crate::block_on(client.collect_garbage(
        &args.registry.registry,
        &credentials,
        &request,
        |event| progress.show(event),
    ))
    .context("cannot start the async runtime")?;
    progress.finish();
    let report = report
        .with_context(|| format!("garbage collection at {} failed", args.registry.registry))?;
    if report.dry_run {
        print!("{}", listing(&report));
    }
    eprintln!("berth: {}", summary(&report));
    Ok(())
}

/// What a dry run found, a line each.
fn listing(report: &GcReport) -> String {
    let blob = |kind: &str, b: &BlobGone| format!("{kind} {} ({})\n", b.digest, size(b.size));
    let mut out = String::new();
    for tag in &report.tags {
        out.push_str(&format!("tag {tag}\n"));
    }
    for m in &report.manifests {
        out.push_str(&format!(
            "manifest {}@{} ({})\n",
            m.repository,
            m.digest,
            size(m.size)
        ));
    }
    for b in &report.blobs {
        out.push_str(&blob("blob", b));
    }
    for b in &report.orphans {
        out.push_str(&blob("unrecorded", b));
    }
    out
}

/// One line: what went (or would), and the bytes.
fn summary(report: &GcReport) -> String {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let freed = if report.dry_run {
        "would be freed"
    } else {
        "freed"
    };
    format!(
        "{verb} {} tags, {} manifests, {} blob links, {} blobs and {} unrecorded files: {} {freed}",
        report.tags.len(),
        report.manifests.len(),
        report.links,
        report.blobs.len(),
        report.orphans.len(),
        size(report.bytes),
    )
}

pub fn repo(args: RepoArgs) -> anyhow::Result<()> {
    match args.command {
        RepoCommand::List { registry } => {
            let (client, credentials) = registry.connect()?;
            let repositories =
                crate::block_on(client.repositories(&registry.registry, &credentials))
                    .context("cannot start the async runtime")?
                    .with_context(|| {
                        format!("cannot list the repositories of {}", registry.registry)
                    })?;
            print!("{}", table(&repositories));
        }
        RepoCommand::Delete { name, registry } => {
            let (client, credentials) = registry.connect()?;
            crate::block_on(client.delete_repository(&registry.registry, &credentials, &name))
                .context("cannot start the async runtime")?
                .with_context(|| format!("cannot delete repository {name}"))?;
            eprintln!(
                "berth: deleted repository {name}; the next garbage collection reclaims its bytes"
            );
        }
    }
    Ok(())
}

/// Repositories as a table: name, size, counts, quota.
fn table(repositories: &[Repository]) -> String {
    let rows: Vec<[String; 5]> = repositories
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                size(r.bytes),
                r.manifests.to_string(),
                r.tags.to_string(),
                r.quota.as_ref().map_or_else(String::new, |q| {
                    format!("{} of {} ({})", size(q.used), size(q.limit), q.pattern)
                }),
            ]
        })
        .collect();
    let header = ["REPOSITORY", "SIZE", "MANIFESTS", "TAGS", "QUOTA"].map(str::to_owned);
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|row| row[c].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:width$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::admin::{ManifestGone, Quota};

    #[test]
    fn a_dry_run_lists_and_sums_up() {
        let report = GcReport {
            dry_run: true,
            tags: vec!["team/app:old".into()],
            manifests: vec![ManifestGone {
                repository: "team/app".into(),
                digest: "sha256:aa".into(),
                size: 1536,
            }],
            links: 2,
            blobs: vec![BlobGone {
                digest: "sha256:bb".into(),
                size: 20 * 1024 * 1024,
            }],
            orphans: vec![],
            bytes: 20 * 1024 * 1024 + 1536,
        };
        assert_eq!(
            listing(&report),
            "tag team/app:old\nmanifest team/app@sha256:aa (1.5 KiB)\nblob sha256:bb (20.0 MiB)\n"
        );
        assert_eq!(
            summary(&report),
            "would remove 1 tags, 1 manifests, 2 blob links, 1 blobs and 0 unrecorded files: \
             20.0 MiB would be freed"
        );
    }

    #[test]
    fn repositories_are_a_table() {
        let table = table(&[Repository {
            name: "team/app".into(),
            bytes: 2048,
            manifests: 3,
            tags: 2,
            quota: Some(Quota {
                pattern: "team/**".into(),
                limit: 1024 * 1024,
                used: 4096,
            }),
        }]);
        assert_eq!(
            table,
            "REPOSITORY  SIZE     MANIFESTS  TAGS  QUOTA\n\
             team/app    2.0 KiB  3          2     4.0 KiB of 1.0 MiB (team/**)\n"
        );
    }
}
