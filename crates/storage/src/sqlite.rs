//! The embedded metadata store, on SQLite.
//!
//! SQLite in WAL mode gives atomic, durable transactions in one file with no
//! server to run, which is what a single-binary registry wants by default. The
//! SQL avoids SQLite-only syntax (`ON CONFLICT … DO NOTHING` rather than
//! `INSERT OR IGNORE`) so a PostgreSQL store can share it. Byte order of names
//! is SQLite's default (BINARY) collation; PostgreSQL would need `COLLATE "C"`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName, Tag};
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use r2d2_sqlite::rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::DatabaseErrorKind;
use crate::lookup_cache::{LookupCache, LookupKey};
use crate::metadata::*;
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
];

/// Connections kept open; readers run in parallel in WAL mode.
const POOL_SIZE: u32 = 8;

/// Manifest lookups (tag or digest → manifest) kept in memory.
const LOOKUP_CACHE_ENTRIES: usize = 100_000;

pub struct SqliteMetadataStore {
    pool: Pool<SqliteConnectionManager>,
    lookups: Arc<LookupCache>,
}

/// What a manifest or tag write makes stale in the lookup cache.
enum Stale {
    /// These lookups (possibly none: the epoch still moves on, so no lookup
    /// that raced the write caches what it read).
    Keys(Vec<LookupKey>),
    /// Every lookup in the repository.
    Repository(String),
}

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

fn configure(conn: &mut Connection) -> Result<(), r2d2_sqlite::rusqlite::Error> {
    conn.busy_handler(Some(busy_wait))?;
    // FULL: a transaction reported committed survives a power cut, not just a crash.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
}

impl SqliteMetadataStore {
    /// Opens (creating or migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> StorageResult<Self> {
        let manager = SqliteConnectionManager::file(path).with_init(configure);
        let pool = Pool::builder().max_size(POOL_SIZE).build(manager)?;
        let mut conn = pool.get()?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        migrate(&mut conn, path)?;
        Ok(SqliteMetadataStore {
            pool,
            lookups: Arc::new(LookupCache::new(LOOKUP_CACHE_ENTRIES)),
        })
    }

    /// Answers a manifest lookup from the cache, else from `sql` (which selects
    /// digest, media type and size for parameters repository and reference).
    async fn lookup_manifest(
        &self,
        repository: &RepositoryName,
        reference: &str,
        sql: &'static str,
    ) -> StorageResult<Option<ManifestRecord>> {
        let key = LookupKey {
            repository: repository.to_string(),
            reference: reference.to_owned(),
        };
        if let Some(hit) = self.lookups.get(&key) {
            return Ok(Some(hit));
        }
        let seen = self.lookups.epoch();
        let (repository, reference) = (key.repository.clone(), key.reference.clone());
        let found = self
            .with_conn(move |conn| {
                conn.prepare_cached(sql)?
                    .query_row([&repository, &reference], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?
                    .map(|(d, m, s)| manifest_record(d, m, s))
                    .transpose()
            })
            .await?;
        if let Some(record) = &found {
            self.lookups.insert(seen, key, record.clone());
        }
        Ok(found)
    }

    /// Runs `f` on a pooled connection on a blocking thread.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || f(&mut *pool.get()?))
            .await
            .map_err(|e| StorageError::database(DatabaseErrorKind::Other, e))?
    }

    /// Runs `f` in an immediate (write-locking) transaction and commits it.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.with_conn(move |conn| transact(conn, f)).await
    }

    /// [`Self::write`] for a collection's deletes, with [`deferred`]
    /// durability.
    async fn collect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.with_conn(move |conn| deferred(conn, f)).await
    }

    /// [`Self::write`] for manifests and tags: then, committed or not, forgets
    /// the `stale` lookups. That happens on the blocking thread with the
    /// write itself, so it is done even when the request that asked for the
    /// write is dropped meanwhile (a client that disconnects), which would
    /// otherwise leave a moved tag answered from the cache.
    async fn write_manifests<T: Send + 'static>(
        &self,
        stale: Stale,
        f: impl FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.change_manifests(stale, transact, f).await
    }

    /// [`Self::write_manifests`] for a collection's deletes, with
    /// [`deferred`] durability.
    async fn collect_manifests<T: Send + 'static>(
        &self,
        stale: Stale,
        f: impl FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.change_manifests(stale, deferred, f).await
    }

    async fn change_manifests<T: Send + 'static, F>(
        &self,
        stale: Stale,
        run: fn(&mut Connection, F) -> StorageResult<T>,
        f: F,
    ) -> StorageResult<T>
    where
        F: FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    {
        let lookups = self.lookups.clone();
        self.with_conn(move |conn| {
            let outcome = run(conn, f);
            match stale {
                Stale::Keys(keys) => lookups.invalidate(keys),
                Stale::Repository(name) => lookups.invalidate_repository(&name),
            }
            outcome
        })
        .await
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

/// [`transact`], durable only by the next full commit or checkpoint: for a
/// collection's deletes of tags, manifests and links, which a power cut may
/// undo without harm (the next run makes them again), so they spare pushes
/// a flush each. Checkpointed at once, so the pages they wrote are not left
/// for whichever push next crosses the log's checkpoint threshold.
fn deferred<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> StorageResult<T>,
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

/// `f` in an immediate (write-locking) transaction, committed.
fn transact<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> StorageResult<T>,
) -> StorageResult<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

fn repository_id(conn: &Connection, name: &str) -> StorageResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

fn ensure_repository(conn: &Connection, name: &str) -> StorageResult<i64> {
    conn.prepare_cached(
        "INSERT INTO repositories (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
    )?
    .execute([name])?;
    Ok(repository_id(conn, name)?.expect("repository just ensured"))
}

fn parse_digest(text: String) -> StorageResult<Digest> {
    Digest::parse(&text).map_err(|e| {
        StorageError::database(DatabaseErrorKind::Schema, format!("stored digest: {e}"))
    })
}

fn to_size(size: i64) -> u64 {
    u64::try_from(size).unwrap_or_default()
}

fn manifest_record(digest: String, media_type: String, size: i64) -> StorageResult<ManifestRecord> {
    Ok(ManifestRecord {
        digest: parse_digest(digest)?,
        media_type,
        size: to_size(size),
    })
}

/// Records the bytes of a blob or manifest document as touched now.
fn upsert_blob(conn: &Connection, digest: &str, size: u64, now: Timestamp) -> StorageResult<()> {
    conn.prepare_cached(
        "INSERT INTO blobs (digest, size, touched_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (digest) DO UPDATE SET touched_at = excluded.touched_at",
    )?
    .execute(params![digest, size as i64, now])?;
    Ok(())
}

fn blob_size(conn: &Connection, digest: &str) -> StorageResult<u64> {
    let size: Option<i64> = conn
        .prepare_cached("SELECT size FROM blobs WHERE digest = ?1")?
        .query_row([digest], |r| r.get(0))
        .optional()?;
    Ok(size.map(to_size).unwrap_or_default())
}

/// Lets repository `id` read `digest`, as of `now`; returns whether the link
/// is new (and the bytes count against the repository).
fn link(conn: &Connection, id: i64, digest: &str, now: Timestamp) -> StorageResult<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (repository_id, digest) DO NOTHING",
        )?
        .execute(params![id, digest, now])?
        == 1;
    if !inserted {
        touch_link(conn, id, digest, now)?;
    }
    Ok(inserted)
}

/// Refreshes a link; returns whether it exists.
fn touch_link(conn: &Connection, id: i64, digest: &str, now: Timestamp) -> StorageResult<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE repository_blobs SET linked_at = ?3 WHERE repository_id = ?1 AND digest = ?2",
        )?
        .execute(params![id, digest, now])?
        == 1)
}

fn add_bytes(conn: &Connection, id: i64, delta: i64) -> StorageResult<()> {
    conn.prepare_cached("UPDATE repositories SET bytes = MAX(bytes + ?2, 0) WHERE id = ?1")?
        .execute(params![id, delta])?;
    Ok(())
}

/// What the repositories that count against `quota` hold together.
fn usage_of(conn: &Connection, quota: &Quota) -> StorageResult<u64> {
    // Names are lowercase ASCII, all below '~': the prefix's range is
    // [prefix, prefix + "~"].
    let prefix = quota.repositories.literal_prefix();
    let mut statement = conn.prepare_cached(
        "SELECT name, bytes FROM repositories WHERE name >= ?1 AND name <= ?1 || '~'",
    )?;
    let rows = statement.query_map([prefix], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut total = 0u64;
    for row in rows {
        let (name, bytes) = row?;
        if quota.counts(&name) {
            total += to_size(bytes);
        }
    }
    Ok(total)
}

/// Fails the write if it took `quota`'s repositories past their limit
/// (`adding` bytes are already counted).
fn check_quota(conn: &Connection, quota: Option<&Quota>, adding: u64) -> StorageResult<()> {
    let Some(quota) = quota else { return Ok(()) };
    if adding == 0 {
        return Ok(());
    }
    let usage = usage_of(conn, quota)?;
    if usage > quota.limit {
        return Err(StorageError::QuotaExceeded {
            pattern: quota.repositories.as_str().to_owned(),
            usage: usage - adding,
            limit: quota.limit,
            adding,
        });
    }
    Ok(())
}

/// Refreshes every manifest of repository `id` reachable from `digest`
/// through index entries and referrers: what becomes reachable must not be
/// collected by a collection that saw it unreachable.
fn touch_reachable(conn: &Connection, id: i64, digest: &str, now: Timestamp) -> StorageResult<()> {
    conn.prepare_cached(
        "WITH RECURSIVE reach(digest) AS (
             SELECT ?2
             UNION
             SELECT edge.child FROM reach JOIN (
                 SELECT manifest_digest AS parent, child_digest AS child
                   FROM manifest_references WHERE repository_id = ?1
                 UNION ALL
                 SELECT subject AS parent, digest AS child
                   FROM manifests WHERE repository_id = ?1 AND subject IS NOT NULL
             ) edge ON edge.parent = reach.digest
         )
         UPDATE manifests SET touched_at = ?3
          WHERE repository_id = ?1 AND digest IN (SELECT digest FROM reach)",
    )?
    .execute(params![id, digest, now])?;
    Ok(())
}

fn immutable_error(tag: &str, immutable: &ImmutableTags) -> Option<StorageError> {
    immutable
        .pattern_for(tag)
        .map(|pattern| StorageError::TagImmutable {
            tag: tag.to_owned(),
            pattern: pattern.as_str().to_owned(),
        })
}

/// Deletes manifest `digest` of repository `id` with its references, and
/// counts its bytes out; its tags must be gone already.
fn remove_manifest(conn: &Connection, id: i64, digest: &str, size: i64) -> StorageResult<()> {
    conn.prepare_cached(
        "DELETE FROM manifest_references WHERE repository_id = ?1 AND manifest_digest = ?2",
    )?
    .execute(params![id, digest])?;
    conn.prepare_cached("DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2")?
        .execute(params![id, digest])?;
    add_bytes(conn, id, -size)
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    async fn ping(&self) -> StorageResult<()> {
        self.with_conn(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn blob_in_repository(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.with_conn(move |conn| {
            let size: Option<i64> = conn
                .prepare_cached(
                    "SELECT b.size FROM repository_blobs rb
                       JOIN repositories r ON r.id = rb.repository_id
                       JOIN blobs b ON b.digest = rb.digest
                      WHERE r.name = ?1 AND rb.digest = ?2",
                )?
                .query_row([&repository, &digest], |r| r.get(0))
                .optional()?;
            Ok(size.map(to_size))
        })
        .await
    }

    async fn blob_linked_under(&self, prefix: &str, digest: &Digest) -> StorageResult<bool> {
        // Names starting with "prefix/" sort from "prefix/" up to, not
        // including, "prefix0" ('0' follows '/'): a range the primary key
        // index answers, and no LIKE pattern to escape.
        let (low, high, digest) = (
            format!("{prefix}/"),
            format!("{prefix}0"),
            digest.to_string(),
        );
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM repository_blobs rb
                       JOIN repositories r ON r.id = rb.repository_id
                      WHERE rb.digest = ?1 AND r.name >= ?2 AND r.name < ?3
                      LIMIT 1",
                )?
                .query_row([&digest, &low, &high], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn blob_recorded(&self, digest: &Digest) -> StorageResult<bool> {
        let digest = digest.to_string();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM blobs WHERE digest = ?1")?
                .exists([digest])?)
        })
        .await
    }

    async fn link_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
        now: Timestamp,
        quota: Option<Quota>,
    ) -> StorageResult<()> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.write(move |tx| {
            let id = ensure_repository(tx, &repository)?;
            upsert_blob(tx, &digest, size, now)?;
            if link(tx, id, &digest, now)? {
                add_bytes(tx, id, size as i64)?;
                check_quota(tx, quota.as_ref(), size)?;
            }
            Ok(())
        })
        .await
    }

    async fn mount_blob(
        &self,
        from: &RepositoryName,
        to: &RepositoryName,
        digest: &Digest,
        now: Timestamp,
        quota: Option<Quota>,
    ) -> StorageResult<Option<u64>> {
        let (from, to, digest) = (from.to_string(), to.to_string(), digest.to_string());
        self.write(move |tx| {
            let size: Option<i64> = tx
                .prepare_cached(
                    "SELECT b.size FROM repository_blobs rb
                       JOIN repositories r ON r.id = rb.repository_id
                       JOIN blobs b ON b.digest = rb.digest
                      WHERE r.name = ?1 AND rb.digest = ?2",
                )?
                .query_row([&from, &digest], |r| r.get(0))
                .optional()?;
            let Some(size) = size else { return Ok(None) };
            let id = ensure_repository(tx, &to)?;
            if link(tx, id, &digest, now)? {
                add_bytes(tx, id, size)?;
                check_quota(tx, quota.as_ref(), to_size(size))?;
            }
            Ok(Some(to_size(size)))
        })
        .await
    }

    async fn unlink_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        force: bool,
    ) -> StorageResult<bool> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.write(move |tx| {
            let Some(id) = repository_id(tx, &repository)? else {
                return Ok(false);
            };
            if !force {
                let user: Option<String> = tx
                    .prepare_cached(
                        "SELECT manifest_digest FROM manifest_references
                          WHERE repository_id = ?1 AND child_digest = ?2
                          ORDER BY manifest_digest LIMIT 1",
                    )?
                    .query_row(params![id, digest], |r| r.get(0))
                    .optional()?;
                if let Some(manifest) = user {
                    return Err(StorageError::BlobInUse {
                        manifest: parse_digest(manifest)?,
                    });
                }
            }
            let unlinked = tx
                .prepare_cached(
                    "DELETE FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2",
                )?
                .execute(params![id, digest])?
                == 1;
            if unlinked {
                add_bytes(tx, id, -(blob_size(tx, &digest)? as i64))?;
            }
            Ok(unlinked)
        })
        .await
    }

    async fn resolve_tag(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> StorageResult<Option<ManifestRecord>> {
        self.lookup_manifest(
            repository,
            tag.as_str(),
            "SELECT m.digest, m.media_type, m.size FROM tags t
               JOIN repositories r ON r.id = t.repository_id
               JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
              WHERE r.name = ?1 AND t.name = ?2",
        )
        .await
    }

    async fn manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<ManifestRecord>> {
        self.lookup_manifest(
            repository,
            digest.as_str(),
            "SELECT m.digest, m.media_type, m.size FROM manifests m
               JOIN repositories r ON r.id = m.repository_id
              WHERE r.name = ?1 AND m.digest = ?2",
        )
        .await
    }

    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: NewManifest,
        tag: Option<&Tag>,
        now: Timestamp,
        rules: WriteRules,
    ) -> StorageResult<()> {
        let name = repository.to_string();
        let stale = tag.map(|t| LookupKey {
            repository: name.clone(),
            reference: t.to_string(),
        });
        let tag = tag.map(|t| t.to_string());
        let repository = name;
        self.write_manifests(Stale::Keys(stale.into_iter().collect()), move |tx| {
            let id = ensure_repository(tx, &repository)?;
            // Refreshing what it references both checks that it is there
            // and keeps a concurrent collection from taking it.
            for blob in &manifest.blobs {
                if !touch_link(tx, id, blob.as_str(), now)? && !rules.references_follow {
                    return Err(StorageError::MissingReferences(blob.clone()));
                }
            }
            // An index entry may also name a plain blob of the repository:
            // BuildKit's registry cache lists its layers and cache config
            // there, and Distribution accepts that.
            let mut touch_manifest = tx.prepare_cached(
                "UPDATE manifests SET touched_at = ?3 WHERE repository_id = ?1 AND digest = ?2",
            )?;
            for child in &manifest.children {
                if touch_manifest.execute(params![id, child.as_str(), now])? == 0
                    && !touch_link(tx, id, child.as_str(), now)?
                    && !rules.references_follow
                {
                    return Err(StorageError::MissingReferences(child.clone()));
                }
            }
            let digest = manifest.digest.as_str();
            upsert_blob(tx, digest, manifest.size, now)?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO manifests (repository_id, digest, media_type, size, artifact_type,
                                            subject, annotations, touched_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (repository_id, digest) DO NOTHING",
                )?
                .execute(params![
                    id,
                    digest,
                    manifest.media_type,
                    manifest.size as i64,
                    manifest.artifact_type,
                    manifest.subject.as_ref().map(Digest::as_str),
                    manifest.annotations,
                    now,
                ])?
                == 1;
            if inserted {
                add_bytes(tx, id, manifest.size as i64)?;
            }
            let mut reference = tx.prepare_cached(
                "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?;
            for child in manifest.blobs.iter().chain(&manifest.children) {
                reference.execute(params![id, digest, child.as_str()])?;
            }
            if let Some(tag) = &tag {
                let current: Option<String> = tx
                    .prepare_cached("SELECT digest FROM tags WHERE repository_id = ?1 AND name = ?2")?
                    .query_row(params![id, tag], |r| r.get(0))
                    .optional()?;
                if current.as_deref().is_some_and(|c| c != digest)
                    && let Some(error) = immutable_error(tag, &rules.immutable)
                {
                    return Err(error);
                }
                tx.prepare_cached(
                    "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (repository_id, name)
                     DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                )?
                .execute(params![id, tag, digest, now])?;
            }
            // Reachable now (tagged, or re-pushed): so is what it leads to.
            touch_reachable(tx, id, digest, now)?;
            if inserted {
                check_quota(tx, rules.quota.as_ref(), manifest.size)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        immutable: ImmutableTags,
    ) -> StorageResult<bool> {
        let (name, digest) = (repository.to_string(), digest.to_string());
        // The tags that pointed at it go too: forget the repository's lookups.
        self.write_manifests(Stale::Repository(name.clone()), move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(false);
            };
            let size: Option<i64> = tx
                .prepare_cached(
                    "SELECT size FROM manifests WHERE repository_id = ?1 AND digest = ?2",
                )?
                .query_row(params![id, digest], |r| r.get(0))
                .optional()?;
            let Some(size) = size else { return Ok(false) };
            let tags = tx
                .prepare_cached("SELECT name FROM tags WHERE repository_id = ?1 AND digest = ?2")?
                .query_map(params![id, digest], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(error) = tags.iter().find_map(|t| immutable_error(t, &immutable)) {
                return Err(error);
            }
            tx.prepare_cached("DELETE FROM tags WHERE repository_id = ?1 AND digest = ?2")?
                .execute(params![id, digest])?;
            remove_manifest(tx, id, &digest, size)?;
            Ok(true)
        })
        .await
    }

    async fn delete_tag(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
        immutable: ImmutableTags,
    ) -> StorageResult<bool> {
        let key = LookupKey {
            repository: repository.to_string(),
            reference: tag.to_string(),
        };
        let (repository, tag) = (key.repository.clone(), key.reference.clone());
        self.write_manifests(Stale::Keys(vec![key]), move |tx| {
            let Some(id) = repository_id(tx, &repository)? else {
                return Ok(false);
            };
            let exists = tx
                .prepare_cached("SELECT 1 FROM tags WHERE repository_id = ?1 AND name = ?2")?
                .exists(params![id, tag])?;
            if !exists {
                return Ok(false);
            }
            if let Some(error) = immutable_error(&tag, &immutable) {
                return Err(error);
            }
            tx.prepare_cached("DELETE FROM tags WHERE repository_id = ?1 AND name = ?2")?
                .execute(params![id, tag])?;
            Ok(true)
        })
        .await
    }

    async fn record_pull(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        now: Timestamp,
    ) -> StorageResult<()> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE manifests SET pulled_at = ?3
                  WHERE digest = ?2
                    AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
            )?
            .execute(params![repository, digest, now])?;
            Ok(())
        })
        .await
    }

    async fn delete_repository(
        &self,
        repository: &RepositoryName,
        immutable: ImmutableTags,
    ) -> StorageResult<Option<Vec<String>>> {
        let name = repository.to_string();
        self.write_manifests(Stale::Repository(name.clone()), move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(None);
            };
            let tags = tx
                .prepare_cached("SELECT name FROM tags WHERE repository_id = ?1")?
                .query_map([id], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(error) = tags.iter().find_map(|t| immutable_error(t, &immutable)) {
                return Err(error);
            }
            let uploads = tx
                .prepare_cached("SELECT id FROM uploads WHERE repository = ?1")?
                .query_map([&name], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            for statement in [
                "DELETE FROM tags WHERE repository_id = ?1",
                "DELETE FROM manifest_references WHERE repository_id = ?1",
                "DELETE FROM manifests WHERE repository_id = ?1",
                "DELETE FROM repository_blobs WHERE repository_id = ?1",
                "DELETE FROM repositories WHERE id = ?1",
            ] {
                tx.prepare_cached(statement)?.execute([id])?;
            }
            tx.prepare_cached("DELETE FROM uploads WHERE repository = ?1")?
                .execute([&name])?;
            Ok(Some(uploads))
        })
        .await
    }

    async fn tags(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Option<Vec<String>>> {
        let repository = repository.to_string();
        let after = after.unwrap_or("").to_owned();
        self.with_conn(move |conn| {
            let Some(id) = repository_id(conn, &repository)? else {
                return Ok(None);
            };
            let tags = conn
                .prepare_cached(
                    "SELECT name FROM tags WHERE repository_id = ?1 AND name > ?2
                      ORDER BY name LIMIT ?3",
                )?
                .query_map(params![id, after, limit as i64], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(Some(tags))
        })
        .await
    }

    async fn repositories(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        let after = after.unwrap_or("").to_owned();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2",
                )?
                .query_map(params![after, limit as i64], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    async fn totals(&self) -> StorageResult<StorageTotals> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT (SELECT COUNT(*) FROM repositories), (SELECT COUNT(*) FROM manifests),
                            (SELECT COUNT(*) FROM tags), (SELECT COUNT(*) FROM blobs),
                            (SELECT COALESCE(SUM(size), 0) FROM blobs)",
                )?
                .query_row([], |r| {
                    Ok(StorageTotals {
                        repositories: to_size(r.get(0)?),
                        manifests: to_size(r.get(1)?),
                        tags: to_size(r.get(2)?),
                        blobs: to_size(r.get(3)?),
                        blob_bytes: to_size(r.get(4)?),
                    })
                })?)
        })
        .await
    }

    async fn repository_usage(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<RepositoryUsage>> {
        let after = after.unwrap_or("").to_owned();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT r.name, r.bytes,
                            (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id),
                            (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id)
                       FROM repositories r WHERE r.name > ?1 ORDER BY r.name LIMIT ?2",
                )?
                .query_map(params![after, limit as i64], |r| {
                    Ok(RepositoryUsage {
                        name: r.get(0)?,
                        bytes: to_size(r.get(1)?),
                        manifests: to_size(r.get(2)?),
                        tags: to_size(r.get(3)?),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn usage(&self, quota: &Quota) -> StorageResult<u64> {
        let quota = quota.clone();
        self.with_conn(move |conn| usage_of(conn, &quota)).await
    }

    async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        limit: usize,
    ) -> StorageResult<Vec<ReferrerRecord>> {
        let (repository, subject) = (repository.to_string(), subject.to_string());
        let artifact_type = artifact_type.map(str::to_owned);
        let after = after.map(Digest::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
                       FROM manifests m JOIN repositories r ON r.id = m.repository_id
                      WHERE r.name = ?1 AND m.subject = ?2
                        AND (?3 IS NULL OR m.artifact_type = ?3)
                        AND (?4 IS NULL OR m.digest > ?4)
                      ORDER BY m.digest
                      LIMIT ?5",
                )?
                .query_map(
                    params![repository, subject, artifact_type, after, limit],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )?
                .collect::<Result<Vec<(String, String, i64, Option<String>, Option<String>)>, _>>(
                )?;
            rows.into_iter()
                .map(|(digest, media_type, size, artifact_type, annotations)| {
                    Ok(ReferrerRecord {
                        digest: parse_digest(digest)?,
                        media_type,
                        size: to_size(size),
                        artifact_type,
                        annotations,
                    })
                })
                .collect()
        })
        .await
    }

    async fn create_upload(
        &self,
        id: &str,
        repository: &RepositoryName,
        owner: &str,
        now: Timestamp,
    ) -> StorageResult<()> {
        let (id, repository, owner) = (id.to_owned(), repository.to_string(), owner.to_owned());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO uploads (id, repository, owner, updated_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, repository, owner, now])?;
            Ok(())
        })
        .await
    }

    async fn upload(&self, id: &str) -> StorageResult<Option<UploadRecord>> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, repository, owner, updated_at FROM uploads WHERE id = ?1",
                )?
                .query_row([id], |r| {
                    Ok(UploadRecord {
                        id: r.get(0)?,
                        repository: r.get(1)?,
                        owner: r.get(2)?,
                        updated_at: r.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn touch_upload(&self, id: &str, now: i64) -> StorageResult<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.prepare_cached("UPDATE uploads SET updated_at = ?2 WHERE id = ?1")?
                .execute(params![id, now])?;
            Ok(())
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> StorageResult<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?
                .execute([id])?;
            Ok(())
        })
        .await
    }

    async fn stale_uploads(
        &self,
        before: Timestamp,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>> {
        let after = after.map(str::to_owned);
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id FROM uploads WHERE updated_at < ?1 AND (?2 IS NULL OR id > ?2)
                      ORDER BY id LIMIT ?3",
                )?
                .query_map(params![before, after, limit as i64], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    async fn delete_stale_upload(&self, id: &str, before: Timestamp) -> StorageResult<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            let deleted = tx
                .prepare_cached("DELETE FROM uploads WHERE id = ?1 AND updated_at < ?2")?
                .execute(params![id, before])?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn gc_snapshot(&self) -> StorageResult<GcSnapshot> {
        self.with_conn(|conn| {
            // One read transaction: one consistent moment of the store.
            let tx = conn.transaction()?;
            let snapshot = read_snapshot(&tx)?;
            tx.commit()?;
            Ok(snapshot)
        })
        .await
    }

    async fn delete_tags_if_unchanged(
        &self,
        repository: &str,
        tags: Vec<TagSnapshot>,
        pulled_before: Timestamp,
    ) -> StorageResult<Vec<String>> {
        let name = repository.to_owned();
        self.collect_manifests(Stale::Repository(name.clone()), move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(Vec::new());
            };
            let mut delete = tx.prepare_cached(
                "DELETE FROM tags WHERE repository_id = ?1 AND name = ?2 AND digest = ?3
                    AND updated_at = ?4
                    AND NOT EXISTS (SELECT 1 FROM manifests m
                                     WHERE m.repository_id = ?1 AND m.digest = ?3
                                       AND COALESCE(m.pulled_at, 0) >= ?5)",
            )?;
            let mut deleted = Vec::new();
            for tag in tags {
                let (name, digest) = (tag.name, tag.digest.as_str());
                if delete.execute(params![id, name, digest, tag.updated_at, pulled_before])? == 1 {
                    deleted.push(name);
                }
            }
            Ok(deleted)
        })
        .await
    }

    async fn delete_manifests_if_untouched(
        &self,
        repository: &str,
        digests: Vec<Digest>,
        before: Timestamp,
        pulled_before: Timestamp,
    ) -> StorageResult<Vec<Digest>> {
        let name = repository.to_owned();
        self.collect_manifests(Stale::Repository(name.clone()), move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(Vec::new());
            };
            let mut deletable = tx.prepare_cached(
                "SELECT m.size FROM manifests m
                  WHERE m.repository_id = ?1 AND m.digest = ?2 AND m.touched_at < ?3
                    AND COALESCE(m.pulled_at, 0) < ?4
                    AND NOT EXISTS (SELECT 1 FROM tags t
                                     WHERE t.repository_id = ?1 AND t.digest = ?2)
                    AND NOT EXISTS (SELECT 1 FROM manifest_references r
                                     WHERE r.repository_id = ?1 AND r.child_digest = ?2)",
            )?;
            // An index goes before its entries: repeat while anything goes.
            let mut left = digests;
            let mut deleted = Vec::new();
            loop {
                let before_pass = deleted.len();
                let mut kept = Vec::new();
                for digest in left {
                    let size: Option<i64> = deletable
                        .query_row(params![id, digest.as_str(), before, pulled_before], |r| {
                            r.get(0)
                        })
                        .optional()?;
                    match size {
                        Some(size) => {
                            remove_manifest(tx, id, digest.as_str(), size)?;
                            deleted.push(digest);
                        }
                        None => kept.push(digest),
                    }
                }
                left = kept;
                if deleted.len() == before_pass || left.is_empty() {
                    return Ok(deleted);
                }
            }
        })
        .await
    }

    async fn delete_links_if_unreferenced(
        &self,
        repository: &str,
        links: Vec<LinkSnapshot>,
        before: Timestamp,
    ) -> StorageResult<Vec<Digest>> {
        let name = repository.to_owned();
        self.collect(move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(Vec::new());
            };
            let mut delete = tx.prepare_cached(
                "DELETE FROM repository_blobs
                  WHERE repository_id = ?1 AND digest = ?2 AND linked_at < ?3
                    AND NOT EXISTS (SELECT 1 FROM manifest_references r
                                     WHERE r.repository_id = ?1 AND r.child_digest = ?2)",
            )?;
            let mut deleted = Vec::new();
            // Sizes never change under a digest: the snapshot's are right.
            let mut freed = 0i64;
            for link in links {
                if delete.execute(params![id, link.digest.as_str(), before])? == 1 {
                    freed += link.size as i64;
                    deleted.push(link.digest);
                }
            }
            add_bytes(tx, id, -freed)?;
            Ok(deleted)
        })
        .await
    }

    async fn forget_blobs_if_unused(
        &self,
        digests: Vec<Digest>,
        before: Timestamp,
    ) -> StorageResult<Vec<Digest>> {
        // Durable before the bytes go: a blob recorded again after a power
        // cut must have them.
        self.write(move |tx| {
            let mut forget = tx.prepare_cached(
                "DELETE FROM blobs WHERE digest = ?1 AND touched_at < ?2
                    AND NOT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = ?1)
                    AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = ?1)",
            )?;
            let mut forgotten = Vec::new();
            for digest in digests {
                if forget.execute(params![digest.as_str(), before])? == 1 {
                    forgotten.push(digest);
                }
            }
            Ok(forgotten)
        })
        .await
    }

    async fn recorded_blobs(&self, digests: Vec<Digest>) -> StorageResult<Vec<Digest>> {
        self.with_conn(move |conn| {
            let mut exists = conn.prepare_cached("SELECT 1 FROM blobs WHERE digest = ?1")?;
            let mut recorded = Vec::new();
            for digest in digests {
                if exists.exists([digest.as_str()])? {
                    recorded.push(digest);
                }
            }
            Ok(recorded)
        })
        .await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StorageResult<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |tx| {
            Ok(tx
                .prepare_cached(
                    "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?4)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                      WHERE leases.until < ?3 OR leases.holder = excluded.holder",
                )?
                .execute(params![name, holder, now, until])?
                == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StorageResult<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?
                .execute(params![name, holder])?;
            Ok(())
        })
        .await
    }
}

/// Reads everything collection decides from.
fn read_snapshot(conn: &Connection) -> StorageResult<GcSnapshot> {
    let mut repositories: Vec<RepositorySnapshot> = Vec::new();
    let mut index: HashMap<i64, usize> = HashMap::new();
    let mut statement = conn.prepare("SELECT id, name FROM repositories ORDER BY name")?;
    for row in statement.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
        let (id, name) = row?;
        index.insert(id, repositories.len());
        repositories.push(RepositorySnapshot {
            name,
            ..RepositorySnapshot::default()
        });
    }
    let mut references: HashMap<(i64, String), Vec<Digest>> = HashMap::new();
    let mut statement = conn
        .prepare("SELECT repository_id, manifest_digest, child_digest FROM manifest_references")?;
    for row in statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        let (id, manifest, child): (i64, String, String) = row?;
        references
            .entry((id, manifest))
            .or_default()
            .push(parse_digest(child)?);
    }
    let mut statement = conn.prepare(
        "SELECT repository_id, digest, size, subject, touched_at, pulled_at FROM manifests",
    )?;
    for row in statement.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })? {
        let (id, digest, size, subject, touched_at, pulled_at) = row?;
        let Some(&at) = index.get(&id) else { continue };
        let references = references.remove(&(id, digest.clone())).unwrap_or_default();
        repositories[at].manifests.push(ManifestSnapshot {
            digest: parse_digest(digest)?,
            size: to_size(size),
            subject: subject.map(parse_digest).transpose()?,
            references,
            touched_at,
            pulled_at,
        });
    }
    let mut statement = conn.prepare("SELECT repository_id, name, digest, updated_at FROM tags")?;
    for row in statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))? {
        let (id, name, digest, updated_at): (i64, String, String, i64) = row?;
        let Some(&at) = index.get(&id) else { continue };
        repositories[at].tags.push(TagSnapshot {
            name,
            digest: parse_digest(digest)?,
            updated_at,
        });
    }
    let mut statement = conn.prepare(
        "SELECT rb.repository_id, rb.digest, b.size, rb.linked_at
           FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest",
    )?;
    for row in statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))? {
        let (id, digest, size, linked_at): (i64, String, i64, i64) = row?;
        let Some(&at) = index.get(&id) else { continue };
        repositories[at].links.push(LinkSnapshot {
            digest: parse_digest(digest)?,
            size: to_size(size),
            linked_at,
        });
    }
    let mut blobs = Vec::new();
    let mut statement = conn.prepare("SELECT digest, size, touched_at FROM blobs")?;
    for row in statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        let (digest, size, touched_at): (String, i64, i64) = row?;
        blobs.push(BlobSnapshot {
            digest: parse_digest(digest)?,
            size: to_size(size),
            touched_at,
        });
    }
    Ok(GcSnapshot {
        repositories,
        blobs,
    })
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    use super::*;
    use berth_oci::{RepositoryPattern, TagPattern};

    fn manifest(content: &str) -> NewManifest {
        NewManifest {
            digest: Digest::sha256_of(content.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            size: content.len() as u64,
            artifact_type: None,
            subject: None,
            annotations: None,
            blobs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// A client that disconnects while its push is being written drops the
    /// request future; the write still commits, and the tag must not go on
    /// being answered from the cache with the manifest it had before.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_write_whose_request_is_dropped_still_refreshes_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetadataStore::open(&dir.path().join("metadata.db")).unwrap();
        let repository = RepositoryName::parse("app").unwrap();
        let tag = Tag::parse("latest").unwrap();
        let (old, new) = (manifest("one"), manifest("two"));
        store
            .put_manifest(
                &repository,
                old.clone(),
                Some(&tag),
                1,
                WriteRules::default(),
            )
            .await
            .unwrap();
        let cached = store.resolve_tag(&repository, &tag).await.unwrap().unwrap();
        assert_eq!(cached.digest, old.digest);

        // Polled once (the write starts on its blocking thread), then dropped.
        {
            let mut push = pin!(store.put_manifest(
                &repository,
                new.clone(),
                Some(&tag),
                2,
                WriteRules::default()
            ));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(matches!(push.as_mut().poll(&mut cx), Poll::Pending));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = store.resolve_tag(&repository, &tag).await.unwrap().unwrap();
            if now.digest == new.digest {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the tag still answers {}",
                now.digest
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn open() -> (tempfile::TempDir, SqliteMetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetadataStore::open(&dir.path().join("metadata.db")).unwrap();
        (dir, store)
    }

    fn name(text: &str) -> RepositoryName {
        RepositoryName::parse(text).unwrap()
    }

    fn image(content: &str, blobs: &[&Digest]) -> NewManifest {
        NewManifest {
            blobs: blobs.iter().map(|d| (*d).clone()).collect(),
            ..manifest(content)
        }
    }

    async fn bytes_of(store: &SqliteMetadataStore, repository: &str) -> u64 {
        store
            .repository_usage(None, 100)
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.name == repository)
            .map_or(0, |u| u.bytes)
    }

    #[tokio::test]
    async fn a_manifest_needs_its_blobs_and_records_nothing_without_them() {
        let (_dir, store) = open();
        let app = name("team/app");
        let layer = Digest::sha256_of(b"layer");
        let pushed = image("m", &[&layer]);
        let refused = store
            .put_manifest(&app, pushed.clone(), None, 10, WriteRules::default())
            .await;
        assert!(matches!(refused, Err(StorageError::MissingReferences(d)) if d == layer));
        assert!(!store.blob_recorded(&pushed.digest).await.unwrap());
        store.link_blob(&app, &layer, 5, 10, None).await.unwrap();
        store
            .put_manifest(&app, pushed.clone(), None, 11, WriteRules::default())
            .await
            .unwrap();
        assert_eq!(bytes_of(&store, "team/app").await, 5 + pushed.size);
    }

    #[tokio::test]
    async fn quotas_count_what_repositories_hold_together() {
        let (_dir, store) = open();
        let quota = Quota {
            repositories: RepositoryPattern::parse("team/**").unwrap(),
            limit: 10,
            excluded: vec![],
        };
        let (a, b) = (name("team/a"), name("team/b"));
        let blob = |n: u8| Digest::sha256_of(&[n]);
        store
            .link_blob(&a, &blob(1), 6, 1, Some(quota.clone()))
            .await
            .unwrap();
        // Linking the same blob again adds nothing.
        store
            .link_blob(&a, &blob(1), 6, 2, Some(quota.clone()))
            .await
            .unwrap();
        let refused = store
            .link_blob(&b, &blob(2), 5, 3, Some(quota.clone()))
            .await;
        match refused {
            Err(StorageError::QuotaExceeded {
                pattern,
                usage,
                limit,
                adding,
            }) => assert_eq!(
                (pattern.as_str(), usage, limit, adding),
                ("team/**", 6, 10, 5)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.usage(&quota).await.unwrap(), 6);
        assert!(
            store
                .blob_in_repository(&b, &blob(2))
                .await
                .unwrap()
                .is_none()
        );
        // Mounting counts in the repository it goes to.
        assert!(matches!(
            store
                .mount_blob(&a, &b, &blob(1), 4, Some(quota.clone()))
                .await,
            Err(StorageError::QuotaExceeded { .. })
        ));
        store
            .link_blob(&b, &blob(2), 4, 5, Some(quota.clone()))
            .await
            .unwrap();
        assert_eq!(store.usage(&quota).await.unwrap(), 10);
        // Outside the pattern, nothing counts.
        store
            .link_blob(&name("other/x"), &blob(3), 99, 6, None)
            .await
            .unwrap();
        assert_eq!(store.usage(&quota).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn blobs_linked_under_a_prefix() {
        let (_dir, store) = open();
        let digest = Digest::sha256_of(b"layer");
        for repository in ["hubx/app", "hu/b", "hub"] {
            store
                .link_blob(&name(repository), &digest, 5, 1, None)
                .await
                .unwrap();
        }
        assert!(!store.blob_linked_under("hub", &digest).await.unwrap());
        store
            .link_blob(&name("hub/library/app"), &digest, 5, 1, None)
            .await
            .unwrap();
        assert!(store.blob_linked_under("hub", &digest).await.unwrap());
        assert!(
            store
                .blob_linked_under("hub/library", &digest)
                .await
                .unwrap()
        );
        let other = Digest::sha256_of(b"other");
        assert!(!store.blob_linked_under("hub", &other).await.unwrap());
    }

    #[tokio::test]
    async fn immutable_tags_are_neither_moved_nor_deleted() {
        let (_dir, store) = open();
        let app = name("prod/app");
        let rules = WriteRules {
            quota: None,
            immutable: ImmutableTags(vec![TagPattern::parse("v*").unwrap()]),
            references_follow: false,
        };
        let (one, two) = (manifest("one"), manifest("two"));
        let v1 = Tag::parse("v1").unwrap();
        store
            .put_manifest(&app, one.clone(), Some(&v1), 1, rules.clone())
            .await
            .unwrap();
        // The same content again is no move.
        store
            .put_manifest(&app, one.clone(), Some(&v1), 2, rules.clone())
            .await
            .unwrap();
        let moved = store
            .put_manifest(&app, two.clone(), Some(&v1), 3, rules.clone())
            .await;
        assert!(
            matches!(moved, Err(StorageError::TagImmutable { tag, pattern })
            if tag == "v1" && pattern == "v*")
        );
        assert_eq!(
            store.resolve_tag(&app, &v1).await.unwrap().unwrap().digest,
            one.digest
        );
        assert!(store.manifest(&app, &two.digest).await.unwrap().is_none());
        assert!(matches!(
            store.delete_tag(&app, &v1, rules.immutable.clone()).await,
            Err(StorageError::TagImmutable { .. })
        ));
        assert!(matches!(
            store
                .delete_manifest(&app, &one.digest, rules.immutable.clone())
                .await,
            Err(StorageError::TagImmutable { .. })
        ));
        // Mutable tags move freely.
        let latest = Tag::parse("latest").unwrap();
        for m in [&one, &two] {
            store
                .put_manifest(&app, (*m).clone(), Some(&latest), 4, rules.clone())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_blob_a_manifest_uses_is_deleted_only_by_force() {
        let (_dir, store) = open();
        let app = name("app");
        let layer = Digest::sha256_of(b"layer");
        store.link_blob(&app, &layer, 5, 1, None).await.unwrap();
        let m = image("m", &[&layer]);
        store
            .put_manifest(&app, m.clone(), None, 1, WriteRules::default())
            .await
            .unwrap();
        assert!(matches!(
            store.unlink_blob(&app, &layer, false).await,
            Err(StorageError::BlobInUse { manifest }) if manifest == m.digest
        ));
        assert!(store.unlink_blob(&app, &layer, true).await.unwrap());
        assert!(!store.unlink_blob(&app, &layer, true).await.unwrap());
        assert_eq!(bytes_of(&store, "app").await, m.size);
    }

    /// A tag goes only if it still names what the collector saw, and its
    /// manifest was not pulled since the cutoff.
    #[tokio::test]
    async fn tags_go_only_unchanged_and_unpulled() {
        let (_dir, store) = open();
        let app = name("app");
        let m = image("m", &[]);
        let v1 = Tag::parse("v1").unwrap();
        store
            .put_manifest(&app, m.clone(), Some(&v1), 10, WriteRules::default())
            .await
            .unwrap();
        let seen = |updated_at| TagSnapshot {
            name: "v1".into(),
            digest: m.digest.clone(),
            updated_at,
        };
        let delete =
            |tag, pulled_before| store.delete_tags_if_unchanged("app", vec![tag], pulled_before);
        assert!(delete(seen(9), 20).await.unwrap().is_empty(), "moved since");
        store.record_pull(&app, &m.digest, 15).await.unwrap();
        assert!(
            delete(seen(10), 15).await.unwrap().is_empty(),
            "pulled since"
        );
        assert_eq!(delete(seen(10), 16).await.unwrap(), ["v1"]);
    }

    /// Collection deletes only what is unreferenced now and untouched since
    /// its cutoff, whatever it saw when it planned.
    #[tokio::test]
    async fn collection_deletes_only_what_is_still_unused() {
        let (_dir, store) = open();
        let app = name("app");
        let (used, unused) = (Digest::sha256_of(b"used"), Digest::sha256_of(b"unused"));
        store.link_blob(&app, &used, 4, 10, None).await.unwrap();
        store.link_blob(&app, &unused, 6, 10, None).await.unwrap();
        let m = image("m", &[&used]);
        store
            .put_manifest(&app, m.clone(), None, 10, WriteRules::default())
            .await
            .unwrap();
        let both = vec![used.clone(), unused.clone()];
        let links = |digests: &[&Digest]| -> Vec<LinkSnapshot> {
            digests
                .iter()
                .map(|d| LinkSnapshot {
                    digest: (*d).clone(),
                    size: if *d == &used { 4 } else { 6 },
                    linked_at: 0,
                })
                .collect()
        };
        // Linked at 10: not before a cutoff of 10.
        assert!(
            store
                .delete_links_if_unreferenced("app", links(&[&used, &unused]), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .delete_links_if_unreferenced("app", links(&[&used, &unused]), 11)
                .await
                .unwrap(),
            std::slice::from_ref(&unused)
        );
        // A blob still linked stays recorded.
        assert_eq!(
            store
                .forget_blobs_if_unused(both.clone(), 11)
                .await
                .unwrap(),
            std::slice::from_ref(&unused)
        );
        assert!(store.blob_recorded(&used).await.unwrap());
        assert!(!store.blob_recorded(&unused).await.unwrap());
        assert_eq!(bytes_of(&store, "app").await, 4 + m.size);

        // An untagged manifest goes, unless pulled since the second cutoff
        // (a pull in progress); a tagged one, or one touched since, stays.
        store.record_pull(&app, &m.digest, 11).await.unwrap();
        assert!(
            store
                .delete_manifests_if_untouched("app", vec![m.digest.clone()], 11, 11)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .delete_manifests_if_untouched("app", vec![m.digest.clone()], 11, 12)
                .await
                .unwrap(),
            std::slice::from_ref(&m.digest)
        );
        assert_eq!(
            store
                .delete_links_if_unreferenced("app", links(&[&used]), 11)
                .await
                .unwrap(),
            std::slice::from_ref(&used)
        );
        assert_eq!(bytes_of(&store, "app").await, 0);
    }

    #[tokio::test]
    async fn tagging_refreshes_what_the_tag_makes_reachable() {
        let (_dir, store) = open();
        let app = name("app");
        let rules = WriteRules::default;
        let child = manifest("child");
        store
            .put_manifest(&app, child.clone(), None, 1, rules())
            .await
            .unwrap();
        let index = NewManifest {
            children: vec![child.digest.clone()],
            ..manifest("index")
        };
        store
            .put_manifest(&app, index.clone(), None, 1, rules())
            .await
            .unwrap();
        let signature = NewManifest {
            subject: Some(index.digest.clone()),
            ..manifest("signature")
        };
        store
            .put_manifest(&app, signature.clone(), None, 1, rules())
            .await
            .unwrap();
        // A collection planned at 5 saw all three unreachable; then the
        // index was tagged.
        let tag = Tag::parse("v1").unwrap();
        store
            .put_manifest(&app, index.clone(), Some(&tag), 7, rules())
            .await
            .unwrap();
        let all = vec![
            index.digest.clone(),
            child.digest.clone(),
            signature.digest.clone(),
        ];
        assert!(
            store
                .delete_manifests_if_untouched("app", all.clone(), 6, 6)
                .await
                .unwrap()
                .is_empty()
        );
        // Untagged again, they go together, the index before its child.
        store
            .delete_tag(&app, &tag, ImmutableTags::default())
            .await
            .unwrap();
        let deleted = store
            .delete_manifests_if_untouched("app", all, 8, 8)
            .await
            .unwrap();
        assert_eq!(deleted.len(), 3, "{deleted:?}");
    }

    #[tokio::test]
    async fn one_holder_of_a_lease_at_a_time() {
        let (_dir, store) = open();
        assert!(store.take_lease("gc", "a", 100, 160).await.unwrap());
        assert!(!store.take_lease("gc", "b", 150, 210).await.unwrap());
        assert!(
            store.take_lease("gc", "a", 150, 210).await.unwrap(),
            "renewed"
        );
        assert!(
            store.take_lease("gc", "b", 211, 270).await.unwrap(),
            "expired"
        );
        store.release_lease("gc", "b").await.unwrap();
        assert!(store.take_lease("gc", "a", 212, 270).await.unwrap());
    }

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
        assert_eq!(bytes_of(&store, "app").await, 7);
        let snapshot = store.gc_snapshot().await.unwrap();
        let link = &snapshot.repositories[0].links[0];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((now - link.linked_at).abs() < 60_000, "{link:?}");
    }
}
