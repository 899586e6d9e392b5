//! `berth robot`: robot accounts, credentials for machines with a limited scope
//! and an optional expiry, kept in the data directory, or in the database
//! when several berth processes share one.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use berth_auth::Action;
use berth_auth::files::{lock_for_update, write_private};
use berth_auth::robots::RobotStore;
use berth_storage::PostgresOptions;
use clap::{Args, Subcommand};

use crate::config::DataDirArgs;
use crate::serve::ROBOTS_FILE;
use crate::shared::edit_shared_value;

#[derive(Debug, Args)]
pub struct RobotArgs {
    /// berth's data directory, where robots are kept; a running berth picks
    /// changes up within seconds
    #[command(flatten)]
    data_dir: DataDirArgs,

    /// The PostgreSQL database of berth processes that share one (else
    /// the config file's [database]): robots are kept there, for all of
    /// them [default: the data directory's robots.json]
    #[arg(long, env = "BERTH_DATABASE_URL", value_name = "URL", global = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: RobotCommand,
}

#[derive(Debug, Subcommand)]
enum RobotCommand {
    /// Create a robot and print its credential (shown only this once)
    Create {
        /// Lowercase letters, digits, '-' and '_'; it logs in as robot.NAME
        name: String,
        /// Repositories it may use: team/app, team/* (one level) or team/** (repeatable)
        #[arg(long = "repo", value_name = "PATTERN", required = true)]
        repositories: Vec<String>,
        /// What it may do there: pull, push, delete or *, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "pull")]
        actions: Vec<String>,
        /// Lifetime, e.g. 12h or 30d; without it the robot never expires
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List robots (never their secrets)
    List,
    /// Delete a robot: its credential stops working within seconds
    Revoke { name: String },
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// What a command changed, told once the change is kept.
enum Done {
    Listed,
    Created {
        username: String,
        secret: String,
        ttl: Option<Duration>,
    },
    Revoked(String),
}

pub fn run(args: RobotArgs) -> Result<()> {
    match args.data_dir.database(args.database_url)? {
        Some(database) => run_on_database(&database, &args.command),
        None => run_on_file(&args.data_dir.resolve()?.join(ROBOTS_FILE), &args.command),
    }
}

/// Robots in the data directory's file, for the berth serving it.
fn run_on_file(path: &Path, command: &RobotCommand) -> Result<()> {
    // Two `berth robot` runs never lose each other's change.
    let _lock = lock_for_update(path)
        .with_context(|| format!("cannot lock {} for the update", path.display()))?;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut store =
        RobotStore::parse(&text).with_context(|| format!("{} is not valid", path.display()))?;
    let done = apply(&mut store, command)?;
    if !matches!(done, Done::Listed) {
        write_private(path, &store.render())?;
    }
    report(done);
    Ok(())
}

/// Robots in the database several berth processes share.
fn run_on_database(database: &PostgresOptions, command: &RobotCommand) -> Result<()> {
    let mut done = None;
    edit_shared_value(database, ROBOTS_FILE, |text| {
        let mut store = RobotStore::parse(text).context("the database's robots are not valid")?;
        let outcome = apply(&mut store, command)?;
        let listed = matches!(outcome, Done::Listed);
        done = Some(outcome);
        Ok((!listed).then(|| store.render()))
    })?;
    report(done.expect("edited"));
    Ok(())
}

fn apply(store: &mut RobotStore, command: &RobotCommand) -> Result<Done> {
    Ok(match command {
        RobotCommand::List => {
            let now = unix_now();
            for robot in &store.robots {
                let expiry = match robot.expires_at {
                    None => "never expires".to_owned(),
                    Some(at) if at <= now => format!("expired {}", rfc3339(at)),
                    Some(at) => format!("expires {}", rfc3339(at)),
                };
                let actions: Vec<&str> = robot.actions.iter().map(|a| a.as_str()).collect();
                println!(
                    "robot.{}\t{}\t{}\t{expiry}",
                    robot.name,
                    robot.repositories.join(","),
                    actions.join(",")
                );
            }
            Done::Listed
        }
        RobotCommand::Create {
            name,
            repositories,
            actions,
            ttl,
        } => {
            let mut parsed = Vec::new();
            for action in actions {
                parsed.extend(Action::parse_list(action).with_context(|| {
                    format!("action {action:?} is not pull, push, delete or *")
                })?);
            }
            parsed.sort();
            parsed.dedup();
            let (username, secret) =
                store.create(name, repositories.clone(), parsed, *ttl, unix_now())?;
            Done::Created {
                username,
                secret,
                ttl: *ttl,
            }
        }
        RobotCommand::Revoke { name } => {
            store.revoke(name)?;
            Done::Revoked(name.clone())
        }
    })
}

fn report(done: Done) {
    match done {
        Done::Listed => {}
        Done::Created {
            username,
            secret,
            ttl,
        } => {
            println!("username: {username}");
            println!("password: {secret}");
            match ttl {
                Some(ttl) => println!("expires: {}", rfc3339(unix_now() + ttl.as_secs())),
                None => println!("expires: never"),
            }
        }
        Done::Revoked(name) => eprintln!("revoked robot.{name}"),
    }
}
