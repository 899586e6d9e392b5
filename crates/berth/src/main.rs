//! berth: a private container registry for Kubernetes, in one binary.
//!
//! This crate is only the command line: it parses arguments and configuration
//! and hands over to the library crates (`berth-server`, `berth-registry`,
//! `berth-storage`), which do the work.

mod admin;
mod config;
mod credential_provider;
mod docker_helper;
mod doctor;
mod first_byte;
mod login;
mod mirror;
mod robot;
mod secret;
mod serve;
mod shared;
mod tls;
mod user;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A private container registry for Kubernetes",
    long_about = "A private container registry for Kubernetes.\n\n\
        `berth serve` runs an OCI Distribution v1.1 registry that keeps its data on \
        local disk. With no options it listens on 127.0.0.1:5000 and stores \
        everything under ./berth-data."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry
    Serve(Box<config::ServeArgs>),
    /// Manage users (the htpasswd file)
    User(user::UserArgs),
    /// Manage robot accounts: scoped, expiring credentials for machines
    Robot(robot::RobotArgs),
    /// Image pull Secrets and ServiceAccount patches for kubectl
    Secret(secret::SecretArgs),
    /// Kubelet credential provider plugin (run by the kubelet)
    CredentialProvider(credential_provider::CredentialProviderArgs),
    /// Explain why a pod will not pull its image, and how to fix it
    Doctor(doctor::DoctorArgs),
    /// Check credentials against a registry and save them in docker's config.json
    Login(login::LoginArgs),
    /// Remove a registry's credentials from docker's config.json
    Logout(login::LogoutArgs),
    /// Run garbage collection on a running berth now (or, with --dry-run,
    /// list what it would remove)
    Gc(admin::GcArgs),
    /// List repositories with their sizes and quotas, or delete one whole
    Repo(admin::RepoArgs),
    /// Configure nodes to pull through berth's pull-through cache
    Mirror(mirror::MirrorArgs),
}

/// Runs `future` to completion on a one-off single-threaded runtime: the
/// client-side subcommands make a few requests and need no more.
fn block_on<F: std::future::Future>(future: F) -> std::io::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future))
}

/// Runs one subcommand. Each returns its exit code, or an error whose message
/// names the problem and the fix.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(*args).map(|()| ExitCode::SUCCESS),
        Command::User(args) => user::run(args).map(|()| ExitCode::SUCCESS),
        Command::Robot(args) => robot::run(args).map(|()| ExitCode::SUCCESS),
        Command::Secret(args) => secret::run(args),
        Command::CredentialProvider(args) => credential_provider::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Login(args) => login::login(args).map(|()| ExitCode::SUCCESS),
        Command::Logout(args) => login::logout(args).map(|()| ExitCode::SUCCESS),
        Command::Gc(args) => admin::gc(args).map(|()| ExitCode::SUCCESS),
        Command::Repo(args) => admin::repo(args).map(|()| ExitCode::SUCCESS),
        Command::Mirror(args) => mirror::run(args).map(|()| ExitCode::SUCCESS),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    run(cli.command).unwrap_or_else(|e| {
        eprintln!("berth: {e:#}");
        ExitCode::FAILURE
    })
}
