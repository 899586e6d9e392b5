//! `berth serve`: open the stores, listen, shut down cleanly on SIGTERM.

use std::fs::File;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsAcceptor;
use berth_auth::files::{try_lock_for_update, write_private};
use berth_auth::htpasswd::{BCRYPT_COST, Htpasswd};
use berth_auth::policy::policy_warnings;
use berth_auth::{AuthConfig, Authenticator, Policy};
use berth_cache::route::canonical_host;
use berth_cache::{CacheSettings, CredentialSource, PullThroughCache, UpstreamSettings};
use berth_client::Credentials;
use berth_registry::{GcOptions, Registry, RegistryError};
use berth_server::AppState;
use berth_server::metrics::Metrics;
use berth_storage::{
    BlobStore, FsBlobStore, MetadataStore, PostgresMetadataStore, S3BlobStore, SqliteMetadataStore,
};
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;

use crate::config::{
    CacheConfig, LogFormat, ServeArgs, ServeConfig, TlsSettings, UpstreamConfig,
    UpstreamCredentials,
};
use crate::first_byte::FirstByteAcceptor;
use crate::tls;

/// Where berth writes the password of the `admin` user it creates.
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";
/// The token signing key berth makes, inside the data directory (and its
/// name among the values a shared database keeps).
const SIGNING_KEY_FILE: &str = "token-signing-key.pem";
/// How often a berth on a shared database brings the robots and users kept
/// there and its data directory's files in step.
const SHARED_FILES_SYNC: Duration = Duration::from_secs(2);
/// The users berth manages itself (no htpasswd file given), inside the data
/// directory (and their name among the values a shared database keeps).
pub const HTPASSWD_FILE: &str = "htpasswd";
/// The robot accounts of `berth robot`, inside the data directory (and
/// their name among the values a shared database keeps).
pub const ROBOTS_FILE: &str = "robots.json";
/// How long `docker login`'s identity token (a refresh token) stays valid.
const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long an HTTP/2 peer has to answer a keep-alive ping.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

pub fn run(args: ServeArgs) -> Result<()> {
    let config = args.resolve()?;
    // One crypto provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A log nobody reads any more (a closed pipe) must not stop berth:
        // reporting the failed write would panic in `eprintln!` on that
        // same stderr, in whichever task logged, the shutdown's included.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Takes an exclusive lock on the data directory. The embedded stores keep
/// state in this process (upload hash state, per-digest locks), so a second
/// berth on the same directory would corrupt nothing only by luck.
fn lock_data_dir(config: &ServeConfig) -> Result<File> {
    let path = config.data_dir.join("berth.lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another berth is already serving {}: stop it, or give this one its own --data-dir",
            config.data_dir.display()
        )
    })?;
    Ok(file)
}

async fn serve(config: ServeConfig) -> Result<()> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}: choose a writable one with --data-dir",
            data_dir.display()
        )
    })?;
    // Blobs and metadata both shared: any number of berth processes may
    // serve them. Otherwise this process keeps state of the data directory's
    // stores (upload hash state, SQLite's single writer) alone.
    let _lock = match (&config.s3, &config.database) {
        (Some(_), Some(_)) => None,
        _ => Some(lock_data_dir(&config)?),
    };
    let blobs: Arc<dyn BlobStore> = match &config.s3 {
        None => Arc::new(
            FsBlobStore::open(data_dir, config.reserve_space)
                .with_context(|| format!("cannot open blob storage in {}", data_dir.display()))?,
        ),
        Some(options) => Arc::new(S3BlobStore::open(options).await.with_context(|| {
            format!(
                "cannot reach the S3 bucket {:?}: check --s3-bucket, --s3-endpoint and the \
                 credentials ([s3] or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
                options.bucket
            )
        })?),
    };
    let metadata: Arc<dyn MetadataStore> = match &config.database {
        None => {
            let metadata = SqliteMetadataStore::open(&data_dir.join("metadata.db"))
                .context("cannot open the metadata database")?;
            // Alone on it (the data directory's lock): claims on uploads
            // left by a process before this one died with it.
            metadata
                .release_upload_claims()
                .await
                .context("cannot open the metadata database")?;
            Arc::new(metadata)
        }
        Some(options) => Arc::new(PostgresMetadataStore::connect(options).await.context(
            "cannot connect to the PostgreSQL database: check --database-url \
             (BERTH_DATABASE_URL, [database] url) and that the server accepts berth's user",
        )?),
    };
    let registry = Arc::new(Registry::new(
        blobs,
        metadata.clone(),
        config.registry.clone(),
    ));
    let signing_key = match (&config.auth.signing_key, &config.database) {
        (Some(path), _) => path.clone(),
        (None, None) => data_dir.join(SIGNING_KEY_FILE),
        (None, Some(_)) => shared_signing_key(&*metadata, data_dir).await?,
    };
    let shared_files_sync = match &config.database {
        Some(_) => {
            let robots =
                adopt_shared_file(&*metadata, data_dir, ROBOTS_FILE, || Ok(String::new())).await?;
            let mut adopted = vec![(ROBOTS_FILE, robots)];
            if config.auth.htpasswd.is_none() {
                adopted.push((HTPASSWD_FILE, shared_users(&*metadata, data_dir).await?));
            }
            Some(sync_shared_files(metadata.clone(), data_dir, adopted))
        }
        None => None,
    };
    let auth = Arc::new(open_authenticator(&config, signing_key)?);
    let cache = match &config.cache {
        Some(cache) => Some(Arc::new(open_cache(registry.clone(), cache, data_dir)?)),
        None => None,
    };

    let listener = TcpListener::bind(config.addr).await.with_context(|| {
        format!(
            "cannot listen on {}: is another server using it? Choose another with --addr",
            config.addr
        )
    })?;
    let addr = listener.local_addr()?;
    let tls = match &config.tls {
        TlsSettings::Off => None,
        TlsSettings::Files { cert, key } => Some(tls::load(cert, key).await?),
        TlsSettings::SelfSigned { hosts } => {
            let files = tls::self_signed(data_dir, hosts)?;
            tracing::warn!(
                ca = %files.ca_cert.display(),
                "serving HTTPS with a self-signed certificate for {}: make clients and nodes \
                 trust the CA {} (containerd: ca = \"{}\" in hosts.toml; podman, skopeo: \
                 --cert-dir {}, which holds the CA alone)",
                hosts.join(", "),
                files.ca_cert.display(),
                files.ca_cert.display(),
                files.trust_dir.display()
            );
            Some(tls::load(&files.cert, &files.key).await?)
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, data_dir = %data_dir.display(), "berth listening on {scheme}://{addr}");

    // Bytes a collection stopped between its two steps left aside: back in
    // place if recorded, before anything asks for them.
    registry
        .settle_abandoned_stashes()
        .await
        .context("cannot settle the blob store's trash/")?;
    let expiry = tokio::spawn(expire_uploads(registry.clone()));
    let collection = (!config.gc_interval.is_zero())
        .then(|| tokio::spawn(collect(registry.clone(), config.gc_interval)));
    let state = Arc::new(AppState {
        registry,
        cache,
        auth,
        realm: config.auth.realm.clone(),
        tls: tls.is_some(),
        body_pace: config.body_pace,
        trusted_proxies: config.trusted_proxies.clone(),
        audit_pulls: config.audit_pulls,
        metrics: Metrics::default(),
    });
    let metrics = match config.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, state.clone()).await?),
        None => None,
    };
    let app = berth_server::app(state).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopper.graceful_shutdown(None);
    });
    let mut server = axum_server::from_tcp(listener.into_std()?)?.handle(handle);
    // An HTTP/1 connection that sends no request head for this long, whether
    // idle between requests or trickling a head in (slowloris), is closed:
    // neither holds a task and a descriptor forever. hyper has no idle limit
    // for HTTP/2; its pings at that interval drop peers that vanished.
    let idle = config.idle_timeout;
    let builder = server.http_builder();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    // Small responses (manifests) should not wait for Nagle's algorithm, and
    // a connection that never sends its first byte gets the same limit.
    match tls {
        None => {
            let acceptor = FirstByteAcceptor::new(NoDelayAcceptor, idle);
            server.acceptor(acceptor).serve(app).await
        }
        Some(rustls) => {
            let tls = RustlsAcceptor::new(rustls).acceptor(NoDelayAcceptor);
            server
                .acceptor(FirstByteAcceptor::new(tls, idle))
                .serve(app)
                .await
        }
    }
    .with_context(|| format!("the {scheme} server failed"))?;
    expiry.abort();
    for task in [collection, metrics, shared_files_sync]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    tracing::info!("berth stopped");
    Ok(())
}

/// Serves /metrics alone on `addr`, in the background.
async fn serve_metrics(
    addr: SocketAddr,
    state: Arc<AppState>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for metrics: choose another --metrics-addr")
    })?;
    tracing::info!(addr = %listener.local_addr()?, "metrics on http://{}/metrics", listener.local_addr()?);
    let app = berth_server::metrics_app(state);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server failed");
        }
    }))
}

/// The pull-through cache, spooling downloads under the data directory.
fn open_cache(
    registry: Arc<Registry>,
    config: &CacheConfig,
    data_dir: &Path,
) -> Result<PullThroughCache> {
    let upstreams = config
        .upstreams
        .iter()
        .map(|upstream| {
            tracing::info!(
                prefix = %upstream.rule.prefix,
                url = %upstream.url,
                hosts = %upstream.rule.hosts.join(","),
                "caching an upstream registry"
            );
            UpstreamSettings {
                rule: upstream.rule.clone(),
                url: upstream.url.clone(),
                credentials: credential_source(upstream),
                ca_files: upstream.ca_file.iter().cloned().collect(),
            }
        })
        .collect();
    let settings = CacheSettings {
        upstreams,
        revalidate_after: config.revalidate_after,
        timeout: config.timeout,
        stall_timeout: config.stall_timeout,
        outage_backoff: config.outage_backoff,
        spool_dir: data_dir.join("spool"),
    };
    Ok(PullThroughCache::new(registry, settings)?)
}

/// Where an upstream's credentials are read from at each login.
fn credential_source(upstream: &UpstreamConfig) -> CredentialSource {
    match upstream.credentials.clone() {
        UpstreamCredentials::Anonymous => Arc::new(|| Ok(None)),
        UpstreamCredentials::Password { username, password } => {
            Arc::new(move || Ok(Some(Credentials::new(&username, &password))))
        }
        UpstreamCredentials::PasswordFile { username, path } => Arc::new(move || {
            let password = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
            Ok(Some(Credentials::new(
                &username,
                password.trim_end_matches(['\n', '\r']),
            )))
        }),
        UpstreamCredentials::DockerConfig(path) => {
            let host = upstream.rule.hosts.first().cloned().unwrap_or_default();
            // Docker Hub's key in config.json is its v1 URL.
            let server = if canonical_host(&host) == "docker.io" {
                "https://index.docker.io/v1/".to_owned()
            } else {
                host
            };
            Arc::new(move || {
                let found = crate::secret::from_docker_config(
                    Some(path.clone()),
                    std::slice::from_ref(&server),
                    None,
                )
                .map_err(|e| format!("{e:#}"))?;
                Ok(found
                    .into_iter()
                    .next()
                    .map(|c| Credentials::new(c.username, c.password)))
            })
        }
    }
}

/// The shared value named after the data directory's file `name`, written
/// into that file: the file's own content is offered first (so what a berth
/// had before it shared a database stays), else `fresh()`'s; whichever
/// process offers first sets it for all.
async fn adopt_shared_file(
    metadata: &dyn MetadataStore,
    data_dir: &Path,
    name: &str,
    fresh: impl FnOnce() -> Result<String>,
) -> Result<String> {
    let path = data_dir.join(name);
    let local = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let offered = match &local {
        Some(text) => text.clone(),
        None => fresh()?,
    };
    let shared = metadata
        .init_shared_value(name, &offered)
        .await
        .with_context(|| format!("cannot read the shared {name} from the database"))?;
    if local.as_ref() != Some(&shared) {
        write_private(&path, &shared)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(shared)
}

/// With metadata that other berth processes share, the token signing key is
/// the database's: a token one process issues, every other accepts.
async fn shared_signing_key(metadata: &dyn MetadataStore, data_dir: &Path) -> Result<PathBuf> {
    adopt_shared_file(metadata, data_dir, SIGNING_KEY_FILE, || {
        berth_auth::token::new_signing_key().map_err(anyhow::Error::msg)
    })
    .await?;
    Ok(data_dir.join(SIGNING_KEY_FILE))
}

/// With a shared database and no htpasswd file given, the users are the
/// database's (what `berth user` changes there), so that every berth knows
/// the same ones: the data directory's users are offered first, else a new
/// `admin`, whose password this berth keeps only if its offer is the one
/// kept.
async fn shared_users(metadata: &dyn MetadataStore, data_dir: &Path) -> Result<String> {
    let password_file = data_dir.join(ADMIN_PASSWORD_FILE);
    let mut offered = None;
    let shared = adopt_shared_file(metadata, data_dir, HTPASSWD_FILE, || {
        let users = new_admin(&password_file)?;
        offered = Some(users.clone());
        Ok(users)
    })
    .await?;
    match offered {
        Some(users) if users == shared => announce_admin(&password_file),
        // Another berth's users came first: this admin never was.
        Some(_) => std::fs::remove_file(&password_file)
            .with_context(|| format!("cannot remove {}", password_file.display()))?,
        None => {}
    }
    Ok(shared)
}

/// Keeps the data directory's files `names` (where the authenticator reads
/// them) and the values a shared database keeps under those names the same,
/// every [`SHARED_FILES_SYNC`], for as long as the task returned runs: a
/// value changed in the database (`berth user` or `berth robot` on it) is
/// written to the file; a file changed here (the same commands on this data
/// directory) is offered to the database, if nothing changed there since
/// (compare and set), so every berth on the database gets it. `adopted` are
/// the values the files hold now.
fn sync_shared_files(
    metadata: Arc<dyn MetadataStore>,
    data_dir: &Path,
    adopted: Vec<(&'static str, String)>,
) -> tokio::task::JoinHandle<()> {
    let data_dir = data_dir.to_owned();
    tokio::spawn(async move {
        let mut files = adopted;
        loop {
            tokio::time::sleep(SHARED_FILES_SYNC).await;
            for (name, kept) in &mut files {
                if let Err(e) =
                    sync_shared_file(&*metadata, &data_dir.join(*name), name, kept).await
                {
                    tracing::warn!(name = *name, error = %e, "cannot keep a file and the database the same");
                }
            }
        }
    })
}

/// One round of [`sync_shared_files`] for one file; `kept` is what the
/// file and the database last agreed on.
async fn sync_shared_file(
    metadata: &dyn MetadataStore,
    path: &Path,
    name: &str,
    kept: &mut String,
) -> Result<()> {
    // A command editing the file now (`berth user` asking for a password)
    // is not waited for: the next round takes its change.
    let Some(_lock) = try_lock_for_update(path)? else {
        return Ok(());
    };
    let shared = metadata.shared_value(name).await?.unwrap_or_default();
    if shared != *kept {
        write_private(path, &shared)?;
        *kept = shared;
        return Ok(());
    }
    let local = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if local != *kept && metadata.replace_shared_value(name, kept, &local).await? {
        *kept = local;
    }
    Ok(())
}

/// The user file, robots and token key, creating an `admin` user with a random
/// password when berth manages the user file itself and it has no users yet:
/// a new registry is never open to anonymous writes.
fn open_authenticator(config: &ServeConfig, signing_key: PathBuf) -> Result<Authenticator> {
    let data_dir = &config.data_dir;
    let htpasswd = match &config.auth.htpasswd {
        Some(path) => path.clone(),
        None => {
            let path = data_dir.join(HTPASSWD_FILE);
            // Only a missing file means "no users yet": an unreadable one
            // must never be replaced by a fresh admin.
            let existing = match std::fs::read_to_string(&path) {
                Ok(text) => Htpasswd::parse(&text)
                    .with_context(|| format!("{} is not valid", path.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Htpasswd::default(),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot read {}: give the user berth runs as read access to it",
                            path.display()
                        )
                    });
                }
            };
            if existing.is_empty() {
                create_admin(&path, &data_dir.join(ADMIN_PASSWORD_FILE))?;
            }
            path
        }
    };
    let authenticator = Authenticator::new(AuthConfig {
        htpasswd,
        robots: data_dir.join(ROBOTS_FILE),
        signing_key,
        policy: Policy::new(config.auth.policy.clone()).map_err(anyhow::Error::msg)?,
        service: config.auth.service.clone(),
        issuer: "berth".to_owned(),
        token_ttl: config.auth.token_ttl,
        refresh_ttl: REFRESH_TOKEN_TTL,
        pull_credential_ttl: config.auth.pull_credential_ttl,
    })
    .map_err(anyhow::Error::msg)?;
    // A valid policy can still hold rules that never take effect: say so.
    for warning in policy_warnings(&config.auth.policy, |user| authenticator.has_user(user)) {
        tracing::warn!("{warning}");
    }
    Ok(authenticator)
}

fn create_admin(htpasswd: &Path, password_file: &Path) -> Result<()> {
    let users = new_admin(password_file)?;
    write_private(htpasswd, &users)
        .with_context(|| format!("cannot write {}", htpasswd.display()))?;
    announce_admin(password_file);
    Ok(())
}

/// An htpasswd file with one user, `admin`, whose random password is
/// written to `password_file` first (so that no admin exists whose
/// password was never written down).
fn new_admin(password_file: &Path) -> Result<String> {
    let password = berth_auth::random_secret();
    let mut users = Htpasswd::default();
    users.set("admin", &password, BCRYPT_COST)?;
    write_private(password_file, &format!("{password}\n"))
        .with_context(|| format!("cannot write {}", password_file.display()))?;
    Ok(users.render())
}

fn announce_admin(password_file: &Path) {
    tracing::warn!(
        password_file = %password_file.display(),
        "created user admin; its password is in {} (readable only by this user)",
        password_file.display()
    );
}

/// Removes abandoned uploads, checking as often as a tenth of their lifetime.
async fn expire_uploads(registry: Arc<Registry>) {
    let period =
        (registry.config().upload_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        match registry.expire_uploads().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "removed abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "could not remove abandoned uploads"),
        }
    }
}

/// Runs garbage collection every `interval`, the first one an interval after
/// start. Of several berth processes on one store, one collects at a time
/// (the others find the lease taken and wait for their next turn).
async fn collect(registry: Arc<Registry>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match registry.collect(GcOptions::default(), &|_| {}).await {
            Ok(report) => tracing::info!(
                tags = report.tags.len(),
                manifests = report.manifests.len(),
                links = report.links,
                blobs = report.blobs.len(),
                orphans = report.orphans.len(),
                bytes = report.bytes(),
                "garbage collection finished"
            ),
            Err(RegistryError::GcBusy) => {
                tracing::debug!("garbage collection skipped: another one is running")
            }
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C; the server then stops
/// accepting connections and finishes the requests in flight.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler can be installed");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
