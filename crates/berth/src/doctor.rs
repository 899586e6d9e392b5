//! `berth doctor`: the command line over `berth-doctor`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_doctor::{DoctorError, EXIT_UNUSABLE_INPUT, NodeConfig, report};

#[derive(clap::Args)]
#[command(after_long_help = EXAMPLE)]
pub struct DoctorArgs {
    /// Manifests to check: files, directories (walked recursively) or - for stdin.
    /// YAML or JSON, multi-document, `kind: List` included
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    files: Vec<PathBuf>,
    /// Namespace for objects that name none
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Format,
    /// Also ask the registry, with every credential the kubelet would try
    #[arg(long)]
    probe: bool,
    /// The node's docker config.json (e.g. /var/lib/kubelet/config.json)
    #[arg(long, value_name = "FILE")]
    node_docker_config: Option<PathBuf>,
    /// The kubelet's --image-credential-provider-config file
    #[arg(long, value_name = "FILE")]
    credential_provider_config: Option<PathBuf>,
    /// With --probe: run the credential provider plugins from this directory (the
    /// kubelet's --image-credential-provider-bin-dir) and probe with what they answer
    #[arg(long, value_name = "DIR", requires_all = ["credential_provider_config", "probe"])]
    credential_provider_bin_dir: Option<PathBuf>,
    /// Extra CA certificate (PEM) trusted when probing, as the nodes trust it
    #[arg(long, value_name = "FILE")]
    ca_file: Vec<PathBuf>,
    /// Registry host[:port] spoken to in plain HTTP when probing
    #[arg(long, value_name = "HOST")]
    insecure_registry: Vec<String>,
    /// Time limit for each probe request, e.g. 10s
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    probe_timeout: Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

const EXAMPLE: &str = "\
Example:

  $ kubectl get pods,deployments,serviceaccounts,secrets,events -n prod -o yaml > prod.yaml
  $ berth doctor -f prod.yaml
  Deployment prod/web
    container app (registry.example.com:5000/team/app:1.4.2)
      error   RegistryHostMismatch: the pod's pull secrets hold credentials, but no key
              matches registry.example.com:5000/team/app under the kubelet's rules, so
              none is offered for this image
              evidence: secret prod/regcred key \"registry.example.com\": the image uses
              port 5000 but the key has no port; the kubelet compares ports literally,
              so add :5000 to the key
              fix: berth secret create regcred-registry-example-com-5000 --server
              registry.example.com:5000 --username USER --password-stdin --namespace prod
              | kubectl apply -f -   # or change the secret's server to registry.example.com:5000
                   then reference it: kubectl patch deployment web --namespace prod -p
                   '{\"spec\":{\"template\":{\"spec\":{\"imagePullSecrets\":
                   [{\"name\":\"regcred-registry-example-com-5000\"}]}}}}'

  1 error, 0 warnings

Exit status: 0 when no error was found, 1 when a pull will fail, 2 for unusable input.
Reason codes: InvalidImageName, SecretNotFound, SecretInOtherNamespace, SecretWrongType,
SecretMalformed, SecretsNotGiven, RegistryHostMismatch, SecretNotReferenced,
ServiceAccountNotFound, ServiceAccountSecretsNotApplied, NoCredentials, NeverPolicy,
MutableTag, NodeDiskFull;
with --probe: Pullable, AuthRequired, Unauthorized, Forbidden, ManifestUnknown,
RepositoryUnknown, RateLimited, DnsFailure, ConnectionRefused, Timeout,
TlsUnknownAuthority, TlsError, HttpResponseToHttps, HttpRequestToHttps, RegistryError,
ConnectionFailed.";

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    match check(&args) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => {
            eprintln!("berth doctor: {e}");
            Ok(ExitCode::from(EXIT_UNUSABLE_INPUT))
        }
    }
}

fn check(args: &DoctorArgs) -> Result<u8, DoctorError> {
    let mut node = NodeConfig::default();
    if let Some(p) = &args.node_docker_config {
        node.docker_config = Some(berth_doctor::read_node_docker_config(p)?);
    }
    if let Some(p) = &args.credential_provider_config {
        node.providers = Some(berth_doctor::read_provider_config(p)?);
    }
    let mut analysis = berth_doctor::check(
        &args.files,
        &mut std::io::stdin().lock(),
        &args.namespace,
        &node,
    )?;
    if args.probe {
        let client = berth_client::RegistryClient::new(berth_client::ClientConfig {
            connect_timeout: args.probe_timeout.min(Duration::from_secs(5)),
            timeout: args.probe_timeout,
            ca_files: args.ca_file.clone(),
            insecure_registries: args.insecure_registry.clone(),
            ..Default::default()
        })?;
        if let (Some(dir), Some(providers)) = (&args.credential_provider_bin_dir, &node.providers) {
            let failures = berth_doctor::plugin::run_plugins(
                &mut analysis.plans,
                providers,
                dir,
                args.probe_timeout,
            );
            analysis.findings.extend(failures);
        }
        let probed = crate::block_on(berth_doctor::probe::probe(&client, &analysis.plans))
            .map_err(|source| DoctorError::Read {
                path: "<runtime>".into(),
                source,
            })?;
        berth_doctor::probe::merge(&mut analysis.findings, &analysis.plans, probed);
        report::sort(&mut analysis.findings);
    }
    match args.output {
        Format::Text => print!("{}", report::to_text(&analysis.findings)),
        Format::Json => print!("{}", report::to_json(&analysis.findings)),
    }
    Ok(report::exit_code(&analysis.findings))
}
