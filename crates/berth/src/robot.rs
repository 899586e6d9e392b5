//! `berth robot`: robot accounts, credentials for machines with a limited scope
//! and an optional expiry, kept in the data directory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use berth_auth::Action;
use berth_auth::files::{lock_for_update, write_private};
use berth_auth::robots::RobotStore;
use clap::{Args, Subcommand};

use crate::config::DataDirArgs;
use crate::serve::ROBOTS_FILE;

#[derive(Debug, Args)]
pub struct RobotArgs {
    /// berth's data directory, where robots are kept; a running berth picks
    /// changes up within seconds
    #[command(flatten)]
    data_dir: DataDirArgs,

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

pub fn run(args: RobotArgs) -> Result<()> {
    let path = args.data_dir.resolve()?.join(ROBOTS_FILE);
    // Two `berth robot` runs never lose each other's change.
    let _lock = lock_for_update(&path)
        .with_context(|| format!("cannot lock {} for the update", path.display()))?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut store =
        RobotStore::parse(&text).with_context(|| format!("{} is not valid", path.display()))?;
    match args.command {
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
            return Ok(());
        }
        RobotCommand::Create {
            name,
            repositories,
            actions,
            ttl,
        } => {
            let mut parsed = Vec::new();
            for action in &actions {
                parsed.extend(Action::parse_list(action).with_context(|| {
                    format!("action {action:?} is not pull, push, delete or *")
                })?);
            }
            parsed.sort();
            parsed.dedup();
            let (username, secret) = store.create(&name, repositories, parsed, ttl, unix_now())?;
            write_private(&path, &store.render())?;
            println!("username: {username}");
            println!("password: {secret}");
            match ttl {
                Some(ttl) => println!("expires: {}", rfc3339(unix_now() + ttl.as_secs())),
                None => println!("expires: never"),
            }
        }
        RobotCommand::Revoke { name } => {
            store.revoke(&name)?;
            write_private(&path, &store.render())?;
            eprintln!("revoked robot.{name}");
        }
    }
    Ok(())
}
