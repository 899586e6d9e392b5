//! `berth secret`: image pull Secrets and ServiceAccount patches, printed for
//! `kubectl apply` / `kubectl patch`. berth never talks to the cluster here;
//! the manifests come from `berth_kube::secret`, byte-for-byte as kubectl
//! prints them.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use berth_kube::cred_helper::{self, Lookup};
use berth_kube::docker_config::DockerConfigFile;
use berth_kube::secret::{
    DEFAULT_DOCKER_SERVER, MultiRegistrySecret, RegistryCredentials, SecretType,
    image_pull_secrets_patch, json_list, kubectl_patch_command, service_account_json,
    service_account_yaml, yaml_stream,
};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    command: SecretCommand,
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Print an image pull Secret, byte-for-byte like `kubectl create secret
    /// docker-registry --dry-run=client`, refusing input a kubelet could not use
    Create(CreateArgs),
    /// Print the patch (or, with --full, the manifest) that makes a
    /// ServiceAccount hand pull Secrets to its new pods
    Attach(AttachArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Yaml,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TypeArg {
    /// kubernetes.io/dockerconfigjson (what kubectl creates)
    #[value(alias = "kubernetes.io/dockerconfigjson")]
    Dockerconfigjson,
    /// The legacy kubernetes.io/dockercfg
    #[value(alias = "kubernetes.io/dockercfg")]
    Dockercfg,
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  printf '%s' \"$TOKEN\" | berth secret create regcred --server registry.example.com:5000 \\
      --username ci-bot --password-stdin -n app | kubectl apply -f -
  berth secret create regcred --from-docker-config --server ghcr.io -n app -n web | kubectl apply -f -")]
struct CreateArgs {
    /// Secret name (lowercase letters, digits, '-' and '.')
    #[arg(value_name = "NAME")]
    name: String,

    /// Registry as it starts your image names (host[:port], optionally with
    /// https:// or a repository path); repeat for one entry per registry
    /// [default: https://index.docker.io/v1/, Docker Hub]
    #[arg(long, value_name = "SERVER")]
    server: Vec<String>,

    /// Registry username (a robot or token account is best)
    #[arg(long, required_unless_present = "from_docker_config")]
    username: Option<String>,

    /// Registry password or token. It ends up in your shell history and is
    /// visible to other users in the process list: prefer --password-stdin
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,

    /// Read the password from stdin (one trailing newline is dropped).
    /// Without this or --password, berth asks for it on a terminal
    #[arg(long)]
    password_stdin: bool,

    /// Email stored beside the credentials (optional; the kubelet ignores it)
    #[arg(long)]
    email: Option<String>,

    /// Namespace of the Secret; repeat to print one Secret per namespace
    /// (pods can only use pull Secrets of their own namespace)
    #[arg(short, long, value_name = "NAMESPACE")]
    namespace: Vec<String>,

    /// Output format; several Secrets are `---`-separated YAML documents or a
    /// JSON `List`, both of which `kubectl apply -f -` takes
    #[arg(short, long, value_enum, default_value = "yaml")]
    output: Output,

    /// Secret type
    #[arg(long = "type", value_enum, default_value = "dockerconfigjson")]
    secret_type: TypeArg,

    /// Append kubectl's hash of the contents to the name, so a changed
    /// credential gets a new Secret name
    #[arg(long)]
    append_hash: bool,

    /// Copy the credentials of the --server registries (only those) from a
    /// docker config, asking its credsStore / credHelpers helper when it has
    /// one [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json]
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        require_equals = true,
        conflicts_with_all = ["username", "password", "password_stdin"]
    )]
    from_docker_config: Option<Option<PathBuf>>,
}

#[derive(Args)]
struct AttachArgs {
    /// Pull Secret to attach; repeat for several. The ServiceAccount's list
    /// becomes exactly these names, so include any it already has
    #[arg(long, value_name = "NAME", required = true)]
    secret: Vec<String>,

    /// ServiceAccount to patch
    #[arg(long, value_name = "NAME", default_value = "default")]
    service_account: String,

    /// Namespace of the ServiceAccount (and of the Secrets)
    #[arg(short, long)]
    namespace: Option<String>,

    /// Print the whole ServiceAccount manifest for `kubectl apply -f -`
    /// instead of the patch
    #[arg(long)]
    full: bool,

    /// Output format of --full
    #[arg(short, long, value_enum, default_value = "yaml", requires = "full")]
    output: Output,
}

pub fn run(args: SecretArgs) -> anyhow::Result<ExitCode> {
    let out = match args.command {
        SecretCommand::Create(a) => create(a)?,
        SecretCommand::Attach(a) => attach(a)?,
    };
    // Everything is rendered before anything is printed: no partial output.
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn create(args: CreateArgs) -> anyhow::Result<String> {
    let servers = if args.server.is_empty() {
        vec![DEFAULT_DOCKER_SERVER.to_owned()]
    } else {
        args.server.clone()
    };
    let registries = match &args.from_docker_config {
        Some(path) => from_docker_config(path.clone(), &servers, args.email.as_deref())?,
        None => {
            let username = args.username.clone().unwrap_or_default();
            let password = read_password(&args)?;
            let email = args.email.clone().unwrap_or_default();
            servers
                .iter()
                .map(|s| RegistryCredentials::new(s, &username, &password).email(&email))
                .collect()
        }
    };
    let secret_type = match args.secret_type {
        TypeArg::Dockerconfigjson => SecretType::DockerConfigJson,
        TypeArg::Dockercfg => SecretType::Dockercfg,
    };
    let secret = MultiRegistrySecret::new(&args.name, registries)
        .append_hash(args.append_hash)
        .secret_type(secret_type);
    let mut namespaces: Vec<Option<&str>> = Vec::new();
    for ns in &args.namespace {
        if !namespaces.contains(&Some(ns)) {
            namespaces.push(Some(ns));
        }
    }
    if namespaces.is_empty() {
        namespaces.push(None);
    }
    let mut docs = Vec::new();
    for ns in namespaces {
        let mut s = secret.clone();
        s.namespace = ns.map(str::to_owned);
        docs.push(match args.output {
            Output::Yaml => s.to_yaml()?,
            Output::Json => s.to_json()?,
        });
    }
    Ok(match args.output {
        Output::Json if docs.len() > 1 => json_list(&docs),
        Output::Json => docs.remove(0),
        Output::Yaml => yaml_stream(&docs),
    })
}

fn read_password(args: &CreateArgs) -> anyhow::Result<String> {
    if let Some(p) = &args.password {
        eprintln!(
            "berth: warning: --password leaves the password in your shell history and the \
             process list; --password-stdin does not"
        );
        return Ok(p.clone());
    }
    let mut stdin = std::io::stdin();
    if !args.password_stdin {
        if stdin.is_terminal() && std::io::stderr().is_terminal() {
            // Typed without echo, so it lands in neither history nor the screen.
            return rpassword::prompt_password("Password: ")
                .context("cannot read the password from the terminal");
        }
        bail!(
            "no password given: pipe it in with --password-stdin (e.g. `printf '%s' \"$TOKEN\" | \
             berth secret create {} --username … --password-stdin`), or pass --password",
            args.name
        );
    }
    let mut text = String::new();
    stdin
        .read_to_string(&mut text)
        .context("cannot read the password from stdin (it must be UTF-8 text)")?;
    // As `docker login --password-stdin`: one line ending is not part of it.
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

/// docker's own rule: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn default_docker_config() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
        "HOME is not set, so ~/.docker/config.json cannot be found; pass --from-docker-config=PATH",
    )?;
    Ok(PathBuf::from(home).join(".docker").join("config.json"))
}

pub(crate) fn from_docker_config(
    path: Option<PathBuf>,
    servers: &[String],
    email: Option<&str>,
) -> anyhow::Result<Vec<RegistryCredentials>> {
    let path = match path {
        Some(p) => p,
        None => default_docker_config()?,
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the docker config {}; run `docker login` first or point \
             --from-docker-config=PATH at the file",
            path.display()
        )
    })?;
    let doc = DockerConfigFile::parse_config_json(&text)
        .with_context(|| format!("{} is not a docker config.json", path.display()))?;
    let mut out = Vec::new();
    for server in servers {
        let found =
            cred_helper::lookup(&doc, server).with_context(|| format!("in {}", path.display()))?;
        let reply = match &found {
            Lookup::Helper {
                helper,
                server: key,
                ..
            } => Some(crate::docker_helper::get(
                helper,
                key,
                "pass --username and --password-stdin instead",
            )?),
            Lookup::File { .. } => None,
        };
        let creds = cred_helper::resolve(server, &found, reply)
            .with_context(|| format!("in {}", path.display()))?;
        let email = email.map_or(creds.email, str::to_owned);
        out.push(RegistryCredentials::new(server, &creds.username, &creds.password).email(&email));
    }
    Ok(out)
}

fn attach(args: AttachArgs) -> anyhow::Result<String> {
    let names: Vec<&str> = args.secret.iter().map(String::as_str).collect();
    let sa = args.service_account.as_str();
    let ns = args.namespace.as_deref();
    let ns_flag = ns.map(|n| format!(" -n {n}")).unwrap_or_default();
    let out = if args.full {
        let manifest = match args.output {
            Output::Yaml => service_account_yaml(sa, ns, &names)?,
            Output::Json => service_account_json(sa, ns, &names)?,
        };
        eprintln!(
            "berth: apply with `kubectl apply -f -`; the ServiceAccount's imagePullSecrets \
             become exactly: {}",
            names.join(", ")
        );
        manifest
    } else {
        // Validates the ServiceAccount name and namespace too.
        service_account_yaml(sa, ns, &names)?;
        let patch = image_pull_secrets_patch(&[], &names, &[])?;
        eprintln!(
            "berth: apply with: {}",
            kubectl_patch_command(sa, ns, &patch)
        );
        eprintln!(
            "berth: the patch replaces the whole imagePullSecrets list; to keep secrets the \
             ServiceAccount already has, add them with more --secret flags (list them with \
             `kubectl get serviceaccount {sa}{ns_flag} -o jsonpath='{{.imagePullSecrets[*].name}}'`)"
        );
        format!("{}\n", patch.body)
    };
    eprintln!(
        "berth: pods created before this change keep the pull secrets they started with: a \
         ServiceAccount's imagePullSecrets are copied into a pod only when the pod is created \
         (and only if the pod lists none itself); recreate them, e.g. `kubectl rollout restart \
         deployment{ns_flag}` (likewise statefulset, daemonset)"
    );
    Ok(out)
}
