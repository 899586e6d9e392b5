//! Settings of `berth serve`: flags over `BERTH_*` variables over the config
//! file over built-in defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_auth::{Policy, PolicyConfig, RuleConfig};
use berth_cache::RouteRule;
use berth_cache::route::canonical_host;
use berth_oci::{RepositoryName, RepositoryPattern, TagPattern};
use berth_registry::{
    CacheRule, ImmutableRule, Quota, RegistryConfig, RetentionRule, StorageRules,
};
use berth_server::TrustedProxies;
use berth_server::body::BodyPace;
use berth_storage::{PostgresOptions, S3Options};
use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line, for log pipelines
    Json,
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (see berth.example.toml); flags and BERTH_*
    /// variables override what it sets
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = "BERTH_ADDR", value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,

    /// Directory holding blobs, uploads and the metadata database [default: ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Keep the metadata in this PostgreSQL database instead of the embedded
    /// SQLite file, e.g. postgres://berth@db:5432/berth (a libpq URL or
    /// key=value string): for several berth processes sharing one registry
    /// [default: DATA_DIR/metadata.db]
    #[arg(long, env = "BERTH_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Keep blobs in this S3 bucket instead of DATA_DIR/blobs: with
    /// --database-url, for several berth processes serving one registry;
    /// credentials from [s3] or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    /// [default: none, blobs on local disk]
    #[arg(long, env = "BERTH_S3_BUCKET", value_name = "BUCKET")]
    pub s3_bucket: Option<String>,

    /// The S3 endpoint of a self-hosted store (Garage, MinIO, Ceph), e.g.
    /// http://garage:3900; requests then name the bucket in the path
    /// [default: AWS]
    #[arg(long, env = "BERTH_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// The bucket's region [default: us-east-1, or AWS_REGION]
    #[arg(long, env = "BERTH_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Keep berth's objects under this key prefix of the bucket [default: none]
    #[arg(long, env = "BERTH_S3_PREFIX", value_name = "PREFIX")]
    pub s3_prefix: Option<String>,

    /// Also serve /metrics (Prometheus) on this address alone and openly, for
    /// scraping inside the cluster; on the registry's port /metrics takes an
    /// administrator's credentials [default: none]
    #[arg(long, env = "BERTH_METRICS_ADDR", value_name = "IP:PORT")]
    pub metrics_addr: Option<SocketAddr>,

    /// Log line format [default: text]
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Allow deleting manifests, tags and blobs; when false they answer 405 UNSUPPORTED
    /// (true/false, yes/no, on/off, 1/0) [default: true]
    #[arg(long, env = "BERTH_DELETE_ENABLED", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub delete_enabled: Option<bool>,

    /// Write every manifest pull (who, from where, which image) to the audit log,
    /// beside pushes and deletes (true/false, yes/no, on/off, 1/0) [default: true]
    #[arg(long, env = "BERTH_AUDIT_PULLS", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub audit_pulls: Option<bool>,

    /// Largest manifest accepted, in bytes; larger pushes get 413 [default: 4194304]
    #[arg(long, env = "BERTH_MAX_MANIFEST_BYTES", value_name = "BYTES")]
    pub max_manifest_bytes: Option<usize>,

    /// Discard uploads not written to for this long, e.g. 30m or 24h [default: 24h]
    #[arg(long, env = "BERTH_UPLOAD_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub upload_ttl: Option<Duration>,

    /// End a request whose body sends nothing for this long (a stalled or vanished
    /// client), e.g. 30s or 5m; also the window --body-min-rate is measured over
    /// [default: 2m]
    #[arg(long, env = "BERTH_BODY_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub body_timeout: Option<Duration>,

    /// End a request whose body sends fewer bytes per second than this, averaged
    /// over each --body-timeout, so a client trickling bytes cannot hold a
    /// connection forever; 0 turns the check off [default: 1024]
    #[arg(long, env = "BERTH_BODY_MIN_RATE", value_name = "BYTES_PER_SECOND")]
    pub body_min_rate: Option<u64>,

    /// Close an HTTP/1 connection that sends no request head for this long: silent,
    /// idle between requests, or trickling a head in, e.g. 30s; HTTP/2 peers are
    /// pinged at that interval instead [default: 60s]
    #[arg(long, env = "BERTH_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Run garbage collection this often in the background, e.g. 30m or 6h; 0s
    /// turns it off (`berth gc` still runs it on demand) [default: 1h]
    #[arg(long, env = "BERTH_GC_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub gc_interval: Option<Duration>,

    /// Garbage collection leaves alone whatever is younger than this: blobs
    /// uploaded for a manifest not pushed yet, untagged pushes [default: 1h]
    #[arg(long, env = "BERTH_GC_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub gc_grace: Option<Duration>,

    /// Garbage collection deletes untagged manifests nothing reaches once this
    /// old, unless a retention rule says otherwise; never sooner than
    /// --gc-grace [default: 7d]
    #[arg(long, env = "BERTH_GC_UNTAGGED_AFTER", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub gc_untagged_after: Option<Duration>,

    /// Free space blob data never takes, so the metadata database and garbage
    /// collection keep working on a full disk, e.g. 64MiB or 1GB [default: 64MiB]
    #[arg(long, env = "BERTH_RESERVE_SPACE", value_name = "SIZE", value_parser = parse_size)]
    pub reserve_space: Option<u64>,

    /// A proxy (ingress, load balancer) whose X-Forwarded-For names the client, for
    /// login throttling and the audit log: an address or a network such as
    /// 10.0.12.0/24 (repeatable; comma-separated in the variable). List only proxies
    /// that append to or overwrite the header, and no wider than they are: any other
    /// peer in the range could choose its address [default: none, the header is
    /// ignored]
    #[arg(
        long = "trusted-proxy",
        env = "BERTH_TRUSTED_PROXIES",
        value_name = "NETWORK",
        value_delimiter = ',',
        value_parser = TrustedProxies::parse_network
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// bcrypt htpasswd file of users, re-read when it changes [default: DATA_DIR/htpasswd,
    /// created with an admin user when absent]
    #[arg(long, env = "BERTH_HTPASSWD", value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,

    /// Serve HTTPS with this PEM certificate chain (reloaded when the file changes)
    #[arg(
        long,
        env = "BERTH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert, PEM
    #[arg(
        long,
        env = "BERTH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Serve HTTPS with a certificate from a CA generated into DATA_DIR/tls; the CA's
    /// path is printed, to be trusted by clients and nodes
    #[arg(long, env = "BERTH_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    pub tls_self_signed: bool,

    /// Host names and IP addresses the self-signed certificate is valid for
    /// (repeatable; comma-separated in the variable) [default: localhost, 127.0.0.1, ::1]
    #[arg(
        long = "tls-host",
        env = "BERTH_TLS_HOSTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_hosts: Vec<String>,
}

/// Where `berth user` and `berth robot` find the data directory: as `berth
/// serve` does, and only one that exists, so that a command run elsewhere
/// never edits a fresh directory the running server does not read.
#[derive(Debug, Default, Args)]
pub struct DataDirArgs {
    /// berth's data directory [default: the config file's data_dir, else ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// The TOML configuration file berth serve runs with, for its data_dir
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

/// Where the users are kept.
pub enum Users {
    File(PathBuf),
    /// The database several berths share.
    Database(Box<PostgresOptions>),
}

impl DataDirArgs {
    /// The htpasswd file berth serve reads: `flag` (--htpasswd or
    /// BERTH_HTPASSWD), else the config file's `htpasswd`, else the one in
    /// the data directory.
    pub fn htpasswd(&self, flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
        if let Some(path) = flag {
            return Ok(path);
        }
        let file = self.file()?;
        match file.as_ref().and_then(|file| file.htpasswd.clone()) {
            Some(path) => Ok(path),
            None => Ok(self.existing_dir(file)?.join(crate::serve::HTPASSWD_FILE)),
        }
    }

    /// Where berth serve keeps its users: the htpasswd file given (`flag`,
    /// else the config file's `htpasswd`); else, with a database shared by
    /// several berths (`database_flag`, else `[database]`), that database;
    /// else the data directory's htpasswd file.
    pub fn users(
        &self,
        flag: Option<PathBuf>,
        database_flag: Option<String>,
    ) -> anyhow::Result<Users> {
        let configured = self.file()?.and_then(|file| file.htpasswd);
        if let Some(path) = flag.or(configured) {
            return Ok(Users::File(path));
        }
        match self.database(database_flag)? {
            Some(database) => Ok(Users::Database(Box::new(database))),
            None => Ok(Users::File(self.htpasswd(None)?)),
        }
    }

    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        self.existing_dir(self.file()?)
    }

    /// The PostgreSQL database berth serve keeps its metadata in, if any:
    /// `flag` (--database-url or BERTH_DATABASE_URL), else the config
    /// file's `[database]`.
    pub fn database(&self, flag: Option<String>) -> anyhow::Result<Option<PostgresOptions>> {
        let file = self.file()?.unwrap_or_default();
        let timeout = file
            .database
            .timeout
            .as_deref()
            .map(humantime::parse_duration)
            .transpose()
            .map_err(|e| anyhow::anyhow!("database.timeout: {e}"))?;
        database_options(flag, &file.database, timeout).map_err(anyhow::Error::msg)
    }

    fn file(&self) -> anyhow::Result<Option<FileConfig>> {
        Ok(match &self.config {
            Some(config) => Some(load_file(config)?),
            None => None,
        })
    }

    /// The data directory, from the flag or `file`; an error unless it exists.
    fn existing_dir(&self, file: Option<FileConfig>) -> anyhow::Result<PathBuf> {
        let dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => file
                .and_then(|file| file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        };
        if !dir.is_dir() {
            let shown = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
            anyhow::bail!(
                "berth's data directory {} does not exist (it is found as berth serve finds it: \
                 --data-dir or BERTH_DATA_DIR, else the config file's data_dir, else \
                 ./berth-data); run this where berth serve runs, or name the server's with \
                 --data-dir or --config",
                shown.display()
            );
        }
        Ok(dir)
    }
}

const DEFAULT_DATA_DIR: &str = "berth-data";

/// How long a pull credential lives at most unless configured: long enough
/// that a kubelet renewing at half-life asks twice a day, short enough that a
/// leaked one is soon useless.
const DEFAULT_PULL_CREDENTIAL_TTL: Duration = Duration::from_secs(12 * 3600);
/// Long enough for any client that is still sending, short enough that a
/// vanished one does not hold its connection and upload for long.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// Far below any real client (a slow link moves tens of kilobytes a second),
/// far above a trickle meant to hold connections open.
const DEFAULT_BODY_MIN_RATE: u64 = 1024;
/// Past the pause between the requests of one pull or push, short enough that
/// idle and trickling connections do not pile up.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(3600);
/// Room for the database's write-ahead log and a collection's deletes.
const DEFAULT_RESERVE_SPACE: u64 = 64 * 1024 * 1024;

/// A size such as `64MiB`, `10GB` or `1024` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("{text:?} is not a size: write e.g. 64MiB, 10GB or 1048576"))
}

/// Shortest token lifetime the token spec lets clients rely on.
const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);

/// The config file's keys; each is optional, unknown keys are an error so a
/// typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    delete_enabled: Option<bool>,
    audit_pulls: Option<bool>,
    max_manifest_bytes: Option<usize>,
    upload_ttl: Option<String>,
    body_timeout: Option<String>,
    body_min_rate: Option<u64>,
    idle_timeout: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    htpasswd: Option<PathBuf>,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    policy: Vec<RuleConfig>,
    #[serde(default)]
    gc: FileGc,
    reserve_space: Option<String>,
    #[serde(default)]
    quota: Vec<FileQuota>,
    #[serde(default)]
    immutable: Vec<FileImmutable>,
    #[serde(default)]
    retention: Vec<FileRetention>,
    #[serde(default)]
    cache: FileCache,
    #[serde(default)]
    upstream: Vec<FileUpstream>,
    #[serde(default)]
    database: FileDatabase,
    #[serde(default)]
    s3: FileS3,
}

/// `[s3]`: blobs in an S3 bucket instead of the data directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileS3 {
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    prefix: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    /// The secret apart from this file, e.g. a mounted Secret's file.
    secret_access_key_file: Option<PathBuf>,
    /// Path-style requests; the default with an endpoint.
    path_style: Option<bool>,
    /// Signed request bodies; the default over plain HTTP only.
    sign_payload: Option<bool>,
    ca_file: Option<PathBuf>,
    /// Whether collections list the whole bucket for unrecorded bytes.
    sweep_unrecorded: Option<bool>,
    /// Blob downloads redirected to URLs presigned for this long.
    presigned_redirect: Option<String>,
}

/// `[database]`: metadata in PostgreSQL instead of the embedded file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    url: Option<String>,
    /// The password apart from the URL, e.g. a mounted Secret's file.
    password_file: Option<PathBuf>,
    pool_size: Option<usize>,
    timeout: Option<String>,
    /// A CA certificate (PEM) to trust for the server, beside the system's.
    ca_file: Option<PathBuf>,
}

/// Connections each berth process keeps to PostgreSQL at most.
const DEFAULT_DATABASE_POOL: usize = 16;
/// How long a request waits for a database connection.
const DEFAULT_DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[cache]`: how the pull-through cache behaves.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    max_size: Option<String>,
    revalidate_after: Option<String>,
    timeout: Option<String>,
    stall_timeout: Option<String>,
    outage_backoff: Option<String>,
}

/// `[[upstream]]`: a registry served through the pull-through cache.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    prefix: String,
    url: String,
    #[serde(default)]
    hosts: Vec<String>,
    default_namespace: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    docker_config: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGc {
    interval: Option<String>,
    grace: Option<String>,
    untagged_after: Option<String>,
}

/// `[[quota]]`: the repositories a pattern matches hold at most `limit`, together.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuota {
    repositories: String,
    limit: String,
}

/// `[[immutable]]`: tags of matching repositories that never move.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileImmutable {
    repositories: Vec<String>,
    tags: Vec<String>,
}

/// `[[retention]]`: what collection keeps of matching repositories.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    repositories: Vec<String>,
    /// The tags `keep_tags` counts; all when absent.
    #[serde(default)]
    tags: Vec<String>,
    keep_tags: Option<usize>,
    untagged_after: Option<String>,
    keep_pulled_within: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    service: Option<String>,
    realm: Option<String>,
    token_ttl: Option<String>,
    pull_credential_ttl: Option<String>,
    signing_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    self_signed: bool,
    #[serde(default)]
    hosts: Vec<String>,
}

/// Token and challenge settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub htpasswd: Option<PathBuf>,
    pub service: String,
    pub realm: Option<String>,
    pub token_ttl: Duration,
    /// The longest life of a pull credential (`POST /berth/v1/pull-credentials`).
    pub pull_credential_ttl: Duration,
    pub signing_key: Option<PathBuf>,
    pub policy: PolicyConfig,
}

/// How berth terminates TLS, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSettings {
    Off,
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned { hosts: Vec<String> },
}

/// Where an upstream's credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub enum UpstreamCredentials {
    Anonymous,
    Password {
        username: String,
        password: String,
    },
    /// Read again at each login, so a rotated mounted Secret is picked up.
    PasswordFile {
        username: String,
        path: PathBuf,
    },
    /// The entry for the upstream's first host in a docker `config.json`
    /// (credential helpers included), read at each login.
    DockerConfig(PathBuf),
}

impl std::fmt::Debug for UpstreamCredentials {
    /// Never prints a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamCredentials::Anonymous => f.write_str("Anonymous"),
            UpstreamCredentials::Password { username, .. } => {
                write!(f, "Password {{ username: {username:?} }}")
            }
            UpstreamCredentials::PasswordFile { username, path } => {
                write!(
                    f,
                    "PasswordFile {{ username: {username:?}, path: {path:?} }}"
                )
            }
            UpstreamCredentials::DockerConfig(path) => write!(f, "DockerConfig({path:?})"),
        }
    }
}

/// One upstream of the pull-through cache.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub rule: RouteRule,
    pub url: String,
    pub credentials: UpstreamCredentials,
    pub ca_file: Option<PathBuf>,
}

/// The pull-through cache's settings (its size limit is a storage rule).
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub upstreams: Vec<UpstreamConfig>,
    pub revalidate_after: Duration,
    pub timeout: Duration,
    pub stall_timeout: Duration,
    pub outage_backoff: Duration,
}

/// Cached tags are checked upstream at most this often: a moved tag is
/// seen within a minute, and a busy tag costs the upstream one HEAD a
/// minute (which Docker Hub does not count).
const DEFAULT_REVALIDATE_AFTER: Duration = Duration::from_secs(60);
/// Seconds, not minutes: long enough for a distant registry, short enough
/// that a pull falls back to the cache before containerd gives up.
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_OUTAGE_BACKOFF: Duration = Duration::from_secs(30);

/// Everything `berth serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Where /metrics is served alone, besides the registry's port.
    pub metrics_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// How fast request bodies must arrive.
    pub body_pace: BodyPace,
    /// The longest a connection may go without sending a request head.
    pub idle_timeout: Duration,
    /// How often garbage collection runs in the background; zero for never.
    pub gc_interval: Duration,
    /// Free space blob data never takes.
    pub reserve_space: u64,
    pub trusted_proxies: TrustedProxies,
    /// Whether manifest pulls go to the audit log.
    pub audit_pulls: bool,
    pub registry: RegistryConfig,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    /// The pull-through cache, when upstreams are configured.
    pub cache: Option<CacheConfig>,
    /// PostgreSQL for the metadata; `None` for the embedded SQLite file.
    pub database: Option<PostgresOptions>,
    /// An S3 bucket for the blobs; `None` for the data directory.
    pub s3: Option<S3Options>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A flag or variable clap accepted that does not make sense.
    #[error("{0}")]
    Flag(String),
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl ServeArgs {
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let invalid = |message: String| ConfigError::Invalid {
            path: self.config.clone().unwrap_or_default(),
            message,
        };
        let duration =
            |key: &str, text: &Option<String>| -> Result<Option<Duration>, ConfigError> {
                text.as_deref()
                    .map(|t| {
                        humantime::parse_duration(t).map_err(|e| {
                            invalid(format!(
                                "{key} = {t:?}: {e} (write e.g. \"30m\" or \"24h\")"
                            ))
                        })
                    })
                    .transpose()
            };
        let file_ttl = duration("upload_ttl", &file.upload_ttl)?;
        // A timeout from the flag, else the file, else `default`; never zero.
        let timeout = |key: &str, flag: Option<Duration>, text: &Option<String>, default| {
            let value = flag.or(duration(key, text)?).unwrap_or(default);
            if value.is_zero() {
                let example = humantime::format_duration(default);
                return Err(match flag {
                    Some(_) => ConfigError::Flag(format!(
                        "--{} ({}) must be longer than 0s: give e.g. {example}",
                        key.replace('_', "-"),
                        format_args!("BERTH_{}", key.to_uppercase())
                    )),
                    None => invalid(format!(
                        "{key} must be longer than 0s: give e.g. \"{example}\""
                    )),
                });
            }
            Ok(value)
        };
        let body_timeout = timeout(
            "body_timeout",
            self.body_timeout,
            &file.body_timeout,
            DEFAULT_BODY_TIMEOUT,
        )?;
        let idle_timeout = timeout(
            "idle_timeout",
            self.idle_timeout,
            &file.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
        )?;
        let trusted_proxies = if self.trusted_proxies.is_empty() {
            file.trusted_proxies
                .unwrap_or_default()
                .iter()
                .map(|network| {
                    TrustedProxies::parse_network(network)
                        .map_err(|e| invalid(format!("trusted_proxies: {e}")))
                })
                .collect::<Result<_, _>>()?
        } else {
            self.trusted_proxies
        };
        let token_ttl = duration("auth.token_ttl", &file.auth.token_ttl)?;
        if token_ttl.is_some_and(|t| t < MIN_TOKEN_TTL) {
            return Err(invalid(
                "auth.token_ttl must be at least 60s: the token spec has clients treat shorter \
                 lifetimes as 60s, so they would use expired tokens"
                    .into(),
            ));
        }
        let pull_credential_ttl =
            duration("auth.pull_credential_ttl", &file.auth.pull_credential_ttl)?;
        if pull_credential_ttl.is_some_and(|t| t.as_secs() == 0) {
            return Err(invalid(
                "auth.pull_credential_ttl must be at least 1s; remove the key for the default 12h"
                    .into(),
            ));
        }
        let mut rules =
            storage_rules(&file.quota, &file.immutable, &file.retention).map_err(invalid)?;
        let cache = cache_config(&file.cache, &file.upstream, &mut rules).map_err(invalid)?;
        let gc_interval = self
            .gc_interval
            .or(duration("gc.interval", &file.gc.interval)?)
            .unwrap_or(DEFAULT_GC_INTERVAL);
        let gc_grace = self.gc_grace.or(duration("gc.grace", &file.gc.grace)?);
        let gc_untagged_after = self
            .gc_untagged_after
            .or(duration("gc.untagged_after", &file.gc.untagged_after)?);
        let reserve_space = match (self.reserve_space, &file.reserve_space) {
            (Some(size), _) => size,
            (None, Some(text)) => {
                parse_size(text).map_err(|e| invalid(format!("reserve_space: {e}")))?
            }
            (None, None) => DEFAULT_RESERVE_SPACE,
        };
        let policy = PolicyConfig {
            groups: file.groups,
            rules: file.policy,
        };
        // Checked now so that a bad rule stops start-up with its message.
        Policy::new(policy.clone()).map_err(invalid)?;
        let tls = match (
            self.tls_cert.or(file.tls.cert),
            self.tls_key.or(file.tls.key),
        ) {
            (Some(cert), Some(key)) => TlsSettings::Files { cert, key },
            (None, None) if self.tls_self_signed || file.tls.self_signed => {
                let mut hosts = if self.tls_hosts.is_empty() {
                    file.tls.hosts
                } else {
                    self.tls_hosts
                };
                if hosts.is_empty() {
                    hosts = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
                }
                TlsSettings::SelfSigned { hosts }
            }
            (None, None) => TlsSettings::Off,
            _ => {
                return Err(invalid(
                    "give both the TLS certificate and its key, or neither".into(),
                ));
            }
        };
        let database_timeout = duration("database.timeout", &file.database.timeout)?;
        let database = database_options(self.database_url, &file.database, database_timeout)
            .map_err(invalid)?;
        let presigned_redirect = duration("s3.presigned_redirect", &file.s3.presigned_redirect)?;
        let s3 = s3_options(
            S3Flags {
                bucket: self.s3_bucket,
                endpoint: self.s3_endpoint,
                region: self.s3_region,
                prefix: self.s3_prefix,
            },
            &file.s3,
            presigned_redirect,
        )
        .map_err(invalid)?;
        let sweep_unrecorded = s3.is_none() || file.s3.sweep_unrecorded.unwrap_or(false);
        let defaults = RegistryConfig::default();
        Ok(ServeConfig {
            database,
            s3,
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            addr: self
                .addr
                .or(file.addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5000))),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            log_format: self
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            body_pace: BodyPace {
                idle: body_timeout,
                min_rate: self
                    .body_min_rate
                    .or(file.body_min_rate)
                    .unwrap_or(DEFAULT_BODY_MIN_RATE),
            },
            idle_timeout,
            gc_interval,
            reserve_space,
            trusted_proxies: TrustedProxies::new(trusted_proxies),
            audit_pulls: self.audit_pulls.or(file.audit_pulls).unwrap_or(true),
            registry: RegistryConfig {
                delete_enabled: self
                    .delete_enabled
                    .or(file.delete_enabled)
                    .unwrap_or(defaults.delete_enabled),
                max_manifest_bytes: self
                    .max_manifest_bytes
                    .or(file.max_manifest_bytes)
                    .unwrap_or(defaults.max_manifest_bytes),
                upload_ttl: self.upload_ttl.or(file_ttl).unwrap_or(defaults.upload_ttl),
                gc_grace: gc_grace.unwrap_or(defaults.gc_grace),
                gc_untagged_after: gc_untagged_after.unwrap_or(defaults.gc_untagged_after),
                rules,
                sweep_unrecorded,
                ..defaults
            },
            auth: AuthSettings {
                htpasswd: self.htpasswd.or(file.htpasswd),
                service: file.auth.service.unwrap_or_else(|| "berth".into()),
                realm: file.auth.realm,
                token_ttl: token_ttl.unwrap_or(Duration::from_secs(300)),
                pull_credential_ttl: pull_credential_ttl.unwrap_or(DEFAULT_PULL_CREDENTIAL_TTL),
                signing_key: file.auth.signing_key,
                policy,
            },
            tls,
            cache,
        })
    }
}

/// The pull-through cache of the file, checked; adds its size limit to
/// `rules`.
/// The longest an S3 presigned URL may be valid (SigV4's limit).
const MAX_PRESIGNED: Duration = Duration::from_secs(7 * 24 * 3600);

/// The `--s3-*` flags (and their variables), over `[s3]`.
struct S3Flags {
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    prefix: Option<String>,
}

/// S3 settings from the flags or `[s3]`, if a bucket is given.
fn s3_options(
    flags: S3Flags,
    file: &FileS3,
    presigned_redirect: Option<Duration>,
) -> Result<Option<S3Options>, String> {
    let Some(bucket) = flags.bucket.or_else(|| file.bucket.clone()) else {
        if flags.endpoint.is_some() || file.endpoint.is_some() || file.access_key_id.is_some() {
            return Err(
                "S3 settings without a bucket: give --s3-bucket (BERTH_S3_BUCKET) or \
                        [s3] bucket, or remove them to keep blobs on local disk"
                    .into(),
            );
        }
        return Ok(None);
    };
    if presigned_redirect.is_some_and(|d| d.is_zero() || d > MAX_PRESIGNED) {
        return Err(
            "s3.presigned_redirect must be from 1s to 7d, the longest an S3 signature lasts".into(),
        );
    }
    let endpoint = flags
        .endpoint
        .or_else(|| file.endpoint.clone())
        .unwrap_or_default();
    if !endpoint.is_empty() && !endpoint.starts_with("http://") && !endpoint.starts_with("https://")
    {
        return Err(format!(
            "the S3 endpoint {endpoint:?} needs its scheme: http://… or https://…"
        ));
    }
    let secret = match (&file.secret_access_key, &file.secret_access_key_file) {
        (Some(_), Some(_)) => {
            return Err("give s3.secret_access_key or s3.secret_access_key_file, not both".into());
        }
        (Some(secret), None) => Some(secret.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("s3.secret_access_key_file {}: {e}", path.display()))?,
        ),
        (None, None) => None,
    };
    if file.access_key_id.is_some() != secret.is_some() {
        return Err(
            "give s3.access_key_id with its secret, or neither (to use the AWS environment)".into(),
        );
    }
    Ok(Some(S3Options {
        path_style: file.path_style.unwrap_or(!endpoint.is_empty()),
        sign_payload: file.sign_payload.unwrap_or(endpoint.starts_with("http://")),
        endpoint,
        region: flags
            .region
            .or_else(|| file.region.clone())
            .unwrap_or_default(),
        bucket,
        access_key_id: file.access_key_id.clone(),
        secret_access_key: secret,
        prefix: flags
            .prefix
            .or_else(|| file.prefix.clone())
            .unwrap_or_default(),
        ca_file: file.ca_file.clone(),
        presigned_redirect,
    }))
}

/// PostgreSQL settings from the flag or `[database]`, if a URL is given.
fn database_options(
    url: Option<String>,
    file: &FileDatabase,
    timeout: Option<Duration>,
) -> Result<Option<PostgresOptions>, String> {
    let Some(url) = url.or_else(|| file.url.clone()) else {
        if file.password_file.is_some()
            || file.pool_size.is_some()
            || timeout.is_some()
            || file.ca_file.is_some()
        {
            return Err(
                "[database] has settings but no url: add url = \"postgres://…\", or \
                        remove the table to keep the embedded database"
                    .into(),
            );
        }
        return Ok(None);
    };
    let password = file
        .password_file
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("database.password_file {}: {e}", path.display()))
        })
        .transpose()?;
    let pool_size = file.pool_size.unwrap_or(DEFAULT_DATABASE_POOL);
    if pool_size == 0 {
        return Err("database.pool_size must be at least 1".into());
    }
    // For sslmode=require: the server's certificate verified as for any
    // server berth talks to.
    let tls = berth_client::tls_config(file.ca_file.as_slice()).map_err(|e| e.to_string())?;
    Ok(Some(PostgresOptions {
        url,
        password,
        pool_size,
        timeout: timeout.unwrap_or(DEFAULT_DATABASE_TIMEOUT),
        tls: Some(tls),
    }))
}

fn cache_config(
    cache: &FileCache,
    upstreams: &[FileUpstream],
    rules: &mut StorageRules,
) -> Result<Option<CacheConfig>, String> {
    let duration = |key: &str, text: &Option<String>, default: Duration| {
        let value = match text {
            Some(t) => humantime::parse_duration(t)
                .map_err(|e| format!("cache.{key} = {t:?}: {e} (write e.g. \"30s\")"))?,
            None => default,
        };
        if value.is_zero() && key != "revalidate_after" {
            return Err(format!("cache.{key} must be longer than 0s"));
        }
        Ok(value)
    };
    let settings = CacheConfig {
        upstreams: Vec::new(),
        revalidate_after: duration(
            "revalidate_after",
            &cache.revalidate_after,
            DEFAULT_REVALIDATE_AFTER,
        )?,
        timeout: duration("timeout", &cache.timeout, DEFAULT_UPSTREAM_TIMEOUT)?,
        stall_timeout: duration("stall_timeout", &cache.stall_timeout, DEFAULT_STALL_TIMEOUT)?,
        outage_backoff: duration(
            "outage_backoff",
            &cache.outage_backoff,
            DEFAULT_OUTAGE_BACKOFF,
        )?,
    };
    if upstreams.is_empty() {
        if cache.max_size.is_some() {
            return Err("cache.max_size is set but no [[upstream]] is configured".into());
        }
        return Ok(None);
    }
    let mut resolved = Vec::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        let what = format!("upstream {} ({})", i + 1, upstream.prefix);
        resolved.push(upstream_config(upstream).map_err(|e| format!("{what}: {e}"))?);
    }
    // One upstream per cached repository: with `hub` and `hub/x`, a mirror
    // request for Docker Hub's `x/app` would fill `hub/x/app`, which path
    // mode serves as the other upstream's.
    let nests = |outer: &str, inner: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    for (i, upstream) in resolved.iter().enumerate() {
        let a = &upstream.rule.prefix;
        if let Some(b) = resolved[..i]
            .iter()
            .map(|b| &b.rule.prefix)
            .find(|b| nests(a, b) || nests(b, a))
        {
            return Err(format!(
                "the upstream prefixes {b:?} and {a:?} overlap: give each upstream a prefix of \
                 its own (e.g. \"hub\" and \"ghcr\")"
            ));
        }
    }
    if let Some(size) = &cache.max_size {
        rules.cache = Some(CacheRule {
            repositories: resolved
                .iter()
                .map(|u| RepositoryPattern::parse(&format!("{}/**", u.rule.prefix)))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cache: {e}"))?,
            limit: parse_size(size).map_err(|e| format!("cache.max_size: {e}"))?,
        });
    }
    Ok(Some(CacheConfig {
        upstreams: resolved,
        ..settings
    }))
}

fn upstream_config(upstream: &FileUpstream) -> Result<UpstreamConfig, String> {
    RepositoryName::parse(&upstream.prefix).map_err(|e| {
        format!("prefix: {e} (it starts the names of the cached repositories, e.g. \"hub\")")
    })?;
    let url = upstream.url.trim_end_matches('/');
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .filter(|h| !h.is_empty() && !h.contains(['/', '@', '?', '#']))
        .ok_or_else(|| {
            format!(
                "url = {:?} is not http(s)://host[:port] (e.g. \"https://registry-1.docker.io\"; \
                 credentials go in username and password_file)",
                upstream.url
            )
        })?;
    let hosts = if upstream.hosts.is_empty() {
        vec![host.to_owned()]
    } else {
        upstream.hosts.clone()
    };
    let docker_hub = canonical_host(host) == "docker.io";
    let default_namespace = match &upstream.default_namespace {
        Some(namespace) if namespace.is_empty() => None,
        Some(namespace) => Some(namespace.clone()),
        None => docker_hub.then(|| "library".to_owned()),
    };
    let credentials = match (
        &upstream.username,
        &upstream.password,
        &upstream.password_file,
        &upstream.docker_config,
    ) {
        (None, None, None, None) => UpstreamCredentials::Anonymous,
        (Some(username), Some(password), None, None) => UpstreamCredentials::Password {
            username: username.clone(),
            password: password.clone(),
        },
        (Some(username), None, Some(path), None) => UpstreamCredentials::PasswordFile {
            username: username.clone(),
            path: path.clone(),
        },
        (None, None, None, Some(path)) => UpstreamCredentials::DockerConfig(path.clone()),
        _ => {
            return Err(
                "give username with password or password_file, or docker_config \
                        alone, or none of them (anonymous)"
                    .into(),
            );
        }
    };
    Ok(UpstreamConfig {
        rule: RouteRule {
            prefix: upstream.prefix.clone(),
            hosts,
            default_namespace,
        },
        url: url.to_owned(),
        credentials,
        ca_file: upstream.ca_file.clone(),
    })
}

/// The storage rules of the file, checked: one rule per repository pattern.
fn storage_rules(
    quotas: &[FileQuota],
    immutable: &[FileImmutable],
    retention: &[FileRetention],
) -> Result<StorageRules, String> {
    let pattern =
        |what: &str, text: &str| RepositoryPattern::parse(text).map_err(|e| format!("{what}: {e}"));
    let tags = |what: &str, texts: &[String]| {
        texts
            .iter()
            .map(|t| TagPattern::parse(t).map_err(|e| format!("{what}: {e}")))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut rules = StorageRules::default();
    for (i, quota) in quotas.iter().enumerate() {
        let what = format!("quota {}", i + 1);
        rules.quotas.push(Quota {
            repositories: pattern(&what, &quota.repositories)?,
            limit: parse_size(&quota.limit).map_err(|e| format!("{what}: limit {e}"))?,
            excluded: Vec::new(),
        });
    }
    for (i, rule) in immutable.iter().enumerate() {
        let what = format!("immutable rule {}", i + 1);
        if rule.tags.is_empty() {
            return Err(format!("{what}: name the tags, e.g. tags = [\"v*\"]"));
        }
        let tags = tags(&what, &rule.tags)?;
        for repositories in &rule.repositories {
            rules.immutable.push(ImmutableRule {
                repositories: pattern(&what, repositories)?,
                tags: tags.clone(),
            });
        }
    }
    for (i, rule) in retention.iter().enumerate() {
        let what = format!("retention rule {}", i + 1);
        let counted = if rule.tags.is_empty() {
            vec![TagPattern::parse("*").expect("a valid pattern")]
        } else {
            tags(&what, &rule.tags)?
        };
        let duration = |key: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    humantime::parse_duration(t)
                        .map_err(|e| format!("{what}: {key} = {t:?}: {e} (write e.g. \"7d\")"))
                })
                .transpose()
        };
        let untagged_after = duration("untagged_after", &rule.untagged_after)?;
        let keep_pulled_within = duration("keep_pulled_within", &rule.keep_pulled_within)?;
        if rule.keep_tags.is_none() && untagged_after.is_none() {
            return Err(format!(
                "{what} does nothing: give keep_tags, untagged_after or both"
            ));
        }
        for repositories in &rule.repositories {
            rules.retention.push(RetentionRule {
                repositories: pattern(&what, repositories)?,
                tags: counted.clone(),
                keep_tags: rule.keep_tags,
                untagged_after,
                keep_pulled_within,
            });
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn resolve_file(file: &tempfile::NamedTempFile) -> Result<ServeConfig, ConfigError> {
        ServeArgs {
            config: Some(file.path().to_owned()),
            ..Default::default()
        }
        .resolve()
    }

    #[test]
    fn defaults() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:5000");
        assert_eq!(c.data_dir, PathBuf::from("berth-data"));
        assert!(c.registry.delete_enabled);
        assert_eq!(c.registry.max_manifest_bytes, 4 << 20);
        assert_eq!(c.auth.pull_credential_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(c.body_pace.idle, Duration::from_secs(120));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn pull_credential_ttl() {
        let resolve = |text: &str| resolve_file(&write(text));
        let c = resolve("[auth]\npull_credential_ttl = \"90m\"\n").unwrap();
        assert_eq!(c.auth.pull_credential_ttl, Duration::from_secs(5400));
        let err = resolve("[auth]\npull_credential_ttl = \"0s\"\n").unwrap_err();
        assert!(err.to_string().contains("at least 1s"), "{err}");
        let err = resolve("[auth]\npull_credential_ttl = \"long\"\n").unwrap_err();
        assert!(
            err.to_string().contains("auth.pull_credential_ttl"),
            "{err}"
        );
    }

    #[test]
    fn flags_override_file() {
        let file = write(
            "addr = \"0.0.0.0:6000\"\ndata_dir = \"/srv/berth\"\ndelete_enabled = false\nupload_ttl = \"30m\"\nbody_timeout = \"5m\"\nidle_timeout = \"90s\"\n",
        );
        let args = ServeArgs {
            config: Some(file.path().to_owned()),
            addr: Some("127.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:7000");
        assert_eq!(c.data_dir, PathBuf::from("/srv/berth"));
        assert!(!c.registry.delete_enabled);
        assert_eq!(c.registry.upload_ttl, Duration::from_secs(1800));
        assert_eq!(c.body_pace.idle, Duration::from_secs(300));
        assert_eq!(c.idle_timeout, Duration::from_secs(90));
        let args = ServeArgs {
            config: Some(file.path().to_owned()),
            body_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        assert_eq!(
            args.resolve().unwrap().body_pace.idle,
            Duration::from_secs(30)
        );
        let zero = ServeArgs {
            body_timeout: Some(Duration::ZERO),
            ..Default::default()
        };
        let err = zero.resolve().unwrap_err().to_string();
        assert_eq!(
            err,
            "--body-timeout (BERTH_BODY_TIMEOUT) must be longer than 0s: give e.g. 2m"
        );
        let file = write("idle_timeout = \"0s\"\n");
        let zero = ServeArgs {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        let err = zero.resolve().unwrap_err().to_string();
        assert!(
            err.contains("is not valid: idle_timeout must be longer"),
            "{err}"
        );
    }

    #[test]
    fn trusted_proxies_from_file_or_flags() {
        let networks = |list: &[&str]| {
            let parsed = list.iter().map(|n| TrustedProxies::parse_network(n));
            TrustedProxies::new(parsed.collect::<Result<_, _>>().unwrap())
        };
        let file = write("trusted_proxies = [\"10.0.0.0/8\", \"192.168.1.10\"]\n");
        let from_file = ServeArgs {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        assert_eq!(
            from_file.resolve().unwrap().trusted_proxies,
            networks(&["10.0.0.0/8", "192.168.1.10"])
        );
        let flags = ServeArgs {
            config: Some(file.path().to_owned()),
            trusted_proxies: vec!["fd00::/8".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(
            flags.resolve().unwrap().trusted_proxies,
            networks(&["fd00::/8"])
        );
        assert_eq!(
            ServeArgs::default().resolve().unwrap().trusted_proxies,
            TrustedProxies::default()
        );
        let file = write("trusted_proxies = [\"ingress\"]\n");
        let bad = ServeArgs {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        let err = bad.resolve().unwrap_err().to_string();
        assert!(
            err.contains("trusted_proxies") && err.contains("ingress"),
            "{err}"
        );
    }

    #[test]
    fn file_errors_name_the_problem() {
        let file = write("adress = \"x\"\n");
        let args = ServeArgs {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
        let file = write("upload_ttl = \"soon\"\n");
        let args = ServeArgs {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("upload_ttl"), "{err}");
    }

    #[test]
    fn metadata_in_postgres_from_the_file_or_the_flag() {
        assert!(resolve_file(&write("")).unwrap().database.is_none());
        let password = write("s3cret\n");
        let file = write(&format!(
            "[database]\nurl = \"postgres://berth@db/berth\"\npassword_file = {:?}\n\
             pool_size = 4\ntimeout = \"3s\"\n",
            password.path()
        ));
        let database = resolve_file(&file).unwrap().database.unwrap();
        assert_eq!(database.url, "postgres://berth@db/berth");
        assert_eq!(database.password.as_deref(), Some("s3cret\n"));
        assert_eq!(
            (database.pool_size, database.timeout),
            (4, Duration::from_secs(3))
        );
        assert!(!format!("{database:?}").contains("s3cret"));
        let args = ServeArgs {
            config: Some(file.path().to_owned()),
            database_url: Some("host=other user=berth".into()),
            ..Default::default()
        };
        assert_eq!(
            args.resolve().unwrap().database.unwrap().url,
            "host=other user=berth"
        );
        let err = resolve_file(&write("[database]\npool_size = 4\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no url"), "{err}");
        let err = resolve_file(&write(
            "[database]\nurl = \"postgres://x\"\npool_size = 0\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("pool_size"), "{err}");
    }

    #[test]
    fn blobs_in_s3_from_the_file_or_the_flags() {
        assert!(resolve_file(&write("")).unwrap().s3.is_none());
        let secret = write("s3cret\n");
        let file = write(&format!(
            "[s3]\nbucket = \"berth\"\nendpoint = \"http://garage:3900\"\nregion = \"garage\"\n\
             access_key_id = \"GK1\"\nsecret_access_key_file = {:?}\n\
             presigned_redirect = \"15m\"\n",
            secret.path()
        ));
        let c = resolve_file(&file).unwrap();
        let s3 = c.s3.unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.endpoint.as_str(), s3.region.as_str()),
            ("berth", "http://garage:3900", "garage")
        );
        assert!(s3.path_style, "the default with an endpoint");
        assert!(s3.sign_payload, "the default over plain HTTP");
        assert_eq!(s3.secret_access_key.as_deref(), Some("s3cret\n"));
        assert_eq!(s3.presigned_redirect, Some(Duration::from_secs(900)));
        assert!(!format!("{s3:?}").contains("s3cret"));
        assert!(
            !c.registry.sweep_unrecorded,
            "no bucket-wide listing by default"
        );
        // The flags (and BERTH_S3_*) over the file; AWS without an endpoint.
        let args = ServeArgs {
            s3_bucket: Some("other".into()),
            s3_prefix: Some("registry".into()),
            ..Default::default()
        };
        let s3 = args.resolve().unwrap().s3.unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("other", "registry")
        );
        assert!(!s3.path_style && s3.endpoint.is_empty());
        assert!(!s3.sign_payload, "AWS is reached over HTTPS");
        let https = write("[s3]\nbucket = \"b\"\nendpoint = \"https://minio:9000\"\n");
        assert!(!resolve_file(&https).unwrap().s3.unwrap().sign_payload);
        let signed = write("[s3]\nbucket = \"b\"\nsign_payload = true\n");
        assert!(resolve_file(&signed).unwrap().s3.unwrap().sign_payload);
        for (text, named) in [
            (
                "[s3]\nendpoint = \"http://garage:3900\"\n",
                "without a bucket",
            ),
            (
                "[s3]\nbucket = \"b\"\nendpoint = \"garage:3900\"\n",
                "scheme",
            ),
            (
                "[s3]\nbucket = \"b\"\naccess_key_id = \"GK1\"\n",
                "with its secret",
            ),
            ("[s3]\nbucket = \"b\"\npresigned_redirect = \"8d\"\n", "7d"),
            ("[s3]\nbucket = \"b\"\npresigned_redirect = \"0s\"\n", "7d"),
        ] {
            let err = resolve_file(&write(text)).unwrap_err().to_string();
            assert!(err.contains(named), "{text}: {err}");
        }
    }

    #[test]
    fn storage_rules_and_collection_settings() {
        let file = write(
            r#"
reserve_space = "16MiB"

[gc]
interval = "30m"
grace = "2h"
untagged_after = "14d"

[[quota]]
repositories = "team-a/**"
limit = "10GiB"

[[immutable]]
repositories = ["prod/**", "release/*"]
tags = ["v*"]

[[retention]]
repositories = ["ci/**"]
keep_tags = 5
keep_pulled_within = "30d"
"#,
        );
        let c = resolve_file(&file).unwrap();
        assert_eq!(c.reserve_space, 16 << 20);
        assert_eq!(c.gc_interval, Duration::from_secs(1800));
        assert_eq!(c.registry.gc_grace, Duration::from_secs(7200));
        assert_eq!(
            c.registry.gc_untagged_after,
            Duration::from_secs(14 * 24 * 3600)
        );
        let rules = &c.registry.rules;
        assert_eq!(rules.quota("team-a/x").unwrap().limit, 10 << 30);
        assert!(rules.immutable("release/app").pattern_for("v2").is_some());
        let retention = rules.retention("ci/app").unwrap();
        assert_eq!(retention.keep_tags, Some(5));
        assert!(
            retention.counts("anything"),
            "all tags count without `tags`"
        );

        for (text, expected) in [
            (
                "[[quota]]\nrepositories = \"a/**\"\nlimit = \"lots\"\n",
                "quota 1: limit",
            ),
            (
                "[[immutable]]\nrepositories = [\"a\"]\ntags = []\n",
                "name the tags",
            ),
            ("[[retention]]\nrepositories = [\"a\"]\n", "does nothing"),
            (
                "[[retention]]\nrepositories = [\"/a\"]\nkeep_tags = 1\n",
                "retention rule 1",
            ),
            ("reserve_space = \"-1\"\n", "reserve_space"),
        ] {
            let err = resolve_file(&write(text)).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("many").unwrap_err().contains("64MiB"));
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../berth.example.toml");
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        args.resolve().unwrap();
    }

    #[test]
    fn upstreams_and_the_cache() {
        let c = resolve_file(&write(
            r#"
[cache]
max_size = "10GiB"
revalidate_after = "0s"

[[upstream]]
prefix = "hub"
url = "https://registry-1.docker.io/"
username = "mirror"
password_file = "/run/secrets/hub"

[[upstream]]
prefix = "mirrors/ghcr"
url = "https://ghcr.io"
docker_config = "/etc/berth/config.json"
"#,
        ))
        .unwrap();
        let cache = c.cache.unwrap();
        assert_eq!(cache.revalidate_after, Duration::ZERO);
        assert_eq!(cache.timeout, DEFAULT_UPSTREAM_TIMEOUT);
        let (hub, ghcr) = (&cache.upstreams[0], &cache.upstreams[1]);
        assert_eq!(hub.url, "https://registry-1.docker.io");
        // Docker Hub: its own host, and library/ for one-segment names.
        assert_eq!(hub.rule.hosts, ["registry-1.docker.io"]);
        assert_eq!(hub.rule.default_namespace.as_deref(), Some("library"));
        assert_eq!(
            hub.credentials,
            UpstreamCredentials::PasswordFile {
                username: "mirror".into(),
                path: "/run/secrets/hub".into()
            }
        );
        assert_eq!(ghcr.rule.hosts, ["ghcr.io"]);
        assert_eq!(ghcr.rule.default_namespace, None);
        let rule = c.registry.rules.cache.unwrap();
        assert_eq!(rule.limit, 10 << 30);
        assert!(rule.covers("hub/library/nginx") && rule.covers("mirrors/ghcr/org/app"));
        assert!(!rule.covers("team/app"));
        assert!(ServeArgs::default().resolve().unwrap().cache.is_none());

        for (text, expected) in [
            (
                "[[upstream]]\nprefix = \"hub\"\nurl = \"registry-1.docker.io\"\n",
                "is not http(s)://",
            ),
            (
                "[[upstream]]\nprefix = \"Hub\"\nurl = \"https://x\"\n",
                "upstream 1 (Hub): prefix",
            ),
            (
                "[[upstream]]\nprefix = \"hub\"\nurl = \"https://x\"\npassword = \"p\"\n",
                "give username with password",
            ),
            (
                "[[upstream]]\nprefix = \"a\"\nurl = \"https://x\"\n[[upstream]]\nprefix = \"a\"\nurl = \"https://y\"\n",
                "prefixes \"a\" and \"a\" overlap",
            ),
            (
                "[[upstream]]\nprefix = \"a/b\"\nurl = \"https://x\"\n[[upstream]]\nprefix = \"a\"\nurl = \"https://y\"\n",
                "prefixes \"a/b\" and \"a\" overlap",
            ),
            (
                "[[upstream]]\nprefix = \"a\"\nurl = \"https://user:pw@x\"\n",
                "is not http(s)://host[:port]",
            ),
            ("[cache]\nmax_size = \"1GB\"\n", "no [[upstream]]"),
            (
                "[cache]\ntimeout = \"0s\"\n[[upstream]]\nprefix = \"a\"\nurl = \"https://x\"\n",
                "cache.timeout must be longer than 0s",
            ),
        ] {
            let err = resolve_file(&write(text)).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
