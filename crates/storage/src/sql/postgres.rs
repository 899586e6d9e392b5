//! The shared engine: PostgreSQL, for several berth processes on one
//! database.
//!
//! `tokio-postgres` (with `deadpool-postgres` pooling connections and
//! keeping their prepared statements, and TLS through rustls) is the
//! asynchronous driver from the rust-postgres project; the store's logic is synchronous and shared with
//! SQLite, so each statement is driven to completion from the blocking
//! thread the store runs on.
//!
//! Every write is a `SERIALIZABLE` transaction: PostgreSQL then guarantees
//! what SQLite's single writer does, that the outcome is as if the
//! transactions had run one after another. A transaction it aborts to keep
//! that promise (`40001`, or a deadlock) is run again. Text keys use the "C"
//! collation, so names sort and compare in byte order as the registry API
//! lists them, whatever the database's locale.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt as _;
use tokio::runtime::Handle;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, IsolationLevel, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conn::{Conn, Durability, Engine, Param, Value};
use crate::error::DatabaseErrorKind;
use crate::lookup_cache::LookupCache;
use crate::{StorageError, StorageResult};

/// The schema, as the migrations that build it in order: the table
/// `berth_schema` holds how many were applied. Append to change it; never
/// edit one that has shipped. The first is the SQLite store's third schema,
/// the second its fourth.
const MIGRATIONS: &[&str] = &[
    // 1: the schema the SQLite store reached with its third migration.
    r#"
    CREATE TABLE repositories (
        id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name  TEXT COLLATE "C" NOT NULL UNIQUE,
        bytes BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE blobs (
        digest     TEXT COLLATE "C" PRIMARY KEY,
        size       BIGINT NOT NULL,
        touched_at BIGINT NOT NULL
    );
    -- Which repository may read which blob: uploaded or mounted there.
    CREATE TABLE repository_blobs (
        repository_id BIGINT NOT NULL REFERENCES repositories(id),
        digest        TEXT COLLATE "C" NOT NULL REFERENCES blobs(digest),
        linked_at     BIGINT NOT NULL,
        PRIMARY KEY (repository_id, digest)
    );
    CREATE INDEX repository_blobs_digest ON repository_blobs(digest);
    CREATE TABLE manifests (
        repository_id BIGINT NOT NULL REFERENCES repositories(id),
        digest        TEXT COLLATE "C" NOT NULL REFERENCES blobs(digest),
        media_type    TEXT NOT NULL,
        size          BIGINT NOT NULL,
        artifact_type TEXT,
        subject       TEXT COLLATE "C",
        annotations   TEXT,
        touched_at    BIGINT NOT NULL,
        pulled_at     BIGINT,
        PRIMARY KEY (repository_id, digest)
    );
    CREATE INDEX manifests_subject ON manifests(repository_id, subject);
    CREATE INDEX manifests_digest ON manifests(digest);
    -- Blobs and child manifests each manifest needs.
    CREATE TABLE manifest_references (
        repository_id   BIGINT NOT NULL,
        manifest_digest TEXT COLLATE "C" NOT NULL,
        child_digest    TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (repository_id, manifest_digest, child_digest),
        FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest)
    );
    CREATE INDEX manifest_references_child ON manifest_references(child_digest);
    CREATE INDEX manifest_references_repository_child
        ON manifest_references(repository_id, child_digest);
    CREATE TABLE tags (
        repository_id BIGINT NOT NULL,
        name          TEXT COLLATE "C" NOT NULL,
        digest        TEXT COLLATE "C" NOT NULL,
        updated_at    BIGINT NOT NULL,
        PRIMARY KEY (repository_id, name),
        FOREIGN KEY (repository_id, digest) REFERENCES manifests(repository_id, digest)
    );
    CREATE INDEX tags_digest ON tags(repository_id, digest);
    CREATE TABLE uploads (
        id         TEXT COLLATE "C" PRIMARY KEY,
        repository TEXT COLLATE "C" NOT NULL,
        owner      TEXT,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX uploads_updated_at ON uploads(updated_at);
    CREATE TABLE leases (
        name   TEXT COLLATE "C" PRIMARY KEY,
        holder TEXT NOT NULL,
        until  BIGINT NOT NULL
    );
    "#,
    // 2: values every process on the store shares (the token signing key).
    r#"CREATE TABLE shared_values (name TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);"#,
    // 3: the request writing to an upload, on whichever process, and until
    // when its claim holds unless renewed.
    "ALTER TABLE uploads ADD COLUMN holder TEXT,
                         ADD COLUMN held_until BIGINT NOT NULL DEFAULT 0;",
];

/// The advisory lock berth processes take to migrate one at a time.
const MIGRATION_LOCK: i64 = 0x6265_7274_685f_6462; // "berth_db"

/// How many times a transaction aborted by a conflict is run again.
const CONFLICT_ATTEMPTS: u32 = 30;

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A libpq connection string or `postgres://` URL.
    pub url: String,
    /// The password, when it is kept apart from the URL (a mounted Secret).
    pub password: Option<String>,
    /// Connections this process keeps open at most.
    pub pool_size: usize,
    /// How long to wait for a connection before failing a request.
    pub timeout: Duration,
    /// TLS for `sslmode=require` (the server's certificate verified by
    /// it); other modes, and `None`, speak plain TCP.
    pub tls: Option<rustls::ClientConfig>,
}

/// Leaves out the URL and the password, which may hold a secret.
impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL engine: a pool of connections, driven from the runtime
/// berth serves on.
pub struct Postgres {
    pool: Pool,
    runtime: Handle,
    /// For the connection that listens to other processes' writes.
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl Postgres {
    /// Connects to the database, creating or migrating its schema. Must be
    /// called within the Tokio runtime the store will be used on.
    pub async fn connect(options: &PostgresOptions) -> StorageResult<Self> {
        let mut config = tokio_postgres::Config::from_str(&options.url).map_err(|e| {
            StorageError::database(
                DatabaseErrorKind::Other,
                format!("the PostgreSQL connection string is not valid: {e}"),
            )
        })?;
        if let Some(password) = &options.password {
            config.password(password.trim_end_matches(['\r', '\n']));
        }
        if config.get_application_name().is_none() {
            config.application_name("berth");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.timeout);
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(MakeRustlsConnect::new(options.tls.clone().ok_or_else(
                || {
                    StorageError::database(
                        DatabaseErrorKind::Other,
                        "sslmode=require, but no TLS settings were given",
                    )
                },
            )?)),
            _ => None,
        };
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), recycling),
            None => Manager::from_config(config.clone(), NoTls, recycling),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .build()
            .map_err(|e| StorageError::database(DatabaseErrorKind::Other, e))?;
        migrate(&mut pool.get().await?).await?;
        Ok(Postgres {
            pool,
            runtime: Handle::current(),
            config,
            tls,
        })
    }

    /// Runs `f` in one transaction of `isolation` (a read-only one without
    /// `durability`) and commits it.
    fn transaction<T>(
        &self,
        isolation: IsolationLevel,
        durability: Option<Durability>,
        f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>,
    ) -> StorageResult<T> {
        let mut client = self.runtime.block_on(self.pool.get())?;
        let tx = self.runtime.block_on(
            client
                .build_transaction()
                .isolation_level(isolation)
                .read_only(durability.is_none())
                .start(),
        )?;
        if durability == Some(Durability::Deferred) {
            // A power cut may lose it, never tear it.
            self.runtime
                .block_on(tx.batch_execute("SET LOCAL synchronous_commit = off"))?;
        }
        let out = f(&mut PgConn {
            client: &tx,
            runtime: &self.runtime,
        })?;
        self.runtime.block_on(tx.commit())?;
        Ok(out)
    }
}

/// Brings the schema up to date in one transaction, under an advisory lock
/// so that berth processes starting together migrate one after another.
async fn migrate(client: &mut deadpool_postgres::Object) -> StorageResult<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS berth_schema (version BIGINT NOT NULL)")
        .await?;
    let applied: i64 = match tx
        .query_opt("SELECT version FROM berth_schema", &[])
        .await?
    {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO berth_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StorageError::database(
            DatabaseErrorKind::Schema,
            format!(
                "the database has schema version {applied}, newer than this berth understands \
                 ({}): run a newer berth",
                MIGRATIONS.len()
            ),
        ));
    }
    for migration in &MIGRATIONS[applied..] {
        tx.batch_execute(migration).await?;
    }
    tx.execute(
        "UPDATE berth_schema SET version = $1",
        &[&(MIGRATIONS.len() as i64)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A pooled connection or a transaction on one, as a [`Conn`].
struct PgConn<'a, C> {
    client: &'a C,
    runtime: &'a Handle,
}

fn bind<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(v) => v as &(dyn ToSql + Sync),
            Param::Text(v) => v,
            Param::MaybeInt(v) => v,
            Param::MaybeText(v) => v,
        })
        .collect()
}

fn value(row: &tokio_postgres::Row, i: usize) -> StorageResult<Value> {
    let ty = row.columns()[i].type_();
    let value = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?.map(Value::Int)
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into()))
    } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
        row.try_get::<_, Option<String>>(i)?.map(Value::Text)
    } else {
        return Err(StorageError::database(
            DatabaseErrorKind::Schema,
            format!("unexpected column type {ty} from the database"),
        ));
    };
    Ok(value.unwrap_or(Value::Null))
}

impl<C: GenericClient + Sync> Conn for PgConn<'_, C> {
    fn execute(&mut self, sql: &'static str, params: &[Param<'_>]) -> StorageResult<u64> {
        let client = self.client;
        Ok(self.runtime.block_on(async {
            let statement = client.prepare_cached(sql).await?;
            client.execute(&statement, &bind(params)).await
        })?)
    }

    fn query(&mut self, sql: &'static str, params: &[Param<'_>]) -> StorageResult<Vec<Vec<Value>>> {
        let client = self.client;
        let rows = self.runtime.block_on(async {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, &bind(params)).await
        })?;
        rows.iter()
            .map(|row| (0..row.len()).map(|i| value(row, i)).collect())
            .collect()
    }
}

impl Engine for Postgres {
    /// Other berth processes write the same database: their writes arrive
    /// as notifications on a connection of its own.
    fn watch_lookups(&self, lookups: Arc<LookupCache>) {
        self.runtime
            .spawn(listen(self.config.clone(), self.tls.clone(), lookups));
    }

    fn announce_stale(&self, tx: &mut dyn Conn, repository: &str) -> StorageResult<()> {
        // Delivered when (and only if) the transaction commits.
        tx.execute(
            "SELECT pg_notify('berth_stale_lookups', $1)",
            &[Param::Text(repository)],
        )
        .map(drop)
    }

    fn read<T>(&self, f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>) -> StorageResult<T> {
        let client = self.runtime.block_on(self.pool.get())?;
        f(&mut PgConn {
            client: &client,
            runtime: &self.runtime,
        })
    }

    fn snapshot<T>(
        &self,
        f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>,
    ) -> StorageResult<T> {
        // Every query sees the moment of the first; nothing is written.
        self.transaction(IsolationLevel::RepeatableRead, None, f)
    }

    fn write<T>(
        &self,
        durability: Durability,
        f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>,
    ) -> StorageResult<T> {
        let mut attempt = 0;
        loop {
            match self.transaction(IsolationLevel::Serializable, Some(durability), f) {
                Err(StorageError::Database(e))
                    if e.kind == DatabaseErrorKind::Conflict && attempt < CONFLICT_ATTEMPTS =>
                {
                    attempt += 1;
                    std::thread::sleep(backoff(attempt));
                }
                outcome => return outcome,
            }
        }
    }
}

/// How often the listening connection is checked, and how long berth waits
/// before connecting it again.
const LISTEN_CHECK: Duration = Duration::from_secs(5);

/// Forwards other processes' announcements of stale lookups to `lookups`,
/// reconnecting when the connection fails; the cache is suspended whenever
/// they might be missed.
async fn listen(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    lookups: Arc<LookupCache>,
) {
    loop {
        let listened = match &tls {
            Some(tls) => listen_once(&config, tls.clone(), &lookups).await,
            None => listen_once(&config, NoTls, &lookups).await,
        };
        if let Err(e) = listened {
            tracing::warn!(
                error = %e,
                "not hearing of other berth processes' writes; manifest lookups go to the \
                 database until the connection is back"
            );
        }
        lookups.suspend();
        tokio::time::sleep(LISTEN_CHECK).await;
    }
}

/// One listening connection, for as long as it works.
async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    lookups: &Arc<LookupCache>,
) -> Result<(), String>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await.map_err(|e| e.to_string())?;
    let notified = lookups.clone();
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let mut driver = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(stale)) => {
                    notified.invalidate_repository(stale.payload())
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "the connection closed".to_owned()
    });
    let outcome: Result<(), String> = async {
        client
            .batch_execute("LISTEN berth_stale_lookups")
            .await
            .map_err(|e| e.to_string())?;
        lookups.resume();
        // A connection that vanished without a word would leave the cache
        // answering with nothing heard: asked now and then.
        loop {
            tokio::select! {
                ended = &mut driver => {
                    return Err(ended.unwrap_or_else(|e| e.to_string()));
                }
                () = tokio::time::sleep(LISTEN_CHECK) => {}
            }
            match tokio::time::timeout(LISTEN_CHECK, client.simple_query("")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("the database did not answer in time".to_owned()),
            }
        }
    }
    .await;
    driver.abort();
    outcome
}

/// A few milliseconds, growing with `attempt` and jittered, so two
/// transactions that conflicted do not meet again in step.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 1u64 << attempt.min(6);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos(),
    );
    Duration::from_micros(500 + jitter % (ceiling * 1000))
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        let kind = match e.code() {
            Some(code)
                if *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                DatabaseErrorKind::Conflict
            }
            Some(code) if *code == SqlState::DISK_FULL => DatabaseErrorKind::Full,
            Some(code)
                if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED =>
            {
                DatabaseErrorKind::Corrupt
            }
            Some(code)
                if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::UNDEFINED_COLUMN =>
            {
                DatabaseErrorKind::Schema
            }
            Some(code) if code.code().starts_with("08") || code.code().starts_with("57P") => {
                DatabaseErrorKind::Unavailable
            }
            // No SQLSTATE: the connection failed or closed.
            None if e.is_closed()
                || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) =>
            {
                DatabaseErrorKind::Unavailable
            }
            _ => DatabaseErrorKind::Other,
        };
        StorageError::database(kind, e)
    }
}

impl From<deadpool_postgres::PoolError> for StorageError {
    /// No connection could be had in time, or made at all.
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StorageError::database(DatabaseErrorKind::Unavailable, other),
        }
    }
}
