//! The embedded engine: SQLite in WAL mode, in one file beside the blobs.
//!
//! SQLite gives atomic, durable transactions with no server to run, which is
//! what a single-binary registry wants by default. Writers take the
//! database's write lock up front (`BEGIN IMMEDIATE`), so transactions never
//! conflict and never need running again. Names compare in byte order
//! (SQLite's default BINARY collation), as the registry API lists them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use r2d2_sqlite::rusqlite::{self, Connection, ToSql, TransactionBehavior, types::ValueRef};

use super::conn::{Conn, Durability, Engine, Param, Value};
use crate::error::DatabaseErrorKind;
use crate::lookup_cache::LookupCache;
use crate::{StorageError, StorageResult};

/// The schema, as the migrations that build it in order: `PRAGMA
/// user_version` holds how many were applied. Append to change it; never
/// edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE repositories (
        id   INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size   INTEGER NOT NULL
    );
    -- Which repository may read which blob: uploaded or mounted there.
    CREATE TABLE repository_blobs (
        repository_id INTEGER NOT NULL REFERENCES repositories(id),
        digest        TEXT NOT NULL REFERENCES blobs(digest),
        PRIMARY KEY (repository_id, digest)
    );
    CREATE INDEX repository_blobs_digest ON repository_blobs(digest);
    CREATE TABLE manifests (
        repository_id INTEGER NOT NULL REFERENCES repositories(id),
        digest        TEXT NOT NULL REFERENCES blobs(digest),
        media_type    TEXT NOT NULL,
        size          INTEGER NOT NULL,
        artifact_type TEXT,
        subject       TEXT,
        annotations   TEXT,
        PRIMARY KEY (repository_id, digest)
    );
    CREATE INDEX manifests_subject ON manifests(repository_id, subject);
    CREATE INDEX manifests_digest ON manifests(digest);
    -- Blobs and child manifests each manifest needs.
    CREATE TABLE manifest_references (
        repository_id   INTEGER NOT NULL,
        manifest_digest TEXT NOT NULL,
        child_digest    TEXT NOT NULL,
        PRIMARY KEY (repository_id, manifest_digest, child_digest),
        FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest)
    );
    CREATE INDEX manifest_references_child ON manifest_references(child_digest);
    CREATE TABLE tags (
        repository_id INTEGER NOT NULL,
        name          TEXT NOT NULL,
        digest        TEXT NOT NULL,
        PRIMARY KEY (repository_id, name),
        FOREIGN KEY (repository_id, digest) REFERENCES manifests(repository_id, digest)
    );
    CREATE TABLE uploads (
        id         TEXT PRIMARY KEY,
        repository TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX uploads_updated_at ON uploads(updated_at);
    ",
    // 2: an upload session belongs to the subject that opened it (NULL for
    // sessions opened before: any subject with push rights, as then).
    "ALTER TABLE uploads ADD COLUMN owner TEXT;",
    // 3: storage lifecycle. Timestamps in milliseconds for collection (what was stored
    // before counts as touched at the upgrade, so nothing goes before a
    // grace period has passed), bytes per repository for quotas, and a
    // lease so one berth of several collects at a time.
    "
    ALTER TABLE repositories ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE blobs ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE repository_blobs ADD COLUMN linked_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE manifests ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE manifests ADD COLUMN pulled_at INTEGER;
    ALTER TABLE tags ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
    UPDATE blobs SET touched_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
    UPDATE repository_blobs SET linked_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
    UPDATE manifests SET touched_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
    -- Tags in the order they were first pushed, the best known, so that
    -- retention's newest-first never falls back to name order; and every
    -- manifest counts as pulled at the upgrade, so keep_pulled_within
    -- protects from the start rather than nothing.
    UPDATE tags SET updated_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + rowid;
    UPDATE manifests SET pulled_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
    -- Timestamps are milliseconds from now on.
    UPDATE uploads SET updated_at = updated_at * 1000;
    UPDATE repositories SET bytes =
        (SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs rb
           JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = repositories.id)
      + (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repository_id = repositories.id);
    CREATE INDEX manifest_references_repository_child
        ON manifest_references(repository_id, child_digest);
    CREATE INDEX tags_digest ON tags(repository_id, digest);
    CREATE TABLE leases (
        name   TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        until  INTEGER NOT NULL
    );
    ",
    // 4: values every process on the store shares (the token signing key).
    "CREATE TABLE shared_values (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 5: the request writing to an upload, on whichever process, and until
    // when its claim holds unless renewed.
    "
    ALTER TABLE uploads ADD COLUMN holder TEXT;
    ALTER TABLE uploads ADD COLUMN held_until INTEGER NOT NULL DEFAULT 0;
    ",
];

/// Connections kept open; readers run in parallel in WAL mode.
const POOL_SIZE: u32 = 8;

/// How long a write waits for another one to finish before it fails.
const BUSY_ATTEMPTS: i32 = 10_000;

/// Waits a millisecond for the database to be free, [`BUSY_ATTEMPTS`] times
/// at most. SQLite's own busy timeout backs off to 100 ms sleeps, so a push
/// that meets a collection's transaction would wait far longer than the
/// transaction lasts.
fn busy_wait(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_millis(1));
    attempt < BUSY_ATTEMPTS
}

fn configure(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    conn.busy_handler(Some(busy_wait))?;
    // FULL: a transaction reported committed survives a power cut, not just a crash.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
}

/// The SQLite engine: a pool of connections to one database file.
pub struct Sqlite {
    pool: Pool<SqliteConnectionManager>,
}

impl Sqlite {
    /// Opens (creating or migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> StorageResult<Self> {
        let manager = SqliteConnectionManager::file(path).with_init(configure);
        let pool = Pool::builder().max_size(POOL_SIZE).build(manager)?;
        let mut conn = pool.get()?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        migrate(&mut conn, path)?;
        Ok(Sqlite { pool })
    }
}

/// Brings the schema up to date, one transaction per migration, so a crash
/// leaves it at some version this code can continue from.
fn migrate(conn: &mut Connection, path: &Path) -> StorageResult<()> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StorageError::database(
            DatabaseErrorKind::Schema,
            format!(
                "{} has schema version {applied}, newer than this berth understands ({}): \
                 run a newer berth",
                path.display(),
                MIGRATIONS.len()
            ),
        ));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// A connection (or the transaction open on it) as a [`Conn`].
struct SqliteConn<'a>(&'a Connection);

/// The shared statements' `$1` placeholders as SQLite's `?1`: SQLite reads
/// `$1` as a *named* parameter, numbered by first appearance, not by its
/// digits.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

fn bind<'a>(params: &'a [Param<'a>]) -> Vec<&'a dyn ToSql> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(v) => v as &dyn ToSql,
            Param::Text(v) => v,
            Param::MaybeInt(v) => v,
            Param::MaybeText(v) => v,
        })
        .collect()
}

impl Conn for SqliteConn<'_> {
    fn execute(&mut self, sql: &'static str, params: &[Param<'_>]) -> StorageResult<u64> {
        let changed = self
            .0
            .prepare_cached(&sqlite_sql(sql))?
            .execute(bind(params).as_slice())?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &'static str, params: &[Param<'_>]) -> StorageResult<Vec<Vec<Value>>> {
        let mut statement = self.0.prepare_cached(&sqlite_sql(sql))?;
        let columns = statement.column_count();
        let mut rows = statement.query(bind(params).as_slice())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
                    other => {
                        return Err(StorageError::database(
                            DatabaseErrorKind::Schema,
                            format!("unexpected {:?} value in the database", other.data_type()),
                        ));
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }
}

impl Engine for Sqlite {
    /// berth locks the data directory the database lives in: every write
    /// is this process's.
    fn watch_lookups(&self, lookups: Arc<LookupCache>) {
        lookups.resume();
    }

    fn announce_stale(&self, _tx: &mut dyn Conn, _repository: &str) -> StorageResult<()> {
        Ok(())
    }

    fn read<T>(&self, f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>) -> StorageResult<T> {
        f(&mut SqliteConn(&*self.pool.get()?))
    }

    fn snapshot<T>(
        &self,
        f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>,
    ) -> StorageResult<T> {
        let mut conn = self.pool.get()?;
        // A read transaction: one consistent moment of the store.
        let tx = conn.transaction()?;
        let out = f(&mut SqliteConn(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    fn write<T>(
        &self,
        durability: Durability,
        f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>,
    ) -> StorageResult<T> {
        let mut conn = self.pool.get()?;
        match durability {
            Durability::Full => transact(&mut conn, f),
            Durability::Deferred => deferred(&mut conn, f),
        }
    }
}

/// `f` in an immediate (write-locking) transaction, committed.
fn transact<T>(
    conn: &mut Connection,
    f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>,
) -> StorageResult<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&mut SqliteConn(&tx))?;
    tx.commit()?;
    Ok(out)
}

/// [`transact`], durable only by the next full commit or checkpoint, so a
/// collection's deletes spare pushes a flush each. Checkpointed at once, so
/// the pages they wrote are not left for whichever push next crosses the
/// log's checkpoint threshold.
fn deferred<T>(
    conn: &mut Connection,
    f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>,
) -> StorageResult<T> {
    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    let outcome = transact(conn, f);
    // Before anything else uses this pooled connection.
    conn.execute_batch("PRAGMA synchronous = FULL")?;
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::debug!(error = %e, "checkpoint after a collection's deletes failed");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MetadataStore, SqliteMetadataStore};

    /// A store of the first schema upgrades in place: sizes are counted and
    /// what it held counts as touched at the upgrade.
    #[tokio::test]
    async fn a_first_schema_store_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "INSERT INTO repositories (id, name) VALUES (1, 'app');
                 INSERT INTO blobs (digest, size) VALUES
                   ('sha256:0000000000000000000000000000000000000000000000000000000000000001', 7);
                 INSERT INTO repository_blobs (repository_id, digest) VALUES
                   (1, 'sha256:0000000000000000000000000000000000000000000000000000000000000001');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = SqliteMetadataStore::open(&path).unwrap();
        let usage = store.repository_usage(None, 10).await.unwrap();
        assert_eq!(usage[0].bytes, 7);
        let snapshot = store.gc_snapshot().await.unwrap();
        let link = &snapshot.repositories[0].links[0];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((now - link.linked_at).abs() < 60_000, "{link:?}");
    }

    #[test]
    fn placeholders_keep_their_numbers_in_any_order() {
        let conn = Connection::open_in_memory().unwrap();
        let rows = SqliteConn(&conn)
            .query("SELECT $2, $1", &[Param::Int(1), Param::Text("two")])
            .unwrap();
        assert_eq!(rows, vec![vec![Value::Text("two".into()), Value::Int(1)]]);
    }
}
