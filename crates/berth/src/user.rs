//! `berth user`: manage the users: an htpasswd file, or the users a
//! database several berth processes share keeps.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_auth::files::{lock_for_update, write_private};
use berth_auth::htpasswd::{BCRYPT_COST, Htpasswd};
use berth_auth::robots::ROBOT_PREFIX;
use clap::{Args, Subcommand};

use crate::config::{DataDirArgs, Users};
use crate::serve::HTPASSWD_FILE;
use crate::shared::edit_shared_value;

#[derive(Debug, Args)]
pub struct UserArgs {
    /// The htpasswd file [default: the config file's htpasswd, else the
    /// users of the shared database (--database-url), else DATA_DIR/htpasswd]
    #[arg(long, env = "BERTH_HTPASSWD", value_name = "FILE", global = true)]
    htpasswd: Option<PathBuf>,

    /// berth's data directory, where the default htpasswd file lives
    #[command(flatten)]
    data_dir: DataDirArgs,

    /// The PostgreSQL database of berth processes that share one (else the
    /// config file's [database]): without an htpasswd file given, users are
    /// kept there, for all of them
    #[arg(long, env = "BERTH_DATABASE_URL", value_name = "URL", global = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (the password is prompted for, or read from stdin)
    Add(PasswordArgs),
    /// Change a user's password
    Passwd(PasswordArgs),
    /// Remove a user
    Del { name: String },
    /// List the users
    List,
}

#[derive(Debug, Args)]
struct PasswordArgs {
    name: String,
    /// Read the password from the first line of standard input
    #[arg(long)]
    password_stdin: bool,
}

/// Reads a password from stdin or, on a terminal, from a prompt typed twice.
/// Never from the command line, where other users could see it.
pub fn read_password(from_stdin: bool) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password again: ")?;
        if first != second {
            bail!("the two passwords differ: nothing was changed");
        }
        first
    } else {
        bail!(
            "no terminal to ask the password on: pass it on standard input with --password-stdin"
        );
    };
    if password.is_empty() {
        bail!("the password is empty: give a non-empty one");
    }
    Ok(password)
}

pub fn run(args: UserArgs) -> Result<()> {
    match args.data_dir.users(args.htpasswd, args.database_url)? {
        Users::File(path) => run_on_file(&path, &args.command),
        Users::Database(database) => {
            let mut password = Password::default();
            edit_shared_value(&database, HTPASSWD_FILE, |text| {
                let mut users =
                    Htpasswd::parse(text).context("the database's users are not valid")?;
                let changed = apply(&mut users, &args.command, "the database", &mut password)?;
                Ok(changed.then(|| users.render()))
            })?;
            if !matches!(args.command, UserCommand::List) {
                eprintln!(
                    "updated the users in the database; every berth on it picks the change up within seconds"
                );
            }
            Ok(())
        }
    }
}

/// The users in an htpasswd file.
fn run_on_file(path: &Path, command: &UserCommand) -> Result<()> {
    let editing = !matches!(command, UserCommand::List);
    if editing && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Two `berth user` runs never lose each other's change.
    let _lock = editing
        .then(|| lock_for_update(path))
        .transpose()
        .with_context(|| {
            format!(
                "cannot lock {} for the update: is its directory read-only (a Kubernetes \
                 Secret)? Edit the Secret instead",
                path.display()
            )
        })?;
    let mut users = match std::fs::read_to_string(path) {
        Ok(text) => {
            Htpasswd::parse(&text).with_context(|| format!("{} is not valid", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Htpasswd::default(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let source = path.display().to_string();
    if !apply(&mut users, command, &source, &mut Password::default())? {
        return Ok(());
    }
    write_private(path, &users.render()).with_context(|| {
        format!(
            "cannot write {}: is it a read-only mount (a Kubernetes Secret)? Edit the Secret instead",
            path.display()
        )
    })?;
    eprintln!(
        "updated {}; a running berth picks the change up within seconds",
        path.display()
    );
    Ok(())
}

/// A password asked for once, when a command first needs it (after the
/// checks that need none), however many times the command is applied.
#[derive(Default)]
struct Password(Option<String>);

impl Password {
    fn get(&mut self, from_stdin: bool) -> Result<String> {
        if self.0.is_none() {
            self.0 = Some(read_password(from_stdin)?);
        }
        Ok(self.0.clone().unwrap_or_default())
    }
}

/// Applies `command` to `users` (kept in `source`); returns whether they
/// changed.
fn apply(
    users: &mut Htpasswd,
    command: &UserCommand,
    source: &str,
    password: &mut Password,
) -> Result<bool> {
    match command {
        UserCommand::List => {
            for user in users.users() {
                println!("{user}");
            }
            return Ok(false);
        }
        UserCommand::Add(PasswordArgs {
            name,
            password_stdin,
        }) => {
            if name.starts_with(ROBOT_PREFIX) {
                bail!(
                    "user names starting with {ROBOT_PREFIX:?} are kept for robot accounts: pick another name"
                );
            }
            if users.contains(name) {
                bail!(
                    "user {name} already exists: use `berth user passwd {name}` to change the password"
                );
            }
            users.set(name, &password.get(*password_stdin)?, BCRYPT_COST)?;
        }
        UserCommand::Passwd(PasswordArgs {
            name,
            password_stdin,
        }) => {
            if !users.contains(name) {
                bail!("no user {name} in {source}: add it with `berth user add {name}`");
            }
            users.set(name, &password.get(*password_stdin)?, BCRYPT_COST)?;
        }
        UserCommand::Del { name } => {
            if !users.remove(name) {
                bail!("no user {name} in {source}");
            }
        }
    }
    Ok(true)
}
